/** Where the wink worker entry file is, next to this module. */
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
/**
 * URL of `wink-worker.ts` when running from TypeScript sources (a TypeScript loader such as tap's is
 * active, and worker threads inherit `process.execArgv`, so it loads there too), or of
 * `wink-worker.js` from the compiled `dist/`: the extension of this very module decides.
 */
export const WINK_WORKER_FILE = new URL(`./wink-worker${extname(fileURLToPath(import.meta.url))}`, import.meta.url);
//# sourceMappingURL=wink-worker-file.js.map
/** Where the transformers.js worker entry file is, next to this module. */
import { extname } from 'node:path'
import { fileURLToPath } from 'node:url'

/** URL of `transformers-worker.ts` from TypeScript sources, or `.js` from the compiled `dist/` (as WINK_WORKER_FILE). */
export const TRANSFORMERS_WORKER_FILE: URL = new URL(`./transformers-worker${extname(fileURLToPath(import.meta.url))}`, import.meta.url)

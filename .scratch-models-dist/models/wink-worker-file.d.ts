/**
 * URL of `wink-worker.ts` when running from TypeScript sources (a TypeScript loader such as tap's is
 * active, and worker threads inherit `process.execArgv`, so it loads there too), or of
 * `wink-worker.js` from the compiled `dist/`: the extension of this very module decides.
 */
export declare const WINK_WORKER_FILE: URL;

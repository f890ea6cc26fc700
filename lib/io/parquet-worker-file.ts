/** Where writeParquet's worker entry file is, next to this module. */
import { extname } from 'node:path'
import { fileURLToPath } from 'node:url'

/** URL of `parquet-worker.ts` from TypeScript sources, or `.js` from the compiled `dist/` (as WINK_WORKER_FILE). */
export const PARQUET_WORKER_FILE: URL = new URL(`./parquet-worker${extname(fileURLToPath(import.meta.url))}`, import.meta.url)

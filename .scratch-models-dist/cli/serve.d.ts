import { Command } from 'commander';
/** Reads tokens from flags, `INFERENCE_STREAM_TOKENS` (comma separated) and a file (one a line, `#` comments). */
export declare function collectTokens(flags: string[], file: string | undefined, env?: NodeJS.ProcessEnv): string[];
/** `inference-stream serve`: runs the server until SIGINT/SIGTERM, then shuts down gracefully. */
export declare function serveCommand(): Command;

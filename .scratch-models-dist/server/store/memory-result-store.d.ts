import type { IdState, ResultStore, TokenCounts } from './result-store.js';
/** Limits of a {@link MemoryResultStore}. */
export interface MemoryResultStoreOptions {
    /** Finished results kept per token (for duplicates, resume and absent clients). */
    maxRetained: number;
    /** How long a finished result is kept, in ms. */
    retentionMs: number;
}
/** In-process {@link ResultStore}: bounded by count and TTL per token. */
export declare class MemoryResultStore implements ResultStore {
    private readonly options;
    private readonly tokens;
    /** Undelivered results dropped by the count bound or the TTL since start. */
    lost: number;
    constructor(options: MemoryResultStoreOptions);
    private state;
    admit(token: string, id: string): 'new' | 'pending' | 'done';
    markRunning(token: string, id: string): void;
    drop(token: string, id: string): void;
    complete(token: string, id: string, outputs: unknown): void;
    private evictOldest;
    lookup(token: string, id: string): {
        state: IdState;
        outputs?: unknown;
    };
    claim(token: string, id: string): boolean;
    takeUndelivered(token: string, max: number): Array<[string, unknown]>;
    returnUndelivered(token: string, ids: Iterable<string>): void;
    bill(token: string, n: number): void;
    counts(token: string): TokenCounts;
    busyTokens(): string[];
    sweep(now?: number): number;
    /** Every token seen (billing survives retention so the bill is never reset by a sweep). */
    allTokens(): string[];
}

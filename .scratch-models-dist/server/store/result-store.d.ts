/**
 * Per-token bookkeeping behind exactly-once processing and recovery: which ids are pending,
 * which finished results are retained (for duplicates and resume), which wait for a stream.
 */
/** What the store knows of one (token, id). */
export type IdState = 'unknown' | 'pending' | 'done';
/** Per-token counters reported in status messages and metrics. */
export interface TokenCounts {
    /** Accepted, waiting for a worker. */
    queued: number;
    /** Leased to a worker. */
    processing: number;
    /** Finished since the server started. */
    done: number;
    /** Finished results waiting for a stream of the token. */
    undelivered: number;
    /** Model invocations billed to the token: one per item run. */
    billed: number;
}
/** Contract of a result store (memory now; a shared one for scale-out keeps the same meaning). */
export interface ResultStore {
    /** Registers an id. `new`: it must be queued; `pending`: it already is; `done`: a result is retained. */
    admit(token: string, id: string): 'new' | 'pending' | 'done';
    /** A worker took the item. */
    markRunning(token: string, id: string): void;
    /** Forgets a pending id that was never queued (rejected before the queue). */
    drop(token: string, id: string): void;
    /** Stores a finished result and marks it undelivered. */
    complete(token: string, id: string, outputs: unknown): void;
    /** State of an id, with the retained outputs when done. */
    lookup(token: string, id: string): {
        state: IdState;
        outputs?: unknown;
    };
    /** Removes one id from the undelivered set; false when it was not there. */
    claim(token: string, id: string): boolean;
    /** Removes up to `max` undelivered results (oldest first) for delivery. */
    takeUndelivered(token: string, max: number): Array<[id: string, outputs: unknown]>;
    /** A delivery failed (socket closed, v1 result unacked): mark these undelivered again. */
    returnUndelivered(token: string, ids: Iterable<string>): void;
    /** Adds `n` to the token's bill. */
    bill(token: string, n: number): void;
    /** The token's counters (zeros for an unknown token). */
    counts(token: string): TokenCounts;
    /** Tokens that have pending or undelivered items. */
    busyTokens(): string[];
    /** Every token seen since start (bills are never dropped). */
    allTokens(): string[];
    /** Drops results past their TTL; returns how many undelivered ones were lost. */
    sweep(now?: number): number;
}

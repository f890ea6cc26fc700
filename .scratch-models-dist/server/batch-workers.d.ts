import type { Logger } from 'pino';
import type { ModelRegistry } from '../models/pipeline.js';
import { type ServerMetrics } from './metrics.js';
import type { WorkItem, WorkQueue } from './queue/work-queue.js';
import type { ResultStore } from './store/result-store.js';
/** Settings of {@link BatchWorkers}. */
export interface BatchWorkersOptions {
    workers: number;
    maxBatch: number;
    maxWaitMs: number;
    queue: WorkQueue;
    store: ResultStore;
    registry: ModelRegistry;
    metrics: ServerMetrics;
    logger?: Logger;
    /** Called once per finished item with its outputs or `{"error"}` body. */
    onResult: (item: WorkItem, outputs: unknown) => void;
    /** Called after each batch with the tokens it touched (flow control resumes here). */
    onBatchDone: (tokens: Set<string>) => void;
}
/**
 * The workers: `workers` loops that each pull a batch (one model and parameters), run the model
 * once for the whole batch, bill every item to its token, hand each result on, and ack the lease.
 */
export declare class BatchWorkers {
    private readonly o;
    private readonly pullAbort;
    private readonly runAbort;
    private readonly loops;
    private readonly running;
    constructor(o: BatchWorkersOptions);
    start(): void;
    /** Batches being run now. */
    get busy(): number;
    private loop;
    private run;
    /** Stops pulling new batches (queued items stay queued). */
    stopPulling(): void;
    /** Aborts running batches (they are handed back to the queue). */
    abortRunning(): void;
    /** Resolves when every loop has ended. */
    done(): Promise<void>;
}

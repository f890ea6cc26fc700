import type { Parameters } from './pipeline.js';
/** Options of {@link WorkerPool}. */
export interface WorkerPoolOptions {
    /** The worker entry file (a `file:` URL or a path); it must call `serveTasks()`. Required. */
    file: URL | string;
    /** Number of threads, at most this many started, each on first need. Default 1. */
    threads?: number;
    /** Tasks that may wait for a free thread; beyond it `run()` rejects with `OverloadedError`. Default 1024. */
    maxQueue?: number;
    /** Passed to every thread as `workerData`. Default `undefined`. */
    workerData?: unknown;
}
/**
 * Runs tasks on a fixed number of worker threads, one task per thread at a time, with a bounded
 * FIFO queue in front.
 *
 * - Threads start lazily, when a task has no free thread and fewer than `threads` exist; the worker
 *   file loads its models once per thread.
 * - A thread that crashes (uncaught error, `process.exit`) fails its in-flight task with a
 *   `ModelError`; the next queued task starts a replacement. Nothing is retried: a batch that
 *   crashes a thread would crash the next one too.
 * - Idle threads are `unref()`ed, so a pool that is not closed never holds the process open;
 *   a thread running a task is ref'ed, so the process waits for its result.
 * - `close()` rejects queued and running tasks with `ShuttingDownError` and terminates every thread.
 */
export declare class WorkerPool {
    #private;
    constructor(options: WorkerPoolOptions);
    /** Tasks waiting for a free thread. */
    get queued(): number;
    /** Tasks running on a thread (including aborted ones whose thread has not answered yet). */
    get running(): number;
    /** Threads alive. */
    get threads(): number;
    /**
     * Runs `modelId` on a batch in a thread. Resolves with one entry per item: the output, or a
     * `ModelInputError` (bad inputs) / `ModelError` (that item failed) for the items that failed.
     * Rejects with `ModelError` when the batch failed or its thread crashed, `OverloadedError` when
     * the queue is full, `ShuttingDownError` after `close()`, and `signal.reason` on abort (a running
     * batch cannot be interrupted: its thread finishes it and the result is dropped).
     */
    run(modelId: string, inputs: unknown[], parameters: Parameters, signal?: AbortSignal): Promise<unknown[]>;
    /** Rejects every pending task with `ShuttingDownError` and terminates the threads. Idempotent. */
    close(): Promise<void>;
}

/** A Pipeline whose batches run on a WorkerPool thread. */
import type { Parameters, Pipeline } from './pipeline.js';
import type { WorkerPool } from './worker-pool.js';
/**
 * Forwards `run` to a {@link WorkerPool} under its model id. The pool is shared (several models per
 * thread) and owned by whoever created it, so this pipeline has no `close()`. `pool` may be a
 * function, called on each run, so the pool (and its threads) can be created on first use.
 */
export declare class PooledPipeline implements Pipeline {
    #private;
    readonly id: string;
    readonly task: string;
    constructor(id: string, task: string, pool: WorkerPool | (() => WorkerPool));
    run(inputs: unknown[], parameters: Parameters, signal?: AbortSignal): Promise<unknown[]>;
}

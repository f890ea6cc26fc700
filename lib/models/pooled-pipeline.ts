/** A Pipeline whose batches run on a WorkerPool thread. */
import type { Parameters, Pipeline } from './pipeline.js'
import type { WorkerPool } from './worker-pool.js'

/**
 * Forwards `run` to a {@link WorkerPool} under its model id. The pool is shared (several models per
 * thread) and owned by whoever created it, so this pipeline has no `close()`. `pool` may be a
 * function, called on each run, so the pool (and its threads) can be created on first use.
 */
export class PooledPipeline implements Pipeline {
  readonly id: string
  readonly task: string
  readonly #pool: () => WorkerPool

  constructor(id: string, task: string, pool: WorkerPool | (() => WorkerPool)) {
    this.id = id
    this.task = task
    this.#pool = typeof pool === 'function' ? pool : () => pool
  }

  async run(inputs: unknown[], parameters: Parameters, signal?: AbortSignal): Promise<unknown[]> {
    // An empty batch needs no thread (and must not start one).
    if (inputs.length === 0) return []
    return this.#pool().run(this.id, inputs, parameters, signal)
  }
}

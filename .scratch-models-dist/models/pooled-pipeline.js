/**
 * Forwards `run` to a {@link WorkerPool} under its model id. The pool is shared (several models per
 * thread) and owned by whoever created it, so this pipeline has no `close()`. `pool` may be a
 * function, called on each run, so the pool (and its threads) can be created on first use.
 */
export class PooledPipeline {
    id;
    task;
    #pool;
    constructor(id, task, pool) {
        this.id = id;
        this.task = task;
        this.#pool = typeof pool === 'function' ? pool : () => pool;
    }
    async run(inputs, parameters, signal) {
        // An empty batch needs no thread (and must not start one).
        if (inputs.length === 0)
            return [];
        return this.#pool().run(this.id, inputs, parameters, signal);
    }
}
//# sourceMappingURL=pooled-pipeline.js.map
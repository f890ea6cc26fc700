/** The default ModelRegistry: builtin models plus the pipelines a user passes in. */
import { InvalidOptionError, ShuttingDownError } from '../errors.js';
import { ECHO_MODEL_ID, EchoPipeline } from './builtin-echo.js';
import { PooledPipeline } from './pooled-pipeline.js';
import { NER_MODEL_ID, NER_TASK } from './wink-entities.js';
import { SENTIMENT_MODEL_ID, SENTIMENT_TASK } from './wink-sentiment.js';
import { WINK_WORKER_FILE } from './wink-worker-file.js';
import { WorkerPool } from './worker-pool.js';
const defaults = { threads: 1, maxQueue: 1024, builtins: true };
/** Ids of the builtin models, in the order `list()` shows them. */
export const BUILTIN_MODEL_IDS = [ECHO_MODEL_ID, SENTIMENT_MODEL_ID, NER_MODEL_ID];
/**
 * Creates a {@link ModelRegistry}. Builtins are cheap until used: `builtin/echo` runs on the main
 * thread; `builtin/sentiment` and `builtin/ner` share one {@link WorkerPool} created on the first
 * `get()` of either, whose threads (each loading wink's English model once) start on the first
 * batch. After `close()`, pipelines already handed out reject with `ShuttingDownError`.
 */
export function createModelRegistry(options = {}) {
    const opts = { ...defaults, ...options };
    if (!Number.isInteger(opts.threads) || opts.threads < 1) {
        throw new InvalidOptionError(`options.threads must be a positive integer, got ${String(opts.threads)}`);
    }
    if (!Number.isInteger(opts.maxQueue) || opts.maxQueue < 0) {
        throw new InvalidOptionError(`options.maxQueue must be a non-negative integer, got ${String(opts.maxQueue)}`);
    }
    if (typeof opts.builtins !== 'boolean') {
        throw new InvalidOptionError(`options.builtins must be a boolean, got ${typeof opts.builtins}`);
    }
    const extra = readModels(opts.models);
    let pool;
    let closed;
    const winkPool = () => {
        if (closed !== undefined)
            throw new ShuttingDownError('Model registry is closed');
        pool ??= new WorkerPool({ file: WINK_WORKER_FILE, threads: opts.threads, maxQueue: opts.maxQueue });
        return pool;
    };
    // Pipeline objects are light; only the pool behind the wink ones costs, and it is made on demand.
    const builtins = new Map();
    if (opts.builtins) {
        let echo;
        let sentiment;
        let ner;
        builtins.set(ECHO_MODEL_ID, () => (echo ??= new EchoPipeline()));
        builtins.set(SENTIMENT_MODEL_ID, () => (sentiment ??= new PooledPipeline(SENTIMENT_MODEL_ID, SENTIMENT_TASK, winkPool)));
        builtins.set(NER_MODEL_ID, () => (ner ??= new PooledPipeline(NER_MODEL_ID, NER_TASK, winkPool)));
    }
    return {
        get(id) {
            const pipeline = extra.get(id);
            if (pipeline !== undefined)
                return pipeline;
            const builtin = builtins.get(id);
            if (builtin === undefined)
                return undefined;
            // Creating the pool on get() (not at startup) keeps a registry that never serves wink free.
            if (id !== ECHO_MODEL_ID && closed === undefined)
                winkPool();
            return builtin();
        },
        list() {
            return [...new Set([...builtins.keys(), ...extra.keys()])];
        },
        close() {
            closed ??= (async () => {
                const closing = [pool?.close()];
                for (const pipeline of new Set(extra.values()))
                    closing.push(pipeline.close?.());
                const results = await Promise.allSettled(closing);
                // Every pipeline gets its close() even if one fails; the first failure is reported.
                const failed = results.find((r) => r.status === 'rejected');
                if (failed !== undefined)
                    throw failed.reason;
            })();
            return closed;
        },
    };
}
function readModels(models) {
    const byId = new Map();
    if (models === undefined)
        return byId;
    if (typeof models !== 'object' || models === null) {
        throw new InvalidOptionError('options.models must be an array of pipelines or a record of pipelines by id');
    }
    const entries = Array.isArray(models)
        ? models.map((p) => [p?.id, p])
        : Object.entries(models);
    for (const [id, pipeline] of entries) {
        if (typeof id !== 'string' || id === '') {
            throw new InvalidOptionError('options.models entries must have a non-empty string id');
        }
        if (typeof pipeline !== 'object' || pipeline === null || typeof pipeline.run !== 'function') {
            throw new InvalidOptionError(`options.models[${JSON.stringify(id)}] must be a Pipeline (an object with run())`);
        }
        byId.set(id, pipeline);
    }
    return byId;
}
//# sourceMappingURL=registry.js.map
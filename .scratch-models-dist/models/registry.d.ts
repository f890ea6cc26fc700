import type { ModelRegistry, Pipeline } from './pipeline.js';
/** Options of {@link createModelRegistry}. */
export interface ModelRegistryOptions {
    /**
     * Extra pipelines, as an array (served under each `pipeline.id`) or a record (served under each
     * key). They take precedence over builtins of the same id, and `close()` closes them. Default none.
     */
    models?: readonly Pipeline[] | Readonly<Record<string, Pipeline>>;
    /** Worker threads of the wink models (`builtin/sentiment`, `builtin/ner`), shared by both. Default 1. */
    threads?: number;
    /** Batches that may wait for a wink thread before `run()` rejects with `OverloadedError`. Default 1024. */
    maxQueue?: number;
    /** Serve `builtin/echo`, `builtin/sentiment` and `builtin/ner`. Default true. */
    builtins?: boolean;
}
/** Ids of the builtin models, in the order `list()` shows them. */
export declare const BUILTIN_MODEL_IDS: readonly string[];
/**
 * Creates a {@link ModelRegistry}. Builtins are cheap until used: `builtin/echo` runs on the main
 * thread; `builtin/sentiment` and `builtin/ner` share one {@link WorkerPool} created on the first
 * `get()` of either, whose threads (each loading wink's English model once) start on the first
 * batch. After `close()`, pipelines already handed out reject with `ShuttingDownError`.
 */
export declare function createModelRegistry(options?: ModelRegistryOptions): ModelRegistry;

/**
 * The model contract. A pipeline runs one *batch* of items that share a model and parameters:
 * one call per batch is what makes batching pay.
 */
/** Parameters of a request (`parameters` of the payload), already validated as a plain object. */
export type Parameters = Record<string, unknown>;
/**
 * A model behind an id. `run` gets the `inputs` of every item of a batch and returns one entry per
 * item, in the same order: the item's outputs (exactly what the HTTP API returns for it), or an
 * `Error` instance when that item alone failed (its message becomes the item's `{"error"}`).
 * Throwing (or rejecting) fails the whole batch.
 */
export interface Pipeline {
    /** Model id, e.g. `builtin/sentiment`. */
    readonly id: string;
    /** Inference API task name, e.g. `text-classification`. */
    readonly task: string;
    /** Runs a batch. `signal` aborts waiting (shutdown), where the model can. */
    run(inputs: unknown[], parameters: Parameters, signal?: AbortSignal): Promise<unknown[]>;
    /** Releases threads and memory. */
    close?(): Promise<void>;
}
/** Resolves model ids to pipelines. */
export interface ModelRegistry {
    /** The pipeline for `id`, or `undefined` when the id is not served. */
    get(id: string): Pipeline | undefined;
    /** Ids served (for /health and error messages). */
    list(): string[];
    /** Closes every pipeline. */
    close(): Promise<void>;
}

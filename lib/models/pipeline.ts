/**
 * The model contract. A pipeline runs one *batch* of items that share a model and parameters:
 * one call per batch is what makes batching pay.
 */
import { InferenceStreamError, UnknownModelError } from '../errors.js'

/** Parameters of a request (`parameters` of the payload), already validated as a plain object. */
export type Parameters = Record<string, unknown>

/**
 * A model behind an id. `run` gets the `inputs` of every item of a batch and returns one entry per
 * item, in the same order: the item's outputs (exactly what the HTTP API returns for it), or an
 * `Error` instance when that item alone failed (its message becomes the item's `{"error"}`).
 * Throwing (or rejecting) fails the whole batch.
 */
export interface Pipeline {
  /** Model id, e.g. `builtin/sentiment`. */
  readonly id: string
  /** Inference API task name, e.g. `text-classification`. */
  readonly task: string
  /**
   * Runs a batch. `signal` aborts waiting (shutdown), where the model can. A model whose items
   * finish one by one may report each through `options.onItem` as it does.
   */
  run(inputs: unknown[], parameters: Parameters, signal?: AbortSignal, options?: RunOptions): Promise<unknown[]>
  /** Releases threads and memory. */
  close?(): Promise<void>
  /**
   * Starts loading the model if it is not loaded (idempotent) and resolves when it is ready, or
   * rejects with why it cannot load. Pipelines without it are always ready; `run` loads by itself.
   */
  load?(): Promise<void>
  /** Where loading stands, for the server's status messages and 503 answers. Absent: always ready. */
  loadState?(): ModelLoadState
  /**
   * The length of one item's inputs for length-aware batching, in the model's own unit (tokens),
   * the same unit for every item of the model. Absent: the server counts characters (`inputLength`).
   */
  inputLength?(inputs: unknown): number
}

/** What the caller of {@link Pipeline.run} may ask for besides the batch. */
export interface RunOptions {
  /**
   * Called with an item's index in the batch and its final entry (outputs, or an `Error` for that
   * item alone) as soon as the item is done, before the rest of the batch is: at most once per
   * item, and only with the entry `run` would return for it. When `run` is aborted (the server shuts
   * down), the items reported so far are finished with these entries and billed; only the others
   * are handed back to the queue, so a model whose items complete one at a time (an upstream
   * endpoint that bills each request) never runs an item twice. A pipeline that does not call it
   * has its whole batch handed back on abort.
   */
  onItem?(index: number, output: unknown): void
}

/** Where a pipeline's loading stands. */
export interface ModelLoadState {
  state: 'unloaded' | 'loading' | 'ready' | 'failed'
  /** While loading: seconds until ready, estimated (the classic API's `estimated_time`). */
  estimatedTime?: number
  /** When failed: why. */
  error?: Error
}

/** `cpu` or `gpu`, from the stream or job URL. */
export type Compute = 'cpu' | 'gpu'

/** Resolves model ids to pipelines. */
export interface ModelRegistry {
  /**
   * The pipeline for `id` on `compute` (default `cpu`), or `undefined` when the id is not served
   * there. Registries that serve both from one pipeline ignore `compute`.
   */
  get(id: string, compute?: Compute): Pipeline | undefined
  /**
   * Why `get(id, compute)` returned `undefined`, for the error the client sees (e.g. where a model
   * was looked for). Absent or `undefined`: the generic "does not exist".
   */
  unavailable?(id: string, compute?: Compute): Error | undefined
  /** Ids served (for /health and error messages). */
  list(): string[]
  /** Closes every pipeline. */
  close(): Promise<void>
}

/**
 * The pipeline for `id` on `compute`, or the error a client should get: the registry's reason
 * (`unavailable`), else "does not exist".
 */
export function resolvePipeline(registry: ModelRegistry, id: string, compute: Compute = 'cpu'): Pipeline | InferenceStreamError {
  const pipeline = registry.get(id, compute)
  if (pipeline !== undefined) return pipeline
  const why = registry.unavailable?.(id, compute)
  if (why instanceof InferenceStreamError && !(why instanceof UnknownModelError)) return why
  // Name what is served (a few), so a typo is seen at once.
  const served = registry.list()
  const listed = served.length > 12 ? `${served.slice(0, 12).join(', ')}, … ${served.length - 12} more` : served.join(', ')
  return new UnknownModelError(`${why?.message ?? `Model ${id} does not exist`}${served.length > 0 ? ` (served here: ${listed})` : ''}`)
}

/**
 * A Hugging Face model served through `@huggingface/transformers`, run in a worker thread of its
 * own. ONNX Runtime's Node binding runs a session synchronously on the calling thread, so on the
 * main thread one batch of a real model would stall every socket of the server; here the main
 * thread only forwards batches and keeps the load state that status messages and 503s report.
 */
import { InferenceStreamError, ModelLoadError, ShuttingDownError } from '../errors.js'
import type { ModelLoadState, Parameters, Pipeline } from './pipeline.js'
import { inputLength } from '../server/queue/length-batching.js'
import { tokenCounterOf, type TokenCounter } from './token-count.js'
import { guessLoadSeconds, initialTask, type TransformersPipelineOptions } from './transformers-model.js'
import { TRANSFORMERS_WORKER_FILE } from './transformers-worker-file.js'
import { WorkerPool } from './worker-pool.js'

export type { TransformersPipelineOptions } from './transformers-model.js'
export { gpuAvailable, gpuUnavailableError } from './gpu.js'

/**
 * A transformers.js model (see transformers-model.ts for the tasks) behind its worker threads
 * (`modelThreads`, default 1), started on the first `load()` or `run()`. Each thread takes one
 * batch at a time (ONNX Runtime spreads one batch over its `threads`); the threads, and the
 * model's memory, go on `close()`.
 */
export class TransformersPipeline implements Pipeline {
  readonly id: string
  private knownTask: string | undefined
  private readonly options: TransformersPipelineOptions
  private pool: WorkerPool | undefined
  private loading: Promise<void> | undefined
  private ready = false
  private failed: Error | undefined
  private loadStarted = 0
  private estimate = 0
  private closed = false
  // The model folder's WordPiece count, read on the first item (null: none, count characters).
  private counter: TokenCounter | null | undefined

  constructor(options: TransformersPipelineOptions) {
    this.id = options.id
    this.options = options
    this.knownTask = initialTask(options)
  }

  /**
   * Tokens of an item, for length-aware batching: a model folder (`dir`) with a WordPiece
   * `tokenizer.json` is counted with its own vocabulary (./token-count.ts), on this thread;
   * otherwise characters, as `inputLength`. Strings within lists and objects are summed.
   */
  inputLength(inputs: unknown): number {
    if (this.counter === undefined) this.counter = (this.options.dir && tokenCounterOf(this.options.dir)) || null
    return inputLength(inputs, this.counter ?? undefined)
  }

  /**
   * The model's thread pool, made on first need: `modelThreads` threads (default 1), each loading
   * the model once, on the first batch it takes (`load()` loads one); a crash (out of memory...)
   * starts a new thread on the next batch.
   */
  private threads(): WorkerPool {
    this.pool ??= new WorkerPool({ file: TRANSFORMERS_WORKER_FILE, threads: this.options.modelThreads ?? 1, workerData: this.options })
    return this.pool
  }

  /** The Inference API task; `unknown` until a download tells it. */
  get task(): string {
    return this.knownTask ?? 'unknown'
  }

  /** Where loading stands; `estimatedTime` counts down from a guess made from the ONNX weights' size. */
  loadState(): ModelLoadState {
    if (this.ready) return { state: 'ready' }
    if (this.failed) return { state: 'failed', error: this.failed }
    if (!this.loading) return { state: 'unloaded', estimatedTime: guessLoadSeconds(this.options) }
    const left = this.estimate - (performance.now() - this.loadStarted) / 1000
    // Past the guess: say one more second rather than zero or a negative time.
    return { state: 'loading', estimatedTime: Math.max(1, Math.round(left * 10) / 10) }
  }

  /** Loads the model in its thread (once); after a failure, a new call tries again. */
  load(): Promise<void> {
    if (this.closed) return Promise.reject(new ShuttingDownError(`Model ${this.id} is closed`))
    if (this.ready) return Promise.resolve()
    if (this.loading && !this.failed) return this.loading
    this.failed = undefined
    this.loadStarted = performance.now()
    this.estimate = guessLoadSeconds(this.options)
    const loading = this.threads().run('load', [null], {}).then(
      ([outcome]) => {
        if (outcome instanceof Error) throw outcome
        this.knownTask = typeof outcome === 'string' ? outcome : this.knownTask
        this.ready = true
      },
      (err: unknown) => {
        throw err instanceof InferenceStreamError ? err : new ModelLoadError(`Model ${this.id} failed to load: ${(err as Error)?.message ?? String(err)}`, { cause: err })
      },
    )
    const settled = loading.catch((err: unknown) => {
      this.failed = err as Error
      // A model that did not load holds no thread: a later load starts a fresh one.
      const pool = this.pool
      this.pool = undefined
      void pool?.close()
      throw err
    })
    // A load nobody awaits (started by a status check) must not be an unhandled rejection.
    settled.catch(() => {})
    this.loading = settled
    return settled
  }

  /** Runs a batch in the model's thread, loading it first; a failed load fails each item with it. */
  async run(inputs: unknown[], parameters: Parameters, signal?: AbortSignal): Promise<unknown[]> {
    if (inputs.length === 0) return []
    if (!this.ready) {
      try {
        await this.load()
      } catch (err) {
        if (err instanceof ShuttingDownError) throw err
        return inputs.map(() => err)
      }
    }
    return this.threads().run('run', inputs, parameters, signal)
  }

  /** Ends the thread and frees the model. */
  async close(): Promise<void> {
    this.closed = true
    await this.pool?.close()
  }
}

/**
 * A fixed-size pool of worker threads running model batches off the event loop. A task is
 * (modelId, inputs[], parameters) → one output or Error per item; the worker file serves tasks with
 * `serveTasks()` from ./worker-protocol.js.
 */
import { Worker } from 'node:worker_threads'
import { InvalidOptionError, ModelError, OverloadedError, ShuttingDownError } from '../errors.js'
import type { Parameters } from './pipeline.js'
import { decodeItems, type WorkerReply, type WorkerTask } from './worker-protocol.js'

/** Options of {@link WorkerPool}. */
export interface WorkerPoolOptions {
  /** The worker entry file (a `file:` URL or a path); it must call `serveTasks()`. Required. */
  file: URL | string
  /** Number of threads, at most this many started, each on first need. Default 1. */
  threads?: number
  /** Tasks that may wait for a free thread; beyond it `run()` rejects with `OverloadedError`. Default 1024. */
  maxQueue?: number
  /** Passed to every thread as `workerData`. Default `undefined`. */
  workerData?: unknown
}

const defaults = { threads: 1, maxQueue: 1024 }

interface PendingTask {
  message: WorkerTask
  resolve: (results: unknown[]) => void
  reject: (err: unknown) => void
  signal: AbortSignal | undefined
  onAbort: (() => void) | undefined
  settled: boolean
}

interface Thread {
  worker: Worker
  task: PendingTask | undefined
  crash: Error | undefined
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
 * - Aborting a task that is running terminates its thread (a stuck or overrunning model must not
 *   keep eating a core) and the task rejects with `signal.reason` at once; the next task starts a
 *   replacement thread, which loads its models again. Whatever the old thread answered is dropped.
 * - `close()` rejects queued and running tasks with `ShuttingDownError` and terminates every thread.
 */
export class WorkerPool {
  readonly #file: URL | string
  readonly #threads: number
  readonly #maxQueue: number
  readonly #workerData: unknown
  readonly #queue: PendingTask[] = []
  /** Every live thread, busy or idle. */
  readonly #workers = new Set<Thread>()
  #nextId = 0
  #closed: Promise<void> | undefined

  constructor(options: WorkerPoolOptions) {
    const opts = { ...defaults, ...options }
    if (!(opts.file instanceof URL) && (typeof opts.file !== 'string' || opts.file === '')) {
      throw new InvalidOptionError('options.file must be a file: URL or a path to the worker entry file')
    }
    if (!Number.isInteger(opts.threads) || opts.threads < 1) {
      throw new InvalidOptionError(`options.threads must be a positive integer, got ${String(opts.threads)}`)
    }
    if (!Number.isInteger(opts.maxQueue) || opts.maxQueue < 0) {
      throw new InvalidOptionError(`options.maxQueue must be a non-negative integer, got ${String(opts.maxQueue)}`)
    }
    this.#file = opts.file
    this.#threads = opts.threads
    this.#maxQueue = opts.maxQueue
    this.#workerData = opts.workerData
  }

  /** Tasks waiting for a free thread. */
  get queued(): number {
    return this.#queue.length
  }

  /** Tasks running on a thread (including aborted ones whose thread has not answered yet). */
  get running(): number {
    let n = 0
    for (const thread of this.#workers) if (thread.task !== undefined) n++
    return n
  }

  /** Threads alive. */
  get threads(): number {
    return this.#workers.size
  }

  /**
   * Runs `modelId` on a batch in a thread. Resolves with one entry per item: the output, or a
   * `ModelInputError` (bad inputs) / `ModelError` (that item failed) for the items that failed.
   * Rejects with `ModelError` when the batch failed or its thread crashed, `OverloadedError` when
   * the queue is full, `ShuttingDownError` after `close()`, and `signal.reason` on abort (a running
   * batch's thread is terminated and replaced on the next need).
   */
  run(modelId: string, inputs: unknown[], parameters: Parameters, signal?: AbortSignal): Promise<unknown[]> {
    if (this.#closed !== undefined) return Promise.reject(new ShuttingDownError('Worker pool is closed'))
    if (signal?.aborted) return Promise.reject(signal.reason)
    if (this.#queue.length >= this.#maxQueue && !this.#hasFreeThread()) {
      return Promise.reject(new OverloadedError(`Worker pool queue is full (${this.#maxQueue} tasks waiting)`))
    }
    return new Promise<unknown[]>((resolve, reject) => {
      const task: PendingTask = {
        message: { id: this.#nextId++, modelId, inputs, parameters },
        resolve,
        reject,
        signal,
        onAbort: undefined,
        settled: false,
      }
      if (signal !== undefined) {
        task.onAbort = () => this.#abort(task)
        signal.addEventListener('abort', task.onAbort, { once: true })
      }
      this.#queue.push(task)
      this.#dispatch()
    })
  }

  /** Rejects every pending task with `ShuttingDownError` and terminates the threads. Idempotent. */
  close(): Promise<void> {
    this.#closed ??= this.#terminate()
    return this.#closed
  }

  async #terminate(): Promise<void> {
    const error = new ShuttingDownError('Worker pool is closed')
    for (const task of this.#queue.splice(0)) this.#reject(task, error)
    const threads = [...this.#workers]
    for (const thread of threads) if (thread.task !== undefined) this.#reject(thread.task, error)
    await Promise.all(threads.map((thread) => thread.worker.terminate()))
  }

  #hasFreeThread(): boolean {
    if (this.#workers.size < this.#threads) return true
    for (const thread of this.#workers) if (thread.task === undefined) return true
    return false
  }

  #dispatch(): void {
    while (this.#queue.length > 0 && this.#closed === undefined) {
      let thread: Thread | undefined
      try {
        thread = this.#freeThread()
      } catch (err) {
        // new Worker() throws synchronously for an unusable file or options: fail the task, not run()'s caller.
        this.#reject(this.#queue.shift()!, new ModelError(`Cannot start a worker thread: ${(err as Error).message}`, { cause: err }))
        continue
      }
      if (thread === undefined) return
      const task = this.#queue.shift()!
      thread.task = task
      // Ref'ed while busy: the process must not exit under a batch someone awaits.
      thread.worker.ref()
      try {
        thread.worker.postMessage(task.message)
      } catch (err) {
        // Inputs that cannot be structured-cloned (not JSON data): fail this batch, keep the thread.
        this.#idle(thread)
        this.#reject(task, new ModelError(`Cannot send the batch to a worker thread: ${(err as Error).message}`, { cause: err }))
      }
    }
  }

  #freeThread(): Thread | undefined {
    for (const thread of this.#workers) if (thread.task === undefined) return thread
    if (this.#workers.size >= this.#threads) return undefined
    const worker = new Worker(this.#file, { workerData: this.#workerData })
    const thread: Thread = { worker, task: undefined, crash: undefined }
    worker.on('message', (reply: WorkerReply) => this.#onReply(thread, reply))
    // A reply that cannot be deserialized would otherwise leave its task waiting forever.
    worker.on('messageerror', (err) => this.#onMessageError(thread, err))
    // 'error' (an uncaught exception in the thread) is always followed by 'exit'.
    worker.on('error', (err) => {
      thread.crash = err
    })
    worker.on('exit', (code) => this.#onExit(thread, code))
    worker.unref()
    this.#workers.add(thread)
    return thread
  }

  #onReply(thread: Thread, reply: WorkerReply): void {
    const task = thread.task
    if (task === undefined || task.message.id !== reply.id) return
    this.#idle(thread)
    if ('error' in reply) {
      this.#reject(task, new ModelError(`Model ${task.message.modelId} failed: ${reply.error.message}`))
    } else {
      this.#resolve(task, decodeItems(reply.items))
    }
    this.#dispatch()
  }

  #onMessageError(thread: Thread, err: Error): void {
    const task = thread.task
    if (task === undefined) return
    this.#idle(thread)
    this.#reject(task, new ModelError(`Model ${task.message.modelId} sent a reply that cannot be read: ${err.message}`, { cause: err }))
    this.#dispatch()
  }

  #onExit(thread: Thread, code: number): void {
    this.#workers.delete(thread)
    const task = thread.task
    thread.task = undefined
    if (task !== undefined) {
      const why = thread.crash !== undefined ? thread.crash.message : `exited with code ${code}`
      this.#reject(task, new ModelError(`Worker thread running ${task.message.modelId} crashed: ${why}`, { cause: thread.crash }))
    }
    // Queued tasks get a replacement thread now; with an empty queue the next run() starts one.
    this.#dispatch()
  }

  #idle(thread: Thread): void {
    thread.task = undefined
    thread.worker.unref()
  }

  #abort(task: PendingTask): void {
    const index = this.#queue.indexOf(task)
    if (index !== -1) this.#queue.splice(index, 1)
    for (const thread of this.#workers) {
      if (thread.task !== task) continue
      // JS cannot interrupt a thread mid-batch: end it. Out of #workers now, so the pool may start
      // a replacement at once; its late 'message' and 'exit' find no task and change nothing.
      this.#workers.delete(thread)
      thread.task = undefined
      void thread.worker.terminate()
    }
    this.#reject(task, task.signal?.reason)
    this.#dispatch()
  }

  #resolve(task: PendingTask, results: unknown[]): void {
    if (this.#detach(task)) task.resolve(results)
  }

  #reject(task: PendingTask, error: unknown): void {
    if (this.#detach(task)) task.reject(error)
  }

  /** Marks a task settled once (abort, reply and close may race) and drops its abort listener. */
  #detach(task: PendingTask): boolean {
    if (task.settled) return false
    task.settled = true
    if (task.onAbort !== undefined) task.signal?.removeEventListener('abort', task.onAbort)
    return true
  }
}

import type { Logger } from 'pino'
import { BatchTimeoutError, InferenceStreamError, ModelError, UnknownModelError, toWireError } from '../errors.js'
import type { ModelRegistry, Pipeline } from '../models/pipeline.js'
import type { ServerMetrics } from './metrics.js'
import { leaseCap } from './queue/fair-share.js'
import type { Batching } from './queue/length-batching.js'
import type { ItemResult, LeasedItem, StateBackend, StateLease } from './state/state-backend.js'

/** Settings of {@link BatchWorkers}. */
export interface BatchWorkersOptions {
  workers: number
  maxBatch: number
  maxWaitMs: number
  /** How a batch is picked from a group's queued items (`LeaseOptions.batching`). Default `'fifo'`. */
  batching?: Batching
  /**
   * Longest one model call may run, in ms: past it every item of the batch fails with
   * `BatchTimeoutError`, the call's signal aborts (a worker-thread model's thread is terminated
   * and replaced) and the worker takes other work. Default 120000.
   */
  batchTimeoutMs?: number
  /** How long a lease lasts before another worker may take it back, in ms (renewed while held). Default: the batch time limit + 30 s. */
  leaseMs?: number
  /** Most batches one tenant may hold at once, asked at each pull. Default `leaseCap(workers)` (one worker left free). */
  maxLeasesPerTenant?: () => number
  /** The state backend the workers lease batches from and finish them into. */
  state: StateBackend
  /** Name of these workers' consumer in leases (one per worker: `<consumer>/<n>`). */
  consumer: string
  registry: ModelRegistry
  metrics: ServerMetrics
  logger?: Logger
  /**
   * Items of models `registry` does not serve stay queued for other processes (a worker of a
   * cluster serving some models) instead of failing with `ERR_UNKNOWN_MODEL`. Default false.
   */
  leaveUnserved?: boolean
  /**
   * The only models these workers serve, when a list says so: items of others are left queued
   * (with `leaveUnserved`), and the backend may skip their groups (`LeaseOptions.models`).
   */
  models?: readonly string[]
}

// Finishes a worker loop leaves unanswered while it runs its next batches (see `run`).
const FINISHING_PER_LOOP = 4

/**
 * The workers: `workers` loops that each lease a batch (one model and parameters) from the state
 * backend, run the model once for the whole batch, and finish the lease with the results — one
 * step that stores, bills and routes them.
 * No tenant holds more than `leaseCap(workers)` of them at once (see ../queue/fair-share.ts), and
 * no model call outlives `batchTimeoutMs`.
 */
export class BatchWorkers {
  private readonly pullAbort = new AbortController()
  private readonly runAbort = new AbortController()
  private readonly loops: Promise<void>[] = []
  private readonly running = new Set<StateLease>()
  /** Each loop's finishes not answered yet, oldest first (see `run`). */
  private readonly finishing = new Map<string, Array<Promise<void>>>()
  /** `model\ncompute` of models a worker has claimed to load: the others leave their items queued. */
  private readonly loadWaits = new Set<string>()
  /** The queue's `accept`: a model that is not ready is taken by one worker, which claims it. */
  private readonly accept = (head: LeasedItem): boolean => {
    const pipeline = this.o.models && !this.o.models.includes(head.model) ? undefined : this.o.registry.get(head.model, head.compute)
    if (pipeline === undefined) return !this.o.leaveUnserved
    if (pipeline.load === undefined || pipeline.loadState === undefined || pipeline.loadState().state === 'ready') return true
    const key = `${head.model}\n${head.compute}`
    if (this.loadWaits.has(key)) return false
    this.loadWaits.add(key)
    return true
  }
  constructor(private readonly o: BatchWorkersOptions) {}

  start(): void {
    for (let i = 0; i < this.o.workers; i++) this.loops.push(this.loop(`${this.o.consumer}/${i}`))
    // Held leases are renewed every third of their length (a model that loads for minutes), so no
    // other worker takes one back: one timer for all of them rather than one per batch. A lease is
    // renewed within a third of its length after it starts, and every third after that.
    const { state } = this.o
    const renew = setInterval(() => {
      for (const lease of this.running) void state.extend(lease, this.leaseMs).catch(() => {})
    }, this.leaseMs / 3)
    renew.unref()
    void Promise.all(this.loops).finally(() => clearInterval(renew))
  }

  /** Batches being run now. */
  get busy(): number {
    return this.running.size
  }

  /** How long a lease lasts before another worker may take it back: the batch time limit and a margin; renewed while held. */
  get leaseMs(): number {
    return this.o.leaseMs ?? (this.o.batchTimeoutMs ?? 120_000) + 30_000
  }

  private async loop(consumer: string): Promise<void> {
    const { state, maxBatch, maxWaitMs, batching } = this.o
    const signal = this.pullAbort.signal
    // One worker is always left for another tenant: a tenant that came first cannot park them all.
    while (!signal.aborted) {
      let lease: StateLease | null
      try {
        const maxLeasesPerTenant = this.o.maxLeasesPerTenant?.() ?? leaseCap(this.o.workers)
        lease = await state.lease(consumer, { maxBatch, maxWaitMs, batching, leaseMs: this.leaseMs, signal, accept: this.accept, maxLeasesPerTenant, models: this.o.models })
      } catch (err) {
        this.o.logger?.error({ err }, 'queue pull failed')
        await new Promise((r) => setTimeout(r, 100))
        continue
      }
      if (!lease) return
      // Renewed while held, by the timer of start().
      this.running.add(lease)
      try {
        await this.run(lease, consumer)
      } catch (err) {
        this.o.logger?.error({ err }, 'batch failed unexpectedly')
      } finally {
        this.running.delete(lease)
      }
    }
  }

  private async run(lease: StateLease, consumer: string): Promise<void> {
    const { state, registry, metrics } = this.o
    const items = lease.items
    const first = items[0]
    const pipeline = registry.get(first.model, first.compute)
    if (!(await this.awaitLoad(pipeline, first))) {
      // Shutdown ran out of time while the model loaded: hand the batch back, unbilled.
      await state.release(lease)
      return
    }
    let outputs: unknown[]
    // Items of the batch to finish (all of them, unless shutdown stopped the batch part way).
    let finishing: number[] | undefined
    let computeSeconds = 0
    if (!pipeline) {
      outputs = items.map(() => new UnknownModelError(`Model ${first.model} does not exist`))
    } else {
      metrics.batchSize.observe({ model: first.model }, items.length)
      const started = performance.now()
      // The call's own signal: aborted by shutdown (the batch is handed back, but for the items the
      // model reported done) or by the time limit (the batch fails). Racing the call against it frees this worker even from a model that
      // ignores its signal; whatever such a model answers later is dropped.
      const call = new AbortController()
      const onShutdown = (): void => call.abort(this.runAbort.signal.reason)
      this.runAbort.signal.addEventListener('abort', onShutdown, { once: true })
      if (this.runAbort.signal.aborted) onShutdown()
      const limitMs = this.o.batchTimeoutMs ?? 120_000
      const timer = setTimeout(() => {
        call.abort(new BatchTimeoutError(`Model ${first.model} ran longer than ${limitMs} ms on a batch of ${items.length}; the batch was stopped`))
      }, limitMs)
      // Items the model reported done before the whole batch (an upstream's answered requests): a
      // batch stopped by shutdown finishes these and hands back only the others. Reports after the
      // batch was settled here are dropped.
      const early = new Map<number, unknown>()
      let taking = true
      const onItem = (index: number, output: unknown): void => {
        if (taking && Number.isInteger(index) && index >= 0 && index < items.length && !early.has(index)) early.set(index, output)
      }
      try {
        const running = pipeline.run(
          items.map((i) => i.inputs),
          first.parameters ?? {},
          call.signal,
          { onItem },
        )
        running.catch(() => {}) // a late rejection after the race is settled is not unhandled
        outputs = await Promise.race([running, abortedWith(call.signal)])
        if (!Array.isArray(outputs) || outputs.length !== items.length) {
          throw new ModelError(
            `Model ${first.model} returned ${Array.isArray(outputs) ? outputs.length : 'no'} outputs for ${items.length} inputs`,
          )
        }
      } catch (err) {
        taking = false
        const reason: unknown = call.signal.aborted ? call.signal.reason : undefined
        if (call.signal.aborted && !(reason instanceof BatchTimeoutError)) {
          // Shutdown ran out of time: hand the batch back rather than answer with an error. It is
          // not billed: whoever runs it later bills it. Items the model had already done are
          // finished (and billed) now instead: the finish below hands back only the others.
          if (early.size === 0) {
            await state.release(lease)
            return
          }
          outputs = []
          for (const [index, output] of early) outputs[index] = output
          finishing = [...early.keys()].sort((a, b) => a - b)
        } else {
          const e =
            reason instanceof BatchTimeoutError
              ? reason
              : err instanceof InferenceStreamError
                ? err
                : new ModelError(`Model ${first.model} failed: ${(err as Error)?.message ?? err}`, { cause: err })
          outputs = items.map(() => e)
        }
      } finally {
        taking = false
        clearTimeout(timer)
        this.runAbort.signal.removeEventListener('abort', onShutdown)
        computeSeconds = (performance.now() - started) / 1000
        metrics.batchSeconds.observe({ model: first.model }, computeSeconds)
      }
    }
    // Billed once the model has run the batch (success, failure or time limit: the outcome is
    // final), by the finish that stores the results: items handed back at shutdown are not billed
    // (`finish` requeues the items left out), and an item finished twice (a lease taken back) is
    // billed once.
    const billable = pipeline !== undefined
    const results: ItemResult[] = []
    let errors = 0
    const n = finishing ? finishing.length : items.length
    for (let k = 0; k < n; k++) {
      const i = finishing ? finishing[k] : k
      const out = outputs[i]
      const failed = out instanceof Error
      if (failed) errors++
      let json: string
      let bad = failed
      try {
        json = JSON.stringify(failed ? toWireError(out) : out) ?? 'null'
      } catch {
        // Outputs JSON cannot write (nested too deeply): an ERR_MODEL result; the rest of the batch goes on.
        json = JSON.stringify(toWireError(new ModelError(`Model ${first.model} returned outputs that cannot be serialized as JSON`)))
        bad = true
      }
      if (bad && !failed) errors++
      results.push({ index: i, outputs: json, billable, failed: bad, computeSeconds })
    }
    // The finish is not awaited before the next lease: a durable backend answers it once it is on
    // disk (another thread, another process), and the model need not idle meanwhile. At most
    // FINISHING_PER_LOOP a loop: past that the oldest is awaited first, so results waiting for the
    // store stay bounded.
    let pending = this.finishing.get(consumer)
    if (!pending) this.finishing.set(consumer, (pending = []))
    while (pending.length >= FINISHING_PER_LOOP) await pending[0]
    const finished: Promise<void> = state.finish(lease, results).then(
      (outcome) => {
        if (outcome.lost > 0) metrics.lost.inc(outcome.lost)
        if (errors > 0) metrics.items.inc({ model: first.model, outcome: 'error' }, errors)
        if (errors < results.length) metrics.items.inc({ model: first.model, outcome: 'ok' }, results.length - errors)
      },
      (err: unknown) => {
        // Not stored: the lease runs out and the batch is run again.
        this.o.logger?.error({ err }, 'finishing a batch failed')
      },
    )
    const list = pending
    list.push(finished)
    void finished.finally(() => list.splice(list.indexOf(finished), 1))
  }

  /**
   * A model that is not loaded is loaded by this worker alone: until it is ready (or failed), the
   * other workers skip its groups (their items stay queued) and serve other models, so one slow
   * load never stalls every stream. A failed load is not an error here: `run` then reports it
   * per item.
   */
  private async awaitLoad(pipeline: Pipeline | undefined, first: LeasedItem): Promise<boolean> {
    const key = `${first.model}\n${first.compute}`
    if (pipeline?.load === undefined || pipeline.loadState === undefined || pipeline.loadState().state === 'ready') {
      // Claimed by accept() and ready since: let the others in.
      if (this.loadWaits.delete(key)) this.o.state.wake()
      return true
    }
    const signal = this.runAbort.signal
    let onAbort: (() => void) | undefined
    try {
      await Promise.race([
        pipeline.load().catch(() => {}), // a failed load is reported per item by the pipeline's run()
        new Promise<void>((resolve) => {
          onAbort = resolve
          signal.addEventListener('abort', onAbort, { once: true })
        }),
      ])
      return !signal.aborted
    } finally {
      if (onAbort) signal.removeEventListener('abort', onAbort)
      this.loadWaits.delete(key)
      this.o.state.wake()
    }
  }

  /** Stops pulling new batches (queued items stay queued). */
  stopPulling(): void {
    this.pullAbort.abort()
  }

  /**
   * Aborts running batches: they are handed back to the queue, except the items a model already
   * reported done (`RunOptions.onItem`), which are finished.
   */
  abortRunning(): void {
    this.runAbort.abort()
  }

  /** Resolves when every loop has ended and its last finish is answered. */
  async done(): Promise<void> {
    await Promise.all(this.loops)
    await Promise.all([...this.finishing.values()].flat())
  }
}


/** Rejects with `signal.reason` once `signal` aborts (never resolves). */
function abortedWith(signal: AbortSignal): Promise<never> {
  return new Promise<never>((_, reject) => {
    if (signal.aborted) reject(signal.reason)
    else signal.addEventListener('abort', () => reject(signal.reason), { once: true })
  })
}

import type { Logger } from 'pino'
import { BatchTimeoutError, InferenceStreamError, ModelError, UnknownModelError, toWireError } from '../errors.js'
import type { ModelRegistry, Pipeline } from '../models/pipeline.js'
import type { ServerMetrics } from './metrics.js'
import { leaseCap } from './queue/fair-share.js'
import type { Lease, WorkItem, WorkQueue } from './queue/work-queue.js'
import type { ResultStore } from './store/result-store.js'

/** Settings of {@link BatchWorkers}. */
export interface BatchWorkersOptions {
  workers: number
  maxBatch: number
  maxWaitMs: number
  /**
   * Longest one model call may run, in ms: past it every item of the batch fails with
   * `BatchTimeoutError`, the call's signal aborts (a worker-thread model's thread is terminated
   * and replaced) and the worker takes other work. Default 120000.
   */
  batchTimeoutMs?: number
  /** Most batches one tenant may hold at once, asked at each pull. Default `leaseCap(workers)` (one worker left free). */
  maxLeasesPerTenant?: () => number
  queue: WorkQueue
  store: ResultStore
  registry: ModelRegistry
  metrics: ServerMetrics
  logger?: Logger
  /** The display name of a tenant id (metrics labels). */
  tenantName: (id: string) => string
  /** Called once per finished item with its outputs or `{"error"}` body. */
  onResult: (item: WorkItem, outputs: unknown, info: ResultInfo) => void
  /** Called after each batch with the owners it touched (flow control resumes here). */
  onBatchDone: (owners: Set<string>) => void
}

/** How an item's result came about, for those that answer with more than the outputs (HTTP headers). */
export interface ResultInfo {
  /** The outputs are an `{"error", "code"}` body. */
  failed: boolean
  /** Seconds the model took for the whole batch the item was in; 0 when no model ran. */
  computeSeconds: number
}

/**
 * The workers: `workers` loops that each pull a batch (one model and parameters), run the model
 * once for the whole batch, bill every item to its token, hand each result on, and ack the lease.
 * No tenant holds more than `leaseCap(workers)` of them at once (see ../queue/fair-share.ts), and
 * no model call outlives `batchTimeoutMs`.
 */
export class BatchWorkers {
  private readonly pullAbort = new AbortController()
  private readonly runAbort = new AbortController()
  private readonly loops: Promise<void>[] = []
  private readonly running = new Set<Lease>()
  /** `model\ncompute` of models a worker has claimed to load: the others leave their items queued. */
  private readonly loadWaits = new Set<string>()
  /** The queue's `accept`: a model that is not ready is taken by one worker, which claims it. */
  private readonly accept = (head: WorkItem): boolean => {
    const pipeline = this.o.registry.get(head.model, head.compute)
    if (pipeline?.load === undefined || pipeline.loadState === undefined || pipeline.loadState().state === 'ready') return true
    const key = `${head.model}\n${head.compute}`
    if (this.loadWaits.has(key)) return false
    this.loadWaits.add(key)
    return true
  }
  /** Items run by a model per tenant id: the bill. Never reset while the server runs. */
  readonly billed = new Map<string, number>()

  constructor(private readonly o: BatchWorkersOptions) {}

  start(): void {
    for (let i = 0; i < this.o.workers; i++) this.loops.push(this.loop())
  }

  /** Batches being run now. */
  get busy(): number {
    return this.running.size
  }

  private async loop(): Promise<void> {
    const { queue, maxBatch, maxWaitMs } = this.o
    const signal = this.pullAbort.signal
    // One worker is always left for another tenant: a tenant that came first cannot park them all.
    while (!signal.aborted) {
      let lease: Lease | null
      try {
        const maxLeasesPerTenant = this.o.maxLeasesPerTenant?.() ?? leaseCap(this.o.workers)
        lease = await queue.pull({ maxBatch, maxWaitMs, signal, accept: this.accept, maxLeasesPerTenant })
      } catch (err) {
        this.o.logger?.error({ err }, 'queue pull failed')
        await new Promise((r) => setTimeout(r, 100))
        continue
      }
      if (!lease) return
      this.running.add(lease)
      try {
        await this.run(lease)
      } catch (err) {
        this.o.logger?.error({ err }, 'batch failed unexpectedly')
      } finally {
        this.running.delete(lease)
      }
    }
  }

  private async run(lease: Lease): Promise<void> {
    const { store, registry, metrics, queue } = this.o
    const items = lease.items
    const first = items[0]
    for (const item of items) store.markRunning(item.owner, item.id)
    const pipeline = registry.get(first.model, first.compute)
    if (!(await this.awaitLoad(pipeline, first))) {
      // Shutdown ran out of time while the model loaded: hand the batch back, unbilled.
      await queue.release(lease)
      return
    }
    let outputs: unknown[]
    let computeSeconds = 0
    if (!pipeline) {
      outputs = items.map(() => new UnknownModelError(`Model ${first.model} does not exist`))
    } else {
      metrics.batchSize.observe({ model: first.model }, items.length)
      const started = performance.now()
      // The call's own signal: aborted by shutdown (the batch is handed back) or by the time limit
      // (the batch fails). Racing the call against it frees this worker even from a model that
      // ignores its signal; whatever such a model answers later is dropped.
      const call = new AbortController()
      const onShutdown = (): void => call.abort(this.runAbort.signal.reason)
      this.runAbort.signal.addEventListener('abort', onShutdown, { once: true })
      if (this.runAbort.signal.aborted) onShutdown()
      const limitMs = this.o.batchTimeoutMs ?? 120_000
      const timer = setTimeout(() => {
        call.abort(new BatchTimeoutError(`Model ${first.model} ran longer than ${limitMs} ms on a batch of ${items.length}; the batch was stopped`))
      }, limitMs)
      try {
        const running = pipeline.run(
          items.map((i) => i.inputs),
          first.parameters ?? {},
          call.signal,
        )
        running.catch(() => {}) // a late rejection after the race is settled is not unhandled
        outputs = await Promise.race([running, abortedWith(call.signal)])
        if (!Array.isArray(outputs) || outputs.length !== items.length) {
          throw new ModelError(
            `Model ${first.model} returned ${Array.isArray(outputs) ? outputs.length : 'no'} outputs for ${items.length} inputs`,
          )
        }
      } catch (err) {
        const reason: unknown = call.signal.aborted ? call.signal.reason : undefined
        if (call.signal.aborted && !(reason instanceof BatchTimeoutError)) {
          // Shutdown ran out of time: hand the batch back rather than answer with an error. It is
          // not billed: whoever runs it later bills it.
          await queue.release(lease)
          return
        }
        const e =
          reason instanceof BatchTimeoutError
            ? reason
            : err instanceof InferenceStreamError
              ? err
              : new ModelError(`Model ${first.model} failed: ${(err as Error)?.message ?? err}`, { cause: err })
        outputs = items.map(() => e)
      } finally {
        clearTimeout(timer)
        this.runAbort.signal.removeEventListener('abort', onShutdown)
        computeSeconds = (performance.now() - started) / 1000
        metrics.batchSeconds.observe({ model: first.model }, computeSeconds)
      }
      // Billed once the model has run the batch (success, failure or time limit: the outcome is
      // final), so a batch handed back at shutdown is never billed twice.
      this.bill(items)
    }
    const touched = new Set<string>()
    let errors = 0
    for (let i = 0; i < items.length; i++) {
      const out = outputs[i]
      const failed = out instanceof Error
      if (failed) errors++
      try {
        this.o.onResult(items[i], failed ? toWireError(out) : out, { failed, computeSeconds })
      } catch (err) {
        // One item's delivery failing (e.g. outputs JSON cannot serialize) must not strand the
        // rest of the batch or leave the lease unacked.
        this.o.logger?.error({ err, id: items[i].id }, 'delivering a result failed')
      }
      touched.add(items[i].owner)
    }
    if (errors > 0) metrics.items.inc({ model: first.model, outcome: 'error' }, errors)
    if (errors < items.length) metrics.items.inc({ model: first.model, outcome: 'ok' }, items.length - errors)
    await queue.ack(lease)
    this.o.onBatchDone(touched)
  }

  /**
   * A model that is not loaded is loaded by this worker alone: until it is ready (or failed), the
   * other workers skip its groups (their items stay queued) and serve other models, so one slow
   * load never stalls every stream. A failed load is not an error here: `run` then reports it
   * per item.
   */
  private async awaitLoad(pipeline: Pipeline | undefined, first: WorkItem): Promise<boolean> {
    const key = `${first.model}\n${first.compute}`
    if (pipeline?.load === undefined || pipeline.loadState === undefined || pipeline.loadState().state === 'ready') {
      // Claimed by accept() and ready since: let the others in.
      if (this.loadWaits.delete(key)) this.o.queue.notify()
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
      this.o.queue.notify()
    }
  }

  private bill(items: WorkItem[]): void {
    let tenant = items[0].tenant
    let n = 0
    // Items of a batch usually share a tenant: count runs of it rather than hashing per item.
    for (const item of items) {
      if (item.tenant !== tenant) {
        this.addBill(tenant, n)
        tenant = item.tenant
        n = 0
      }
      n++
    }
    this.addBill(tenant, n)
  }

  private addBill(tenant: string, n: number): void {
    this.billed.set(tenant, (this.billed.get(tenant) ?? 0) + n)
    this.o.metrics.billed.inc({ tenant: this.o.tenantName(tenant) }, n)
  }

  /** Stops pulling new batches (queued items stay queued). */
  stopPulling(): void {
    this.pullAbort.abort()
  }

  /** Aborts running batches (they are handed back to the queue). */
  abortRunning(): void {
    this.runAbort.abort()
  }

  /** Resolves when every loop has ended. */
  async done(): Promise<void> {
    await Promise.all(this.loops)
  }
}


/** Rejects with `signal.reason` once `signal` aborts (never resolves). */
function abortedWith(signal: AbortSignal): Promise<never> {
  return new Promise<never>((_, reject) => {
    if (signal.aborted) reject(signal.reason)
    else signal.addEventListener('abort', () => reject(signal.reason), { once: true })
  })
}

import type { Logger } from 'pino'
import { toWireError, type InferenceStreamError, type WireError } from '../errors.js'
import type { Compute, Pipeline } from '../models/pipeline.js'
import type { ResultInfo } from './batch-workers.js'
import type { ServerMetrics } from './metrics.js'
import type { ResolvedServerOptions } from './options.js'
import type { WorkItem, WorkQueue } from './queue/work-queue.js'
import type { AdmitResult, ResultStore } from './store/result-store.js'
import { tenantOfOwner } from './store/result-store.js'
import { outputsJson, type StreamConnection } from './stream-connection.js'
import type { Tenant } from './tenants.js'

// Results handed to streams per flush round; small enough to interleave with other work.
const FLUSH_CHUNK = 256

// Bytes of inputs as JSON, for the queued-bytes accounting of items that come without a frame.
function jsonBytes(inputs: unknown): number {
  if (typeof inputs === 'string') return inputs.length + 2
  try {
    return JSON.stringify(inputs)?.length ?? 0
  } catch {
    return 0
  }
}

/** Receives the result of one `direct` item (a waiting classic HTTP request). */
export type ResultSink = (outputs: unknown, info: ResultInfo) => void

/**
 * The open streams of every owner (token and model), and the routing of results to them: a result
 * goes to the stream that sent the item when it is still open, else to any open stream of the
 * owner, else it waits in the store. Also applies per-owner flow control.
 *
 * Results of `direct` items (classic HTTP requests) go to their sink only — an id → waiter map —
 * and are then forgotten by the store: they never reach a stream nor stay retained.
 */
export class StreamHub {
  private readonly streams = new Map<string, Set<StreamConnection>>()
  private readonly byId = new Map<number, StreamConnection>()
  // Owners over the item-count bound, tenants over a byte budget: a stream is read only when
  // neither its owner nor its tenant is paused.
  private readonly paused = new Set<string>()
  private readonly pausedTenants = new Set<string>()
  private readonly byTenant = new Map<string, Set<StreamConnection>>()
  // Round-robin cursor per owner, so several streams share results.
  private readonly cursor = new Map<string, number>()
  private readonly sinks = new Map<number, ResultSink>()
  private nextSinkId = 1
  closing = false

  constructor(
    readonly options: ResolvedServerOptions,
    readonly store: ResultStore,
    readonly queue: WorkQueue,
    readonly metrics: ServerMetrics,
    readonly logger: Logger | undefined,
    /** The tenant of a bearer token, or undefined when it is refused (then logged with `remote` and `route`). */
    readonly authenticate: (token: string, remote: string | undefined, route: string) => Tenant | undefined,
    /** The pipeline serving `model` on `compute`, or why there is none (the error the client sees). */
    readonly pipelineFor: (model: string, compute: Compute) => Pipeline | InferenceStreamError,
  ) {}

  /** Open streams of a tenant (any model). */
  streamCount(tenant: string): number {
    return this.byTenant.get(tenant)?.size ?? 0
  }

  /** A stream authenticated: it may now receive the owner's waiting results. */
  register(conn: StreamConnection): void {
    const owner = conn.owner as string
    let set = this.streams.get(owner)
    if (!set) {
      set = new Set()
      this.streams.set(owner, set)
    }
    set.add(conn)
    const tenant = tenantOfOwner(owner)
    let ts = this.byTenant.get(tenant)
    if (!ts) {
      ts = new Set()
      this.byTenant.set(tenant, ts)
    }
    ts.add(conn)
    this.byId.set(conn.id, conn)
    this.metrics.connections.inc()
    if (this.paused.has(owner) || this.pausedTenants.has(tenant)) conn.pause()
    this.flush(owner)
  }

  /** A stream closed: its unacked v1 results go back to the store and on to other streams. */
  unregister(conn: StreamConnection): void {
    const owner = conn.owner as string
    if (!this.byId.delete(conn.id)) return
    this.metrics.connections.dec()
    const set = this.streams.get(owner)
    set?.delete(conn)
    if (set && set.size === 0) this.streams.delete(owner)
    const tenant = tenantOfOwner(owner)
    const ts = this.byTenant.get(tenant)
    ts?.delete(conn)
    if (ts && ts.size === 0) this.byTenant.delete(tenant)
    if (conn.unacked.size > 0) this.store.returnUndelivered(owner, conn.unacked)
    conn.unacked.clear()
    this.flush(owner)
  }

  /** Open streams of an owner. */
  streamsOf(owner: string): Iterable<StreamConnection> {
    return this.streams.get(owner) ?? []
  }

  /** All open streams. */
  allStreams(): Iterable<StreamConnection> {
    return this.byId.values()
  }

  private pick(owner: string): StreamConnection | undefined {
    const set = this.streams.get(owner)
    if (!set) return undefined
    if (set.size === 1) {
      const only = set.values().next().value as StreamConnection
      return only.canTake() ? only : undefined
    }
    const list = [...set]
    const start = this.cursor.get(owner) ?? 0
    for (let i = 0; i < list.length; i++) {
      const c = list[(start + i) % list.length]
      if (c.canTake()) {
        this.cursor.set(owner, start + i + 1)
        return c
      }
    }
    return undefined
  }

  /** Queues accepted items, then applies flow control to the owner. */
  enqueue(conn: StreamConnection, items: WorkItem[]): void {
    const owner = conn.owner as string
    this.queue.push(items).catch((err: unknown) => {
      // The queue refused (closing): answer each item so nothing waits forever.
      const body = toWireError(err)
      for (const item of items) {
        this.store.drop(owner, item.id)
        conn.sendResult(item.id, body, false)
      }
    })
    this.checkFlow(owner)
  }

  /**
   * Flow control, with hysteresis (paused at a bound, read again at half of it): stops reading the
   * owner's sockets when it has too many items queued or undelivered (`maxQueuedPerToken`), and
   * every socket of its tenant when the tenant's queued input bytes reach
   * `maxQueuedBytesPerTenant` or its queued plus undelivered bytes reach
   * `maxUndeliveredBytesPerTenant` (queued items become undelivered results, so counting them
   * keeps undelivered bytes near the budget whatever finishes next).
   */
  checkFlow(owner: string): void {
    const c = this.store.counts(owner)
    const load = c.queued + c.processing + c.undelivered
    const limit = this.options.maxQueuedPerToken
    const tenant = tenantOfOwner(owner)
    if (!this.paused.has(owner)) {
      if (load >= limit) {
        this.paused.add(owner)
        for (const s of this.streamsOf(owner)) s.pause()
      }
    } else if (load <= limit / 2) {
      this.paused.delete(owner)
      if (!this.pausedTenants.has(tenant)) for (const s of this.streamsOf(owner)) s.resume()
    }
    const b = this.store.tenantBytes(tenant)
    const q = this.options.maxQueuedBytesPerTenant
    const u = this.options.maxUndeliveredBytesPerTenant
    if (!this.pausedTenants.has(tenant)) {
      if (b.queued >= q || b.queued + b.undelivered >= u) {
        this.pausedTenants.add(tenant)
        for (const s of this.byTenant.get(tenant) ?? []) s.pause()
      }
    } else if (b.queued <= q / 2 && b.queued + b.undelivered <= u / 2) {
      this.pausedTenants.delete(tenant)
      for (const s of this.byTenant.get(tenant) ?? []) if (!this.paused.has(s.owner as string)) s.resume()
    }
  }

  /** Whether a tenant's sockets are not read for its byte budgets (for tests and metrics). */
  tenantPaused(tenant: string): boolean {
    return this.pausedTenants.has(tenant)
  }

  /**
   * Queues one item whose result goes only to `sink`, once: registers the (fresh) id in its owner,
   * pushes it, and returns a function that drops the sink (the requester went away: the item may
   * still run; its result is then forgotten). If the queue refuses the item the sink gets the error.
   * `origin` and `delivery` of the item are set here.
   */
  submitDirect(item: WorkItem, sink: ResultSink): () => void {
    return this.queueDirect(item, sink, { bytes: jsonBytes(item.inputs) }) as () => void
  }

  /**
   * {@link submitDirect} with the admission's details: `bytes` of the inputs (counted in the
   * tenant's queued bytes until the item finishes) and, for requests that may be refused,
   * `maxQueuedBytes`. Returns `overloaded` (nothing queued, the sink never called) when the
   * store refused the item for the tenant's queued-bytes budget.
   */
  queueDirect(
    item: WorkItem,
    sink: ResultSink,
    admit: { bytes: number; maxQueuedBytes?: number; fingerprint?: string },
  ): (() => void) | Exclude<AdmitResult, 'new'> {
    const admitted = this.store.admit(item.owner, item.id, admit)
    if (admitted !== 'new') return admitted
    const sinkId = this.nextSinkId++
    item.origin = sinkId
    item.delivery = 'direct'
    this.sinks.set(sinkId, sink)
    this.queue.push([item]).catch((err: unknown) => {
      this.store.forget(item.owner, item.id)
      this.answerSink(sinkId, toWireError(err), { failed: true, computeSeconds: 0 })
    })
    return () => {
      this.sinks.delete(sinkId)
    }
  }

  /** Sinks waiting for a result. */
  get waitingSinks(): number {
    return this.sinks.size
  }

  /** Answers every waiting sink with an error (shutdown: what is still queued will not run here). */
  failSinks(body: WireError): void {
    for (const id of [...this.sinks.keys()]) this.answerSink(id, body, { failed: true, computeSeconds: 0 })
  }

  private answerSink(id: number, outputs: unknown, info: ResultInfo): void {
    const sink = this.sinks.get(id)
    if (!sink) return
    this.sinks.delete(id)
    sink(outputs, info)
  }

  /** A worker finished an item: store it, then hand it to a stream if one can take it. */
  onResult(item: WorkItem, outputs: unknown, info: ResultInfo = { failed: false, computeSeconds: 0 }): void {
    const { owner, id } = item
    if (item.delivery === 'direct') {
      if (item.retain) {
        // Kept as delivered under its key: a retry gets it; it never waits for a stream.
        const done = this.store.complete(owner, id, outputsJson(outputs), { delivered: true })
        if (done.lost > 0) this.metrics.lost.inc(done.lost)
      } else this.store.forget(owner, id)
      if (item.origin !== undefined) this.answerSink(item.origin, outputs, info)
      return
    }
    const json = outputsJson(outputs)
    const done = this.store.complete(owner, id, json)
    if (done.lost > 0) this.metrics.lost.inc(done.lost)
    let conn = item.origin === undefined ? undefined : this.byId.get(item.origin)
    if (!conn || !conn.canTake()) conn = this.pick(owner)
    if (!conn) return
    if (!this.store.claim(owner, id)) return
    if (done.oversize) {
      // Not retained (over the whole retained budget alone): written once, untracked; the store
      // keeps an error body for the id, which a resend or resume gets.
      this.store.acknowledge(owner, [id])
      conn.sendResultJson(id, json, false)
    } else conn.sendResultJson(id, json, true)
  }

  /** Hands waiting results of an owner to its open streams, while they can take them. */
  flush(owner: string): void {
    for (;;) {
      const conn = this.pick(owner)
      if (!conn) break
      const batch = this.store.takeUndelivered(owner, FLUSH_CHUNK)
      if (batch.length === 0) break
      for (const [id, outputs] of batch) conn.sendResultJson(id, outputs, true)
      if (batch.length < FLUSH_CHUNK) break
    }
    this.checkFlow(owner)
  }

  /** A stream's socket made progress on writing: give it more if results wait. */
  onDrain(conn: StreamConnection): void {
    const owner = conn.owner
    if (owner === undefined) return
    if (conn.canTake() && this.store.hasUndelivered(owner)) this.flush(owner)
    // Written legacy results were acknowledged: the tenant may be under its budgets again.
    else if (this.pausedTenants.size > 0) this.checkFlow(owner)
  }
}

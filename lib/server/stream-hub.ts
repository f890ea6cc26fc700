import type { Logger } from 'pino'
import { toWireError, type InferenceStreamError } from '../errors.js'
import type { Compute, Pipeline } from '../models/pipeline.js'
import type { ServerMetrics } from './metrics.js'
import type { ResolvedServerOptions } from './options.js'
import type { Routed, StateBackend, SubmitItem, SubmitOutcome } from './state/state-backend.js'
import { tenantOfOwner } from './store/result-store.js'
import type { StreamConnection } from './stream-connection.js'
import type { Tenant } from './tenants.js'

// Results handed to streams per flush round; small enough to interleave with other work.
const FLUSH_CHUNK = 256

// Bytes of inputs as JSON, for the queued-bytes accounting of items that come without a frame.
export function jsonBytes(inputs: unknown): number {
  if (typeof inputs === 'string') return inputs.length + 2
  try {
    return JSON.stringify(inputs)?.length ?? 0
  } catch {
    return 0
  }
}

/** How an item's result came about, for those that answer with more than the outputs (HTTP headers). */
export interface ResultInfo {
  /** The outputs are an `{"error", "code"}` body. */
  failed: boolean
  /** Seconds the model took for the whole batch the item was in; 0 when no model ran. */
  computeSeconds: number
}

/** Receives the result of one sink-routed item (a waiting classic HTTP request, a job's row): its outputs as JSON text. */
export type ResultSink = (outputs: string, info: ResultInfo) => void

/** An item for {@link StreamHub.submitDirect}: a submit item without its route (the hub sets it). */
export type DirectItem = Omit<SubmitItem, 'route' | 'bytes'> & { bytes?: number }

/**
 * This node's side of the state layer: the open streams of every owner (tenant and model) on this
 * node, the routing of results the state backend sends this node (to the owner's streams, or to a
 * local sink: a waiting HTTP request, a job), and flow control. Every item goes through the
 * backend's `submit`; results come back through its `subscribe`, so the same code serves a result
 * that a worker in another process finished.
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
  private readonly sinks = new Map<string, ResultSink>()
  // The stream (connection id) that sent each queued item of this node: its result goes there first.
  private readonly origins = new Map<string, number>()
  // Owners that may have undelivered results in the store (routed here, returned, or not known):
  // a drained socket asks the store only for these.
  private readonly waiting = new Set<string>()
  // Flushes and flow checks run one at a time per owner; a request during one runs again after it.
  private readonly flushing = new Map<string, boolean>()
  private readonly checking = new Map<string, boolean>()
  private nextSinkId = 1
  private readonly unsubscribe: () => void
  closing = false

  constructor(
    readonly options: ResolvedServerOptions,
    readonly state: StateBackend,
    /** This node's name in routes. */
    readonly node: string,
    readonly metrics: ServerMetrics,
    readonly logger: Logger | undefined,
    /** The tenant of a bearer token, or undefined when it is refused (then logged with `remote` and `route`). */
    readonly authenticate: (token: string, remote: string | undefined, route: string) => Tenant | undefined,
    /** The pipeline serving `model` on `compute`, or why there is none (the error the client sees). */
    readonly pipelineFor: (model: string, compute: Compute) => Pipeline | InferenceStreamError,
  ) {
    this.unsubscribe = state.subscribe(node, (routed) => this.onRouted(routed))
  }

  /** Stops receiving results (shutdown). */
  detach(): void {
    this.unsubscribe()
  }

  /** Open streams of a tenant (any model). */
  streamCount(tenant: string): number {
    return this.byTenant.get(tenant)?.size ?? 0
  }

  /** Owners with an open stream on this node. */
  owners(): Iterable<string> {
    return this.streams.keys()
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
    // Results may wait from before (another stream, another node, a restart).
    this.waiting.add(owner)
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
    const unacked = [...conn.unacked]
    conn.unacked.clear()
    if (unacked.length > 0) this.returnUndelivered(owner, unacked)
    else this.flush(owner)
  }

  /** Results that could not be written go back to the store (undelivered), then on to another stream. */
  returnUndelivered(owner: string, ids: string[]): void {
    this.waiting.add(owner)
    this.state.returnUndelivered(owner, ids).then(
      () => this.flush(owner),
      (err: unknown) => this.logger?.error({ err }, 'returning results to the store failed'),
    )
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

  /** Submits a stream's items (routed back to this node's streams of the owner), then applies flow control. */
  async submitStream(conn: StreamConnection, items: SubmitItem[]): Promise<SubmitOutcome[]> {
    const owner = conn.owner as string
    try {
      const outcomes = await this.state.submit(items)
      for (let i = 0; i < items.length; i++) if (outcomes[i].status === 'queued') this.origins.set(`${owner}\n${items[i].id}`, conn.id)
      return outcomes
    } finally {
      this.checkFlow(owner)
    }
  }

  /**
   * Flow control, with hysteresis (paused at a bound, read again at half of it): stops reading the
   * owner's sockets when it has too many items queued or undelivered (`maxQueuedPerToken`), and
   * every socket of its tenant when the tenant's queued input bytes reach
   * `maxQueuedBytesPerTenant` or its queued plus undelivered bytes reach
   * `maxUndeliveredBytesPerTenant` (queued items become undelivered results, so counting them
   * keeps undelivered bytes near the budget whatever finishes next). One check per owner at a time.
   */
  checkFlow(owner: string): void {
    if (this.checking.has(owner)) {
      this.checking.set(owner, true)
      return
    }
    // One check per owner per turn of the event loop, however many frames asked for it.
    this.checking.set(owner, false)
    setImmediate(() => this.startCheckFlow(owner))
  }

  private startCheckFlow(owner: string): void {
    this.runCheckFlow(owner)
      .catch((err: unknown) => this.logger?.error({ err }, 'flow control failed'))
      .finally(() => {
        const again = this.checking.get(owner)
        this.checking.delete(owner)
        if (again) this.checkFlow(owner)
      })
  }

  /** The flow check now, awaited (a stream's reader: no more frames of it are handled before it). */
  checkFlowNow(owner: string): Promise<void> {
    return this.runCheckFlow(owner)
  }

  private async runCheckFlow(owner: string): Promise<void> {
    const tenant = tenantOfOwner(owner)
    const [c, b] = await Promise.all([this.state.counts(owner), this.state.tenantBytes(tenant)])
    const load = c.queued + c.processing + c.undelivered
    const limit = this.options.maxQueuedPerToken
    if (!this.paused.has(owner)) {
      if (load >= limit) {
        this.paused.add(owner)
        for (const s of this.streamsOf(owner)) s.pause()
      }
    } else if (load <= limit / 2) {
      this.paused.delete(owner)
      if (!this.pausedTenants.has(tenant)) for (const s of this.streamsOf(owner)) s.resume()
    }
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
   * Submits one item whose result goes only to `sink`, once, on this node: returns a function that
   * drops the sink (the requester went away: the item may still run; its result is then
   * forgotten) at once; the sink gets the error if the backend refuses the item, or `onRefused`
   * (when given) gets the outcome other than `queued` (a duplicate, a conflict, over budget).
   */
  submitDirect(item: DirectItem, sink: ResultSink, admit: { maxQueuedBytes?: number; onRefused?: (outcome: Exclude<SubmitOutcome, { status: 'queued' }>) => void } = {}): () => void {
    const sinkId = `s${this.nextSinkId++}`
    this.sinks.set(sinkId, sink)
    const full: SubmitItem = { ...item, bytes: item.bytes ?? jsonBytes(item.inputs), route: { node: this.node, sink: sinkId } }
    this.state.submit([full], { maxQueuedBytes: admit.maxQueuedBytes }).then(
      ([outcome]) => {
        if (outcome.status === 'queued') return
        this.sinks.delete(sinkId)
        if (admit.onRefused) admit.onRefused(outcome)
        else if (outcome.status === 'done') sink(outcome.outputs, { failed: isErrorJson(outcome.outputs), computeSeconds: 0 })
      },
      (err: unknown) => this.answerSink(sinkId, JSON.stringify(toWireError(err)), { failed: true, computeSeconds: 0 }),
    )
    return () => {
      this.sinks.delete(sinkId)
    }
  }

  /** Sinks waiting for a result. */
  get waitingSinks(): number {
    return this.sinks.size
  }

  /** Answers every waiting sink with an error (shutdown: what is still queued will not run here). */
  failSinks(body: unknown): void {
    const json = JSON.stringify(body)
    for (const id of [...this.sinks.keys()]) this.answerSink(id, json, { failed: true, computeSeconds: 0 })
  }

  private answerSink(id: string, outputs: string, info: ResultInfo): void {
    const sink = this.sinks.get(id)
    if (!sink) return
    this.sinks.delete(id)
    sink(outputs, info)
  }

  // Results the backend routed to this node: sinks get theirs; owners with stream results are flushed.
  private onRouted(routed: Routed[]): void {
    const owners = new Set<string>()
    for (const r of routed) {
      if (r.sink !== undefined) {
        this.answerSink(r.sink, r.outputs ?? 'null', { failed: r.failed ?? false, computeSeconds: r.computeSeconds ?? 0 })
        continue
      }
      if (r.oversize && r.outputs !== undefined) {
        // Over the whole retained budget alone: written once, untracked, by a stream that can take
        // it now; the store keeps an error body for the id, which a resend or resume gets.
        const conn = this.pick(r.owner)
        if (conn) {
          conn.sendResultJson(r.id, r.outputs, false)
          void this.state.claim(r.owner, r.id).then(async (claimed) => {
            if (claimed !== undefined) await this.state.acknowledge(r.owner, [r.id])
          })
          continue
        }
      }
      owners.add(r.owner)
    }
    for (const owner of owners) {
      this.waiting.add(owner)
      this.flush(owner)
    }
  }

  /** Hands waiting results of an owner to its open streams, while they can take them; one flush per owner at a time. */
  flush(owner: string): void {
    if (this.flushing.has(owner)) {
      this.flushing.set(owner, true)
      return
    }
    this.flushing.set(owner, false)
    this.runFlush(owner)
      .catch((err: unknown) => this.logger?.error({ err }, 'handing results to streams failed'))
      .finally(() => {
        const again = this.flushing.get(owner)
        this.flushing.delete(owner)
        if (again) this.flush(owner)
        else this.checkFlow(owner)
      })
  }

  private async runFlush(owner: string): Promise<void> {
    for (;;) {
      if (!this.waiting.has(owner) || !this.pick(owner)) return
      // Cleared before asking: a result routed meanwhile sets it again (and flushes again).
      this.waiting.delete(owner)
      const batch = await this.state.takeUndelivered(owner, FLUSH_CHUNK)
      if (batch.length === FLUSH_CHUNK) this.waiting.add(owner)
      if (batch.length === 0) return
      let i = 0
      for (; i < batch.length; i++) {
        const [id, outputs] = batch[i]
        // The stream that sent the item first, while it can take it; else any stream of the owner.
        const key = `${owner}\n${id}`
        const from = this.origins.get(key)
        let conn = from === undefined ? undefined : this.byId.get(from)
        if (!conn || !conn.canTake()) conn = this.pick(owner)
        if (!conn) break
        if (from !== undefined) this.origins.delete(key)
        conn.sendResultJson(id, outputs, true)
      }
      if (i < batch.length) {
        this.waiting.add(owner)
        await this.state.returnUndelivered(owner, batch.slice(i).map(([id]) => id))
        return
      }
      if (batch.length < FLUSH_CHUNK) return
    }
  }

  /** A stream's socket made progress on writing: give it more if results wait. */
  onDrain(conn: StreamConnection): void {
    const owner = conn.owner
    if (owner === undefined) return
    if (conn.canTake() && this.waiting.has(owner)) this.flush(owner)
    // Written legacy results were acknowledged: the tenant may be under its budgets again.
    else if (this.pausedTenants.size > 0) this.checkFlow(owner)
  }
}

function isErrorJson(outputs: string): boolean {
  if (!outputs.startsWith('{"error"')) return false
  try {
    const v = JSON.parse(outputs) as { error?: unknown; code?: unknown }
    return typeof v.error === 'string' && typeof v.code === 'string'
  } catch {
    return false
  }
}

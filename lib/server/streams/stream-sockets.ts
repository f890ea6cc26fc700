import type { Logger } from 'pino'
import type { ServerMetrics } from '../metrics.js'
import type { ResolvedServerOptions } from '../options.js'
import type { StateBackend } from '../state/state-backend.js'
import { tenantOfOwner } from '../store/result-store.js'
import type { StreamSession } from './stream-session.js'

/**
 * This node's authenticated streams, by owner (tenant and model), by tenant and by connection id,
 * and their flow control: which sockets are read. Holds no results (the state backend does) and
 * routes none (the result router picks a stream here).
 */
export class StreamSockets {
  private readonly byOwner = new Map<string, Set<StreamSession>>()
  private readonly byTenant = new Map<string, Set<StreamSession>>()
  private readonly byId = new Map<number, StreamSession>()
  // Round-robin cursor per owner, so several streams share results.
  private readonly cursor = new Map<string, number>()
  // Owners over the item-count bound, tenants over a byte budget: a stream is read only when
  // neither its owner nor its tenant is paused.
  private readonly paused = new Set<string>()
  private readonly pausedTenants = new Set<string>()
  // Flow checks run one at a time per owner; a request during one runs again after it.
  private readonly checking = new Map<string, boolean>()

  constructor(
    private readonly options: ResolvedServerOptions,
    private readonly state: StateBackend,
    private readonly metrics: ServerMetrics,
    private readonly logger: Logger | undefined,
  ) {}

  /** Adds an authenticated stream (paused at once when its owner or tenant is). */
  add(s: StreamSession): void {
    let set = this.byOwner.get(s.owner)
    if (!set) this.byOwner.set(s.owner, (set = new Set()))
    set.add(s)
    let ts = this.byTenant.get(s.tenant.id)
    if (!ts) this.byTenant.set(s.tenant.id, (ts = new Set()))
    ts.add(s)
    this.byId.set(s.id, s)
    this.metrics.connections.inc()
    if (this.paused.has(s.owner) || this.pausedTenants.has(s.tenant.id)) s.pause()
  }

  /** Removes a stream; false when it was not here. */
  delete(s: StreamSession): boolean {
    if (!this.byId.delete(s.id)) return false
    this.metrics.connections.dec()
    const set = this.byOwner.get(s.owner)
    set?.delete(s)
    if (set && set.size === 0) {
      this.byOwner.delete(s.owner)
      this.cursor.delete(s.owner)
    }
    const ts = this.byTenant.get(s.tenant.id)
    ts?.delete(s)
    if (ts && ts.size === 0) this.byTenant.delete(s.tenant.id)
    return true
  }

  /** A stream by its connection id, while it is open here. */
  get(id: number): StreamSession | undefined {
    return this.byId.get(id)
  }

  /** Open streams of a tenant (any model). */
  countOf(tenant: string): number {
    return this.byTenant.get(tenant)?.size ?? 0
  }

  /** Owners with an open stream here. */
  owners(): Iterable<string> {
    return this.byOwner.keys()
  }

  /** Whether an owner has an open stream here. */
  has(owner: string): boolean {
    return this.byOwner.has(owner)
  }

  /** Open streams of an owner. */
  of(owner: string): Iterable<StreamSession> {
    return this.byOwner.get(owner) ?? []
  }

  /** All open streams. */
  all(): Iterable<StreamSession> {
    return this.byId.values()
  }

  /** A stream of `owner` that can take a result now, taking turns among several; undefined when none can. */
  pick(owner: string): StreamSession | undefined {
    const set = this.byOwner.get(owner)
    if (!set) return undefined
    if (set.size === 1) {
      const only = set.values().next().value as StreamSession
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

  /** Whether a tenant's sockets are not read for its byte budgets (for tests and metrics). */
  tenantPaused(tenant: string): boolean {
    return this.pausedTenants.has(tenant)
  }

  /** Whether some tenant is paused for its byte budgets (then written results may lift it). */
  get anyTenantPaused(): boolean {
    return this.pausedTenants.size > 0
  }

  /**
   * Flow control, with hysteresis (paused at a bound, read again at half of it): stops reading the
   * owner's sockets when it has too many items queued or undelivered (`maxQueuedPerToken`), and
   * every socket of its tenant when the tenant's queued input bytes reach
   * `maxQueuedBytesPerTenant` or its queued plus undelivered bytes reach
   * `maxUndeliveredBytesPerTenant` (queued items become undelivered results, so counting them
   * keeps undelivered bytes near the budget whatever finishes next). One check per owner per turn
   * of the event loop, however many frames asked for it.
   */
  checkFlow(owner: string): void {
    if (this.checking.has(owner)) {
      this.checking.set(owner, true)
      return
    }
    this.checking.set(owner, false)
    setImmediate(() => {
      this.checkFlowNow(owner)
        .catch((err: unknown) => this.logger?.error({ err }, 'flow control failed'))
        .finally(() => {
          const again = this.checking.get(owner)
          this.checking.delete(owner)
          if (again) this.checkFlow(owner)
        })
    })
  }

  /** The flow check now, awaited (a stream's reader: no more frames of it are handled before it). */
  async checkFlowNow(owner: string): Promise<void> {
    const tenant = tenantOfOwner(owner)
    const [c, b] = await Promise.all([this.state.counts(owner), this.state.tenantBytes(tenant)])
    const load = c.queued + c.processing + c.undelivered
    const limit = this.options.maxQueuedPerToken
    if (!this.paused.has(owner)) {
      if (load >= limit) {
        this.paused.add(owner)
        for (const s of this.of(owner)) s.pause()
      }
    } else if (load <= limit / 2) {
      this.paused.delete(owner)
      if (!this.pausedTenants.has(tenant)) for (const s of this.of(owner)) s.resume()
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
      for (const s of this.byTenant.get(tenant) ?? []) if (!this.paused.has(s.owner)) s.resume()
    }
  }
}

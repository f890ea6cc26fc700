import { ShuttingDownError } from '../../errors.js'
import { FairShare } from './fair-share.js'
import { type Batching, inputLength, lengthRun, lengthWindow, uniformLengths } from './length-batching.js'
import type { Lease, PullOptions, QueueStats, WorkItem, WorkQueue } from './work-queue.js'

/** FIFO with O(1) shift and unshift (a plain array's shift is O(n) on long queues). */
class Deque<T> {
  private buf: (T | undefined)[] = new Array(16)
  private head = 0
  length = 0

  private grow(): void {
    const next: (T | undefined)[] = new Array(this.buf.length * 2)
    for (let i = 0; i < this.length; i++) next[i] = this.buf[(this.head + i) % this.buf.length]
    this.buf = next
    this.head = 0
  }

  push(v: T): void {
    if (this.length === this.buf.length) this.grow()
    this.buf[(this.head + this.length) % this.buf.length] = v
    this.length++
  }

  unshift(v: T): void {
    if (this.length === this.buf.length) this.grow()
    this.head = (this.head - 1 + this.buf.length) % this.buf.length
    this.buf[this.head] = v
    this.length++
  }

  shift(): T | undefined {
    if (this.length === 0) return undefined
    const v = this.buf[this.head]
    this.buf[this.head] = undefined
    this.head = (this.head + 1) % this.buf.length
    this.length--
    return v
  }

  peek(): T | undefined {
    return this.length === 0 ? undefined : this.buf[this.head]
  }

  /** The `i`-th value from the front (`0 ≤ i < length`). */
  at(i: number): T {
    return this.buf[(this.head + i) % this.buf.length] as T
  }

  /**
   * Removes the values at `indices` (ascending, from the front) and returns them, in that order;
   * the others keep their order. O(last index).
   */
  removeAt(indices: readonly number[]): T[] {
    const out = indices.map((i) => this.at(i))
    if (indices.length === 0) return out
    const cap = this.buf.length
    // Kept values before the last removed one move back over the holes, from the back.
    let write = indices[indices.length - 1]
    let k = indices.length - 1
    for (let read = write; read >= 0; read--) {
      if (k >= 0 && indices[k] === read) {
        k--
        continue
      }
      this.buf[(this.head + write) % cap] = this.buf[(this.head + read) % cap]
      write--
    }
    for (let i = 0; i < indices.length; i++) this.buf[(this.head + i) % cap] = undefined
    this.head = (this.head + indices.length) % cap
    this.length -= indices.length
    return out
  }
}

/**
 * One tenant's items of one group, with the shortest and longest `inputLength` pushed since it was made
 * (a deque is dropped when it empties): while they are alike, length-aware batching knows without
 * a scan that order is as good as sorting.
 */
class ItemDeque extends Deque<WorkItem> {
  minLength = Infinity
  maxLength = 0
}

/** How a queue measures an item for length-aware batching: its model's tokens, or characters. */
export type ItemLength = (item: WorkItem) => number

/** Characters (`inputLength`): the measure of a queue given none. */
const charLength: ItemLength = (item) => inputLength(item.inputs)

/** Options of a {@link MemoryWorkQueue}. */
export interface MemoryWorkQueueOptions {
  /**
   * An item's length for length-aware batching, in one unit per group (e.g. its model's tokens:
   * `Pipeline.inputLength`). Computed once per item, when it is pushed. Default: characters.
   */
  readonly inputLength?: ItemLength
}

/** Tenants kept in the round before idle ones are swept (see `maybeForget`). */
const IDLE_SWEEP = 1024

/** One tenant's queued items, per group, and the batches it holds. */
interface TenantState {
  /** Group → the tenant's items of it, in send order. */
  readonly groups: Map<string, ItemDeque>
  queued: number
  /** Leases chosen for this tenant and not yet acked or released. */
  leases: number
}

/**
 * In-process work queue (the embedded default). Items wait per tenant and group; a pull applies
 * the fair-share rule of ./fair-share.ts: tenants with ready work take turns (least recently served
 * first, none above `maxLeasesPerTenant` batches), the chosen tenant's oldest ready group is taken,
 * and the batch is topped up with other tenants' items of that group. With `batching: 'fifo'` a
 * tenant's send order is kept within a group; with `'length'` a batch holds the tenant's first in
 * line and items of similar length from the next few batches' worth (`takeByLength`). Nothing
 * survives the process: durability is the SQLite and Redis backends' job.
 */
export class MemoryWorkQueue implements WorkQueue {
  private readonly tenants = new Map<string, TenantState>()
  /** Group → tenant → that tenant's items of the group (the same deques as in `tenants`). */
  private readonly groups = new Map<string, Map<string, ItemDeque>>()
  /** Group → items queued in it, all tenants. */
  private readonly groupSize = new Map<string, number>()
  private readonly leases = new Map<number, Lease>()
  private readonly fair = new FairShare()
  private queued = 0
  private processing = 0
  private nextLease = 1
  private closed = false
  // Pulls waiting for a push, an ack or a notify; each wakes, re-checks, and waits again if nothing fits.
  private waiters = new Set<() => void>()
  private readonly measure: ItemLength

  constructor(options: MemoryWorkQueueOptions = {}) {
    this.measure = options.inputLength ?? charLength
  }

  /** An item's length (see {@link MemoryWorkQueueOptions.inputLength}), cached on the item. */
  private lengthOf(item: WorkItem): number {
    return (item.lengthHint ??= this.measure(item))
  }

  async push(items: WorkItem[]): Promise<void> {
    if (this.closed) throw new ShuttingDownError('Work queue is closed')
    for (const item of items) this.deque(item).push(item)
    this.queued += items.length
    this.wake()
  }

  /** The deque of `item`'s tenant and group, made on need; counts the item in. */
  private deque(item: WorkItem): ItemDeque {
    let tenant = this.tenants.get(item.tenant)
    if (!tenant) {
      tenant = { groups: new Map(), queued: 0, leases: 0 }
      this.tenants.set(item.tenant, tenant)
      this.fair.arrived(item.tenant)
    }
    let d = tenant.groups.get(item.group)
    if (!d) {
      d = new ItemDeque()
      tenant.groups.set(item.group, d)
      let byTenant = this.groups.get(item.group)
      if (!byTenant) {
        byTenant = new Map()
        this.groups.set(item.group, byTenant)
      }
      byTenant.set(item.tenant, d)
    }
    const len = this.lengthOf(item)
    if (len < d.minLength) d.minLength = len
    if (len > d.maxLength) d.maxLength = len
    tenant.queued++
    this.groupSize.set(item.group, (this.groupSize.get(item.group) ?? 0) + 1)
    return d
  }

  /** Pending pulls look again: a group they skipped may be served now. */
  notify(): void {
    this.wake()
  }

  private wake(): void {
    if (this.waiters.size === 0) return
    const ws = this.waiters
    this.waiters = new Set()
    for (const w of ws) w()
  }

  /** `enqueuedAt` of the oldest item of `group`, any tenant. */
  private groupHeadAt(group: string): number {
    let at = Infinity
    for (const d of this.groups.get(group)?.values() ?? []) at = Math.min(at, (d.peek() as WorkItem).enqueuedAt)
    return at
  }

  /**
   * One look: the lease to hand out now, or how long until a group becomes ready (`Infinity`:
   * nothing will be ready without a push, an ack or a notify).
   */
  private look({ maxBatch, maxWaitMs, accept, maxLeasesPerTenant = Infinity, alone, batching }: PullOptions): Lease | number {
    const now = Date.now()
    let waitMs = Infinity
    // Groups `accept` refused in this look; asked again after the next wake.
    const refused = new Set<string>()
    // Groups known not to be ready in this look.
    const filling = new Set<string>()
    for (const name of this.fair.order(this.tenants.keys())) {
      const tenant = this.tenants.get(name) as TenantState
      if (tenant.queued === 0 || tenant.leases >= maxLeasesPerTenant) continue
      for (;;) {
        // The tenant's oldest ready group not refused yet.
        let best: string | undefined
        let bestAt = Infinity
        for (const [group, d] of tenant.groups) {
          const at = (d.peek() as WorkItem).enqueuedAt
          if (at >= bestAt || refused.has(group) || filling.has(group)) continue
          const age = now - this.groupHeadAt(group)
          if ((this.groupSize.get(group) as number) < maxBatch && age < maxWaitMs) {
            filling.add(group)
            waitMs = Math.min(waitMs, maxWaitMs - age)
            continue
          }
          best = group
          bestAt = at
        }
        if (best === undefined) break
        const d = tenant.groups.get(best) as ItemDeque
        if (accept && !accept(d.peek() as WorkItem)) {
          refused.add(best)
          continue
        }
        return this.take(name, best, maxBatch, alone, batching)
      }
    }
    return waitMs
  }

  /**
   * Takes a batch of `group` for `tenant`: its items first, then other tenants' (oldest first, or
   * by length: see `takeByLength`). An item `alone` is a batch of its own when it comes first, else
   * it is left for the next batch.
   */
  private take(tenant: string, group: string, maxBatch: number, alone?: (item: WorkItem) => boolean, batching: Batching = 'fifo'): Lease {
    const byTenant = this.groups.get(group) as Map<string, ItemDeque>
    const own = byTenant.get(tenant) as ItemDeque
    const max = alone?.(own.peek() as WorkItem) ? 1 : maxBatch
    if (batching === 'length' && max > 1) {
      const picked = this.takeByLength(byTenant, own, max, alone)
      if (picked) return this.leaseOf(tenant, picked)
    }
    const items: WorkItem[] = []
    while (items.length < max && own.length > 0 && !(items.length > 0 && alone?.(own.peek() as WorkItem))) items.push(own.shift() as WorkItem)
    while (items.length < max) {
      let from: ItemDeque | undefined
      let fromAt = Infinity
      for (const d of byTenant.values()) {
        const h = d.peek()
        if (h && h.enqueuedAt < fromAt && !alone?.(h)) {
          from = d
          fromAt = h.enqueuedAt
        }
      }
      if (!from) break
      items.push(from.shift() as WorkItem)
    }
    return this.leaseOf(tenant, items)
  }

  /**
   * The length-aware batch (PullOptions.batching `'length'`), or undefined when the lengths in view
   * are all alike (then FIFO takes the same batch without sorting). The tenant's own items come
   * first, as in FIFO: of its next `max × LENGTH_WINDOW_BATCHES` items (those to run alone left in
   * place), its first in line and the `max − 1` nearest its length; with fewer than `max` of its own,
   * all of them, and the other tenants' items (the window's oldest) that pad the batch least.
   * Taken items leave their deques; the others keep their order.
   */
  private takeByLength(byTenant: Map<string, ItemDeque>, own: ItemDeque, max: number, alone?: (item: WorkItem) => boolean): WorkItem[] | undefined {
    const window = lengthWindow(max)
    const n = Math.min(own.length, window)
    // Nothing to choose (all of the tenant's items fit and nobody else's are queued), or lengths
    // all alike, in O(1) from the deques' ranges: FIFO takes the same batch without sorting.
    if (n <= max && byTenant.size === 1) return undefined
    let min = own.minLength
    let longest = own.maxLength
    if (n <= max) {
      for (const d of byTenant.values()) {
        if (d.minLength < min) min = d.minLength
        if (d.maxLength > longest) longest = d.maxLength
      }
    }
    if (uniformLengths(min, longest)) return undefined
    const at: number[] = []
    const lengths: number[] = []
    for (let i = 0; i < n; i++) {
      const it = own.at(i)
      if (i > 0 && alone?.(it)) continue
      at.push(i)
      lengths.push(this.lengthOf(it))
    }
    if (at.length >= max) {
      const run = lengthRun(lengths, max, 0)
      return own.removeAt(run.map((k) => at[k]))
    }
    // Fewer than `max` of its own: all of them, then riders that pad least.
    const items = own.removeAt(at)
    let sum = 0
    let mx = 0
    for (const it of items) {
      const len = this.lengthOf(it)
      sum += len
      if (len > mx) mx = len
    }
    // The other tenants' next items, oldest first (a deque stops at an item to run alone, as in FIFO).
    const cursors: Array<{ d: ItemDeque; i: number; picked: number[] }> = []
    for (const d of byTenant.values()) if (d !== own && d.length > 0) cursors.push({ d, i: 0, picked: [] })
    const cands: Array<{ c: (typeof cursors)[number]; i: number }> = []
    const candLengths: number[] = []
    while (cands.length < window) {
      let best: (typeof cursors)[number] | undefined
      let bestAt = Infinity
      for (const c of cursors) {
        if (c.i >= c.d.length) continue
        const it = c.d.at(c.i)
        if (it.enqueuedAt < bestAt && !alone?.(it)) {
          best = c
          bestAt = it.enqueuedAt
        }
      }
      if (!best) break
      cands.push({ c: best, i: best.i })
      candLengths.push(this.lengthOf(best.d.at(best.i)))
      best.i++
    }
    const riders = lengthRun(candLengths, max - items.length, -1, { count: items.length, sum, max: mx })
    for (const k of riders) cands[k].c.picked.push(cands[k].i)
    // Riders in the order of the window (oldest first); each deque's in its own order.
    const taken = new Map<ItemDeque, WorkItem[]>()
    for (const c of cursors) if (c.picked.length > 0) taken.set(c.d, c.d.removeAt(c.picked.sort((a, b) => a - b)))
    const next = new Map<ItemDeque, number>()
    for (const k of riders) {
      const d = cands[k].c.d
      const j = next.get(d) ?? 0
      items.push((taken.get(d) as WorkItem[])[j])
      next.set(d, j + 1)
    }
    return items
  }

  /** Counts `items` (taken from the queue) as a lease of `tenant`. */
  private leaseOf(tenant: string, items: WorkItem[]): Lease {
    // The chosen tenant goes to the back of the round. Riders keep their place: riding costs
    // nobody a worker, so it is not a turn.
    this.fair.served(tenant)
    for (const item of items) this.untrack(item)
    this.queued -= items.length
    this.processing += items.length
    const lease: Lease = { id: this.nextLease++, items, tenant }
    ;(this.tenants.get(tenant) as TenantState).leases++
    this.leases.set(lease.id, lease)
    return lease
  }

  /** Counts a taken item out, dropping deques and maps that emptied. */
  private untrack(item: WorkItem): void {
    const tenant = this.tenants.get(item.tenant) as TenantState
    tenant.queued--
    const d = tenant.groups.get(item.group)
    if (d && d.length === 0) {
      tenant.groups.delete(item.group)
      const byTenant = this.groups.get(item.group) as Map<string, ItemDeque>
      byTenant.delete(item.tenant)
      if (byTenant.size === 0) this.groups.delete(item.group)
    }
    const left = (this.groupSize.get(item.group) as number) - 1
    if (left === 0) this.groupSize.delete(item.group)
    else this.groupSize.set(item.group, left)
  }

  /**
   * Drops a tenant with nothing queued and nothing running, when its last lease ends. A tenant
   * emptied by riding along in others' batches keeps its place in the round (a re-arrival would
   * join at the back, and riding is not a turn) until a sweep, once idle tenants outnumber
   * {@link IDLE_SWEEP}: memory stays bounded by live tenants.
   */
  private maybeForget(name: string): void {
    const tenant = this.tenants.get(name)
    if (tenant && tenant.queued === 0 && tenant.leases === 0) {
      this.tenants.delete(name)
      this.fair.forget(name)
    }
    if (this.tenants.size > IDLE_SWEEP) {
      for (const [other, state] of this.tenants) {
        if (state.queued === 0 && state.leases === 0) {
          this.tenants.delete(other)
          this.fair.forget(other)
        }
      }
    }
  }

  async pull(options: PullOptions): Promise<Lease | null> {
    const { signal } = options
    for (;;) {
      if (this.closed || signal?.aborted) return null
      const found = this.look(options)
      if (typeof found !== 'number') return found
      await new Promise<void>((resolve) => {
        let timer: NodeJS.Timeout | undefined
        const done = (): void => {
          if (timer) clearTimeout(timer)
          signal?.removeEventListener('abort', done)
          this.waiters.delete(done)
          resolve()
        }
        this.waiters.add(done)
        signal?.addEventListener('abort', done, { once: true })
        if (found !== Infinity) timer = setTimeout(done, Math.max(0, found))
      })
    }
  }

  /**
   * Registers a batch leased before this queue existed (a durable backend reopening its file finds
   * leases it must honour until they end or expire): its items count as processing and `tenant`
   * holds one more lease, as if `pull` had handed it out. End it with `ack`, `release` or `settle`.
   */
  adopt(tenant: string, items: WorkItem[]): Lease {
    if (!this.tenants.has(tenant)) {
      this.tenants.set(tenant, { groups: new Map(), queued: 0, leases: 0 })
      this.fair.arrived(tenant)
    }
    ;(this.tenants.get(tenant) as TenantState).leases++
    this.processing += items.length
    const lease: Lease = { id: this.nextLease++, items, tenant }
    this.leases.set(lease.id, lease)
    return lease
  }

  /** The lease is over: its tenant holds one batch fewer, and a pull it capped may go on. */
  private end(lease: Lease): boolean {
    if (!this.leases.delete(lease.id)) return false
    this.processing -= lease.items.length
    const tenant = this.tenants.get(lease.tenant)
    if (tenant) tenant.leases--
    return true
  }

  async ack(lease: Lease): Promise<void> {
    this.settle(lease, [])
  }

  async release(lease: Lease): Promise<void> {
    this.settle(lease, lease.items)
  }

  /**
   * Ends a lease at once (synchronously): `requeue` (some of its items, in lease order) go back to
   * the front of their tenant's group, the rest are done. False when the lease had ended already.
   */
  settle(lease: Lease, requeue: readonly WorkItem[]): boolean {
    if (!this.end(lease)) return false
    // Back to the front of each tenant's group, in their original order.
    for (let i = requeue.length - 1; i >= 0; i--) {
      const item = requeue[i]
      this.deque(item).unshift(item)
    }
    this.queued += requeue.length
    this.maybeForget(lease.tenant)
    this.wake()
    return true
  }

  stats(): QueueStats {
    return { queued: this.queued, processing: this.processing }
  }

  async close(): Promise<void> {
    this.closed = true
    this.wake()
  }
}

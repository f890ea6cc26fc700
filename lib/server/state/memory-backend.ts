import { DeliveryLimitError, ShuttingDownError, toWireError } from '../../errors.js'
import { MemoryWorkQueue, type MemoryWorkQueueOptions } from '../queue/memory-queue.js'
import type { Lease, WorkItem } from '../queue/work-queue.js'
import { MemoryResultStore, type MemoryResultStoreOptions } from '../store/memory-result-store.js'
import type {
  FinishOutcome,
  IdState,
  ItemResult,
  LeasedItem,
  LeaseOptions,
  LedgerEntry,
  OwnerCounts,
  ReclaimOutcome,
  Routed,
  StateBackend,
  StateLease,
  StateStats,
  SubmitItem,
  SubmitOptions,
  SubmitOutcome,
  TenantBytes,
  WorkerInfo,
} from './state-backend.js'
import { LocalWorkers } from './local-workers.js'
import { RouteListeners } from './route-listeners.js'

const QUEUED: SubmitOutcome = Object.freeze({ status: 'queued' })

/** An item as the memory backend keeps it: the queue's work item and the leased item in one object. */
type MemoryItem = WorkItem & LeasedItem & { deliveries: number; suspect?: boolean }

interface Held {
  readonly lease: StateLease
  readonly queueLease: Lease
}

/**
 * The in-process {@link StateBackend} (the embedded default): the memory work queue and result
 * store behind the state seam. Every transition runs synchronously inside one call, so each is
 * atomic in this process; nothing survives it (durability is the SQLite and Redis backends' job).
 */
export class MemoryStateBackend implements StateBackend {
  private readonly queue: MemoryWorkQueue
  private readonly store: MemoryResultStore
  private readonly held = new Map<string, Held>()
  private readonly listeners = new RouteListeners()
  private readonly workers = new LocalWorkers()
  private readonly ledgerByTenant = new Map<string, Map<string, number>>()
  private readonly ledgerByOwner = new Map<string, number>()
  private deadLettered = 0
  private nextLease = 1
  private closed = false

  /** `inputLength`: how the queue measures an item for length-aware batching (default: characters). */
  constructor(options: MemoryResultStoreOptions & MemoryWorkQueueOptions) {
    this.store = new MemoryResultStore(options)
    this.queue = new MemoryWorkQueue({ inputLength: options.inputLength })
  }

  async submit(items: readonly SubmitItem[], options: SubmitOptions = {}): Promise<SubmitOutcome[]> {
    if (this.closed) throw new ShuttingDownError('The server is shutting down')
    const out: SubmitOutcome[] = []
    const queued: MemoryItem[] = []
    const now = Date.now()
    const admit = { fingerprint: undefined as string | undefined, bytes: 0, maxQueuedBytes: options.maxQueuedBytes }
    for (let i = 0; i < items.length; i++) {
      const item = items[i]
      admit.fingerprint = item.fingerprint
      admit.bytes = item.bytes
      const admitted = this.store.admit(item.owner, item.id, admit)
      if (admitted === 'new') {
        // One fixed shape (a literal, not a spread: this is the hot path of every stream).
        queued.push({
          tenant: item.tenant,
          owner: item.owner,
          id: item.id,
          model: item.model,
          compute: item.compute,
          inputs: item.inputs,
          parameters: item.parameters,
          group: item.group,
          fingerprint: item.fingerprint,
          bytes: item.bytes,
          route: item.route,
          retain: item.retain,
          enqueuedAt: now,
          deliveries: 0,
        })
        out.push(QUEUED)
      } else if (admitted === 'done') {
        out.push({ status: 'done', outputs: this.store.lookup(item.owner, item.id).outputs ?? 'null' })
      } else out.push({ status: admitted })
    }
    // Synchronous under the async signature: admitted and queued in the same tick.
    if (queued.length > 0) void this.queue.push(queued)
    return out
  }

  async lease(consumer: string, options: LeaseOptions): Promise<StateLease | null> {
    const { accept } = options
    const queueLease = await this.queue.pull({
      maxBatch: options.maxBatch,
      maxWaitMs: options.maxWaitMs,
      signal: options.signal,
      maxLeasesPerTenant: options.maxLeasesPerTenant,
      batching: options.batching,
      accept: accept ? (head) => accept(head as MemoryItem) : undefined,
      // Its lease ran out before (its worker died or hung): run alone, so a poison item fails by itself.
      alone: (item) => (item as MemoryItem).suspect === true,
    })
    if (!queueLease) return null
    const items = queueLease.items as MemoryItem[]
    for (let i = 0; i < items.length; i++) {
      const item = items[i]
      item.deliveries++
      this.store.markRunning(item.owner, item.id)
    }
    // The queue's own items, not copies: an item goes back to the queue only as a copy (see
    // `requeue`), so a later delivery never changes what this lease holds.
    const lease: StateLease = { id: `m${this.nextLease++}`, consumer, tenant: queueLease.tenant, items: items.slice(), expiresAt: Date.now() + options.leaseMs }
    this.held.set(lease.id, { lease, queueLease })
    return lease
  }

  wake(): void {
    this.queue.notify()
  }

  async extend(lease: StateLease, ms: number): Promise<boolean> {
    const held = this.held.get(lease.id)
    if (!held) return false
    held.lease.expiresAt = lease.expiresAt = Date.now() + ms
    return true
  }

  async finish(lease: StateLease, results: readonly ItemResult[]): Promise<FinishOutcome> {
    const held = this.held.get(lease.id)
    if (!held) return { finished: 0, billed: 0, lost: 0 }
    this.held.delete(lease.id)
    const items = held.queueLease.items as MemoryItem[]
    // The usual finish has one result per item, in order: no map, nothing handed back.
    let inOrder = results.length === items.length
    for (let i = 0; inOrder && i < results.length; i++) inOrder = results[i].index === i
    let finishing: readonly ItemResult[] = results
    if (inOrder) {
      this.queue.settle(held.queueLease, [])
    } else {
      const byIndex = new Map<number, ItemResult>()
      for (const r of results) if (r.index >= 0 && r.index < items.length && !byIndex.has(r.index)) byIndex.set(r.index, r)
      const back: MemoryItem[] = []
      for (let i = 0; i < items.length; i++) {
        if (byIndex.has(i)) continue
        this.store.markQueued(items[i].owner, items[i].id)
        back.push(items[i])
      }
      this.queue.settle(held.queueLease, requeue(back))
      finishing = [...byIndex.values()]
    }
    let lost = 0
    const routed = new Routing()
    const bills = new Bills(this.bill)
    for (let i = 0; i < finishing.length; i++) {
      const r = finishing[i]
      const item = items[r.index]
      lost += this.store_(item, r, routed)
      if (r.billable) bills.add(item)
    }
    bills.flush()
    this.route(routed)
    return { finished: finishing.length, billed: bills.total, lost }
  }

  // Stores one finished item's result and adds it to the routing of its node; returns results lost.
  private store_(item: LeasedItem, r: Pick<ItemResult, 'outputs' | 'failed' | 'computeSeconds'>, routed: Routing): number {
    const { owner, id, route } = item
    const { outputs } = r
    const list = routed.of(route.node)
    if (route.sink === undefined) {
      const done = this.store.complete(owner, id, outputs)
      list.push(done.oversize ? { owner, id, outputs, oversize: true } : { owner, id })
      return done.lost
    }
    list.push({ owner, id, sink: route.sink, outputs, failed: r.failed, computeSeconds: r.computeSeconds })
    if (item.retain) return this.store.complete(owner, id, outputs, { delivered: true }).lost
    this.store.forget(owner, id)
    return 0
  }

  /** Bills `items` items of one (tenant, model, owner). */
  private readonly bill = (tenant: string, model: string, owner: string, items: number): void => {
    let models = this.ledgerByTenant.get(tenant)
    if (!models) this.ledgerByTenant.set(tenant, (models = new Map()))
    models.set(model, (models.get(model) ?? 0) + items)
    this.ledgerByOwner.set(owner, (this.ledgerByOwner.get(owner) ?? 0) + items)
  }

  private route(routed: Routing): void {
    this.listeners.route(routed.byNode)
  }

  async release(lease: StateLease): Promise<void> {
    const held = this.held.get(lease.id)
    if (!held) return
    this.held.delete(lease.id)
    for (const item of held.queueLease.items) this.store.markQueued(item.owner, item.id)
    this.queue.settle(held.queueLease, requeue(held.queueLease.items as MemoryItem[]))
  }

  async reclaim(now: number, maxDeliveries: number): Promise<ReclaimOutcome> {
    let requeued = 0
    let dead = 0
    const routed = new Routing()
    for (const [id, held] of [...this.held]) {
      if (held.lease.expiresAt > now) continue
      this.held.delete(id)
      const items = held.queueLease.items as MemoryItem[]
      const again = items.filter((item) => item.deliveries < maxDeliveries)
      for (const item of again) this.store.markQueued(item.owner, item.id)
      // A worker died or hung on these: each runs alone from now on (PullOptions.alone).
      const back = requeue(again)
      for (const item of back) item.suspect = true
      this.queue.settle(held.queueLease, back)
      requeued += again.length
      for (const item of items) {
        if (item.deliveries < maxDeliveries) continue
        const error = new DeliveryLimitError(`Item ${JSON.stringify(item.id)} was leased ${item.deliveries} times and never finished (a worker died or hung on it each time); it is not run again`)
        this.store_(item, { outputs: JSON.stringify(toWireError(error)), failed: true }, routed)
        dead++
      }
    }
    this.deadLettered += dead
    this.route(routed)
    return { requeued, deadLettered: dead }
  }

  subscribe(node: string, listener: (routed: Routed[]) => void): () => void {
    return this.listeners.subscribe(node, listener)
  }

  async announceWorker(info: WorkerInfo, ttlMs: number): Promise<void> {
    this.workers.announce(info, ttlMs)
  }

  async workersOnline(): Promise<WorkerInfo[]> {
    return this.workers.online()
  }

  async attach(node: string, owner: string, open: boolean): Promise<void> {
    this.listeners.attach(node, owner, open)
  }


  async lookup(owner: string, ids: readonly string[]): Promise<Array<{ state: IdState; outputs?: string }>> {
    return ids.map((id) => this.store.lookup(owner, id))
  }

  async claim(owner: string, id: string): Promise<string | undefined> {
    return this.store.claim(owner, id) ? this.store.lookup(owner, id).outputs : undefined
  }

  async takeUndelivered(owner: string, max: number): Promise<Array<[string, string]>> {
    return this.store.takeUndelivered(owner, max)
  }

  async returnUndelivered(owner: string, ids: readonly string[]): Promise<void> {
    this.store.returnUndelivered(owner, ids)
  }

  async acknowledge(owner: string, ids: readonly string[]): Promise<void> {
    this.store.acknowledge(owner, ids)
  }

  async forget(owner: string, id: string): Promise<void> {
    this.store.forget(owner, id)
  }

  async counts(owner: string): Promise<OwnerCounts> {
    return this.store.counts(owner)
  }

  async tenantBytes(tenant: string): Promise<TenantBytes> {
    const b = this.store.tenantBytes(tenant)
    return { queued: b.queued, undelivered: b.undelivered }
  }

  async stats(): Promise<StateStats> {
    const q = this.queue.stats()
    return { queued: q.queued, processing: q.processing, retainedBytes: this.store.retainedBytes(), deadLettered: this.deadLettered }
  }

  async ledger(tenant?: string): Promise<LedgerEntry[]> {
    const out: LedgerEntry[] = []
    for (const [t, models] of this.ledgerByTenant) {
      if (tenant !== undefined && t !== tenant) continue
      for (const [model, items] of models) out.push({ tenant: t, model, items })
    }
    return out
  }

  async billedTo(owner: string): Promise<number> {
    return this.ledgerByOwner.get(owner) ?? 0
  }

  async sweep(now: number): Promise<number> {
    return this.store.sweep(now)
  }

  async close(): Promise<void> {
    this.closed = true
    await this.queue.close()
  }
}

// Items going back to the queue, as copies: the lease that held them keeps its own objects, so
// the next delivery (which counts in `deliveries`) does not change that lease's view.
function requeue(items: readonly MemoryItem[]): MemoryItem[] {
  return items.map(copy)
}

function copy(i: MemoryItem): MemoryItem {
  return {
    tenant: i.tenant,
    owner: i.owner,
    id: i.id,
    model: i.model,
    compute: i.compute,
    inputs: i.inputs,
    parameters: i.parameters,
    group: i.group,
    fingerprint: i.fingerprint,
    bytes: i.bytes,
    route: i.route,
    retain: i.retain,
    enqueuedAt: i.enqueuedAt,
    deliveries: i.deliveries,
    suspect: i.suspect,
  }
}

/** What one transition routes, per node (finished items of one lease mostly share one node: the last list is kept at hand). */
class Routing {
  readonly byNode = new Map<string, Routed[]>()
  private lastNode: string | undefined
  private lastList: Routed[] = []

  of(node: string): Routed[] {
    if (node === this.lastNode) return this.lastList
    let list = this.byNode.get(node)
    if (!list) this.byNode.set(node, (list = []))
    this.lastNode = node
    this.lastList = list
    return list
  }
}

/** The billing of one finish: runs of items of one (tenant, model, owner) are added to the ledger at once. */
class Bills {
  total = 0
  private tenant = ''
  private model = ''
  private owner = ''
  private run = 0

  constructor(private readonly bill: (tenant: string, model: string, owner: string, items: number) => void) {}

  add(item: LeasedItem): void {
    this.total++
    if (this.run > 0 && item.owner === this.owner && item.tenant === this.tenant && item.model === this.model) {
      this.run++
      return
    }
    this.flush()
    this.tenant = item.tenant
    this.model = item.model
    this.owner = item.owner
    this.run = 1
  }

  flush(): void {
    if (this.run > 0) this.bill(this.tenant, this.model, this.owner, this.run)
    this.run = 0
  }
}

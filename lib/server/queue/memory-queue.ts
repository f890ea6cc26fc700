import { ShuttingDownError } from '../../errors.js'
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
}

/**
 * In-process work queue (the embedded default). Items are grouped by `WorkItem.group`; a pull
 * serves the group whose oldest item has waited longest, so a token's send order is kept within
 * a model and parameters. Nothing survives the process: durability is the Redis queue's job.
 */
export class MemoryWorkQueue implements WorkQueue {
  private readonly groups = new Map<string, Deque<WorkItem>>()
  private readonly leases = new Map<number, Lease>()
  private queued = 0
  private processing = 0
  private nextLease = 1
  private closed = false
  // Pulls waiting for a push; each wakes, re-checks, and waits again if nothing fits.
  private waiters = new Set<() => void>()

  async push(items: WorkItem[]): Promise<void> {
    if (this.closed) throw new ShuttingDownError('Work queue is closed')
    for (const item of items) {
      let g = this.groups.get(item.group)
      if (!g) {
        g = new Deque()
        this.groups.set(item.group, g)
      }
      g.push(item)
    }
    this.queued += items.length
    this.wake()
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

  private oldestGroup(refused: Set<Deque<WorkItem>> | undefined): Deque<WorkItem> | undefined {
    let best: Deque<WorkItem> | undefined
    let bestAt = Infinity
    for (const g of this.groups.values()) {
      const h = g.peek()
      if (h && h.enqueuedAt < bestAt && !refused?.has(g)) {
        best = g
        bestAt = h.enqueuedAt
      }
    }
    return best
  }

  private take(g: Deque<WorkItem>, maxBatch: number): Lease {
    const items: WorkItem[] = []
    while (items.length < maxBatch && g.length > 0) items.push(g.shift() as WorkItem)
    if (g.length === 0) this.groups.delete(items[0].group)
    this.queued -= items.length
    this.processing += items.length
    const lease: Lease = { id: this.nextLease++, items }
    this.leases.set(lease.id, lease)
    return lease
  }

  async pull({ maxBatch, maxWaitMs, signal, accept }: PullOptions): Promise<Lease | null> {
    for (;;) {
      if (this.closed || signal?.aborted) return null
      // Groups `accept` refused in this look; asked again after the next wake.
      const refused = accept ? new Set<Deque<WorkItem>>() : undefined
      const takes = (g: Deque<WorkItem>): boolean => {
        if (!accept || accept(g.peek() as WorkItem)) return true
        refused?.add(g)
        return false
      }
      let waitMs = -1
      for (let g = this.oldestGroup(refused); g; g = this.oldestGroup(refused)) {
        const age = Date.now() - (g.peek() as WorkItem).enqueuedAt
        if ((g.length >= maxBatch || age >= maxWaitMs) && takes(g)) return this.take(g, maxBatch)
        if (refused?.has(g)) continue
        // The oldest group is still filling; a younger group that is already full need not wait.
        for (const other of this.groups.values()) {
          if (other.length >= maxBatch && !refused?.has(other) && takes(other)) return this.take(other, maxBatch)
        }
        waitMs = maxWaitMs - age
        break
      }
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
        if (waitMs >= 0) timer = setTimeout(done, waitMs)
      })
    }
  }

  async ack(lease: Lease): Promise<void> {
    if (this.leases.delete(lease.id)) this.processing -= lease.items.length
  }

  async release(lease: Lease): Promise<void> {
    if (!this.leases.delete(lease.id)) return
    this.processing -= lease.items.length
    // Back to the front, in their original order.
    for (let i = lease.items.length - 1; i >= 0; i--) {
      const item = lease.items[i]
      let g = this.groups.get(item.group)
      if (!g) {
        g = new Deque()
        this.groups.set(item.group, g)
      }
      g.unshift(item)
    }
    this.queued += lease.items.length
    this.wake()
  }

  stats(): QueueStats {
    return { queued: this.queued, processing: this.processing }
  }

  async close(): Promise<void> {
    this.closed = true
    this.wake()
  }
}

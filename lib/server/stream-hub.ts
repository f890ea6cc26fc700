import type { Logger } from 'pino'
import { toWireError } from '../errors.js'
import type { ServerMetrics } from './metrics.js'
import type { ResolvedServerOptions } from './options.js'
import type { WorkItem, WorkQueue } from './queue/work-queue.js'
import type { ResultStore } from './store/result-store.js'
import type { StreamConnection } from './stream-connection.js'

// Results handed to streams per flush round; small enough to interleave with other work.
const FLUSH_CHUNK = 256

/**
 * The open streams of every token, and the routing of results to them: a result goes to the
 * stream that sent the item when it is still open, else to any open stream of the token, else
 * it waits in the store. Also applies per-token flow control.
 */
export class StreamHub {
  private readonly streams = new Map<string, Set<StreamConnection>>()
  private readonly byId = new Map<number, StreamConnection>()
  private readonly paused = new Set<string>()
  // Round-robin cursor per token, so several streams share results.
  private readonly cursor = new Map<string, number>()
  closing = false

  constructor(
    readonly options: ResolvedServerOptions,
    readonly store: ResultStore,
    readonly queue: WorkQueue,
    readonly metrics: ServerMetrics,
    readonly logger: Logger | undefined,
    readonly acceptsToken: (token: string) => boolean,
    readonly hasModel: (model: string) => boolean,
  ) {}

  /** A stream authenticated: it may now receive the token's waiting results. */
  register(conn: StreamConnection): void {
    const token = conn.token as string
    let set = this.streams.get(token)
    if (!set) {
      set = new Set()
      this.streams.set(token, set)
    }
    set.add(conn)
    this.byId.set(conn.id, conn)
    this.metrics.connections.inc()
    if (this.paused.has(token)) conn.pause()
    this.flush(token)
  }

  /** A stream closed: its unacked v1 results go back to the store and on to other streams. */
  unregister(conn: StreamConnection): void {
    const token = conn.token as string
    if (!this.byId.delete(conn.id)) return
    this.metrics.connections.dec()
    const set = this.streams.get(token)
    set?.delete(conn)
    if (set && set.size === 0) this.streams.delete(token)
    if (conn.unacked.size > 0) this.store.returnUndelivered(token, conn.unacked)
    conn.unacked.clear()
    this.flush(token)
  }

  /** Open streams of a token. */
  streamsOf(token: string): Iterable<StreamConnection> {
    return this.streams.get(token) ?? []
  }

  /** All open streams. */
  allStreams(): Iterable<StreamConnection> {
    return this.byId.values()
  }

  private pick(token: string): StreamConnection | undefined {
    const set = this.streams.get(token)
    if (!set) return undefined
    const list = [...set]
    const start = this.cursor.get(token) ?? 0
    for (let i = 0; i < list.length; i++) {
      const c = list[(start + i) % list.length]
      if (c.canTake()) {
        this.cursor.set(token, start + i + 1)
        return c
      }
    }
    return undefined
  }

  /** Queues accepted items, then applies flow control to the token. */
  enqueue(conn: StreamConnection, items: WorkItem[]): void {
    const token = conn.token as string
    this.queue.push(items).catch((err: unknown) => {
      // The queue refused (closing): answer each item so nothing waits forever.
      const body = toWireError(err)
      for (const item of items) {
        this.store.drop(token, item.id)
        conn.sendResult(item.id, body, false)
      }
    })
    this.checkFlow(token)
  }

  /** Pauses the token's sockets when it has too much queued or undelivered. */
  checkFlow(token: string): void {
    const c = this.store.counts(token)
    const load = c.queued + c.processing + c.undelivered
    const limit = this.options.maxQueuedPerToken
    if (!this.paused.has(token)) {
      if (load >= limit) {
        this.paused.add(token)
        for (const s of this.streamsOf(token)) s.pause()
      }
    } else if (load <= limit / 2) {
      this.paused.delete(token)
      for (const s of this.streamsOf(token)) s.resume()
    }
  }

  /** A worker finished an item: store it, then hand it to a stream if one can take it. */
  onResult(item: WorkItem, outputs: unknown): void {
    const { token, id } = item
    this.store.complete(token, id, outputs)
    let conn = item.origin === undefined ? undefined : this.byId.get(item.origin)
    if (!conn || !conn.canTake()) conn = this.pick(token)
    if (!conn) return
    if (this.store.claim(token, id)) conn.sendResult(id, outputs, true)
  }

  /** Hands waiting results of a token to its open streams, while they can take them. */
  flush(token: string): void {
    for (;;) {
      const conn = this.pick(token)
      if (!conn) return
      const batch = this.store.takeUndelivered(token, FLUSH_CHUNK)
      if (batch.length === 0) break
      for (const [id, outputs] of batch) conn.sendResult(id, outputs, true)
      if (batch.length < FLUSH_CHUNK) break
    }
    this.checkFlow(token)
  }

  /** A stream's socket made progress on writing: give it more if results wait. */
  onDrain(conn: StreamConnection): void {
    const token = conn.token
    if (token === undefined || !conn.canTake()) return
    if (this.store.counts(token).undelivered > 0) this.flush(token)
  }
}

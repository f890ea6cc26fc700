/**
 * The shared {@link StateBackend} of several processes (`serve --redis`, workers): all state in one
 * Redis, reached with ioredis, every transition one Lua script (./redis-scripts.ts, the data layout
 * there and in ./redis-keys.ts). Any number of backends — in one process or on many machines — on
 * the same Redis and prefix share one queue, one store and one ledger; the contract suite
 * (test/helpers/state-contract.ts) checks the same rules as on memory and SQLite.
 *
 * What lives in this process only:
 * - waiting leases: a lease that finds nothing ready waits for a wake — a `PUBLISH` on the
 *   deployment's wake channel by any process's submit or requeue (one subscriber connection), this
 *   process's own transitions, or the time its oldest filling group becomes ready — and looks again.
 *   It also looks again every {@link RECHECK_MS} ms at the latest: pub/sub is at-most-once (a
 *   message sent while the subscriber reconnects is lost), and this bounds what such a loss costs.
 * - routing: a result routed to a node is appended to that node's stream by the transition itself
 *   (nothing is lost when no one listens: a stream result stays in the store, a sink result in the
 *   node's stream). `subscribe(node)` reads the stream with a blocking `XREAD` on a connection of its
 *   own; a transition made in this process hands its results to this process's listeners at once
 *   (as the other backends do), and the reader skips those.
 * - in flight: results handed to this process's streams and not acknowledged are kept per instance
 *   in Redis; `close()` makes them undelivered again, and so does `sweep` (any process) for an
 *   instance silent for {@link DEAD_AFTER_MS} ms (a process that died).
 */
import { createHash, randomBytes } from 'node:crypto'
import type { Redis as RedisClient, RedisOptions } from 'ioredis'
import { DeliveryLimitError, InvalidOptionError, LimitExceededError, ShuttingDownError, StateStoreError, toWireError } from '../../errors.js'
import type { Compute, Parameters } from '../../models/pipeline.js'
import { requireOptional } from '../../optional-deps.js'
import { decodePair, RedisKeys } from './redis-keys.js'
import { REDIS_LAYOUT, SCRIPTS, type ScriptName } from './redis-scripts.js'
import { RouteListeners } from './route-listeners.js'
import { PRESENCE_TTL_MS } from './state-backend.js'
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

/** Options of a {@link RedisStateBackend}. */
export interface RedisStateBackendOptions {
  /** The Redis server: `redis://[[user]:password@]host[:port][/db]` (or `rediss://` for TLS). */
  url: string
  /**
   * Prefix of every key (and of the wake channel): deployments that share one Redis use different
   * prefixes. Default `inference-stream:`. On a Redis Cluster, put the prefix in a hash tag
   * (`{inference-stream}:`): the scripts reach keys by name, so all must sit in one slot.
   */
  prefix?: string
  /** Finished results kept per owner (for duplicates, resume and absent clients). */
  maxRetained: number
  /** How long a finished result is kept, in ms (see `sweep`). */
  retentionMs: number
  /** Bytes of retained results in all owners; oldest delivered ones are evicted first. Default: no bound. */
  maxRetainedBytes?: number
  /** Further ioredis options of the connections (TLS, timeouts, retry strategy). */
  redisOptions?: RedisOptions
}

/** Default key prefix. */
export const DEFAULT_REDIS_PREFIX = 'inference-stream:'

/** A waiting lease looks again at least this often (a wake lost while the subscriber reconnected). */
export const RECHECK_MS = 5000
/** Longest blocking read of the routed-results streams; a change of subscriptions cuts it short. */
const READ_BLOCK_MS = 5000
/** How often an instance tells Redis it is alive. */
const BEAT_MS = 10_000
/** An instance silent this long is taken for dead: `sweep` makes its in-flight results undelivered again. */
export const DEAD_AFTER_MS = 60_000
/** Items per submit script (each item is one step; a long submit does not hold Redis for long). */
const SUBMIT_CHUNK = 500
/** Ids per delivery script. */
const IDS_CHUNK = 1000
/** Results dropped per sweep script. */
const SWEEP_CHUNK = 5000

const OUT_QUEUED: SubmitOutcome = Object.freeze({ status: 'queued' })
const OUT_PENDING: SubmitOutcome = Object.freeze({ status: 'pending' })
const OUT_CONFLICT: SubmitOutcome = Object.freeze({ status: 'conflict' })
const OUT_OVERLOADED: SubmitOutcome = Object.freeze({ status: 'overloaded' })

// The dead letter's body, with \u0001 for JSON.stringify(id) and \u0002 for the deliveries (filled in by the reclaim script).
const DEAD_LETTER = JSON.stringify(
  toWireError(new DeliveryLimitError('Item \u0001 was leased \u0002 times and never finished (a worker died or hung on it each time); it is not run again')),
)

type RoutedReply = Array<[node: string, entry: string, fields: string[]]>
type LeaseReply = ['lease', string, string, number, string, string[]] | ['wait', number]
/** Runs one script with ARGV the parts one after another (numbers sent as their decimal text). */
type Script = (parts: ReadonlyArray<ReadonlyArray<string | number>>) => Promise<unknown>

/** ioredis's Command, as far as scriptCommandClass uses it. */
interface IoCommand {
  args: Array<string | Buffer>
  promise: Promise<unknown>
}
type IoCommandClass = new (name: string, args: unknown[], options: { replyEncoding: 'utf8' }) => IoCommand

/**
 * A command whose arguments are given as one array of strings, used as is. ioredis's own script
 * functions copy a script's arguments four times (rest parameters, the auto-pipeline, `unshift`,
 * `Array.prototype.flat`): `flat` alone took 60 µs per finish of 400 arguments, and ioredis a third
 * of a worker's busy CPU in the scale-out benchmark.
 */
function scriptCommandClass(Redis: unknown): new (name: string, args: string[]) => IoCommand {
  const Command = (Redis as { Command: IoCommandClass }).Command
  return class ArgsCommand extends Command {
    constructor(name: string, args: string[]) {
      super(name, [], { replyEncoding: 'utf8' })
      this.args = args
    }
  }
}

/**
 * `EVALSHA sha 0 ...ARGV` on `redis`, and `EVAL` once when Redis answers NOSCRIPT (a restarted or
 * failed-over Redis has no scripts: the first call after loads it again).
 */
function scriptSender(redis: RedisClient, ArgsCommand: new (name: string, args: string[]) => IoCommand, lua: string): Script {
  const sha = createHash('sha1').update(lua).digest('hex')
  const send = (name: string, first: string, parts: ReadonlyArray<ReadonlyArray<string | number>>): Promise<unknown> => {
    let n = 2
    for (const part of parts) n += part.length
    const a = new Array<string>(n)
    a[0] = first
    a[1] = '0'
    let o = 2
    for (const part of parts) {
      for (let k = 0; k < part.length; k++) {
        const v = part[k]
        a[o++] = typeof v === 'string' ? v : String(v)
      }
    }
    const c = new ArgsCommand(name, a)
    ;(redis as unknown as { sendCommand(c: IoCommand): unknown }).sendCommand(c)
    return c.promise
  }
  return (parts) =>
    send('evalsha', sha, parts).catch((err: unknown) => {
      if (!String((err as Error)?.message).includes('NOSCRIPT')) throw err
      return send('eval', lua, parts)
    })
}

/**
 * The fields that runs of items share (an owner, tenant, group…), sent to a script once per
 * distinct set, a context, which each item then names by its 1-based index.
 */
class Contexts {
  /** The contexts' fields, one after another. */
  readonly fields: string[] = []
  private readonly byKey = new Map<string, number>()

  get count(): number {
    return this.byKey.size
  }

  /** The index of these values (all contexts of one call have as many), added when new. */
  index(values: readonly string[]): number {
    const key = JSON.stringify(values)
    let i = this.byKey.get(key)
    if (i === undefined) {
      i = this.byKey.size + 1
      this.byKey.set(key, i)
      for (const v of values) this.fields.push(v)
    }
    return i
  }
}

interface NodeReader {
  readonly node: string
  readonly key: string
  /** Last entry read (or skipped); set once `ready` resolves. */
  cursor: string
  readonly ready: Promise<void>
  /** Entries this process handed to its listeners first (by a transition of its own), or read first. */
  readonly seen: Set<string>
  listeners: number
}

const noop = (): void => {}

/**
 * The Redis {@link StateBackend}: `new RedisStateBackend({ url, maxRetained, retentionMs })`.
 * Connects lazily (commands wait for the connection); `close()` returns this instance's in-flight
 * results to the store and closes its connections: calls after it reject with `ERR_SHUTTING_DOWN`.
 *
 * @throws MissingDependencyError without ioredis; InvalidOptionError.
 */
export class RedisStateBackend implements StateBackend {
  /** The key prefix of this deployment. */
  readonly prefix: string
  /** This backend's id among all on the Redis (its in-flight results and heartbeat). */
  readonly instance = randomBytes(9).toString('base64url')
  private readonly keys: RedisKeys
  private readonly cmd: RedisClient
  private readonly scripts: Record<ScriptName, Script>
  private sub?: RedisClient
  private listening?: Promise<void>
  private reader?: RedisClient
  private readerId?: number
  private reading?: Promise<void>
  private blocked = false
  private readonly nodes = new Map<string, NodeReader>()
  /** Owner → nodes of this process with a stream of it open (`attach`), renewed in Redis with the heartbeat. */
  private readonly attached = new Map<string, Set<string>>()
  private readonly nodeByKey = new Map<string, NodeReader>()
  private readonly listeners = new RouteListeners()
  private waiters = new Set<() => void>()
  private readonly limits: Array<string | number>
  private readonly maxRetainedBytes: number
  private readonly retentionMs: number
  private readonly overLimit: string
  private readonly beat: NodeJS.Timeout
  private closed = false
  private closing?: Promise<void>

  constructor(options: RedisStateBackendOptions) {
    const o = options
    if (typeof o.url !== 'string' || o.url === '') throw new InvalidOptionError('RedisStateBackend: option "url" must be a redis:// URL')
    if (!Number.isInteger(o.maxRetained) || o.maxRetained < 0) throw new InvalidOptionError(`Option "maxRetained" must be an integer >= 0, got ${JSON.stringify(o.maxRetained)}`)
    if (typeof o.retentionMs !== 'number' || !(o.retentionMs >= 0)) throw new InvalidOptionError(`Option "retentionMs" must be a number >= 0, got ${JSON.stringify(o.retentionMs)}`)
    if (o.maxRetainedBytes !== undefined && (typeof o.maxRetainedBytes !== 'number' || !(o.maxRetainedBytes >= 0))) {
      throw new InvalidOptionError(`Option "maxRetainedBytes" must be a number >= 0, got ${JSON.stringify(o.maxRetainedBytes)}`)
    }
    if (o.prefix !== undefined && typeof o.prefix !== 'string') throw new InvalidOptionError(`Option "prefix" must be a string, got ${JSON.stringify(o.prefix)}`)
    // ioredis would prefix the keys it sends, not those the scripts build: one prefix, ours.
    if (o.redisOptions?.keyPrefix) throw new InvalidOptionError('RedisStateBackend: give the key prefix as option "prefix", not as redisOptions.keyPrefix')
    this.prefix = o.prefix ?? DEFAULT_REDIS_PREFIX
    this.keys = new RedisKeys(this.prefix)
    this.retentionMs = o.retentionMs
    this.maxRetainedBytes = o.maxRetainedBytes ?? Infinity
    const bytes = o.maxRetainedBytes ?? -1
    // As the memory store: evict by count in chunks (slack), by bytes down to a low water.
    this.limits = [o.maxRetained, Math.max(1, Math.floor(o.maxRetained / 64)), bytes, bytes < 0 ? -1 : bytes - bytes / 64]
    this.overLimit = JSON.stringify(
      toWireError(new LimitExceededError(`Result of \u0001 bytes is over the retained budget (${this.maxRetainedBytes} bytes): sent at most once, not kept`)),
    )

    const Redis = requireOptional<new (url: string, options?: RedisOptions) => RedisClient>('ioredis', 'The Redis state backend')
    this.cmd = new Redis(o.url, { enableAutoPipelining: true, ...o.redisOptions })
    // Errors reach the calls that fail; the events themselves (reconnects) are not ours to report.
    this.cmd.on('error', noop)
    const ArgsCommand = scriptCommandClass(Redis)
    const scripts = {} as Record<ScriptName, Script>
    for (const [name, lua] of Object.entries(SCRIPTS) as Array<[ScriptName, string]>) {
      scripts[name] = scriptSender(this.cmd, ArgsCommand, lua)
    }
    this.scripts = scripts
    const beat = (): void => {
      void this.call('isBeat', Date.now(), []).catch(noop)
      void this.renewPresence().catch(noop)
    }
    beat()
    this.beat = setInterval(beat, BEAT_MS)
    this.beat.unref()
  }

  // ARGV = prefix, instance, now, then the parts one after another (not copied into one first).
  private call<T>(name: ScriptName, now: number, ...parts: Array<ReadonlyArray<string | number>>): Promise<T> {
    return this.scripts[name]([[this.prefix, this.instance, String(now)], ...parts]) as Promise<T>
  }

  private run<T>(name: ScriptName, now: number, ...parts: Array<ReadonlyArray<string | number>>): Promise<T> {
    if (this.closed) return Promise.reject(new ShuttingDownError('The state store is closed'))
    return this.call<T>(name, now, ...parts)
  }

  // ---------------------------------------------------------------------------------------------
  // Waiting leases
  // ---------------------------------------------------------------------------------------------

  private wakeLocal(): void {
    if (this.waiters.size === 0) return
    const ws = this.waiters
    this.waiters = new Set()
    for (const w of ws) w()
  }

  // Subscribes to the wake channel (once): any process's submit or requeue wakes this one's leases.
  private listen(): Promise<void> {
    if (!this.listening) {
      let sub = this.sub
      if (!sub) {
        sub = this.sub = this.cmd.duplicate()
        sub.on('error', noop)
        sub.on('message', () => this.wakeLocal())
        // Reconnected (ioredis subscribes again): a wake may have been missed meanwhile.
        sub.on('ready', () => this.wakeLocal())
      }
      this.listening = sub.subscribe(this.keys.key('wake')).then(
        () => {},
        (err: unknown) => {
          this.listening = undefined
          throw err
        },
      )
    }
    return this.listening
  }

  private sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', done)
        this.waiters.delete(done)
        resolve()
      }
      const timer = setTimeout(done, Math.max(0, ms))
      this.waiters.add(done)
      signal?.addEventListener('abort', done, { once: true })
    })
  }

  // ---------------------------------------------------------------------------------------------
  // The seam
  // ---------------------------------------------------------------------------------------------

  async submit(items: readonly SubmitItem[], options: SubmitOptions = {}): Promise<SubmitOutcome[]> {
    if (this.closed) throw new ShuttingDownError('The server is shutting down')
    const out: SubmitOutcome[] = []
    const maxq = options.maxQueuedBytes ?? -1
    for (let start = 0; start < items.length; start += SUBMIT_CHUNK) {
      // What items share (owner, tenant, group) goes once per context (see the submit script).
      const contexts = new Contexts()
      const perItem: Array<string | number> = []
      let last: SubmitItem | undefined
      let ctx = 0
      for (const item of items.slice(start, start + SUBMIT_CHUNK)) {
        if (last === undefined || item.owner !== last.owner || item.tenant !== last.tenant || item.group !== last.group) {
          ctx = contexts.index([item.owner, item.tenant, item.group])
          last = item
        }
        // The item as the queue keeps it: one JSON line (see the segments of ./redis-scripts.ts).
        const line: unknown[] = [
          item.id,
          item.model,
          item.compute,
          item.parameters ?? null,
          item.fingerprint ?? null,
          item.bytes ?? 0,
          item.route.node,
          item.route.sink ?? null,
          item.retain ? 1 : 0,
        ]
        if (item.inputs !== undefined) line.push(item.inputs)
        perItem.push(ctx, item.id, item.fingerprint === undefined ? '' : `=${item.fingerprint}`, item.bytes ?? 0, JSON.stringify(line))
      }
      const [codes, ...done] = await this.run<string[]>('isSubmit', Date.now(), [maxq, contexts.count], contexts.fields, perItem)
      let d = 0
      for (const c of codes) {
        if (c === 'q') out.push(OUT_QUEUED)
        else if (c === 'p') out.push(OUT_PENDING)
        else if (c === 'c') out.push(OUT_CONFLICT)
        else if (c === 'o') out.push(OUT_OVERLOADED)
        else out.push({ status: 'done', outputs: done[d++] })
      }
      if (codes.includes('q')) this.wakeLocal()
    }
    return out
  }

  /**
   * `options.batching` is accepted and not applied: batches are leased in line order whatever it
   * says. The script takes the next segments of a (group, tenant) line without reading their
   * items; picking by length would read every item of a window and write back the rest each lease
   * (more script time per item on the one Redis thread that bounds the cluster already). See
   * docs/deploy.md.
   */
  async lease(consumer: string, options: LeaseOptions): Promise<StateLease | null> {
    const { signal, accept } = options
    if (this.closed || signal?.aborted) return null
    // The first look does not wait for the wake channel's subscription; sleeping does (and looks
    // again first: a wake sent before the subscription took effect was not heard).
    let listening: Promise<void> | undefined = this.listen()
    listening.catch(noop) // awaited below; a failure is thrown there
    // Groups `accept` refused in this look; asked again after the next wake (as the memory queue).
    let refused: string[] = []
    for (;;) {
      if (this.closed || signal?.aborted) return null
      // A wake while the script runs means: look again at once.
      let woken = false
      const mark = (): void => {
        woken = true
      }
      this.waiters.add(mark)
      let reply: LeaseReply
      try {
        reply = await this.run<LeaseReply>('isLease', Date.now(), [options.maxBatch, finite(options.maxWaitMs, 2 ** 52), finite(options.maxLeasesPerTenant, -1), consumer, finite(options.leaseMs, 2 ** 52), options.models?.join('\n') ?? '', ...refused])
      } finally {
        this.waiters.delete(mark)
      }
      if (reply[0] === 'lease') {
        const [, id, tenant, expiresAt, before, segments] = reply
        const items: LeasedItem[] = []
        for (let j = 0; j < segments.length; j += 6) {
          leasedItems(segments[j], segments[j + 1], segments[j + 2], Number(segments[j + 3]), Number(segments[j + 4]), segments[j + 5], items)
        }
        if (accept && !accept(items[0])) {
          // Refused: taken back as if never taken (no delivery counted, the tenant's turn kept).
          await this.run('isRelease', Date.now(), [id, '1', before])
          refused.push(items[0].group)
          continue
        }
        return { id, consumer, tenant, items, expiresAt: Number(expiresAt) }
      }
      if (listening) {
        await listening
        listening = undefined
        continue
      }
      if (!woken) {
        const wait = Number(reply[1])
        await this.sleep(wait < 0 ? RECHECK_MS : Math.min(wait, RECHECK_MS), signal)
      }
      refused = []
    }
  }

  wake(): void {
    this.wakeLocal()
  }

  async extend(lease: StateLease, ms: number): Promise<boolean> {
    const now = Date.now()
    const held = await this.run<number>('isExtend', now, [lease.id, ms])
    if (held !== 1) return false
    lease.expiresAt = now + ms
    return true
  }

  async finish(lease: StateLease, results: readonly ItemResult[]): Promise<FinishOutcome> {
    // The fields items share (owner, tenant, model, node, sink, retain) go once per context, not
    // once per result (see the finish script): a lease's items come in runs of one owner.
    const contexts = new Contexts()
    const perResult: Array<string | number> = []
    let last: LeasedItem | undefined
    let ctx = 0
    const seen = new Set<number>()
    for (const r of results) {
      if (!Number.isInteger(r.index) || r.index < 0 || r.index >= lease.items.length || seen.has(r.index)) continue
      seen.add(r.index)
      // UTF-16 length, as the other backends count.
      const len = r.outputs.length
      let flags = (r.billable ? 1 : 0) | (r.failed ? 2 : 0)
      let stored = ''
      let storedLen = len
      if (len > this.maxRetainedBytes) {
        // Over the whole retained budget alone: the store keeps an error body, the node gets the result to write once.
        stored = this.overLimit.replace('\\u0001', String(len))
        storedLen = stored.length
        flags |= 4
      }
      const it = lease.items[r.index]
      if (last === undefined || it.owner !== last.owner || it.tenant !== last.tenant || it.model !== last.model || it.route.node !== last.route.node || it.route.sink !== last.route.sink || it.retain !== last.retain) {
        ctx = contexts.index([it.owner, it.tenant, it.model, it.route.node, it.route.sink ?? '', it.retain ? '1' : ''])
        last = it
      }
      perResult.push(ctx, r.index, flags, r.computeSeconds ?? '', r.outputs, stored, storedLen, it.id)
    }
    const [finished, billed, lost, routed] = await this.run<[number, number, number, RoutedReply]>('isFinish', Date.now(), this.limits, [lease.id, contexts.count], contexts.fields, perResult)
    this.routeLocal(routed)
    return { finished, billed, lost }
  }

  async release(lease: StateLease): Promise<void> {
    await this.run('isRelease', Date.now(), [lease.id, '0', ''])
    this.wakeLocal()
  }

  async reclaim(now: number, maxDeliveries: number): Promise<ReclaimOutcome> {
    const [requeued, deadLettered, routed] = await this.run<[number, number, RoutedReply]>('isReclaim', Date.now(), [
      ...this.limits,
      maxDeliveries,
      DEAD_LETTER,
      this.overLimit,
      now,
    ])
    this.routeLocal(routed)
    if (requeued > 0) this.wakeLocal()
    return { requeued, deadLettered }
  }

  subscribe(node: string, listener: (routed: Routed[]) => void): () => void {
    const off = this.listeners.subscribe(node, listener)
    let r = this.nodes.get(node)
    if (!r) {
      const key = this.keys.key('node', node)
      const reader: NodeReader = {
        node,
        key,
        cursor: '0-0',
        seen: new Set(),
        listeners: 0,
        // Results routed to the node before it listened went to an earlier process (its sinks are gone,
        // its streams' results wait in the store): read from the stream's end.
        ready: this.cmd.xrevrange(key, '+', '-', 'COUNT', 1).then(
          (last) => {
            if (last.length > 0) reader.cursor = last[0][0]
          },
          noop,
        ),
      }
      r = reader
      this.nodes.set(node, r)
      this.nodeByKey.set(key, r)
      this.kick()
    }
    const reader = r
    reader.listeners++
    let done = false
    return () => {
      if (done) return
      done = true
      off()
      if (--reader.listeners === 0 && this.nodes.get(node) === reader) {
        this.nodes.delete(node)
        this.nodeByKey.delete(reader.key)
        this.kick()
      }
    }
  }

  /**
   * Checks that the keys under this prefix have this version's layout ({@link REDIS_LAYOUT}),
   * stamping a fresh prefix with it; `serve --redis` and `worker` call it before they start. Keys
   * of another version's layout would be misread by its scripts: such a prefix is refused.
   *
   * @throws StateStoreError when the prefix holds another layout; a Redis error when it cannot be reached.
   */
  async checkLayout(): Promise<void> {
    const v = await this.run<string>('isLayout', Date.now(), [String(REDIS_LAYOUT)])
    if (v !== String(REDIS_LAYOUT)) {
      throw new StateStoreError(
        `The Redis keys under prefix ${JSON.stringify(this.prefix)} have layout ${v}, and this version of inference-stream uses layout ${REDIS_LAYOUT}: ` +
          'let that deployment drain with its own version (no queued items, no streams), then delete its keys, or give this one another --redis-prefix',
      )
    }
  }

  /**
   * The deployment's tenant secret, shared by every front-end on this Redis and prefix: 32 random
   * bytes made by the first to ask, kept in Redis. Front-ends need one secret (tenant ids key every
   * stored thing); give them one of your own (`tenantSecret`, `serve --tenant-secret-file`) to keep
   * it out of Redis, where a reader of the data could then also tell which tenant is which.
   */
  async sharedSecret(): Promise<Buffer> {
    const key = this.keys.key('secret')
    await this.cmd.set(key, randomBytes(32).toString('hex'), 'NX')
    const hex = await this.cmd.get(key)
    if (!hex || !/^[0-9a-f]{32,}$/.test(hex)) throw new InvalidOptionError(`The tenant secret in Redis (${key}) is not hex of 16 bytes or more`)
    return Buffer.from(hex, 'hex')
  }

  async announceWorker(info: WorkerInfo, ttlMs: number): Promise<void> {
    const key = this.keys.key('workers')
    if (ttlMs <= 0) {
      await this.cmd.hdel(key, info.node)
      return
    }
    await this.cmd.hset(key, info.node, JSON.stringify({ models: info.models, workers: info.workers, until: Date.now() + ttlMs }))
  }

  async workersOnline(): Promise<WorkerInfo[]> {
    const key = this.keys.key('workers')
    const all = await this.cmd.hgetall(key)
    const now = Date.now()
    const out: WorkerInfo[] = []
    const gone: string[] = []
    for (const [node, json] of Object.entries(all)) {
      let v: { models?: unknown; workers?: unknown; until?: unknown } | undefined
      try {
        v = JSON.parse(json) as typeof v
      } catch {
        v = undefined
      }
      // Gone (its word ran out: it died) or not ours to read: dropped.
      if (!v || typeof v.until !== 'number' || v.until < now || !Array.isArray(v.models)) {
        gone.push(node)
        continue
      }
      out.push({ node, models: v.models.map(String), workers: Number(v.workers) || 0 })
    }
    if (gone.length > 0) await this.cmd.hdel(key, ...gone)
    return out
  }

  async attach(node: string, owner: string, open: boolean): Promise<void> {
    let nodes = this.attached.get(owner)
    const key = this.keys.key('present', owner)
    if (open) {
      if (!nodes) this.attached.set(owner, (nodes = new Set()))
      nodes.add(node)
      await this.cmd.multi().hset(key, node, Date.now() + PRESENCE_TTL_MS).pexpire(key, PRESENCE_TTL_MS).exec()
      return
    }
    if (!nodes?.delete(node)) return
    if (nodes.size === 0) this.attached.delete(owner)
    await this.cmd.hdel(key, node)
  }

  // This process's nodes still hold their owners' streams: their words in Redis are renewed (with
  // the heartbeat, a third of their time), so only those of a process that died run out.
  private async renewPresence(): Promise<void> {
    if (this.attached.size === 0 || this.closed) return
    const until = Date.now() + PRESENCE_TTL_MS
    const p = this.cmd.pipeline()
    for (const [owner, nodes] of this.attached) {
      const key = this.keys.key('present', owner)
      for (const node of nodes) p.hset(key, node, until)
      p.pexpire(key, PRESENCE_TTL_MS)
    }
    await p.exec()
  }

  // Hands this process's listeners what a transition of its own routed to them, at once.
  private routeLocal(routed: RoutedReply): void {
    if (routed.length === 0 || this.nodes.size === 0) return
    const byNode = new Map<string, Routed[]>()
    for (const [node, entry, f] of routed) {
      const reader = this.nodes.get(node)
      if (!reader || reader.seen.delete(entry)) continue
      reader.seen.add(entry)
      let list = byNode.get(node)
      if (!list) byNode.set(node, (list = []))
      list.push(...toRouted(f))
    }
    this.listeners.route(byNode)
  }

  // Starts the reader, or cuts its blocking read short so it reads the new set of nodes.
  private kick(): void {
    if (this.closed) return
    if (!this.reading) {
      this.reading = this.readLoop().finally(() => {
        this.reading = undefined
        if (!this.closed && this.nodes.size > 0) this.kick()
      })
    } else if (this.blocked && this.readerId !== undefined) {
      void this.cmd.call('CLIENT', 'UNBLOCK', this.readerId).catch(noop)
    }
  }

  private async readLoop(): Promise<void> {
    if (!this.reader) {
      const reader = (this.reader = this.cmd.duplicate())
      reader.on('error', noop)
      // A new connection has a new id (for CLIENT UNBLOCK).
      reader.on('ready', () => {
        this.readerId = undefined
      })
    }
    const conn = this.reader
    while (!this.closed && this.nodes.size > 0) {
      const readers = [...this.nodes.values()]
      try {
        await Promise.all(readers.map((r) => r.ready))
        this.readerId ??= (await conn.call('CLIENT', 'ID')) as number
        if (this.closed) return
        this.blocked = true
        const res = (await conn.xread('COUNT', 512, 'BLOCK', READ_BLOCK_MS, 'STREAMS', ...readers.map((r) => r.key), ...readers.map((r) => r.cursor))) as Array<
          [string, Array<[string, string[]]>]
        > | null
        this.blocked = false
        if (!res) continue
        for (const [key, entries] of res) {
          const reader = this.nodeByKey.get(key)
          if (!reader || entries.length === 0) continue
          const list: Routed[] = []
          for (const [entry, f] of entries) {
            reader.cursor = entry
            if (reader.seen.delete(entry)) continue
            if (fieldOf(f, 'w') === this.instance) reader.seen.add(entry)
            list.push(...toRouted(f))
          }
          if (list.length > 0) this.listeners.route(new Map([[reader.node, list]]))
          // Read: no longer needed in Redis. Awaited before the next read: when the stream was
          // emptied and deleted, the next one is read from its start (see the trim script).
          if ((await this.call<number>('isTrim', Date.now(), [reader.node, nextId(reader.cursor)])) === 1) reader.cursor = '0-0'

        }
      } catch {
        this.blocked = false
        if (this.closed) return
        await new Promise((r) => setTimeout(r, 200))
      }
    }
  }

  async lookup(owner: string, ids: readonly string[]): Promise<Array<{ state: IdState; outputs?: string }>> {
    const out: Array<{ state: IdState; outputs?: string }> = []
    for (let start = 0; start < ids.length; start += IDS_CHUNK) {
      const reply = await this.run<string[]>('isLookup', Date.now(), [owner, ...ids.slice(start, start + IDS_CHUNK)])
      for (let j = 0; j < reply.length; j++) {
        if (reply[j] === 'p') out.push({ state: 'pending' })
        else if (reply[j] === 'd') out.push({ state: 'done', outputs: reply[++j] })
        else out.push({ state: 'unknown' })
      }
    }
    return out
  }

  async claim(owner: string, id: string): Promise<string | undefined> {
    return (await this.run<string | null>('isClaim', Date.now(), [owner, id])) ?? undefined
  }

  async takeUndelivered(owner: string, max: number): Promise<Array<[string, string]>> {
    if (max <= 0) return []
    const reply = await this.run<string[]>('isTake', Date.now(), [owner, max])
    const out: Array<[string, string]> = []
    for (let j = 0; j < reply.length; j += 2) out.push([reply[j], reply[j + 1]])
    return out
  }

  async returnUndelivered(owner: string, ids: readonly string[]): Promise<void> {
    for (let start = 0; start < ids.length; start += IDS_CHUNK) await this.run('isReturn', Date.now(), [owner, ...ids.slice(start, start + IDS_CHUNK)])
  }

  async acknowledge(owner: string, ids: readonly string[]): Promise<void> {
    // Every chunk sent at once: the connection runs them in order, before any later call.
    const calls: Array<Promise<unknown>> = []
    for (let start = 0; start < ids.length; start += IDS_CHUNK) calls.push(this.run('isAcknowledge', Date.now(), [owner, ...ids.slice(start, start + IDS_CHUNK)]))
    await Promise.all(calls)
  }

  async forget(owner: string, id: string): Promise<void> {
    await this.run('isForget', Date.now(), [owner, id])
  }

  async counts(owner: string): Promise<OwnerCounts> {
    this.check()
    const [queued, processing, undelivered, done] = await this.run<[number, number, number, number]>('isCounts', Date.now(), [owner])
    return { queued, processing, done, undelivered }
  }

  async tenantBytes(tenant: string): Promise<TenantBytes> {
    this.check()
    const [qb, ub] = await this.cmd.hmget(this.keys.key('tenant', tenant), 'qb', 'ub')
    return { queued: Number(qb ?? 0), undelivered: Number(ub ?? 0) }
  }

  async stats(): Promise<StateStats> {
    this.check()
    const [q, p, rb, dead] = await this.cmd.hmget(this.keys.key('stats'), 'q', 'p', 'rb', 'dead')
    return { queued: Number(q ?? 0), processing: Number(p ?? 0), retainedBytes: Number(rb ?? 0), deadLettered: Number(dead ?? 0) }
  }

  async ledger(tenant?: string): Promise<LedgerEntry[]> {
    this.check()
    const all = await this.cmd.hgetall(this.keys.key('ledger'))
    const out: LedgerEntry[] = []
    for (const [field, n] of Object.entries(all)) {
      const [t, model] = decodePair(field)
      if (tenant === undefined || t === tenant) out.push({ tenant: t, model, items: Number(n) })
    }
    return out.sort((a, b) => (a.tenant < b.tenant ? -1 : a.tenant > b.tenant ? 1 : a.model < b.model ? -1 : a.model > b.model ? 1 : 0))
  }

  async billedTo(owner: string): Promise<number> {
    this.check()
    return Number((await this.cmd.hget(this.keys.key('billed'), owner)) ?? 0)
  }

  async sweep(now: number): Promise<number> {
    let lost = 0
    for (;;) {
      const [l, dropped] = await this.run<[number, number]>('isSweep', now, [finite(this.retentionMs, -1), SWEEP_CHUNK, DEAD_AFTER_MS])
      lost += l
      if (dropped < SWEEP_CHUNK) return lost
    }
  }

  private check(): void {
    if (this.closed) throw new ShuttingDownError('The state store is closed')
  }

  /**
   * Wakes pending leases with `null`, makes this instance's in-flight results undelivered again and
   * closes the connections; every later call rejects with `ERR_SHUTTING_DOWN`. Idempotent. Leases
   * this process holds stay in Redis until they are reclaimed (another process may finish them).
   */
  async close(): Promise<void> {
    if (this.closing) return this.closing
    this.closed = true
    clearInterval(this.beat)
    this.wakeLocal()
    this.closing = (async () => {
      try {
        const p = this.cmd.pipeline()
        for (const [owner, nodes] of this.attached) p.hdel(this.keys.key('present', owner), ...nodes)
        this.attached.clear()
        await p.exec()
        await this.call('isLeave', Date.now(), [])
      } catch {
        // Redis is gone: the in-flight results return when another process sweeps this silent instance.
      }
      if (this.reader && this.readerId !== undefined && this.blocked) await this.cmd.call('CLIENT', 'UNBLOCK', this.readerId).catch(noop)
      await Promise.all([this.cmd, this.sub, this.reader].map((c) => (c ? shut(c) : undefined)))
      await this.reading
    })()
    return this.closing
  }
}

// Ends a connection: QUIT when it is up (replies still due arrive first), else drops it.
async function shut(c: RedisClient): Promise<void> {
  if (c.status === 'ready') {
    try {
      await c.quit()
      return
    } catch {
      // fall through
    }
  }
  c.disconnect()
}

// A number Lua reads as one: Infinity (no bound) becomes `none`.
function finite(n: number | undefined, none: number): number {
  return n === undefined || !Number.isFinite(n) ? none : n
}

function fieldOf(f: string[], name: string): string | undefined {
  for (let j = 0; j < f.length; j += 2) if (f[j] === name) return f[j + 1]
  return undefined
}

// The id right after a stream entry id (for XTRIM MINID: everything up to `id` goes).
function nextId(id: string): string {
  const dash = id.indexOf('-')
  return `${id.slice(0, dash)}-${Number(id.slice(dash + 1)) + 1}`
}

// A routed-results stream entry (one or more groups, each starting with its 'o' field: one result,
// or with an 'I' field the ids of several stream results of the owner, as JSON) → what the listener gets.
function toRouted(f: string[]): Routed[] {
  const out: Routed[] = []
  let start = -1
  for (let j = 0; j < f.length; j += 2) {
    if (f[j] !== 'o') continue
    if (start >= 0) oneRouted(f, start, j, out)
    start = j
  }
  if (start >= 0) oneRouted(f, start, f.length, out)
  return out
}

function oneRouted(f: string[], from: number, to: number, out: Routed[]): void {
  let owner = ''
  let id = ''
  let sink: string | undefined
  let outputs: string | undefined
  let failed = false
  let computeSeconds: number | undefined
  let oversize = false
  for (let j = from; j < to; j += 2) {
    const v = f[j + 1]
    switch (f[j]) {
      case 'o':
        owner = v
        break
      case 'i':
        id = v
        break
      case 's':
        sink = v
        break
      case 'x':
        outputs = v
        break
      case 'f':
        failed = true
        break
      case 'c':
        computeSeconds = Number(v)
        break
      case 'v':
        oversize = true
        break
      case 'I':
        for (const one of JSON.parse(v) as string[]) out.push({ owner, id: one })
        return
    }
  }
  if (sink !== undefined) {
    out.push({ owner, id, sink, outputs: outputs ?? 'null', ...(failed ? { failed } : {}), ...(computeSeconds !== undefined ? { computeSeconds } : {}) })
  } else out.push(oversize ? { owner, id, outputs, oversize } : { owner, id })
}

// A leased segment's item lines (JSON arrays, see ./redis-scripts.ts) → the items a worker gets, appended to `out`.
function leasedItems(group: string, tenant: string, owner: string, enqueuedAt: number, deliveries: number, body: string, out: LeasedItem[]): void {
  // One parse for the whole segment: its lines are JSON arrays, one per line.
  const rows = JSON.parse(`[${body.replaceAll('\n', ',')}]`) as unknown[][]
  for (const v of rows) {
    const sink = v[7] as string | null
    const item: { -readonly [K in keyof LeasedItem]: LeasedItem[K] } = {
      tenant,
      owner,
      id: v[0] as string,
      model: v[1] as string,
      compute: v[2] as Compute,
      inputs: v.length > 9 ? v[9] : undefined,
      parameters: (v[3] ?? undefined) as Parameters | undefined,
      group,
      fingerprint: (v[4] ?? undefined) as string | undefined,
      bytes: v[5] as number,
      route: sink === null ? { node: v[6] as string } : { node: v[6] as string, sink },
      enqueuedAt,
      deliveries,
    }
    if (v[8] === 1) item.retain = true
    out.push(item)
  }
}

/**
 * Every key the Redis state backend uses, in one place (as BullMQ keeps its key names in one
 * module): the TypeScript side builds them with {@link RedisKeys}, and the Lua scripts get the same
 * names from {@link luaKeys}, generated from the same table, so the two cannot drift apart.
 *
 * Each key is `prefix + name`, then `:` and its arguments for per-tenant, per-owner, … keys. One
 * argument is written as is; two are written `<bytes of the first>:<first><second>`, which no pair
 * of strings can make ambiguous (tenants, owners, groups and ids are client strings: any
 * separator could occur in them). Two deployments on one Redis use two prefixes and never see
 * each other's keys (`RedisStateBackendOptions.prefix`).
 */

/** The backend's keys: name → its arguments (none: one key per deployment). */
export const KEY_NAMES = {
  /** HASH of global counters: `q` queued items, `p` leased items, `rb` retained result bytes, `dead` dead letters, `dc` the done clock, `rs` the round sequence, `ls` the lease sequence. */
  stats: [],
  /** ZSET tenant → sequence of its last served batch or of its arrival: the fair-share round (least recently served first). */
  round: [],
  /** HASH group → items queued in it, all tenants (a group is ready when it holds `maxBatch`). */
  groupSize: [],
  /** ZSET lease id → `expiresAt` (ms): what `reclaim` looks at. */
  leases: [],
  /** HASH of one lease: `c` consumer, `t` tenant, `x` expiresAt, `k` its number of segments, `g<j>` / `s<j>` the (group, tenant) and text of segment j (the items, with their delivery count). */
  lease: ['lease'],
  /** HASH of one tenant: `n` items queued, `l` leases held, `qb` queued input bytes, `ub` undelivered result bytes. */
  tenant: ['tenant'],
  /** ZSET of one tenant: group → `enqueuedAt` of the tenant's oldest queued item of it (its groups in age order). */
  tenantGroups: ['tenant'],
  /** ZSET of one group: tenant → `enqueuedAt` of its oldest queued item of the group (who tops up a batch next). */
  groupHeads: ['group'],
  /** LIST of one (group, tenant): its queued items in line order, as segments (runs of one owner's items; see ./redis-scripts.ts); items handed back are pushed back to the front. */
  queue: ['group', 'tenant'],
  /** HASH of one owner: `q` items queued, `p` items leased, `u` results undelivered. */
  owner: ['owner'],
  /** HASH of one owner: id → `<bytes>|<fingerprint>` of its submitted, unfinished items (dedupe). */
  pending: ['owner'],
  /** HASH of one owner: id → `<state>|<bytes>|<done clock>|<fingerprint>` of its retained results (state 0 undelivered, 1 in flight, 2 delivered). */
  results: ['owner'],
  /** HASH of one owner: id → outputs (JSON text) of its retained results. */
  outputs: ['owner'],
  /** LIST of one owner: `<done clock>:<id>` of its retained results in done order (`maxRetained` evicts from the front); an entry whose result is gone, or is another result of the id, is stale (see ./redis-scripts.ts compact_lists). */
  done: ['owner'],
  /** LIST of one owner: ids of its undelivered results, in the order they became undelivered (handed to streams from the front); an entry of a result no longer undelivered is stale. */
  undelivered: ['owner'],
  /** ZSET `<owner,id>` → done clock of every retained result, less 2^53 once delivered: the byte eviction takes the oldest delivered first, then the oldest others; swept by age. */
  retained: [],
  /** SET `<owner,id>` of results one backend instance (process) handed to its streams and not yet acknowledged. */
  inFlight: ['instance'],
  /** ZSET instance → its last heartbeat (Redis time, ms): a silent one's in-flight results are undelivered again. */
  instances: [],
  /** HASH `<tenant,model>` → items billed. */
  ledger: [],
  /** HASH owner → items billed (a job's bill). */
  billed: [],
  /** HASH of one owner: node → until when (ms) it holds a stream of the owner (`attach`, renewed while it does): its stream results are routed there too. */
  present: ['owner'],
  /** STREAM of one node (front-end process): the results routed to it (`subscribe`). */
  node: ['node'],
  /** HASH worker node → JSON `{models, workers, until}`: the worker processes online (`announceWorker`). */
  workers: [],
  /** STRING: the deployment's tenant secret (hex), when the front-ends were given none (`sharedSecret`). */
  secret: [],
  /** Pub/sub channel: a transition queued items (waiting leases of every process look again). */
  wake: [],
  /** STRING: the layout version of this prefix's keys (./redis-scripts.ts REDIS_LAYOUT), set by the first process that checks it (`checkLayout`). */
  layout: [],
} as const satisfies Record<string, readonly string[]>

/** Name of a key of {@link KEY_NAMES}. */
export type KeyName = keyof typeof KEY_NAMES

type Args<N extends KeyName> = (typeof KEY_NAMES)[N] extends readonly [] ? [] : (typeof KEY_NAMES)[N] extends readonly [string] ? [string] : [string, string]

/** Two strings as one, unambiguously: `<UTF-8 bytes of a>:<a><b>` (as the Lua `enc2`). */
export function encodePair(a: string, b: string): string {
  return `${Buffer.byteLength(a)}:${a}${b}`
}

/** The inverse of {@link encodePair}. */
export function decodePair(s: string): [string, string] {
  const colon = s.indexOf(':')
  const n = Number(s.slice(0, colon))
  const rest = Buffer.from(s.slice(colon + 1))
  return [rest.subarray(0, n).toString(), rest.subarray(n).toString()]
}

/** The keys of one deployment (one prefix). */
export class RedisKeys {
  constructor(readonly prefix: string) {}

  key<N extends KeyName>(name: N, ...args: Args<N>): string {
    const a: string[] = args
    if (a.length === 0) return this.prefix + name
    if (a.length === 1) return `${this.prefix}${name}:${a[0]}`
    return `${this.prefix}${name}:${encodePair(a[0], a[1])}`
  }

  /** Glob matching every key of this prefix (for SCAN: tests, tooling). */
  pattern(): string {
    return `${this.prefix.replace(/[*?[\]\\]/g, '\\$&')}*`
  }
}

/**
 * The Lua side of the same names: a table `K` with a string per key without arguments and a
 * function per key with arguments, built on `P` (the prefix, the script's first argument), and
 * `enc2` / `dec2` (the pair encoding). Prepended to every script.
 */
export function luaKeys(): string {
  const lines = [
    'local function enc2(a, b) return #a .. ":" .. a .. b end',
    'local function dec2(s) local c = string.find(s, ":", 1, true); local n = tonumber(string.sub(s, 1, c - 1)); return string.sub(s, c + 1, c + n), string.sub(s, c + n + 1) end',
    'local K = {}',
  ]
  for (const [name, args] of Object.entries(KEY_NAMES) as Array<[string, readonly string[]]>) {
    if (args.length === 0) lines.push(`K.${name} = P .. ${JSON.stringify(name)}`)
    else if (args.length === 1) lines.push(`K.${name} = function(a) return P .. ${JSON.stringify(`${name}:`)} .. a end`)
    else lines.push(`K.${name} = function(a, b) return P .. ${JSON.stringify(`${name}:`)} .. enc2(a, b) end`)
  }
  return lines.join('\n')
}

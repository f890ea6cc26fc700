/**
 * The Lua scripts of the Redis state backend: one script per transition (as BullMQ does), so each
 * transition is atomic in Redis whatever the number of items it moves — a process that dies can
 * only fall between two transitions, and two processes never see half of one.
 *
 * Every script is called with no KEYS and `ARGV = [prefix, instance, now, ...]`: the keys are built
 * inside from the prefix with the names of ./redis-keys.ts (so a script reaches per-tenant and
 * per-owner keys it only learns while it runs; a single Redis, or a Redis Cluster with the whole
 * prefix in one hash slot, e.g. `{inference-stream}:`). `now` is the caller's `Date.now()`, as every
 * backend takes its clock from the caller (the contract passes `now` to `reclaim` and `sweep`).
 *
 * The data (key names and their layout: ./redis-keys.ts):
 * - the queue: one list per (group, tenant) of segments (seg_head below): runs of up to
 *   SEGMENT_MAX queued items of one owner, each item one JSON line. Submit appends segments
 *   (`RPUSH`); a lease pops whole segments while they fit and cuts the next one (`LSET` of its rest),
 *   without reading the items, and keeps them in its lease record with their delivery count; finish
 *   deletes the record. Items handed back (release, left out of a finish, an expired lease) are
 *   pushed back to the front (`LPUSH`), each alone after an expired lease. (A first version kept an
 *   entry per item in a Redis stream with a consumer group, `XREADGROUP` / `XACK` / `XCLAIM`: its
 *   lease records already did what the PEL did, and the per-item entries, PEL records and field
 *   lists took more of the one Redis thread than everything else: benchmarks/results/scale-out.md.)
 * - fair share: `round` (tenants, least recently served first), per tenant its groups by the age of
 *   their oldest item and `n` / `l` (items queued, leases held), per group its tenants by age and
 *   its size: what ../queue/memory-queue.ts keeps in memory, kept here so that every process applies
 *   the same rule to the same queue.
 * - results: per owner the pending ids (dedupe), the retained results with their delivery state,
 *   done clock and outputs, lists of them in done order and of the undelivered ones in order (read
 *   from the front, stale entries skipped); in all, retained results by done clock (delivered ones
 *   first: evicted first) and the ledger.
 * - routing: each transition that finishes items appends what goes to a node to that node's stream
 *   (`XADD`): the node reads it (../state/redis-backend.ts), so a notification cannot be lost while
 *   the node lives; a stream route carries `(owner, id)` only, the result stays in the store until
 *   taken.
 */
import { luaKeys } from './redis-keys.js'

/**
 * Version of the layout of the keys (what each holds and how): a process refuses a prefix written
 * with another (`RedisStateBackend.checkLayout`). 1: up to this round (per-owner done and
 * undelivered sorted sets); 2: those are lists, the done clock is in a result's meta.
 */
export const REDIS_LAYOUT = 2

/** Most items in one queue segment (one list element): a submit of more makes several. */
export const SEGMENT_MAX = 64

/** How long a node's stream of routed results lives after its last entry (a node gone for good). */
export const NODE_STREAM_TTL_MS = 24 * 3600 * 1000

// Helpers shared by the scripts. `P`, `INST`, `NOW` are the first three arguments.
const PRELUDE = `
local P, INST, NOW = ARGV[1], ARGV[2], tonumber(ARGV[3])
${luaKeys()}

-- Counters (HASH fields) change through hincr: the deltas of a script are summed and written once
-- by flush() at its end (one HINCRBY per field, not one per item), and a field back at 0 is
-- deleted (idle tenants and owners leave no keys). hnum reads a counter with the pending delta.
-- A counter is read from Redis once per script (BASE), later reads add the pending delta.
local DELTA, BASE = {}, {}
local DC = nil
local function hincr(key, field, d)
  if d == 0 then return end
  local k = DELTA[key]
  if not k then k = {}; DELTA[key] = k end
  k[field] = (k[field] or 0) + d
end
local function hnum(key, field)
  local b = BASE[key]
  if not b then b = {}; BASE[key] = b end
  local v = b[field]
  if v == nil then v = tonumber(redis.call('HGET', key, field)) or 0; b[field] = v end
  local k = DELTA[key]
  if k and k[field] then v = v + k[field] end
  return v
end
local function flush()
  for key, fs in pairs(DELTA) do
    for field, d in pairs(fs) do
      if d ~= 0 and redis.call('HINCRBY', key, field, d) == 0 then redis.call('HDEL', key, field) end
    end
  end
  DELTA, BASE = {}, {}
  if DC then redis.call('HSET', K.stats, 'dc', string.format('%d', DC)) end
  -- Keys written by this version carry its layout, also after a Redis that lost them (a restart
  -- without data) is written again: counters without a layout are another version's (checkLayout).
  redis.call('SET', K.layout, '${REDIS_LAYOUT}', 'NX')
end

-- A variadic command over a list of arguments, in chunks (unpack has a limit): one call per
-- chunk instead of one per item, the main cost of a script being its number of redis.call.
local CHUNK = 4000
local function vcall(cmd, key, list)
  for s = 1, #list, CHUNK do redis.call(cmd, key, unpack(list, s, math.min(s + CHUNK - 1, #list))) end
end
-- The same for a command that answers one value per argument (HMGET, ZMSCORE): the answers in
-- order, false for none.
local function vget(cmd, key, list)
  if #list <= CHUNK then return redis.call(cmd, key, unpack(list)) end
  local out = {}
  for s = 1, #list, CHUNK do
    local e = math.min(s + CHUNK - 1, #list)
    local r = redis.call(cmd, key, unpack(list, s, e))
    for k = 1, e - s + 1 do out[s + k - 1] = r[k] end
  end
  return out
end

-- ../store/result-store.ts tenantOfOwner: byte budgets are per tenant of an owner.
local function tenant_of(owner)
  local nl = string.find(owner, '\\n', 1, true)
  local head = nl and string.sub(owner, 1, nl - 1) or owner
  if string.sub(head, -5) == ' http' then head = string.sub(head, 1, -6) end
  return head
end

-- A segment: a run of queued items of one (group, tenant) and one owner, in line order, kept and
-- leased as one list element (a lease takes whole segments while they fit, and cuts the one that
-- does not). Header '<enqueuedAt>,<deliveries>,<count>,<alone>,<bytes of owner>:<owner>', a
-- newline, then each item as a JSON array on a line of its own (JSON text holds no raw newline):
-- [id, model, compute, parameters, fingerprint, bytes, node, sink, retain, inputs?] (the owner
-- is the header's).
-- seg_head → enqueuedAt, deliveries, count, alone, owner, position of the first item.
local function seg_head(s)
  local _, e, a, d, c, f, ol = string.find(s, '^(%d+),(%d+),(%d+),(%d),(%d+):')
  ol = tonumber(ol)
  return tonumber(a), tonumber(d), tonumber(c), f == '1', string.sub(s, e + 1, e + ol), e + ol + 2
end
local function seg_make(a, d, c, alone, owner, body)
  return string.format('%d', a) .. ',' .. d .. ',' .. c .. (alone and ',1,' or ',0,') .. #owner .. ':' .. owner .. '\\n' .. body
end
-- The item lines of a segment (p: from seg_head).
local function seg_lines(s, p)
  local list = {}
  local pos = p
  while true do
    local nl = string.find(s, '\\n', pos, true)
    if not nl then list[#list + 1] = string.sub(s, pos); return list end
    list[#list + 1] = string.sub(s, pos, nl - 1)
    pos = nl + 1
  end
end

-- A tenant joins the round at the back when it is not in it (../queue/fair-share.ts arrived).
local function arrive(t)
  if not redis.call('ZSCORE', K.round, t) then
    redis.call('ZADD', K.round, redis.call('HINCRBY', K.stats, 'rs', 1), t)
  end
end

-- A tenant with nothing queued and no lease leaves the round (memory-queue maybeForget); past
-- 1024 tenants in the round, every idle one does.
local function forget_idle(t)
  if hnum(K.tenant(t), 'n') == 0 and hnum(K.tenant(t), 'l') == 0 then redis.call('ZREM', K.round, t) end
  if redis.call('ZCARD', K.round) > 1024 then
    for _, u in ipairs(redis.call('ZRANGE', K.round, 0, -1)) do
      if hnum(K.tenant(u), 'n') == 0 and hnum(K.tenant(u), 'l') == 0 then redis.call('ZREM', K.round, u) end
    end
  end
end

-- Puts segments {g, u, s} taken from a lease back at the front of their (group, tenant) lines, in
-- lease order, with their delivery counts: queued again. Returns the items requeued.
local function requeue(list)
  local by, keys = {}, {}
  for _, x in ipairs(list) do
    local k = enc2(x.g, x.u)
    local l = by[k]
    if not l then l = {g = x.g, u = x.u}; by[k] = l; keys[#keys + 1] = k end
    l[#l + 1] = x.s
  end
  local total = 0
  for _, k in ipairs(keys) do
    local l = by[k]
    local rev = {}
    for j = #l, 1, -1 do rev[#rev + 1] = l[j] end
    vcall('LPUSH', K.queue(l.g, l.u), rev)
    local a = seg_head(l[1])
    redis.call('ZADD', K.tenantGroups(l.u), a, l.g)
    redis.call('ZADD', K.groupHeads(l.g), a, l.u)
    arrive(l.u)
    local n = 0
    for _, s in ipairs(l) do
      local _, _, c, _, owner = seg_head(s)
      hincr(K.owner(owner), 'q', c)
      n = n + c
    end
    hincr(K.tenant(l.u), 'n', n)
    hincr(K.groupSize, l.g, n)
    total = total + n
  end
  hincr(K.stats, 'q', total)
  return total
end

-- A lease record (HASH: c, t, x, k segments, g<j> the (group, tenant) and s<j> the text of segment j)
-- → its tenant and segments {g, u, s}; nil when the lease is no longer held.
local function load_lease(id)
  local h = redis.call('HGETALL', K.lease(id))
  if #h == 0 then return nil end
  local m = {}
  for j = 1, #h, 2 do m[h[j]] = h[j + 1] end
  local segs = {}
  for j = 1, tonumber(m.k) do
    local g, u = dec2(m['g' .. j])
    segs[j] = {g = g, u = u, s = m['s' .. j]}
  end
  return m.t, segs
end

-- Ends a lease: its items leave the processing counts (finished, or requeued after). Returns their number.
local function end_lease(id, tenant, segs)
  redis.call('DEL', K.lease(id))
  redis.call('ZREM', K.leases, id)
  hincr(K.tenant(tenant), 'l', -1)
  local n = 0
  for _, x in ipairs(segs) do
    local _, _, c, _, owner = seg_head(x.s)
    hincr(K.owner(owner), 'p', -c)
    n = n + c
  end
  hincr(K.stats, 'p', -n)
  return n
end

-- A retained result's meta (results(o)): '<state>|<bytes>|<done clock>|<fingerprint>', state 0
-- undelivered, 1 in flight, 2 delivered. → state, bytes, fingerprint field, done clock (text).
local function meta_parse(m)
  local b1 = string.find(m, '|', 3, true)
  local b2 = string.find(m, '|', b1 + 1, true)
  return string.sub(m, 1, 1), tonumber(string.sub(m, 3, b1 - 1)), string.sub(m, b2 + 1), string.sub(m, b1 + 1, b2 - 1)
end

-- A delivered result's score in \`retained\`: its done clock less 2^53 (exact in a double), so that
-- delivered results come first, oldest first, and the others after them in done order.
local SHIFT = 9007199254740992
local function delivered_score(c)
  return string.format('%d', tonumber(c) - SHIFT)
end

local function wake_if_queued()
  if hnum(K.stats, 'q') > 0 then redis.call('PUBLISH', K.wake, '1') end
end
`

// Results: retention, delivery states, routing. Used by finish, reclaim and the delivery scripts.
// Limits (for the scripts that store results) are ARGV[4..7]: maxRetained, its slack, maxRetainedBytes
// (-1: none), the low water of the byte eviction.
const RESULTS = `
-- Takes a pending id off (its queued bytes released); its fingerprint field, or nil.
local function unpend(owner, id)
  local v = redis.call('HGET', K.pending(owner), id)
  if not v then return nil end
  redis.call('HDEL', K.pending(owner), id)
  local bar = string.find(v, '|', 1, true)
  hincr(K.tenant(tenant_of(owner)), 'qb', -tonumber(string.sub(v, 1, bar - 1)))
  return string.sub(v, bar + 1)
end

-- Deletes retained results of one owner (distinct ids), one call per key whatever their number.
-- Returns how many had not been delivered (lost) and how many there were. Their entries in the
-- owner's lists (done, undelivered) and in an instance's in-flight set stay, stale: skipped when
-- they are read (an entry is live only while the result's meta says so), and gone with the lists
-- once the owner has no result left.
local function remove_many(owner, ids)
  local ms = vget('HMGET', K.results(owner), ids)
  local gone, members = {}, {}
  local rb, ub, lost, nu = 0, 0, 0, 0
  for k, id in ipairs(ids) do
    local m = ms[k]
    if m then
      local st, b = meta_parse(m)
      gone[#gone + 1] = id
      members[#members + 1] = enc2(owner, id)
      rb = rb + b
      if st ~= '2' then
        lost = lost + 1
        if st == '0' then nu = nu + 1; ub = ub + b end
      end
    end
  end
  if #gone == 0 then return 0, 0 end
  vcall('HDEL', K.results(owner), gone)
  vcall('HDEL', K.outputs(owner), gone)
  vcall('ZREM', K.retained, members)
  hincr(K.stats, 'rb', -rb)
  if nu > 0 then
    hincr(K.tenant(tenant_of(owner)), 'ub', -ub)
    hincr(K.owner(owner), 'u', -nu)
  end
  if redis.call('HLEN', K.results(owner)) == 0 then redis.call('DEL', K.done(owner), K.undelivered(owner)) end
  return lost, #gone
end

-- Entries '<done clock>:<id>' of an owner's done list → their ids, and whether each is live (its
-- result retained, with that done clock).
local function done_entries(o, es)
  local ids, cs = {}, {}
  for j, e in ipairs(es) do
    local p = string.find(e, ':', 1, true)
    cs[j] = string.sub(e, 1, p - 1); ids[j] = string.sub(e, p + 1)
  end
  local ms = vget('HMGET', K.results(o), ids)
  local live = {}
  for j = 1, #es do
    local m = ms[j]
    local _, _, _, c
    if m then _, _, _, c = meta_parse(m) end
    live[j] = c == cs[j]
  end
  return ids, live
end

-- The owner's lists hold stale entries (see remove_many) besides live ones: when one holds more
-- than twice its live entries (and 256), it is rewritten with the live ones only, so that its
-- length stays within a constant of what the owner retains (the cost, amortized over the entries
-- appended since the last rewrite, is a constant per entry). Called after each append.
local function compact_lists(o)
  local n = redis.call('HLEN', K.results(o))
  local key = K.done(o)
  if redis.call('LLEN', key) > 2 * n + 256 then
    local es = redis.call('LRANGE', key, 0, -1)
    local _, live = done_entries(o, es)
    local keep = {}
    for j, e in ipairs(es) do
      if live[j] then keep[#keep + 1] = e end
    end
    redis.call('DEL', key)
    if #keep > 0 then vcall('RPUSH', key, keep) end
  end
  key = K.undelivered(o)
  if redis.call('LLEN', key) > 2 * hnum(K.owner(o), 'u') + 256 then
    local ids = redis.call('LRANGE', key, 0, -1)
    local ms = vget('HMGET', K.results(o), ids)
    local keep, seen = {}, {}
    for j, id in ipairs(ids) do
      local m = ms[j]
      if m and not seen[id] and string.sub(m, 1, 1) == '0' then seen[id] = true; keep[#keep + 1] = id end
    end
    redis.call('DEL', key)
    if #keep > 0 then vcall('RPUSH', key, keep) end
  end
end

-- Removes the owner's k oldest retained results (maxRetained): the live entries at the front of
-- its done list (stale ones on the way are dropped). Returns the undelivered ones lost.
local function evict_count(o, k)
  local key = K.done(o)
  local ids = {}
  local consumed = 0
  while #ids < k do
    local es = redis.call('LRANGE', key, consumed, consumed + math.max(k - #ids, 64) - 1)
    if #es == 0 then break end
    local cids, live = done_entries(o, es)
    for j = 1, #es do
      consumed = consumed + 1
      if live[j] then
        ids[#ids + 1] = cids[j]
        if #ids == k then break end
      end
    end
  end
  redis.call('LTRIM', key, consumed, -1)
  return (remove_many(o, ids))
end

-- The done clock: completion order (ms × 1024, unique and increasing), the score of retained results.
local function clock()
  if DC then DC = DC + 1 else DC = math.max(NOW * 1024, hnum(K.stats, 'dc') + 1) end
  return DC
end

local LIM_MAX, LIM_SLACK, LIM_BYTES, LIM_LOW = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])

-- The oldest delivered results, then the oldest undelivered ones (the order of \`retained\`), down
-- to the low water.
local function evict_bytes()
  local lost = 0
  while hnum(K.stats, 'rb') > LIM_LOW do
    local m = redis.call('ZRANGE', K.retained, 0, 0)[1]
    if not m then break end
    local o, i = dec2(m)
    local l, n = remove_many(o, {i})
    if n == 0 then redis.call('ZREM', K.retained, m) end
    lost = lost + l
  end
  return lost
end

-- Which of an owner's finished ids are stored now, in one HMGET / HDEL per key: for each, its
-- fingerprint field when this is its first result (its pending entry is taken off and its queued
-- bytes released; '' when it was not pending), false when it is not (the id again in this call,
-- or already retained).
local function firsts(o, ids)
  local pv = vget('HMGET', K.pending(o), ids)
  local gone, miss, missK, seen, fpf = {}, {}, {}, {}, {}
  local freed = 0
  for k = 1, #ids do
    local id, v = ids[k], pv[k]
    if seen[id] then fpf[k] = false
    elseif v then
      seen[id] = true
      local bar = string.find(v, '|', 1, true)
      freed = freed + tonumber(string.sub(v, 1, bar - 1))
      fpf[k] = string.sub(v, bar + 1)
      gone[#gone + 1] = id
    else
      seen[id] = true
      fpf[k] = false
      miss[#miss + 1] = id; missK[#missK + 1] = k
    end
  end
  if #gone > 0 then
    vcall('HDEL', K.pending(o), gone)
    hincr(K.tenant(tenant_of(o)), 'qb', -freed)
  end
  if #miss > 0 then
    local rv = vget('HMGET', K.results(o), miss)
    for m, k in ipairs(missK) do
      if not rv[m] then fpf[k] = '' end
    end
  end
  return fpf
end

-- Keeps an owner's finished results: each k with fpf[k] (its first result, see firsts) as a
-- retained result, its text st[k] of UTF-16 length ln[k], delivered when dl and dl[k] (a
-- retained sink result), else undelivered. One call per key; then the owner's oldest over
-- maxRetained go. Returns the undelivered results that eviction lost.
local function keep_results(o, ids, fpf, st, ln, dl)
  local hr, ho, zr, de, ul = {}, {}, {}, {}, {}
  local ub, rb = 0, 0
  for k = 1, #ids do
    local f = fpf[k]
    if f then
      local id, len, delivered = ids[k], ln[k], dl and dl[k]
      local c = string.format('%d', clock())
      local h = #hr
      hr[h + 1] = id; hr[h + 2] = (delivered and '2|' or '0|') .. len .. '|' .. c .. '|' .. f
      ho[h + 1] = id; ho[h + 2] = st[k]
      zr[h + 1] = delivered and delivered_score(c) or c; zr[h + 2] = enc2(o, id)
      de[#de + 1] = c .. ':' .. id
      if not delivered then ul[#ul + 1] = id; ub = ub + len end
      rb = rb + len
    end
  end
  if #hr == 0 then return 0 end
  vcall('HSET', K.results(o), hr)
  vcall('HSET', K.outputs(o), ho)
  vcall('ZADD', K.retained, zr)
  vcall('RPUSH', K.done(o), de)
  if #ul > 0 then
    vcall('RPUSH', K.undelivered(o), ul)
    hincr(K.tenant(tenant_of(o)), 'ub', ub)
    hincr(K.owner(o), 'u', #ul)
  end
  hincr(K.stats, 'rb', rb)
  local n = redis.call('HLEN', K.results(o))
  local lost = 0
  if n > LIM_MAX + LIM_SLACK then lost = evict_count(o, n - LIM_MAX) end
  compact_lists(o)
  return lost
end

-- The memory store's complete, for results given as tables {o, i, stored, len, delivered} (a
-- sink's, a dead letter's): sets e.first on each (no result before: stored now) and returns the
-- undelivered results evicted for room.
local function complete_many(list)
  local by, owners = {}, {}
  for _, e in ipairs(list) do
    local l = by[e.o]
    if not l then l = {}; by[e.o] = l; owners[#owners + 1] = e.o end
    l[#l + 1] = e
  end
  local lost = 0
  for _, o in ipairs(owners) do
    local ids, st, ln, dl = {}, {}, {}, {}
    for k, e in ipairs(by[o]) do ids[k], st[k], ln[k], dl[k] = e.i, e.stored, e.len, e.delivered end
    local fpf = firsts(o, ids)
    for k, e in ipairs(by[o]) do e.first = fpf[k] ~= false end
    lost = lost + keep_results(o, ids, fpf, st, ln, dl)
  end
  if LIM_BYTES >= 0 and hnum(K.stats, 'rb') > LIM_BYTES then lost = lost + evict_bytes() end
  return lost
end

-- What this transition routes, per node: written by flush_routes() as one stream entry per node
-- (up to 256 results an entry), each result's fields starting with 'o'. The reply lists the
-- entries: node, entry id, fields.
local ROUTES, NODES = {}, {}
local routed = {}
local function route(node, f)
  local list = ROUTES[node]
  if not list then list = {}; ROUTES[node] = list; table.insert(NODES, node) end
  table.insert(list, f)
end
local function flush_routes()
  for _, node in ipairs(NODES) do
    local key = K.node(node)
    local list = ROUTES[node]
    for start = 1, #list, 256 do
      local f = {}
      for j = start, math.min(start + 255, #list) do
        for _, v in ipairs(list[j]) do table.insert(f, v) end
      end
      local eid = redis.call('XADD', key, '*', 'w', INST, unpack(f))
      table.insert(routed, {node, eid, f})
    end
    redis.call('PEXPIRE', key, ${NODE_STREAM_TTL_MS})
  end
end

-- The nodes where an owner has a stream open (attach), read once per script; an entry past its
-- time (a node that died without detaching) is dropped.
local PRESENT = {}
local function present(owner)
  local list = PRESENT[owner]
  if list then return list end
  list = {}
  local key = K.present(owner)
  local kv = redis.call('HGETALL', key)
  for j = 1, #kv, 2 do
    if tonumber(kv[j + 1]) > NOW then table.insert(list, kv[j]) else redis.call('HDEL', key, kv[j]) end
  end
  PRESENT[owner] = list
  return list
end

-- Stores finished items' results (or forgets them: a sink route without retain) and routes them.
-- list: {it, r} with r: stored (text kept), len (its UTF-16 length), outputs (the result itself),
-- oversize, failed, cs. Sets r.first (no result before: billable once); returns the results lost.
local function store_many(list)
  local keep = {}
  for _, x in ipairs(list) do
    local it, r = x[1], x[2]
    if not it.s then
      local f = {'o', it.o, 'i', it.i}
      if r.oversize then table.insert(f, 'v'); table.insert(f, '1'); table.insert(f, 'x'); table.insert(f, r.outputs) end
      route(it.n, f)
      for _, n in ipairs(present(it.o)) do
        if n ~= it.n then route(n, {'o', it.o, 'i', it.i}) end
      end
      r.o, r.i, r.delivered = it.o, it.i, false
      table.insert(keep, r)
    else
      local f = {'o', it.o, 'i', it.i, 's', it.s, 'x', r.outputs}
      if r.failed then table.insert(f, 'f'); table.insert(f, '1') end
      if r.cs and r.cs ~= '' then table.insert(f, 'c'); table.insert(f, r.cs) end
      route(it.n, f)
      if it.r then
        r.o, r.i, r.delivered = it.o, it.i, true
        table.insert(keep, r)
      else
        local p = unpend(it.o, it.i)
        local _, removed = remove_many(it.o, {it.i})
        r.first = p ~= nil or removed == 0
      end
    end
  end
  if #keep == 0 then return 0 end
  return complete_many(keep)
end

-- finish's results, read in place from ARGV (js: the position of each result's first argument,
-- cx: its context, the fields its item shares with others of the lease; see FINISH), without a
-- table per item: stored (keep_results), routed and billed as store_many does. Stream results are
-- routed as one list of ids per (node, owner). Results for a sink go through store_many. Returns
-- the results lost to eviction and the items billed.
local function store_finish(js, cx)
  local byOwner, owners, sinks = {}, {}, {}
  for k = 1, #js do
    local C = cx[k]
    if C.s ~= '' then sinks[#sinks + 1] = k
    else
      local l = byOwner[C.o]
      if not l then l = {}; byOwner[C.o] = l; owners[#owners + 1] = C.o end
      l[#l + 1] = k
    end
  end
  local lost, billed = 0, 0
  for _, o in ipairs(owners) do
    local l = byOwner[o]
    local ids = {}
    for x, k in ipairs(l) do ids[x] = ARGV[js[k] + 7] end
    -- Each id's first result is stored; a later one is only routed.
    local fpf = firsts(o, ids)
    local pres = present(o)
    local toNode, nodes = {}, {}
    local function to(node, id)
      local list = toNode[node]
      if not list then list = {}; toNode[node] = list; nodes[#nodes + 1] = node end
      list[#list + 1] = id
    end
    local st, ln = {}, {}
    local nb = 0
    for x, k in ipairs(l) do
      local j, C = js[k], cx[k]
      local id, node, flags = ids[x], C.n, tonumber(ARGV[j + 2])
      if flags >= 4 then route(node, {'o', o, 'i', id, 'v', '1', 'x', ARGV[j + 4]}) else to(node, id) end
      for _, n in ipairs(pres) do
        if n ~= node then to(n, id) end
      end
      local stored = ARGV[j + 5]
      st[x] = stored ~= '' and stored or ARGV[j + 4]
      ln[x] = tonumber(ARGV[j + 6])
      if fpf[x] and flags % 2 == 1 then
        if not C.led then C.led = enc2(C.t, C.m) end
        hincr(K.ledger, C.led, 1)
        nb = nb + 1
      end
    end
    if nb > 0 then
      hincr(K.billed, o, nb)
      billed = billed + nb
    end
    for _, node in ipairs(nodes) do route(node, {'o', o, 'I', cjson.encode(toNode[node])}) end
    lost = lost + keep_results(o, ids, fpf, st, ln)
  end
  if LIM_BYTES >= 0 and hnum(K.stats, 'rb') > LIM_BYTES then lost = lost + evict_bytes() end
  if #sinks > 0 then
    local done = {}
    for _, k in ipairs(sinks) do
      local j, C = js[k], cx[k]
      local flags, stored = tonumber(ARGV[j + 2]), ARGV[j + 5]
      done[#done + 1] = {
        { o = C.o, i = ARGV[j + 7], t = C.t, m = C.m, n = C.n, s = C.s, r = C.r },
        { billable = flags % 2 == 1, failed = math.floor(flags / 2) % 2 == 1, oversize = math.floor(flags / 4) % 2 == 1,
          cs = ARGV[j + 3], outputs = ARGV[j + 4], stored = stored ~= '' and stored or ARGV[j + 4], len = tonumber(ARGV[j + 6]) },
      }
    end
    lost = lost + store_many(done)
    for _, x in ipairs(done) do
      if x[2].billable and x[2].first then
        hincr(K.ledger, enc2(x[1].t, x[1].m), 1)
        hincr(K.billed, x[1].o, 1)
        billed = billed + 1
      end
    end
  end
  return lost, billed
end
`

/**
 * submit — ARGV: prefix, instance, now, maxQueuedBytes (-1: none), the number of contexts C, then 3
 * per context: owner, tenant, group (what items of one stream share, sent once), then 5 per item:
 * its context (1-based), id, fingerprint field ('' or '=' + it), bytes, the item's JSON line (see
 * seg_head).
 * Reply: a string of one letter per item (q queued, p pending, c conflict, o overloaded, d done)
 * then the outputs of each `d`, in order. Each item is deduped and queued in the same step; the
 * queued ones are appended to their (group, tenant) line as segments of up to SEG_MAX items.
 */
const SUBMIT = `
local SEG_MAX = ${SEGMENT_MAX}
local maxq = tonumber(ARGV[4])
local codes = {}
local reply = {''}
local queued = 0
-- What the store knows of the ids: one HMGET per owner for the pending ids, one for the retained
-- results among the rest. PV / RV: owner → id → value; an item queued below joins PV, so the same
-- id later in this call is pending.
local PV, RV, IDS, OWNERS = {}, {}, {}, {}
local nctx = tonumber(ARGV[5])
local CO, CT, CG = {}, {}, {}
for c = 1, nctx do
  local b = 3 + c * 3
  CO[c], CT[c], CG[c] = ARGV[b], ARGV[b + 1], ARGV[b + 2]
end
local FIRST = 6 + nctx * 3
for j = FIRST, #ARGV, 5 do
  local o = CO[tonumber(ARGV[j])]
  local l = IDS[o]
  if not l then l = {}; IDS[o] = l; table.insert(OWNERS, o) end
  l[#l + 1] = ARGV[j + 1]
end
for _, o in ipairs(OWNERS) do
  local ids = IDS[o]
  local pv, pt, rt, miss = vget('HMGET', K.pending(o), ids), {}, {}, {}
  for k, id in ipairs(ids) do
    if pv[k] then pt[id] = pv[k] else miss[#miss + 1] = id end
  end
  if #miss > 0 then
    local rv = vget('HMGET', K.results(o), miss)
    for k, id in ipairs(miss) do
      if rv[k] then rt[id] = rv[k] end
    end
  end
  PV[o], RV[o] = pt, rt
end
-- Written once per key at the end: pending ids per owner; per (group, tenant) line its new
-- segments (OPEN: the one being filled, of one owner), and its age entries (ZADD NX: the first item
-- of this call is the oldest it adds).
local NEWP, NEWP_OWNERS, LINES, OPEN, ARRIVED = {}, {}, {}, {}, {}
-- The budget key of each owner's tenant.
local TK = {}
local function close(q, o)
  local l = LINES[q]
  l[#l + 1] = seg_make(NOW, 0, o.n, false, o.owner, table.concat(o.items, '\\n'))
  hincr(K.tenant(l.t), 'n', o.n)
  hincr(K.owner(o.owner), 'q', o.n)
  hincr(K.groupSize, l.g, o.n)
end
local lastG, lastT, lastQ
for j = FIRST, #ARGV, 5 do
  local c = tonumber(ARGV[j])
  local owner, id, tenant, group, fpf, bytes = CO[c], ARGV[j + 1], CT[c], CG[c], ARGV[j + 2], tonumber(ARGV[j + 3])
  local pv = PV[owner][id]
  if pv then
    local have = string.sub(pv, string.find(pv, '|', 1, true) + 1)
    codes[#codes + 1] = (fpf ~= '' and have ~= '' and have ~= fpf) and 'c' or 'p'
  else
    local m = RV[owner][id]
    if m then
      local _, _, have = meta_parse(m)
      if fpf ~= '' and have ~= '' and have ~= fpf then codes[#codes + 1] = 'c'
      else
        codes[#codes + 1] = 'd'
        reply[#reply + 1] = redis.call('HGET', K.outputs(owner), id) or 'null'
      end
    else
      local tk = TK[owner]
      if not tk then tk = K.tenant(tenant_of(owner)); TK[owner] = tk end
      local qb = hnum(tk, 'qb')
      if maxq >= 0 and qb > 0 and qb + bytes > maxq then codes[#codes + 1] = 'o'
      else
        local v = bytes .. '|' .. fpf
        PV[owner][id] = v
        local np = NEWP[owner]
        if not np then np = {}; NEWP[owner] = np; NEWP_OWNERS[#NEWP_OWNERS + 1] = owner end
        np[#np + 1] = id; np[#np + 1] = v
        hincr(tk, 'qb', bytes)
        local q
        if group == lastG and tenant == lastT then q = lastQ
        else
          q = K.queue(group, tenant)
          lastG, lastT, lastQ = group, tenant, q
        end
        if not LINES[q] then
          LINES[q] = {g = group, t = tenant}
          LINES[#LINES + 1] = q
          redis.call('ZADD', K.tenantGroups(tenant), 'NX', NOW, group)
          redis.call('ZADD', K.groupHeads(group), 'NX', NOW, tenant)
          if not ARRIVED[tenant] then ARRIVED[tenant] = true; arrive(tenant) end
        end
        local o = OPEN[q]
        if o and (o.owner ~= owner or o.n == SEG_MAX) then close(q, o); o = nil end
        if not o then o = {owner = owner, items = {}, n = 0}; OPEN[q] = o end
        o.n = o.n + 1
        o.items[o.n] = ARGV[j + 4]
        queued = queued + 1
        codes[#codes + 1] = 'q'
      end
    end
  end
end
for _, o in ipairs(NEWP_OWNERS) do vcall('HSET', K.pending(o), NEWP[o]) end
for _, q in ipairs(LINES) do
  close(q, OPEN[q])
  vcall('RPUSH', q, LINES[q])
end
if queued > 0 then
  hincr(K.stats, 'q', queued)
  redis.call('PUBLISH', K.wake, '1')
end
flush()
reply[1] = table.concat(codes)
return reply
`

/**
 * lease — ARGV: prefix, instance, now, maxBatch, maxWaitMs, maxLeasesPerTenant (-1: none),
 * consumer, leaseMs, the models served ('\n'-separated; '' for all: a group of another model is
 * skipped), then groups to skip (refused by `accept` in this look).
 * Applies ../queue/fair-share.ts as ../queue/memory-queue.ts does: tenants in round order, none at
 * its cap; the chosen tenant's oldest ready group (full, or its oldest item waited maxWaitMs); its
 * items of the group first (handed-back ones first), then other tenants' items of the group, oldest
 * first. Reply: `{'wait', ms}` (ms -1: nothing will be ready without a new transition) or
 * `{'lease', id, tenant, expiresAt, tenant's round score before, segments}` with each segment as 6
 * elements: group, tenant, owner, enqueuedAt, deliveries, its item lines (see seg_head).
 */
const LEASE = `
local maxBatch, maxWait, cap, consumer, leaseMs = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7], tonumber(ARGV[8])
local refused = {}
for j = 10, #ARGV do refused[ARGV[j]] = true end
-- The models served, when not all: a group key starts with its model and a newline.
local served = nil
if ARGV[9] ~= '' then
  served = {}
  for m in string.gmatch(ARGV[9], '[^\\n]+') do served[m] = true end
end
local function unserved(g)
  return served ~= nil and not served[string.sub(g, 1, (string.find(g, '\\n', 1, true) or (#g + 1)) - 1)]
end

-- The reply's segments, the lease record's fields, segments and items taken.
local out, recs = {}, {}
local nseg, total = 0, 0
local function push(g, u, a, d, c, alone, owner, body)
  nseg = nseg + 1
  local o = #out
  out[o + 1] = g; out[o + 2] = u; out[o + 3] = owner; out[o + 4] = string.format('%d', a); out[o + 5] = d; out[o + 6] = body
  o = #recs
  recs[o + 1] = 'g' .. nseg; recs[o + 2] = enc2(g, u)
  recs[o + 3] = 's' .. nseg; recs[o + 4] = seg_make(a, d, c, alone, owner, body)
  hincr(K.tenant(u), 'n', -c)
  hincr(K.owner(owner), 'q', -c)
  hincr(K.owner(owner), 'p', c)
  total = total + c
end

-- Takes up to max items from the front of the line of (group g, tenant u): whole segments while
-- they fit, then the first items of the next one (the rest stays first in line); with one, from
-- one segment at most. A segment whose lease ran out before (alone: its worker died or hung on
-- it; one item) is a batch of its own: it comes first and alone, or waits for the next batch
-- (ALONE then ends this one), so that an item that kills its worker fails by itself. Then records
-- the new age of the (g, u) head, or that the line is empty.
local ALONE = false
local function take_from(g, u, max, one)
  local q = K.queue(g, u)
  local n = 0
  while n < max and not ALONE do
    local s = redis.call('LINDEX', q, 0)
    if not s then break end
    local a, d, c, alone, owner, p = seg_head(s)
    if alone then
      if total > 0 then ALONE = true; break end
      ALONE = true
    end
    local room = max - n
    if c <= room then
      redis.call('LPOP', q)
      push(g, u, a, d + 1, c, alone, owner, string.sub(s, p))
      n = n + c
    else
      local cut = p
      for _ = 1, room do cut = string.find(s, '\\n', cut, true) + 1 end
      redis.call('LSET', q, 0, seg_make(a, d, c - room, alone, owner, string.sub(s, cut)))
      push(g, u, a, d + 1, room, alone, owner, string.sub(s, p, cut - 2))
      n = n + room
    end
    if one then break end
  end
  local front = redis.call('LINDEX', q, 0)
  if front then
    local at = tonumber(string.match(front, '^%d+'))
    redis.call('ZADD', K.tenantGroups(u), at, g)
    redis.call('ZADD', K.groupHeads(g), at, u)
  else
    redis.call('ZREM', K.tenantGroups(u), g)
    redis.call('ZREM', K.groupHeads(g), u)
  end
  return n
end

local function take(t, g)
  take_from(g, t, maxBatch, false)
  while total < maxBatch and not ALONE do
    local h = redis.call('ZRANGE', K.groupHeads(g), 0, 0)[1]
    if not h or take_from(g, h, maxBatch - total, true) == 0 then break end
  end
  hincr(K.groupSize, g, -total)
  hincr(K.stats, 'q', -total)
  hincr(K.stats, 'p', total)
  hincr(K.tenant(t), 'l', 1)
  local before = redis.call('ZSCORE', K.round, t) or '0'
  redis.call('ZADD', K.round, redis.call('HINCRBY', K.stats, 'rs', 1), t)
  local id = 'L' .. redis.call('HINCRBY', K.stats, 'ls', 1)
  local x = NOW + leaseMs
  redis.call('HSET', K.lease(id), 'c', consumer, 't', t, 'x', string.format('%d', x), 'k', nseg, unpack(recs))
  redis.call('ZADD', K.leases, x, id)
  flush()
  return {'lease', id, t, x, before, out}
end

local wait = -1
local filling = {}
for _, t in ipairs(redis.call('ZRANGE', K.round, 0, -1)) do
  if hnum(K.tenant(t), 'n') > 0 and (cap < 0 or hnum(K.tenant(t), 'l') < cap) then
    for _, g in ipairs(redis.call('ZRANGE', K.tenantGroups(t), 0, -1)) do
      if not refused[g] and not filling[g] and not unserved(g) then
        local ready = hnum(K.groupSize, g) >= maxBatch
        if not ready then
          local h = redis.call('ZRANGE', K.groupHeads(g), 0, 0, 'WITHSCORES')
          local age = NOW - tonumber(h[2])
          if age >= maxWait then ready = true
          else
            filling[g] = true
            if wait < 0 or maxWait - age < wait then wait = maxWait - age end
          end
        end
        if ready then return take(t, g) end
      end
    end
  end
end
return {'wait', wait}
`

/** extend — ARGV: prefix, instance, now, lease id, ms. Reply 1 when held (renewed), 0 when not. */
const EXTEND = `
local id = ARGV[4]
if not redis.call('ZSCORE', K.leases, id) then return 0 end
local x = NOW + tonumber(ARGV[5])
redis.call('ZADD', K.leases, x, id)
redis.call('HSET', K.lease(id), 'x', string.format('%d', x))
return 1
`

/**
 * finish — ARGV: prefix, instance, now, 4 limits, lease id, the number of contexts C, then 6 per
 * context: the owner, tenant, model, node, sink (or '') and retain ('1' or '') that items of the
 * lease share (one context per run of equal ones, so they are not sent for every item), then 8 per
 * result: its context (1-based), index, flags (1 billable, 2 failed, 4 oversize), compute seconds
 * (or ''), outputs, the text to store (or '': the outputs), its UTF-16 length, and the item's id,
 * as the lease handed them out (workers are trusted: they hold the Redis credentials; the script
 * checks that the lease is held and its indexes). One step: results stored, each (owner, id)
 * billed at most once, routed, the lease ended; items without a result go back to the front of
 * the queue.
 * Reply: `{finished, billed, lost, routed}`; all zero when the lease is no longer held.
 */
const FINISH = `
local id = ARGV[8]
local tenant, segs = load_lease(id)
if not tenant then return {0, 0, 0, {}} end
local total = end_lease(id, tenant, segs)
local nctx = tonumber(ARGV[9])
local CTX = {}
for c = 1, nctx do
  local b = 9 + (c - 1) * 6
  CTX[c] = {o = ARGV[b + 1], t = ARGV[b + 2], m = ARGV[b + 3], n = ARGV[b + 4], s = ARGV[b + 5], r = ARGV[b + 6] ~= '' or nil}
end
local res, js, cx = {}, {}, {}
local finished = 0
for j = 10 + nctx * 6, #ARGV, 8 do
  local k = tonumber(ARGV[j + 1]) + 1
  local C = CTX[tonumber(ARGV[j])]
  if C and k >= 1 and k <= total and not res[k] then
    res[k] = true
    finished = finished + 1
    js[finished] = j
    cx[finished] = C
  end
end
if finished < total then
  -- The items left out go back first in line, in lease order, their segments cut down to them.
  local again, k = {}, 0
  for _, x in ipairs(segs) do
    local a, d, c, alone, owner, p = seg_head(x.s)
    local keep = {}
    for _, line in ipairs(seg_lines(x.s, p)) do
      k = k + 1
      if not res[k] then keep[#keep + 1] = line end
    end
    if #keep > 0 then again[#again + 1] = {g = x.g, u = x.u, s = seg_make(a, d, #keep, alone, owner, table.concat(keep, '\\n'))} end
  end
  requeue(again)
end
local lost, billed = store_finish(js, cx)
forget_idle(tenant)
wake_if_queued()
flush()
flush_routes()
return {finished, billed, lost, routed}
`

/**
 * release — ARGV: prefix, instance, now, lease id, undo ('1': the lease is taken back because
 * `accept` refused its group: its deliveries are not counted and its tenant gets its turn back), the
 * tenant's round score before the lease. Items go back to the front of the queue, unbilled.
 */
const RELEASE = `
local id = ARGV[4]
local tenant, segs = load_lease(id)
if not tenant then return 0 end
local n = end_lease(id, tenant, segs)
if ARGV[5] == '1' then
  for _, x in ipairs(segs) do
    local a, d, c, alone, owner, p = seg_head(x.s)
    x.s = seg_make(a, d - 1, c, alone, owner, string.sub(x.s, p))
  end
  if redis.call('ZSCORE', K.round, tenant) then redis.call('ZADD', K.round, ARGV[6], tenant) end
end
requeue(segs)
forget_idle(tenant)
wake_if_queued()
flush()
return n
`

/**
 * reclaim — ARGV: prefix, instance, now, 4 limits, maxDeliveries, the dead letter's error body
 * (JSON with \\u0001 for the id and \\u0002 for the count), the oversize error body (JSON with \\u0001
 * for the bytes), the time to reclaim at (`reclaim(now)`; ARGV[3] is the clock of the results it
 * stores). Leases expired by then end: their items go back to the queue, each alone from now on,
 * or — leased maxDeliveries times already — finish with that error (routed, not billed: dead
 * letters). Reply: `{requeued, dead, routed}`.
 */
const RECLAIM = `
local maxD = tonumber(ARGV[8])
local DEAD, OVER = ARGV[9], ARGV[10]

local ESC = { ['"'] = '\\\\"', ['\\\\'] = '\\\\\\\\', ['\\b'] = '\\\\b', ['\\f'] = '\\\\f', ['\\n'] = '\\\\n', ['\\r'] = '\\\\r', ['\\t'] = '\\\\t' }
-- JSON.stringify of a string, without the quotes.
local function json_inner(s)
  return (string.gsub(s, '[%z\\1-\\31"\\\\]', function(c) return ESC[c] or string.format('\\\\u%04x', string.byte(c)) end))
end
-- UTF-16 length of UTF-8 text (what JavaScript's .length counts).
local function utf16len(s)
  local _, cont = string.gsub(s, '[\\128-\\191]', '')
  local _, four = string.gsub(s, '[\\240-\\247]', '')
  return #s - cont + four
end
local function str(v)
  if type(v) == 'string' then return v end
  return nil
end

local requeued, dead = 0, 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.leases, '-inf', ARGV[11])) do
  local tenant, segs = load_lease(id)
  if tenant then
    end_lease(id, tenant, segs)
    local again = {}
    for _, x in ipairs(segs) do
      local a, d, c, alone, owner, p = seg_head(x.s)
      local lines = seg_lines(x.s, p)
      if d < maxD then
        -- A worker died or hung on these: each is leased alone from now on (take_from).
        for _, line in ipairs(lines) do again[#again + 1] = {g = x.g, u = x.u, s = seg_make(a, d, 1, true, owner, line)} end
      else
        for _, line in ipairs(lines) do
          -- [id, model, compute, parameters, fingerprint, bytes, node, sink, retain, inputs?]
          local v = cjson.decode(line)
          local it = { o = owner, i = str(v[1]) or '', t = x.u, m = str(v[2]) or '', n = str(v[7]) or '', s = str(v[8]), r = v[9] == 1 or nil }
          local quoted = json_inner('"' .. json_inner(it.i) .. '"')
          local body = string.gsub(DEAD, '\\\\u0001', function() return quoted end)
          body = string.gsub(body, '\\\\u0002', function() return tostring(d) end)
          local len = utf16len(body)
          local r = { outputs = body, stored = body, len = len, failed = true }
          if LIM_BYTES >= 0 and len > LIM_BYTES then
            r.stored = string.gsub(OVER, '\\\\u0001', function() return tostring(len) end)
            r.len = utf16len(r.stored)
            r.oversize = true
          end
          store_many({{it, r}})
          dead = dead + 1
        end
      end
    end
    requeued = requeued + requeue(again)
    forget_idle(tenant)
  end
end
if dead > 0 then hincr(K.stats, 'dead', dead) end
if requeued > 0 then wake_if_queued() end
flush()
flush_routes()
return {requeued, dead, routed}
`

// Delivery: results of an owner between undelivered, in flight (this instance) and delivered. The
// owner's undelivered list holds ids in the order they became undelivered (finished, or handed
// back: at the end, as the memory store does); an entry is live while the result's state is 0
// (claim, acknowledge and removal leave stale entries: skipped by take, dropped by compact_lists).
const DELIVERY = `
local function claim1(owner, id)
  local m = redis.call('HGET', K.results(owner), id)
  if not m or string.sub(m, 1, 1) ~= '0' then return nil end
  local _, b = meta_parse(m)
  redis.call('HSET', K.results(owner), id, '1' .. string.sub(m, 2))
  hincr(K.tenant(tenant_of(owner)), 'ub', -b)
  hincr(K.owner(owner), 'u', -1)
  redis.call('SADD', K.inFlight(INST), enc2(owner, id))
  return redis.call('HGET', K.outputs(owner), id)
end

-- In-flight results of an owner are undelivered again, appended to its list in done order.
local function unclaim_many(owner, ids)
  local ms = vget('HMGET', K.results(owner), ids)
  local hs, back, seen, at = {}, {}, {}, {}
  local b = 0
  for k, id in ipairs(ids) do
    local m = ms[k]
    if m and not seen[id] and string.sub(m, 1, 1) == '1' then
      seen[id] = true
      local _, n, _, c = meta_parse(m)
      b = b + n
      hs[#hs + 1] = id; hs[#hs + 1] = '0' .. string.sub(m, 2)
      back[#back + 1] = id
      at[id] = tonumber(c)
    end
  end
  if #back == 0 then return end
  table.sort(back, function(x, y) return at[x] < at[y] end)
  vcall('HSET', K.results(owner), hs)
  vcall('RPUSH', K.undelivered(owner), back)
  hincr(K.tenant(tenant_of(owner)), 'ub', b)
  hincr(K.owner(owner), 'u', #back)
  compact_lists(owner)
end

-- Everything an instance has in flight is undelivered again (it closed, or went silent).
local function return_all(inst)
  local by, owners = {}, {}
  for _, member in ipairs(redis.call('SMEMBERS', K.inFlight(inst))) do
    local o, i = dec2(member)
    local l = by[o]
    if not l then l = {}; by[o] = l; owners[#owners + 1] = o end
    l[#l + 1] = i
  end
  for _, o in ipairs(owners) do unclaim_many(o, by[o]) end
  redis.call('DEL', K.inFlight(inst))
end
`

/** claim — ARGV: prefix, instance, now, owner, id. Reply: the outputs, or nil when not undelivered. */
const CLAIM = `
local o = claim1(ARGV[4], ARGV[5])
flush()
return o
`

/** take — ARGV: prefix, instance, now, owner, max. Reply: id, outputs, id, outputs… (oldest first). */
const TAKE = `
local owner, max = ARGV[4], tonumber(ARGV[5])
local key = K.undelivered(owner)
local ids, hs, sa, seen = {}, {}, {}, {}
local freed, consumed = 0, 0
-- Live entries from the front of the list, up to max; stale ones on the way are consumed too.
while #ids < max do
  local es = redis.call('LRANGE', key, consumed, consumed + max - #ids - 1)
  if #es == 0 then break end
  consumed = consumed + #es
  local ms = vget('HMGET', K.results(owner), es)
  for k, id in ipairs(es) do
    local m = ms[k]
    if m and not seen[id] and string.sub(m, 1, 1) == '0' then
      seen[id] = true
      local _, b = meta_parse(m)
      freed = freed + b
      ids[#ids + 1] = id
      hs[#hs + 1] = id; hs[#hs + 1] = '1' .. string.sub(m, 2)
      sa[#sa + 1] = enc2(owner, id)
    end
  end
end
if consumed > 0 then redis.call('LTRIM', key, consumed, -1) end
if #ids == 0 then return {} end
local os = vget('HMGET', K.outputs(owner), ids)
vcall('HSET', K.results(owner), hs)
vcall('SADD', K.inFlight(INST), sa)
hincr(K.tenant(tenant_of(owner)), 'ub', -freed)
hincr(K.owner(owner), 'u', -#ids)
flush()
local out = {}
for k, id in ipairs(ids) do
  if os[k] then out[#out + 1] = id; out[#out + 1] = os[k] end
end
return out
`

/** return — ARGV: prefix, instance, now, owner, ids… In-flight ones are undelivered again. */
const RETURN = `
local owner = ARGV[4]
local ids, members = {}, {}
for j = 5, #ARGV do
  ids[#ids + 1] = ARGV[j]
  members[#members + 1] = enc2(owner, ARGV[j])
end
unclaim_many(owner, ids)
vcall('SREM', K.inFlight(INST), members)
flush()
return 0
`

/** acknowledge — ARGV: prefix, instance, now, owner, ids… Delivered: evicted first, never sent again. */
const ACKNOWLEDGE = `
local owner = ARGV[4]
local ids, seen = {}, {}
for j = 5, #ARGV do
  local id = ARGV[j]
  if not seen[id] then seen[id] = true; ids[#ids + 1] = id end
end
local ms = vget('HMGET', K.results(owner), ids)
local hs, sr, zr = {}, {}, {}
local freed, nu = 0, 0
for k, id in ipairs(ids) do
  local m = ms[k]
  if m and string.sub(m, 1, 1) ~= '2' then
    local st, b, _, c = meta_parse(m)
    local member = enc2(owner, id)
    if st == '0' then
      freed = freed + b
      nu = nu + 1
    else
      sr[#sr + 1] = member
    end
    hs[#hs + 1] = id; hs[#hs + 1] = '2' .. string.sub(m, 2)
    -- Delivered: first in line for the byte eviction, by the same done clock.
    zr[#zr + 1] = delivered_score(c); zr[#zr + 1] = member
  end
end
if #hs > 0 then
  vcall('HSET', K.results(owner), hs)
  if nu > 0 then hincr(K.tenant(tenant_of(owner)), 'ub', -freed); hincr(K.owner(owner), 'u', -nu) end
  if #sr > 0 then vcall('SREM', K.inFlight(INST), sr) end
  vcall('ZADD', K.retained, zr)
end
flush()
return 0
`

/** forget — ARGV: prefix, instance, now, owner, id. The id is no longer pending nor retained. */
const FORGET = `
unpend(ARGV[4], ARGV[5])
remove_many(ARGV[4], {ARGV[5]})
flush()
return 0
`

/** lookup — ARGV: prefix, instance, now, owner, ids… Reply per id: 'p', 'u', or 'd' then its outputs. */
const LOOKUP = `
local owner = ARGV[4]
local out = {}
for j = 5, #ARGV do
  local id = ARGV[j]
  if redis.call('HEXISTS', K.pending(owner), id) == 1 then table.insert(out, 'p')
  else
    local o = redis.call('HGET', K.outputs(owner), id)
    if o then table.insert(out, 'd'); table.insert(out, o) else table.insert(out, 'u') end
  end
end
return out
`

/**
 * sweep — ARGV: prefix, instance, now, retentionMs (-1: kept until evicted), most results to drop, silence (ms) after
 * which an instance is taken for dead. Drops results finished retentionMs or more before `now`;
 * the in-flight results of dead instances are undelivered again. Reply: `{lost, dropped}`.
 */
const SWEEP = `
local retention = tonumber(ARGV[4])
local limit = tonumber(ARGV[5])
local lost, dropped = 0, 0
if limit > 0 and retention >= 0 then
  -- The retained results finished before the cut (delivered ones first: their scores are shifted,
  -- see delivered_score), grouped by owner: one remove_many per owner.
  local cut = string.format('%d', (NOW - retention + 1) * 1024)
  local old = redis.call('ZRANGEBYSCORE', K.retained, '-inf', '(' .. delivered_score(cut), 'LIMIT', 0, limit)
  if #old < limit then
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', K.retained, '0', '(' .. cut, 'LIMIT', 0, limit - #old)) do old[#old + 1] = m end
  end
  local by, owners = {}, {}
  for _, m in ipairs(old) do
    local o, i = dec2(m)
    local l = by[o]
    if not l then l = {}; by[o] = l; owners[#owners + 1] = o end
    l[#l + 1] = i
    dropped = dropped + 1
  end
  for _, o in ipairs(owners) do lost = lost + remove_many(o, by[o]) end
end
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, inst in ipairs(redis.call('ZRANGEBYSCORE', K.instances, '-inf', ms - tonumber(ARGV[6]))) do
  return_all(inst)
  redis.call('ZREM', K.instances, inst)
end
flush()
return {lost, dropped}
`

/** beat — ARGV: prefix, instance, now. This instance is alive (Redis time). */
const BEAT = `
local t = redis.call('TIME')
redis.call('ZADD', K.instances, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), INST)
return 0
`

/** leave — ARGV: prefix, instance, now. This instance closes: its in-flight results are undelivered again. */
const LEAVE = `
return_all(INST)
redis.call('ZREM', K.instances, INST)
flush()
return 0
`

/**
 * trim — ARGV: prefix, instance, now, node, the first entry id to keep. A node read its stream up to
 * there: the entries before go, and an empty stream with them (one step: an entry appended
 * meanwhile is kept). Reply 1 when the stream was deleted: the node then reads the next one from
 * its start, since a stream made again numbers its entries afresh (an entry appended within the
 * same millisecond can get a smaller id than the last one read).
 */
const TRIM = `
local key = K.node(ARGV[4])
redis.call('XTRIM', key, 'MINID', ARGV[5])
if redis.call('XLEN', key) == 0 then redis.call('DEL', key); return 1 end
return 0
`

/**
 * counts — ARGV: prefix, instance, now, owner. Reply: `{queued, processing, undelivered, retained}`
 * of the owner (one call: the front-ends ask for every turn of frames, for flow control).
 */
const COUNTS = `
local o = ARGV[4]
local v = redis.call('HMGET', K.owner(o), 'q', 'p', 'u')
return {tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0, redis.call('HLEN', K.results(o))}
`

/**
 * layout — ARGV: prefix, instance, now, this version's layout. Reply: the prefix's layout: stamped
 * with this one when the prefix is fresh; '1' for keys of a deployment from before the stamp.
 */
const LAYOUT = `
local v = redis.call('GET', K.layout)
if v then return v end
if redis.call('EXISTS', K.stats) == 1 then return '1' end
redis.call('SET', K.layout, ARGV[4])
return ARGV[4]
`

/** The scripts by name, each with the helpers it needs. */
export const SCRIPTS = {
  isSubmit: PRELUDE + SUBMIT,
  isLease: PRELUDE + LEASE,
  isExtend: PRELUDE + EXTEND,
  isFinish: PRELUDE + RESULTS + FINISH,
  isRelease: PRELUDE + RELEASE,
  isReclaim: PRELUDE + RESULTS + RECLAIM,
  isClaim: PRELUDE + RESULTS + DELIVERY + CLAIM,
  isTake: PRELUDE + RESULTS + DELIVERY + TAKE,
  isReturn: PRELUDE + RESULTS + DELIVERY + RETURN,
  isAcknowledge: PRELUDE + RESULTS + ACKNOWLEDGE,
  isForget: PRELUDE + RESULTS + FORGET,
  isLookup: PRELUDE + LOOKUP,
  isSweep: PRELUDE + RESULTS + DELIVERY + SWEEP,
  isBeat: PRELUDE + BEAT,
  isLeave: PRELUDE + RESULTS + DELIVERY + LEAVE,
  isTrim: PRELUDE + TRIM,
  isCounts: PRELUDE + COUNTS,
  isLayout: PRELUDE + LAYOUT,
} as const

/** Name of a script of {@link SCRIPTS}. */
export type ScriptName = keyof typeof SCRIPTS

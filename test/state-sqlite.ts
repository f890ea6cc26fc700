import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import Database from 'better-sqlite3'
import t from 'tap'
import { InvalidOptionError, StateStoreError } from '../lib/errors.js'
import { JobStore } from '../lib/server/store/job-store.js'
import type { Routed, StateLease } from '../lib/server/state/state-backend.js'
import { STATE_STORE_SCHEMA_VERSION, SqliteStateBackend } from '../lib/server/state/sqlite-backend.js'
import { prng } from './helpers/prng.js'
import { stateContract } from './helpers/state-contract.js'
import { writeV1StateStore } from './helpers/v1-state-store.js'

const dir = mkdtempSync(join(tmpdir(), 'is-state-sqlite-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))
let n = 0
const file = (): string => join(dir, `s${++n}.sqlite`)
const LIMITS = { maxRetained: 1_000_000, retentionMs: 3_600_000 }

// The state layer's contract on the SQLite backend: a fresh file per backend; a restart closes
// the backend and opens its file again.
stateContract(t, async (limits) => new SqliteStateBackend({ path: file(), ...limits }), {
  reopen: async (b, limits) => {
    await b.close()
    return new SqliteStateBackend({ path: (b as SqliteStateBackend).path, ...limits })
  },
})

t.test('the file: private, one process at a time, a newer schema or another database refused', async (t) => {
  const path = join(dir, 'sub', 'state.sqlite')
  const b = new SqliteStateBackend({ path, ...LIMITS })
  t.equal(statSync(path).mode & 0o777, 0o600, 'the file is 0600')
  t.equal(statSync(join(dir, 'sub')).mode & 0o777, 0o700, 'its new folder 0700')
  const pragma = (x: SqliteStateBackend, name: string): unknown => (x as unknown as { db: Database.Database }).db.pragma(name, { simple: true })
  t.same([pragma(b, 'journal_mode'), pragma(b, 'synchronous'), pragma(b, 'locking_mode')], ['wal', 1, 'exclusive'], 'WAL, synchronous NORMAL, exclusive')
  const full = new SqliteStateBackend({ path: file(), ...LIMITS, synchronous: 'FULL' })
  t.equal(pragma(full, 'synchronous'), 2, 'synchronous FULL on request')
  await full.close()
  t.throws(() => new SqliteStateBackend({ path, ...LIMITS, busyTimeoutMs: 20 }), { name: 'StateStoreError', code: 'ERR_STATE_STORE', message: /in use by another process/ })
  await b.close()
  await b.close()
  await t.rejects(b.lookup('o', ['1']), { code: 'ERR_SHUTTING_DOWN' }, 'closed: calls reject')
  const again = new SqliteStateBackend({ path, ...LIMITS })
  await again.close()

  const db = new Database(path)
  db.pragma(`user_version = ${STATE_STORE_SCHEMA_VERSION + 1}`)
  db.close()
  t.throws(() => new SqliteStateBackend({ path, ...LIMITS }), new StateStoreError(`The state store ${JSON.stringify(path)} has schema version ${STATE_STORE_SCHEMA_VERSION + 1}, newer than this version of inference-stream reads (${STATE_STORE_SCHEMA_VERSION}): upgrade inference-stream, or move the file away to start afresh`))

  const jobs = join(dir, 'jobs.sqlite')
  new JobStore(jobs).close()
  t.throws(() => new SqliteStateBackend({ path: jobs, ...LIMITS }), { code: 'ERR_STATE_STORE', message: /is not a state store of inference-stream/ })
  const junk = join(dir, 'junk.sqlite')
  writeFileSync(junk, 'not a database at all, just some text that is long enough to look like a header'.repeat(20))
  t.throws(() => new SqliteStateBackend({ path: junk, ...LIMITS }), { code: 'ERR_STATE_STORE', message: /Cannot open the state store/ })
  t.throws(() => new SqliteStateBackend({ path: '', ...LIMITS }), InvalidOptionError)
  t.throws(() => new SqliteStateBackend({ path: ':memory:', ...LIMITS, synchronous: 'OFF' as 'FULL' }), { code: 'ERR_INVALID_OPTION', message: /"synchronous"/ })
  t.throws(() => new SqliteStateBackend({ path: ':memory:', maxRetained: -1, retentionMs: 1 }), { code: 'ERR_INVALID_OPTION', message: /"maxRetained"/ })
})

const owner = 'A\nbuiltin/echo'
const item = (id: string, inputs: unknown = `in-${id}`) => ({
  tenant: 'A',
  owner,
  id,
  model: 'builtin/echo',
  compute: 'cpu' as const,
  inputs,
  group: 'builtin/echo\ncpu\n{}',
  bytes: 8,
  route: { node: 'n' },
})

t.test('a transition is one transaction: one that fails halfway leaves nothing, and a waiting lease goes on', async (t) => {
  const b = new SqliteStateBackend({ path: file(), ...LIMITS })
  t.teardown(() => b.close())
  const waiting = b.lease('w1', { maxBatch: 1000, maxWaitMs: 0, leaseMs: 60_000 })
  // JSON.stringify throws on a BigInt: item 500 of 1000 fails inside the submit's transaction.
  const items = Array.from({ length: 1000 }, (_, i) => item(`${i}`, i === 500 ? 1n : i))
  await t.rejects(b.submit(items), TypeError, 'item 501 of 1000 cannot be stored')
  t.match(await b.stats(), { queued: 0, processing: 0 }, 'none of the 1000 is queued')
  t.same(await b.lookup(owner, ['0', '499']), [{ state: 'unknown' }, { state: 'unknown' }])
  t.same(await b.tenantBytes('A'), { queued: 0, undelivered: 0 })
  items[500] = item('500', 500)
  t.equal((await b.submit(items)).filter((o) => o.status === 'queued').length, 1000, 'the same submit again: all queued')
  const lease = (await waiting) as StateLease
  t.equal(lease.items.length, 1000, 'the lease waiting through the failure got them')

  const results = lease.items.map((it, index) => ({ index, outputs: JSON.stringify(it.inputs), billable: true }))
  await t.rejects(b.finish(lease, [...results.slice(0, 10), { index: 10, outputs: 1n as unknown as string, billable: true }]), 'result 11 of 1000 cannot be stored')
  t.same(await b.ledger(), [], 'nothing billed by the failed finish')
  t.match(await b.stats(), { queued: 0, processing: 1000 }, 'the lease is still held')
  t.same(await b.lookup(owner, ['0']), [{ state: 'pending' }], 'no result stored')
  t.match(await b.finish(lease, results), { finished: 1000, billed: 1000 }, 'the lease finishes')
  t.same(await b.ledger(), [{ tenant: 'A', model: 'builtin/echo', items: 1000 }])
})

// A signal aborted in 300 ms (a timer that keeps the process alive, unlike AbortSignal.timeout).
const soon = (): AbortSignal => {
  const ac = new AbortController()
  setTimeout(() => ac.abort(), 300)
  return ac.signal
}

t.test('a file of schema version 1 is migrated in place: queue order, leases, results, dedupe and the ledger kept', async (t) => {
  const path = file()
  const A = 'A\nbuiltin/echo'
  const B = 'B\nbuiltin/echo'
  writeV1StateStore(
    path,
    [
      { row: 1, owner: A, tenant: 'A', id: '1', pos: 1, state: 2, outputs: '"out-1"', fingerprint: '\n"in-1"' },
      { row: 2, owner: A, tenant: 'A', id: '2', pos: 2, state: 1, outputs: '"out-2"' },
      { row: 3, owner: A, tenant: 'A', id: '3', pos: 3, state: 0, inputs: '"in-3"' },
      { row: 4, owner: A, tenant: 'A', id: '4', pos: 4, state: 0, inputs: '"in-4"' },
      { row: 5, owner: A, tenant: 'A', id: '5', pos: 5, state: 0, inputs: '"in-5"' },
      { row: 6, owner: B, tenant: 'B', id: '6', pos: 6, state: 0, inputs: '"b-6"', parameters: '{"x":1}', grp: 'builtin/echo\ncpu\n{"x":1}', node: 'm' },
    ],
    [{ id: 'old.1', consumer: 'w/0', tenant: 'A', expiresAt: 1, rows: [4] }],
    [[A, 'A', 'builtin/echo', 2]],
  )
  const b = new SqliteStateBackend({ path, ...LIMITS })
  t.equal((b as unknown as { db: Database.Database }).db.pragma('user_version', { simple: true }), STATE_STORE_SCHEMA_VERSION, 'now the current schema')
  t.same(await b.lookup(A, ['1', '2', '3', '4', '5', '6']), [
    { state: 'done', outputs: '"out-1"' },
    { state: 'done', outputs: '"out-2"' },
    { state: 'pending' },
    { state: 'pending' },
    { state: 'pending' },
    { state: 'unknown' },
  ])
  t.same(await b.lookup(B, ['6', '1']), [{ state: 'pending' }, { state: 'unknown' }], "B's item is B's")
  t.same(await b.takeUndelivered(A, 10), [['2', '"out-2"']], 'the undelivered result is handed out, the delivered one is not')
  t.same(await b.submit([{ ...item('1', 'in-1'), fingerprint: '\n"in-1"' }]), [{ status: 'done', outputs: '"out-1"' }], 'dedupe against the delivered result')
  t.same(await b.submit([{ ...item('1', 'other'), fingerprint: '\n"other"' }]), [{ status: 'conflict' }], 'and its fingerprint')
  t.same(await b.ledger(), [{ tenant: 'A', model: 'builtin/echo', items: 2 }], 'the ledger')
  t.same(await b.reclaim(Date.now(), 3), { requeued: 1, deadLettered: 0 }, 'the lease of v1 is held, expired, and reclaimed')
  const leased: Array<[string, string, unknown, unknown, string, number]> = []
  for (;;) {
    const l = await b.lease('w', { maxBatch: 10, maxWaitMs: 0, leaseMs: 60_000, signal: soon() })
    if (!l) break
    for (const it of l.items) leased.push([it.owner, it.id, it.inputs, it.parameters, it.route.node, it.deliveries])
    await b.finish(l, l.items.map((it, index) => ({ index, outputs: JSON.stringify(it.inputs), billable: true })))
  }
  t.same(
    leased.sort((x, y) => x[0].localeCompare(y[0])),
    [
      [A, '4', 'in-4', undefined, 'n', 2],
      [A, '3', 'in-3', undefined, 'n', 1],
      [A, '5', 'in-5', undefined, 'n', 1],
      [B, '6', 'b-6', { x: 1 }, 'm', 1],
    ],
    'the pending items, the reclaimed one first (its v1 lease counted), with inputs, parameters and routes',
  )
  t.same(await b.ledger(), [{ tenant: 'A', model: 'builtin/echo', items: 5 }, { tenant: 'B', model: 'builtin/echo', items: 1 }])
  await b.close()
  const raw = new Database(path, { readonly: true })
  t.same(raw.prepare('SELECT owner, tenant, node FROM heads ORDER BY owner').raw().all(), [[A, 'A', 'n'], [B, 'B', 'm']], 'two heads')
  t.notOk((raw.prepare('SELECT * FROM items LIMIT 1').columns() as Array<{ name: string }>).some((c) => c.name === 'owner'), 'no owner column in items')
  raw.close()
})

t.test('heads: one per stream, and those no row names are deleted by a sweep once many', async (t) => {
  const path = file()
  const b = new SqliteStateBackend({ path, maxRetained: 1_000_000, retentionMs: 1 })
  const many = Array.from({ length: 1100 }, (_, i) => ({ ...item(`${i}`), parameters: { k: i }, group: `builtin/echo\ncpu\n{"k":${i}}` }))
  await b.submit(many)
  await b.submit([item('kept')])
  const heads = (): number => (b as unknown as { heads: Map<string, number> }).heads.size
  t.equal(heads(), 1101, 'one head per group')
  for (;;) {
    const l = await b.lease('w', { maxBatch: 10, maxWaitMs: 0, leaseMs: 60_000, accept: (h) => h.id !== 'kept', signal: soon() })
    if (!l) break
    await b.finish(l, l.items.map((it, index) => ({ index, outputs: '1', billable: true })))
  }
  t.equal(await b.sweep(Date.now() + 10), 1100, 'the 1100 results expire (never delivered)')
  t.equal(heads(), 1, "the heads left: the pending item's")
  await b.close()
  const raw = new Database(path, { readonly: true })
  t.equal(raw.prepare('SELECT count(*) FROM heads').pluck().get(), 1)
  raw.close()
  const again = new SqliteStateBackend({ path, ...LIMITS })
  t.same(await again.lookup(owner, ['kept', '5']), [{ state: 'pending' }, { state: 'unknown' }])
  await again.close()
})

// Built backend in a child process, killed with SIGKILL at random points (three times, the file
// reopened by the next child), then the invariants on the file: nothing lost, nothing doubled.
t.test('SIGKILL in the middle of submits and finishes: every id queued, leased or finished once; ledger = finished billable ids', async (t) => {
  const child = fileURLToPath(new URL('./fixtures/state-sqlite-child.js', import.meta.url))
  const built = fileURLToPath(new URL('../dist/server/state/sqlite-backend.js', import.meta.url))
  if (!existsSync(built)) {
    t.fail('dist/ is not built: run `npx tsc -p tsconfig.build.json` first (npm test does)')
    return
  }
  const path = file()
  const SPACE = 50_000
  const rnd = prng(0x5eed)
  const queued = new Set<string>()
  for (let round = 1; round <= 3; round++) {
    const proc = spawn(process.execPath, [child, path, String(round * 7919), String(SPACE)], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    proc.stdout.on('data', (d) => (out += d))
    proc.stderr.on('data', (d) => (err += d))
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })))
    await new Promise<void>((resolve) => {
      const ready = (): void => {
        if (!out.startsWith('ready\n')) return
        proc.stdout.off('data', ready)
        resolve()
      }
      proc.stdout.on('data', ready)
      void exited.then(() => resolve())
    })
    await new Promise((resolve) => setTimeout(resolve, 150 + Math.floor(rnd() * 600)))
    proc.kill('SIGKILL')
    const { signal } = await exited
    t.equal(signal, 'SIGKILL', `round ${round}: killed, not ended by itself${err ? `: ${err}` : ''}`)
    // Whole lines only: the last one may be cut.
    const lines = out.split('\n').slice(1, -1)
    for (const line of lines) {
      const [, tenant, ...ids] = line.split(' ')
      for (const id of ids) queued.add(`${tenant} ${id}`)
    }
    t.ok(lines.length > 0, `round ${round}: ${lines.length} submits acknowledged before the kill`)
  }

  const b = new SqliteStateBackend({ path, ...LIMITS })
  t.teardown(() => b.close())
  const billable = (id: string): boolean => Number(id.slice(1)) % 4 !== 0
  const ids = Array.from({ length: SPACE }, (_, i) => `i${i}`)
  const known = new Map<string, 'pending' | 'done'>()
  let billableDone = 0
  let pending = 0
  for (const tenant of ['A', 'B']) {
    const o = `${tenant}\nbuiltin/echo`
    const states = await b.lookup(o, ids)
    let ownerBillable = 0
    states.forEach((s, i) => {
      if (s.state === 'unknown') return
      known.set(`${tenant} ${ids[i]}`, s.state)
      if (s.state === 'pending') pending++
      else {
        if (s.outputs !== JSON.stringify(`out-in-${ids[i]}`)) t.fail(`${tenant} ${ids[i]}: outputs ${s.outputs}`)
        if (billable(ids[i])) ownerBillable++
      }
    })
    billableDone += ownerBillable
    t.equal(await b.billedTo(o), ownerBillable, `${tenant}: the owner's bill is its finished billable ids`)
    const c = await b.counts(o)
    t.ok(Object.values(c).every((v) => v >= 0), `${tenant}: no negative count ${JSON.stringify(c)}`)
    const bytes = await b.tenantBytes(tenant)
    t.ok(bytes.queued >= 0 && bytes.undelivered >= 0, `${tenant}: no negative bytes`)
  }
  for (const key of queued) if (!known.has(key)) t.fail(`${key} was queued (its submit returned) but the file does not know it`)
  const stats = await b.stats()
  t.ok(queued.size > 0 && known.size - pending > 0 && pending > 0, `at the kill: ${known.size} ids known (${queued.size} acknowledged), ${pending} pending of which ${stats.processing} leased, ${known.size - pending} finished`)
  t.equal((await b.ledger()).reduce((s, e) => s + e.items, 0), billableDone, 'ledger = finished billable ids, at once after the crash')
  t.equal(stats.queued + stats.processing, pending, 'queued + leased = the pending ids')

  // Drain: expired leases are reclaimed, every pending id runs once, no finished id runs again.
  const routed = new Map<string, number>()
  b.subscribe('child', (rs: Routed[]) => {
    for (const r of rs) {
      const key = `${r.owner.split('\n')[0]} ${r.id}`
      routed.set(key, (routed.get(key) ?? 0) + 1)
    }
  })
  await b.reclaim(Date.now() + 3_600_000, 1000)
  for (;;) {
    if ((await b.stats()).queued === 0) break
    const lease = (await b.lease('drain', { maxBatch: 64, maxWaitMs: 0, leaseMs: 60_000 })) as StateLease
    await b.finish(lease, lease.items.map((it, index) => ({ index, outputs: JSON.stringify(`out-${it.inputs}`), billable: billable(it.id) })))
  }
  for (const [key, state] of known) {
    const times = routed.get(key) ?? 0
    if (times !== (state === 'pending' ? 1 : 0)) t.fail(`${key} (${state} after the crash) finished ${times} times in the drain`)
  }
  t.equal(routed.size, pending, 'the drain finished exactly the pending ids')
  const billableKnown = [...known.keys()].filter((k) => billable(k.split(' ')[1])).length
  t.equal((await b.ledger()).reduce((s, e) => s + e.items, 0), billableKnown, 'ledger = every billable id once')
  t.match(await b.stats(), { queued: 0, processing: 0 })
})

// Differential: the same seeded schedules on the memory backend and on SQLite give the same
// answers, step by step — submit outcomes, batches (fair share), finish / reclaim outcomes, what is
// routed, delivered, evicted, swept, billed, and every counter (but `done`, which counts finished
// since start in memory and retained results in a durable backend).
t.test('the same random schedules give the same answers as the memory backend', async (t) => {
  const { MemoryStateBackend } = await import('../lib/server/state/memory-backend.js')
  const seeds = Number(process.env.STATE_DIFF_SEEDS ?? 25)
  const limits = { maxRetained: 6, retentionMs: 10_000, maxRetainedBytes: 1200 }
  // One clock for both: batches are chosen by the age of groups' heads, results expire by age.
  const realNow = Date.now
  let clock = realNow()
  Date.now = () => clock
  t.teardown(() => {
    Date.now = realNow
  })
  for (let seed = 1; seed <= seeds; seed++) {
    const rnd = prng(seed * 7777)
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]
    const mem = new MemoryStateBackend(limits)
    const sql = new SqliteStateBackend({ path: file(), ...limits })
    const log: string[] = []
    const fail = (what: string, a: unknown, b: unknown): never => {
      throw new Error(`seed ${seed}, step ${log.length} (${log.slice(-3).join(' | ')}): ${what} differs\nmemory ${JSON.stringify(a)}\nsqlite ${JSON.stringify(b)}`)
    }
    const same = (what: string, a: unknown, b: unknown): void => {
      if (JSON.stringify(a) !== JSON.stringify(b)) fail(what, a, b)
    }
    const routes: Record<'m' | 's', Routed[]> = { m: [], s: [] }
    for (const node of ['n1', 'n2']) {
      mem.subscribe(node, (r) => routes.m.push(...r.map((x) => ({ ...x, node }))))
      sql.subscribe(node, (r) => routes.s.push(...r.map((x) => ({ ...x, node }))))
    }
    const owners = ['A\nbuiltin/echo', 'A http\nbuiltin/echo', 'B\nbuiltin/echo', 'B\nbuiltin/other']
    const held: Array<[StateLease, StateLease]> = []
    const stale: Array<[StateLease, StateLease]> = []
    for (let step = 0; step < 200; step++) {
      clock += 500
      const r = rnd()
      if (r < 0.3) {
        const owner = pick(owners)
        const tenant = owner[0]
        const model = owner.endsWith('other') ? 'builtin/other' : 'builtin/echo'
        const http = owner.includes('http')
        const batch = Array.from({ length: 1 + Math.floor(rnd() * 5) }, () => {
          const id = `i${Math.floor(rnd() * 30)}`
          const inputs = rnd() < 0.1 ? `other-${id}` : `in-${id}`.repeat(1 + Math.floor(rnd() * 3))
          return {
            tenant, owner, id, model, compute: 'cpu' as const, inputs,
            group: `${model}\ncpu\n{}`, fingerprint: rnd() < 0.9 ? JSON.stringify(inputs) : undefined, bytes: inputs.length + 2,
            route: http ? { node: pick(['n1', 'n2']), sink: `http:${step}` } : { node: pick(['n1', 'n2']) },
            retain: http && rnd() < 0.5 ? true : undefined,
          }
        })
        const opts = rnd() < 0.3 ? { maxQueuedBytes: 60 } : {}
        log.push(`submit ${owner} ${batch.map((b) => b.id)}`)
        same('submit', await mem.submit(batch, opts), await sql.submit(batch, opts))
      } else if (r < 0.5) {
        const opts = { maxBatch: 1 + Math.floor(rnd() * 5), leaseMs: rnd() < 0.3 ? 1 : 600_000, maxLeasesPerTenant: 2 }
        log.push(`lease ${JSON.stringify(opts)}`)
        const a = await leaseOrNull(mem, opts)
        const b = await leaseOrNull(sql, opts)
        const view = (l: StateLease | null) => l && { tenant: l.tenant, items: l.items.map((i) => [i.owner, i.id, i.inputs, i.deliveries, i.route, i.retain ?? false]) }
        same('lease', view(a), view(b))
        if (a && b) held.push([a, b])
      } else if (r < 0.65 && held.length > 0) {
        const [a, b] = held.splice(Math.floor(rnd() * held.length), 1)[0]
        const results = a.items.map((it, index) => ({ index, outputs: JSON.stringify(`out-${it.inputs}`.repeat(1 + Math.floor(rnd() * 4))), billable: rnd() < 0.8 })).filter(() => rnd() < 0.8)
        log.push(`finish ${results.map((x) => x.index)}`)
        same('finish', await mem.finish(a, results), await sql.finish(b, results))
        stale.push([a, b])
      } else if (r < 0.7 && held.length > 0) {
        const [a, b] = held.splice(Math.floor(rnd() * held.length), 1)[0]
        log.push('release')
        await mem.release(a)
        await sql.release(b)
        stale.push([a, b])
      } else if (r < 0.73 && stale.length > 0) {
        const [a, b] = pick(stale)
        log.push('stale finish')
        same('stale finish', await mem.finish(a, [{ index: 0, outputs: '"late"', billable: true }]), await sql.finish(b, [{ index: 0, outputs: '"late"', billable: true }]))
      } else if (r < 0.78) {
        log.push('reclaim')
        const now = clock + 30_000
        same('reclaim', await mem.reclaim(now, 3), await sql.reclaim(now, 3))
        for (let i = held.length - 1; i >= 0; i--) if (held[i][0].expiresAt <= now) stale.push(...held.splice(i, 1))
      } else if (r < 0.9) {
        const owner = pick(owners)
        const max = 1 + Math.floor(rnd() * 4)
        log.push(`take ${owner} ${max}`)
        const a = await mem.takeUndelivered(owner, max)
        same('takeUndelivered', a, await sql.takeUndelivered(owner, max))
        const id = `i${Math.floor(rnd() * 30)}`
        same('claim', await mem.claim(owner, id), await sql.claim(owner, id))
        const ids = [...a.map(([x]) => x), id]
        if (rnd() < 0.6) {
          await mem.acknowledge(owner, ids)
          await sql.acknowledge(owner, ids)
        } else {
          await mem.returnUndelivered(owner, ids)
          await sql.returnUndelivered(owner, ids)
        }
      } else if (r < 0.95) {
        const owner = pick(owners)
        const ids = Array.from({ length: 30 }, (_, i) => `i${i}`)
        same('lookup', await mem.lookup(owner, ids), await sql.lookup(owner, ids))
        if (rnd() < 0.3) {
          const id = pick(ids)
          log.push(`forget ${owner} ${id}`)
          const done = (await mem.lookup(owner, [id]))[0].state === 'done'
          // Forget is for finished ids (a result handed to its requester).
          if (done) {
            await mem.forget(owner, id)
            await sql.forget(owner, id)
          }
        }
      } else {
        log.push('sweep')
        const now = clock + (rnd() < 0.5 ? 0 : 120_000)
        same('sweep', await mem.sweep(now), await sql.sweep(now))
      }
      same('routed', routes.m, routes.s)
      for (const owner of owners) {
        const [a, b] = [await mem.counts(owner), await sql.counts(owner)]
        same(`counts ${owner}`, { ...a, done: 0 }, { ...b, done: 0 })
      }
      for (const tenant of ['A', 'B']) same(`tenantBytes ${tenant}`, await mem.tenantBytes(tenant), await sql.tenantBytes(tenant))
      same('stats', await mem.stats(), await sql.stats())
      const sorted = (l: Array<{ tenant: string; model: string; items: number }>) => [...l].sort((x, y) => (x.tenant + x.model).localeCompare(y.tenant + y.model))
      same('ledger', sorted(await mem.ledger()), sorted(await sql.ledger()))
      for (const owner of owners) same(`billedTo ${owner}`, await mem.billedTo(owner), await sql.billedTo(owner))
    }
    await mem.close()
    await sql.close()
  }
  t.pass(`${seeds} seeds of 200 steps agree`)
})

async function leaseOrNull(b: { stats(): Promise<{ queued: number }>; lease: SqliteStateBackend['lease'] }, opts: { maxBatch: number; leaseMs: number; maxLeasesPerTenant: number }): Promise<StateLease | null> {
  if ((await b.stats()).queued === 0) return null
  const ac = new AbortController()
  // A batch that can be leased is taken at once (synchronously); the timer only ends a wait.
  const timer = setTimeout(() => ac.abort(), 5)
  try {
    return await b.lease('w', { ...opts, maxWaitMs: 0, signal: ac.signal })
  } finally {
    clearTimeout(timer)
  }
}

import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import Database from 'better-sqlite3'
import t from 'tap'
import { InvalidOptionError, JobNotFoundError, JobStateError, JobStoreError } from '../lib/errors.js'
import { JOB_STORE_SCHEMA_VERSION, JobStore, type NewJob, type ResultRow } from '../lib/server/store/job-store.js'

const dir = mkdtempSync(join(tmpdir(), 'is-job-store-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

const JOB: NewJob = {
  tenant: 'tok-a',
  bulkName: 'user/bulk-1',
  model: 'builtin/sentiment',
  compute: 'cpu',
  dataset: { name: 'org/reviews', config: 'default', split: 'train', column: 'text' },
  parameters: { top_k: 2 },
}

function rows(indexes: number[], failEvery = 0): ResultRow[] {
  return indexes.map((i) => ({
    index: i,
    outputs: JSON.stringify(failEvery && i % failEvery === 0 ? { error: `bad ${i}` } : [[{ label: 'POSITIVE', score: i }]]),
    error: failEvery && i % failEvery === 0 ? `bad ${i}` : null,
  }))
}

t.test('create, get, list, update', async (t) => {
  const store = new JobStore(':memory:')
  t.teardown(() => store.close())
  const before = Date.now() / 1000
  const job = store.create(JOB)
  t.match(job.id, /^[0-9a-f]{16}$/)
  t.match(job, {
    tenant: 'tok-a',
    bulkName: 'user/bulk-1',
    model: 'builtin/sentiment',
    compute: 'cpu',
    dataset: JOB.dataset,
    parameters: { top_k: 2 },
    state: 'queued',
    total: null,
    processed: 0,
    failed: 0,
    endTime: null,
    error: null,
    revision: null,
  })
  t.ok(job.startTime >= before - 0.01 && job.startTime <= Date.now() / 1000 + 0.01, 'startTime is epoch seconds')
  t.ok(!Number.isInteger(job.startTime) || job.startTime > 1e9, 'a float of seconds')
  t.equal(job.createdAt, job.startTime)
  t.same(store.get(job.id), job, 'get returns what create returned')
  t.equal(store.get('nope'), undefined)

  const second = store.create({ ...JOB, parameters: undefined, id: 'fixed-id', state: 'running', total: 10 })
  t.equal(second.id, 'fixed-id')
  t.equal(second.parameters, null)
  t.same(store.list().map((j) => j.id), ['fixed-id', job.id], 'newest first')
  t.same(store.list({ state: 'running' }).map((j) => j.id), ['fixed-id'])
  t.same(store.list({ limit: 1 }).map((j) => j.id), ['fixed-id'])
  t.same(store.list({ state: 'completed' }), [])

  const updated = store.update(job.id, { state: 'completed', endTime: 1234.5, revision: 'a'.repeat(40), total: 3 })
  t.match(updated, { state: 'completed', endTime: 1234.5, revision: 'a'.repeat(40), total: 3, processed: 0 })
  t.same(store.get(job.id), updated)
  t.same(store.update(job.id, { error: null, endTime: undefined }), updated, 'undefined leaves a field, null clears it')

  t.throws(() => store.update('nope', { state: 'failed' }), { constructor: JobNotFoundError, code: 'ERR_JOB_NOT_FOUND' })
  t.throws(() => store.update(job.id, { state: 'done' as never }), InvalidOptionError)
  t.throws(() => store.update(job.id, { tenant: 'x' } as never), { constructor: InvalidOptionError, message: 'Job field "tenant" cannot be updated' })
  t.throws(() => store.create({ ...JOB, tenant: '' }), InvalidOptionError)
  t.throws(() => store.create({ ...JOB, dataset: { ...JOB.dataset, column: undefined as never } }), InvalidOptionError)
  t.throws(() => store.create({ ...JOB, id: 'fixed-id' }), 'a duplicate id is refused')
  t.throws(() => store.list({ limit: -5 }), InvalidOptionError)
})

t.test('saveResults is idempotent: the same rows twice are counted once', async (t) => {
  const store = new JobStore(':memory:')
  t.teardown(() => store.close())
  const job = store.create(JOB)
  const other = store.create({ ...JOB, tenant: 'tok-b' })

  t.equal(store.saveResults(job.id, rows([0, 1, 2, 3, 4, 5], 3)), 6)
  t.match(store.get(job.id), { processed: 6, failed: 2 }, 'rows 0 and 3 failed')

  t.equal(store.saveResults(job.id, rows([0, 1, 2, 3, 4, 5], 3)), 0, 'nothing new')
  t.match(store.get(job.id), { processed: 6, failed: 2 })

  // A batch that overlaps: only the new rows count, and a re-run never replaces a stored result.
  const changed = rows([4, 5, 6, 7]).map((r) => ({ ...r, outputs: '"changed"' }))
  t.equal(store.saveResults(job.id, changed), 2)
  t.match(store.get(job.id), { processed: 8, failed: 2 })
  t.same([...store.iterateResults(job.id)].find((r) => r.index === 4)?.outputs, JSON.stringify([[{ label: 'POSITIVE', score: 4 }]]))

  // A failed row is stored and counted as failed; another job's counts are its own.
  t.equal(store.saveResults(other.id, [...rows([0, 1]), { index: 2, outputs: '{"error":"no input"}', error: 'no input' }]), 3)
  t.match(store.get(other.id), { processed: 3, failed: 1 })

  t.equal(store.storedCount(job.id), 8)
  t.ok(store.isDone(job.id, 7))
  t.notOk(store.isDone(job.id, 8))
  t.same([...store.doneIndexes(job.id)], [0, 1, 2, 3, 4, 5, 6, 7])
  t.equal(store.saveResults(job.id, []), 0)
})

t.test('saveResults is one transaction: a bad row or an unknown job stores nothing', async (t) => {
  const store = new JobStore(':memory:')
  t.teardown(() => store.close())
  const job = store.create(JOB)
  t.throws(() => store.saveResults(job.id, [...rows([0, 1]), { index: -1, outputs: '1', error: null }]), InvalidOptionError)
  t.throws(() => store.saveResults(job.id, [...rows([0, 1]), { index: 2, outputs: { not: 'text' } as never, error: null }]), InvalidOptionError)
  t.equal(store.storedCount(job.id), 0, 'rolled back')
  t.match(store.get(job.id), { processed: 0, failed: 0 })
  t.throws(() => store.saveResults('nope', rows([0])), { constructor: JobNotFoundError, code: 'ERR_JOB_NOT_FOUND' })
  t.throws(() => store.saveResults('nope', []), JobNotFoundError)
  t.equal(store.storedCount('nope'), 0)
})

t.test('iterateResults: 100k rows in index order, a page at a time, other writes allowed meanwhile', async (t) => {
  const store = new JobStore(join(dir, 'big.db'))
  t.teardown(() => store.close())
  const job = store.create(JOB)
  const other = store.create(JOB)
  const N = 100_000
  // Stored out of order, in batches, as results arrive from workers.
  const order = Array.from({ length: N }, (_, i) => i)
  for (let i = N - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    ;[order[i], order[j]] = [order[j], order[i]]
  }
  for (let i = 0; i < N; i += 5000) t.equal(store.saveResults(job.id, rows(order.slice(i, i + 5000), 1000)), Math.min(5000, N - i))
  t.match(store.get(job.id), { processed: N, failed: N / 1000 })

  let count = 0
  let last = -1
  let ok = true
  let saved = 0
  for (const r of store.iterateResults(job.id)) {
    if (r.index !== last + 1 || typeof r.outputs !== 'string') ok = false
    if ((r.error !== null) !== (r.index % 1000 === 0)) ok = false
    last = r.index
    count++
    // A consumer that writes elsewhere between rows (another job's results arrive): the paged
    // iterator holds no open cursor, so this must not throw "connection is busy".
    if (count % 20_000 === 0) saved += store.saveResults(other.id, rows([count]))
  }
  t.ok(ok, 'every row in order, errors where they were stored')
  t.equal(count, N)
  t.equal(saved, 5)
  t.same([...store.iterateResults(job.id, { pageSize: 7 })].slice(0, 10).map((r) => r.index), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
  let n = 0
  for (const i of store.doneIndexes(job.id)) if (i === n) n++
  t.equal(n, N, 'doneIndexes ascending and complete')

  t.equal(store.deleteResults(job.id), N)
  t.equal(store.storedCount(job.id), 0)
  t.same([...store.iterateResults(job.id)], [])
  t.match(store.get(job.id), { processed: N }, 'counts stay after the results are gone')
  t.equal(store.storedCount(other.id), 5, 'the other job keeps its results')
})

t.test('durable: close and reopen the file, everything is there; unfinished() for resume', async (t) => {
  const path = join(dir, 'nested', 'folder', 'jobs.db')
  const a = new JobStore(path)
  t.equal(a.open, true)
  const queued = a.create(JOB)
  const running = a.create({ ...JOB, tenant: 'tok-b' })
  const done = a.create(JOB)
  a.update(running.id, { state: 'running', total: 5 })
  a.update(done.id, { state: 'completed', endTime: 99.5, revision: 'b'.repeat(40) })
  a.saveResults(running.id, rows([0, 1, 2], 2))
  a.close()
  a.close()
  t.equal(a.open, false)
  t.ok(existsSync(path))

  const b = new JobStore(path)
  t.teardown(() => b.close())
  t.same(b.unfinished().map((j) => j.id), [queued.id, running.id], 'queued and running, oldest first')
  t.match(b.get(running.id), { state: 'running', total: 5, processed: 3, failed: 2, parameters: { top_k: 2 } })
  t.match(b.get(done.id), { state: 'completed', endTime: 99.5, revision: 'b'.repeat(40) })
  t.same([...b.iterateResults(running.id)].map((r) => r.index), [0, 1, 2])
  t.equal(b.saveResults(running.id, rows([0, 1, 2, 3])), 1, 'a resumed job stores only the rows it did not have')
  t.match(b.get(running.id), { processed: 4 })

  const version = new Database(path, { readonly: true })
  t.equal(version.pragma('user_version', { simple: true }), JOB_STORE_SCHEMA_VERSION, 'schema version recorded')
  t.equal(version.pragma('journal_mode', { simple: true }), 'wal')
  version.close()
})

t.test('durable across SIGKILL: committed results survive a killed process', async (t) => {
  const path = join(dir, 'killed.db')
  const module = fileURLToPath(new URL('../lib/server/store/job-store.js', import.meta.url))
  const code = `
    import { JobStore } from ${JSON.stringify(module)}
    const store = new JobStore(${JSON.stringify(path)})
    const job = store.create(${JSON.stringify({ ...JOB, id: 'killed-job', state: 'running' })})
    for (let i = 0; i < 2000; i += 100) {
      store.saveResults(job.id, Array.from({ length: 100 }, (_, k) => ({ index: i + k, outputs: '[]', error: null })))
    }
    console.log('saved')
    setInterval(() => {}, 1000)
  `
  const child = spawn(process.execPath, [...process.execArgv, '--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] })
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      if (d.toString().includes('saved')) resolve()
    })
    child.on('exit', (c) => reject(new Error(`child exited with ${c}`)))
  })
  child.kill('SIGKILL')
  await new Promise((r) => child.once('exit', r))
  t.ok(existsSync(`${path}-wal`), 'the WAL was never checkpointed by a close')

  const store = new JobStore(path)
  t.teardown(() => store.close())
  t.match(store.get('killed-job'), { state: 'running', processed: 2000 })
  t.equal(store.storedCount('killed-job'), 2000)
  t.same(store.unfinished().map((j) => j.id), ['killed-job'])
})

// Front-ends of a cluster share jobs.sqlite and may start at the same moment (seen in CI: "table
// jobs already exists" from the second). Six processes open one new file at the same instant.
t.test('processes opening a new file at once: one creates the schema, none fails', async (t) => {
  const built = fileURLToPath(new URL('../dist/server/store/job-store.js', import.meta.url))
  if (!existsSync(built)) {
    t.fail('dist/ is not built: run `npm run build` first (npm test does)')
    return
  }
  for (let round = 0; round < 3; round++) {
    const path = join(dir, `race-${round}.db`)
    const at = Date.now() + 1500
    const code = `
      import { JobStore } from ${JSON.stringify(built)}
      while (Date.now() < ${at}) {}
      try { new JobStore(${JSON.stringify(path)}).close(); console.log('ok') } catch (err) { console.log(err.message) }
    `
    const outs = await Promise.all(
      Array.from({ length: 6 }, () => new Promise<string>((resolve) => {
        const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] })
        let out = ''
        child.stdout.on('data', (d: Buffer) => (out += d))
        child.on('exit', () => resolve(out.trim()))
      })),
    )
    t.same(outs, Array(6).fill('ok'), `round ${round + 1}: every process opened the file`)
    const store = new JobStore(path)
    t.equal((store as unknown as { db: Database.Database }).db.pragma('user_version', { simple: true }), JOB_STORE_SCHEMA_VERSION)
    store.close()
  }
})

t.test('two stores on one file see each other (a server and its restarted self)', async (t) => {
  const path = join(dir, 'shared.db')
  const a = new JobStore(path)
  const b = new JobStore(path)
  t.teardown(() => {
    a.close()
    b.close()
  })
  const job = a.create(JOB)
  t.equal(b.saveResults(job.id, rows([0, 1])), 2)
  t.equal(a.saveResults(job.id, rows([1, 2])), 1)
  t.match(a.get(job.id), { processed: 3 })
})

t.test('a file that is not a job store, or a newer one, is refused with JobStoreError', async (t) => {
  const garbage = join(dir, 'garbage.db')
  writeFileSync(garbage, 'this is not a database, just text long enough to have a header'.repeat(10))
  t.throws(() => new JobStore(garbage), { constructor: JobStoreError, code: 'ERR_JOB_STORE' })

  const newer = join(dir, 'newer.db')
  const db = new Database(newer)
  db.pragma(`user_version = ${JOB_STORE_SCHEMA_VERSION + 1}`)
  db.close()
  t.throws(() => new JobStore(newer), {
    constructor: JobStoreError,
    message: `The job store ${JSON.stringify(newer)} has schema version ${JOB_STORE_SCHEMA_VERSION + 1}, newer than this version of inference-stream reads (${JOB_STORE_SCHEMA_VERSION})`,
  })
  t.throws(() => new JobStore(''), InvalidOptionError)
  t.throws(() => new JobStore(':memory:', { synchronous: 'OFF' as never }), InvalidOptionError)
  const full = new JobStore(join(dir, 'full.db'), { synchronous: 'FULL' })
  full.create(JOB)
  full.close()
})

t.test('schema v1 (raw tokens): migrated at open with the mapping given, refused without one', async (t) => {
  const { writeV1JobStore } = await import('./helpers/v1-job-store.js')
  const path = join(dir, 'v1.sqlite')
  writeV1JobStore(path, [['aaaa', 'raw-token-one', 'out-1'], ['bbbb', 'raw-token-two', 'out-2'], ['cccc', 'raw-token-one2', 'out-3']])
  t.throws(() => new JobStore(path), { constructor: JobStoreError, message: /schema version 1, which stores raw tokens; start the server/ })
  // Two tokens of one tenant: their bills add up.
  const store = new JobStore(path, { tenantOfToken: (tok) => (tok.startsWith('raw-token-one') ? 'tenant-one' : 'tenant-two') })
  t.equal(store.get('aaaa')?.tenant, 'tenant-one')
  t.equal(store.get('bbbb')?.tenant, 'tenant-two')
  store.close()
  const { readFileSync, readdirSync, statSync } = await import('node:fs')
  for (const f of readdirSync(dir).filter((f) => f.startsWith('v1.sqlite'))) {
    t.notOk(readFileSync(join(dir, f)).includes('raw-token'), `${f} holds no raw token`)
    t.equal(statSync(join(dir, f)).mode & 0o777, 0o600, `${f} is 0600`)
  }
  const db = new Database(path, { readonly: true })
  t.equal(db.pragma('user_version', { simple: true }), JOB_STORE_SCHEMA_VERSION, 'migrated through v2 to the current version')
  db.close()
  const again = new JobStore(path, { tenantOfToken: () => 'x' })
  t.same(again.get('aaaa')?.keepColumns, [], 'v1 jobs keep no other columns')
  again.close()
})

t.test('schema v2 (no keep_columns): migrated at open; old jobs keep no other columns, new ones store theirs', async (t) => {
  const { V1_SQL } = await import('./helpers/v1-job-store.js')
  const path = join(dir, 'v2.sqlite')
  // v2 is v1 with tenant for token.
  const db = new Database(path)
  db.exec(V1_SQL.replace('token TEXT NOT NULL, bulk_name', 'tenant TEXT NOT NULL, bulk_name').replace('bills (token TEXT', 'bills (tenant TEXT').replace('user_version = 1', 'user_version = 2'))
  db.prepare(`INSERT INTO jobs VALUES ('old1', 'ten', 'out', 'builtin/echo', 'cpu', 'reviews', 'default', 'train', 'text', 'null', 'running', 2, 1, 0, 1, NULL, NULL, NULL, 1)`).run()
  db.close()
  const store = new JobStore(path)
  t.match(store.get('old1'), { tenant: 'ten', state: 'running', processed: 1, keepColumns: [] })
  const job = store.create({ ...JOB, keepColumns: ['id', 'rating'] })
  t.same(store.get(job.id)?.keepColumns, ['id', 'rating'])
  t.throws(() => store.create({ ...JOB, keepColumns: ['ok', ''] }), { constructor: InvalidOptionError, message: /Job field "keepColumns" must be an array of column names/ })
  store.close()
  const check = new Database(path, { readonly: true })
  t.equal(check.pragma('user_version', { simple: true }), JOB_STORE_SCHEMA_VERSION, 'migrated through v3 to the current version')
  check.close()
})

t.test('schema v3 (no claims): migrated at open; unfinished jobs there are unclaimed, so the first node to look takes them', async (t) => {
  const { V1_SQL } = await import('./helpers/v1-job-store.js')
  const path = join(dir, 'v3.sqlite')
  // v3 is v2 with keep_columns.
  const db = new Database(path)
  db.exec(
    V1_SQL.replace('token TEXT NOT NULL, bulk_name', 'tenant TEXT NOT NULL, bulk_name')
      .replace('parameters TEXT NOT NULL,', "parameters TEXT NOT NULL, keep_columns TEXT NOT NULL DEFAULT '[]',")
      .replace('bills (token TEXT', 'bills (tenant TEXT')
      .replace('user_version = 1', 'user_version = 3'),
  )
  const insert = db.prepare(`INSERT INTO jobs VALUES (?, 'ten', 'out', 'builtin/echo', 'cpu', 'reviews', 'default', 'train', 'text', 'null', '["id"]', ?, 2, 1, 0, 1, NULL, NULL, NULL, 1)`)
  insert.run('run1', 'running')
  insert.run('done1', 'completed')
  db.prepare("INSERT INTO results VALUES ('run1', 0, '[]', NULL)").run()
  db.close()
  const store = new JobStore(path)
  t.match(store.get('run1'), { tenant: 'ten', state: 'running', processed: 1, keepColumns: ['id'], claimedBy: null, claimUntil: null })
  t.same(store.claimable(Date.now()).map((j) => j.id), ['run1'], 'the unfinished job is claimable at once')
  t.equal(store.claim('run1', 'node-a', 1000), true)
  t.equal(store.isDone('run1', 0), true, 'its stored rows are still there')
  t.equal(store.claim('done1', 'node-a', 1000), false, 'an ended job is never claimed')
  store.close()
  const check = new Database(path, { readonly: true })
  t.equal(check.pragma('user_version', { simple: true }), 4)
  check.close()
})

t.test('claims: one node at a time; an expired claim goes to another; the loser can neither run, store nor finish the job', async (t) => {
  const path = join(dir, 'claims.db')
  // Two stores on one file: two nodes.
  const a = new JobStore(path)
  const b = new JobStore(path)
  t.teardown(() => {
    a.close()
    b.close()
  })
  const job = a.create(JOB)
  const lease = 1000
  t.same(b.claimable(1000).map((j) => j.id), [job.id], 'a new job is claimable by anyone')
  t.equal(a.claim(job.id, 'A', lease, 1000), true)
  t.match(b.get(job.id), { claimedBy: 'A', claimUntil: 2000 })
  t.equal(b.claim(job.id, 'B', lease, 1500), false, 'a live claim is not taken')
  t.same(b.claimable(1500, 'B'), [], 'nor listed to another node')
  t.same(a.claimable(1500, 'A').map((j) => j.id), [job.id], 'but listed to its holder (a restarted node of the same name)')
  t.equal(a.claim(job.id, 'A', lease, 1500), true, 'claiming again is renewing')
  t.equal(a.setRunning(job.id, 'A', 5), true)
  t.equal(a.saveResults(job.id, rows([0, 1]), { claimedBy: 'A' }), 2)
  t.equal(a.renewClaim(job.id, 'A', lease, 1800), true)
  t.equal(b.claim(job.id, 'B', lease, 2799), false, 'renewed until 2800')
  t.equal(b.renewClaim(job.id, 'B', lease, 2799), false, 'a renewal is no claim')

  // A stops renewing (it died, or hung): at expiry B takes the job over.
  t.same(b.claimable(2800, 'B').map((j) => j.id), [job.id])
  t.equal(b.claim(job.id, 'B', lease, 2800), true)
  t.match(a.get(job.id), { state: 'running', claimedBy: 'B', claimUntil: 3800, processed: 2 })
  // A, back to life, learns at its next renewal that the job is no longer its own...
  t.equal(a.renewClaim(job.id, 'A', lease, 2900), false)
  // ...and whatever it tries before that is refused in SQL.
  t.throws(() => a.saveResults(job.id, rows([2, 3]), { claimedBy: 'A' }), { constructor: JobStateError, code: 'ERR_JOB_STATE', message: /claimed by node "B": node "A" may not store/ })
  t.throws(() => a.saveResults(job.id, [], { claimedBy: 'A' }), JobStateError)
  t.equal(a.setRunning(job.id, 'A', 5), false)
  t.equal(a.finish(job.id, 'A', { state: 'completed', revision: 'c'.repeat(40) }), false)
  t.equal(a.releaseClaim(job.id, 'A'), false, 'nor can it release what it does not hold')
  t.match(b.get(job.id), { state: 'running', processed: 2, revision: null, claimedBy: 'B' }, 'nothing of A changed the job')

  t.equal(b.saveResults(job.id, rows([1, 2, 3, 4]), { claimedBy: 'B' }), 3, 'B stores only the rows not stored yet')
  t.equal(b.finish(job.id, 'B', { state: 'completed', revision: 'c'.repeat(40), total: 5, endTime: 77 }), true)
  t.match(a.get(job.id), { state: 'completed', processed: 5, total: 5, revision: 'c'.repeat(40), endTime: 77, claimedBy: null, claimUntil: null })
  t.throws(() => b.saveResults(job.id, rows([5]), { claimedBy: 'B' }), { constructor: JobStateError, message: /is completed, claimed by no node/ }, 'an ended job gains no rows')
  t.equal(a.claim(job.id, 'A', lease, 10_000), false, 'an ended job is never claimed again')
  t.same(a.claimable(10_000), [])
  t.equal(a.finish(job.id, 'B', { state: 'failed', error: 'late' }), false, 'nor ended twice')

  t.throws(() => a.saveResults('nope', rows([0]), { claimedBy: 'A' }), JobNotFoundError)
  t.throws(() => a.claim(job.id, '', lease), InvalidOptionError)
  t.throws(() => a.claim(job.id, 'A', 0), InvalidOptionError)
  t.throws(() => a.finish(job.id, 'A', { state: 'cancelled' as never }), InvalidOptionError)
})

t.test('release and cancel: a released job is claimable at once; a cancel from any node ends it and its claim', async (t) => {
  const store = new JobStore(':memory:')
  t.teardown(() => store.close())
  const first = store.create(JOB)
  const second = store.create(JOB)
  t.equal(store.claim(first.id, 'A', 60_000, 1000), true)
  t.equal(store.claim(second.id, 'A', 60_000, 1000), true)
  store.update(second.id, { state: 'running' })
  t.same(store.claimable(2000, 'B'), [])
  t.equal(store.releaseClaim(first.id, 'A'), true)
  t.match(store.get(first.id), { state: 'queued', claimedBy: null, claimUntil: null })
  t.same(store.claimable(2000, 'B').map((j) => j.id), [first.id], 'released: claimable without waiting for the lease')
  store.releaseClaim(second.id, 'A')
  t.same(store.claimable(2000, 'B').map((j) => j.id), [second.id, first.id], 'running (interrupted) jobs first, then oldest first')
  store.claim(second.id, 'A', 60_000, 2000)

  // The cancel comes to another node: it only changes the store.
  t.equal(store.cancel(second.id, 55.5), true)
  t.match(store.get(second.id), { state: 'cancelled', endTime: 55.5, error: 'Cancelled', claimedBy: null })
  t.equal(store.renewClaim(second.id, 'A', 60_000, 3000), false, 'the runner sees it at its next renewal')
  t.equal(store.finish(second.id, 'A', { state: 'completed' }), false, 'and cannot complete it')
  t.equal(store.cancel(second.id), false, 'a job that ended is not cancelled again')
  t.equal(store.cancel('nope'), false)
  t.equal(store.claim(second.id, 'B', 60_000, 99_999), false)
})

t.test('claims across processes: nodes claiming the same jobs at once never both win one', async (t) => {
  const path = join(dir, 'race.db')
  const setup = new JobStore(path)
  const ids = Array.from({ length: 300 }, () => setup.create(JOB).id)
  setup.close()
  const module = fileURLToPath(new URL('../lib/server/store/job-store.js', import.meta.url))
  const node = (name: string): Promise<string[]> => {
    const code = `
      import { JobStore } from ${JSON.stringify(module)}
      const store = new JobStore(${JSON.stringify(path)})
      const won = []
      for (const job of store.claimable(Date.now(), ${JSON.stringify(name)})) if (store.claim(job.id, ${JSON.stringify(name)}, 60000)) won.push(job.id)
      store.close()
      console.log(JSON.stringify(won))
    `
    const child = spawn(process.execPath, [...process.execArgv, '--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.on('data', (d: Buffer) => (out += d))
    return new Promise((resolve, reject) => child.on('exit', (c) => (c === 0 ? resolve(JSON.parse(out) as string[]) : reject(new Error(`node ${name} exited with ${c}`)))))
  }
  const won = await Promise.all(['A', 'B', 'C'].map(node))
  const all = won.flat()
  t.equal(new Set(all).size, all.length, 'no job won by two nodes')
  t.same([...all].sort(), [...ids].sort(), 'every job won by one')
  const check = new JobStore(path)
  t.teardown(() => check.close())
  won.forEach((list, i) => t.ok(list.every((id) => check.get(id)?.claimedBy === 'ABC'[i]), `node ${'ABC'[i]} holds what it won`))
})

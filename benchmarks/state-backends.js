#!/usr/bin/env node
/*
 * Question
 *   What does durability cost the state layer? Items/s of the SQLite backend (one file, WAL, one
 *   transaction per event-loop turn) against the memory backend (the embedded default) on the same
 *   simple loop, and where the time goes per transition. The issue's bar: SQLite at least 0.5 of
 *   memory.
 *
 * Fixture
 *   One tenant, one model, 20 000 items (--items). A loop of: submit a batch of --batch items
 *   (one call, one transaction), lease them (maxBatch --batch, maxWaitMs 0), finish them all
 *   (billable), takeUndelivered, acknowledge — the path of a stream item. Peers:
 *     memory        MemoryStateBackend
 *     sqlite        SqliteStateBackend on a file in a temp folder (synchronous NORMAL, the default)
 *     sqlite-full   the same with synchronous FULL (an fsync per commit; --batch only)
 *     redis         RedisStateBackend on the Redis at --redis (default REDIS_URL, else
 *                   redis://127.0.0.1:6379) under a fresh key prefix, deleted after the run; left
 *                   out (with a line saying so) when that Redis does not answer. Its row also gives
 *                   the Redis server's own CPU per item (INFO cpu over the measured loop: the Lua
 *                   scripts of the transitions; it includes any other client of that Redis).
 *   at --batch (default 64) and at batch 1 (one item per transition: commit-bound). Each
 *   measurement runs in a fresh child process after a warm-up loop of 2 000 items on another
 *   backend; runs are interleaved and the median is kept. The bill is checked (= items).
 *
 * Command
 *   npx tsc -p tsconfig.build.json && node benchmarks/state-backends.js
 *   node benchmarks/state-backends.js --items 50000 --batch 100 --runs 5
 *   node benchmarks/state-backends.js --quick        (1 run: a smoke test)
 *   Results: benchmarks/results/state-backends.json and .md (the table is printed too).
 *
 * How to read the result
 *   items/s per peer and batch size (median of the runs), the ratio to memory at the same batch
 *   size (each run over memory's run of the same round, median), and µs per item in each call. At batch 1 SQLite pays a commit (a WAL append, an
 *   fsync with FULL) per transition, four per item; batched, the commits are shared and the rows'
 *   writes remain. A shared, loaded machine makes absolute numbers noisy: compare within one run.
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { deleteKeys, redisInfo } from './lib/redis.js'
import {
  ROOT,
  checkBuild,
  commandLine,
  exitIfFailed,
  fmtInt,
  int,
  loadBeforeRuns,
  machineInfo,
  medianRun,
  parseBenchArgs,
  pkgVersion,
  runChild,
  runRole,
  runsArg,
} from './lib/harness.js'

const SELF = fileURLToPath(import.meta.url)
const MEMORY = path.join(ROOT, 'dist', 'server', 'state', 'memory-backend.js')
const SQLITE = path.join(ROOT, 'dist', 'server', 'state', 'sqlite-backend.js')
const REDIS = path.join(ROOT, 'dist', 'server', 'state', 'redis-backend.js')
const args = parseBenchArgs({ items: { type: 'string' }, batch: { type: 'string', default: '64' }, peer: { type: 'string' }, 'run-batch': { type: 'string' }, redis: { type: 'string' } })
const REDIS_URL = args.redis ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const ITEMS = args.items !== undefined ? int('items', args.items) : 20_000
const BATCH = int('batch', args.batch)
const LIMITS = { maxRetained: 1_000_000, retentionMs: 3_600_000 }
const STEPS = ['submit', 'lease', 'finish', 'take', 'ack']

// A plain connection to the Redis of the redis peer (its CPU, its keys), or null when it does not answer.
async function redisAdmin() {
  const { default: Redis } = await import('ioredis')
  const r = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
  r.on('error', () => {})
  try {
    await r.connect()
    await r.ping()
    return r
  } catch {
    r.disconnect()
    return null
  }
}

async function open(peer, dir, name) {
  if (peer === 'redis') {
    const { RedisStateBackend } = await import(REDIS)
    const prefix = `bench-state:${process.pid}:${name}:`
    return { backend: new RedisStateBackend({ url: REDIS_URL, prefix, ...LIMITS }), file: null, prefix }
  }
  if (peer === 'memory') {
    const { MemoryStateBackend } = await import(MEMORY)
    return { backend: new MemoryStateBackend(LIMITS), file: null }
  }
  const { SqliteStateBackend } = await import(SQLITE)
  const file = path.join(dir, `${name}.sqlite`)
  return { backend: new SqliteStateBackend({ path: file, ...LIMITS, synchronous: peer === 'sqlite-full' ? 'FULL' : 'NORMAL' }), file }
}

// The loop; returns ms per step (summed) and the total.
async function loop(b, items, batch) {
  const owner = 'T\nbuiltin/echo'
  const ms = Object.fromEntries(STEPS.map((s) => [s, 0]))
  const start = performance.now()
  for (let i = 0; i < items; i += batch) {
    const chunk = []
    for (let j = i; j < Math.min(items, i + batch); j++) {
      const inputs = `review number ${j}: fine`
      chunk.push({ tenant: 'T', owner, id: `id-${j}`, model: 'builtin/echo', compute: 'cpu', inputs, group: 'builtin/echo\ncpu\n{}', fingerprint: JSON.stringify(inputs), bytes: inputs.length + 2, route: { node: 'n' } })
    }
    let t = performance.now()
    const lap = (step) => {
      const now = performance.now()
      ms[step] += now - t
      t = now
    }
    await b.submit(chunk)
    lap('submit')
    const lease = await b.lease('w', { maxBatch: batch, maxWaitMs: 0, leaseMs: 60_000 })
    lap('lease')
    await b.finish(lease, lease.items.map((it, index) => ({ index, outputs: JSON.stringify([{ generated_text: it.inputs }]), billable: true })))
    lap('finish')
    const taken = await b.takeUndelivered(owner, batch)
    lap('take')
    await b.acknowledge(owner, taken.map(([id]) => id))
    lap('ack')
  }
  return { ms, total: performance.now() - start }
}

async function child() {
  const peer = args.peer
  const batch = int('run-batch', args['run-batch'])
  const dir = mkdtempSync(path.join(os.tmpdir(), 'is-bench-state-'))
  try {
    const admin = peer === 'redis' ? await redisAdmin() : null
    const opened = []
    try {
      const warm = await open(peer, dir, 'warm')
      opened.push(warm)
      await loop(warm.backend, 2000, batch)
      await warm.backend.close()
      const run = await open(peer, dir, 'run')
      opened.push(run)
      const { backend, file } = run
      const cpu0 = admin ? (await redisInfo(admin)).cpuSec : 0
      const { ms, total } = await loop(backend, ITEMS, batch)
      const redisCpu = admin ? Math.round((((await redisInfo(admin)).cpuSec - cpu0) * 1e6 / ITEMS) * 10) / 10 : null
      const billed = (await backend.ledger()).reduce((n, e) => n + e.items, 0)
      const stats = await backend.stats()
      await backend.close()
      const bytes = file ? statSync(file).size : null
      const usPerItem = Object.fromEntries(STEPS.map((s) => [s, Math.round((ms[s] / ITEMS) * 1000 * 100) / 100]))
      const ok = billed === ITEMS && stats.queued === 0 && stats.processing === 0
      process.stdout.write(`${JSON.stringify({ ok, peer, batch, items: ITEMS, seconds: total / 1000, itemsPerSec: ITEMS / (total / 1000), usPerItem, billed, fileBytes: bytes, redisCpuUsPerItem: redisCpu })}\n`)
    } finally {
      // The run's keys go (the backends closed first: nothing writes them any more).
      if (admin) {
        for (const o of opened) await deleteKeys(admin, o.prefix)
        admin.disconnect()
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

async function orchestrator() {
  checkBuild([MEMORY, SQLITE, REDIS], 'dist/ is missing the state backends: run `npx tsc -p tsconfig.build.json` first\n')
  const runs = runsArg(args)
  const admin = await redisAdmin()
  const redisVersion = admin ? (await redisInfo(admin)).version ?? '?' : null
  admin?.disconnect()
  if (!admin) process.stderr.write(`No Redis answers at ${REDIS_URL.replace(/\/\/[^@/]*@/, '//')}: the redis peer is left out\n`)
  const configs = [
    { peer: 'memory', batch: BATCH },
    { peer: 'sqlite', batch: BATCH },
    { peer: 'sqlite-full', batch: BATCH },
    ...(admin ? [{ peer: 'redis', batch: BATCH }] : []),
    ...(BATCH === 1 ? [] : [{ peer: 'memory', batch: 1 }, { peer: 'sqlite', batch: 1 }]),
  ]
  const loadBefore = loadBeforeRuns()
  const results = new Map(configs.map((c) => [`${c.peer}@${c.batch}`, []]))
  for (let r = 1; r <= runs; r++) {
    for (const c of configs) {
      const res = await runChild(SELF, 'run', ['--peer', c.peer, '--run-batch', String(c.batch), '--items', String(ITEMS)])
      process.stderr.write(`run ${r}/${runs} ${c.peer} batch ${c.batch}: ${res.ok ? `${fmtInt(res.itemsPerSec)} items/s` : `FAILED ${res.error ?? res.stderr ?? ''}`}\n`)
      results.get(`${c.peer}@${c.batch}`).push(res)
    }
  }
  const rows = configs.map((c) => {
    const { med, runs: all, ok } = medianRun(results.get(`${c.peer}@${c.batch}`), 'itemsPerSec')
    // The ratio of each run to memory's run of the same round (interleaved, so under the same
    // load), then the median: steadier than the ratio of the medians when the load drifts.
    const memory = results.get(`memory@${c.batch}`)
    const ratios = all.map((x, i) => x.itemsPerSec / memory[i].itemsPerSec).sort((x, y) => x - y)
    const ratioToMemory = ratios[Math.floor((ratios.length - 1) / 2)]
    return { ...c, ok, itemsPerSec: med.itemsPerSec, ratioToMemory, usPerItem: med.usPerItem, fileBytes: med.fileBytes, redisCpuUsPerItem: med.redisCpuUsPerItem ?? null, runs: all.map((x) => Math.round(x.itemsPerSec)) }
  })
  const machine = machineInfo(loadBefore, { 'better-sqlite3': pkgVersion('better-sqlite3') })
  const table = [
    `| peer | batch | items/s | × memory (median of runs) | µs/item submit | lease | finish | take | ack | file MiB | Redis CPU µs/item | runs (items/s) |`,
    `|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|`,
    ...rows.map(
      (r) =>
        `| ${r.peer} | ${r.batch} | ${fmtInt(r.itemsPerSec)} | ${r.ratioToMemory.toFixed(2)} | ${STEPS.map((s) => r.usPerItem[s].toFixed(1)).join(' | ')} | ${r.fileBytes === null ? '—' : (r.fileBytes / 2 ** 20).toFixed(1)} | ${r.redisCpuUsPerItem === null ? '—' : r.redisCpuUsPerItem.toFixed(1)} | ${r.runs.map(fmtInt).join(', ')} |`,
    ),
  ].join('\n')
  const md = `# State backends: memory vs SQLite vs Redis

${ITEMS.toLocaleString('en-US')} items, submit → lease → finish → takeUndelivered → acknowledge, median of ${runs} interleaved run(s), each in a fresh process after a warm-up.

Command: \`${commandLine('state-backends')}\` (after \`npx tsc -p tsconfig.build.json\`)

${table}

Machine: ${machine.cpus} × ${machine.cpuModel}, ${machine.platform}, Node ${machine.node}, better-sqlite3 ${machine['better-sqlite3']}, ${redisVersion ? `Redis ${redisVersion}` : 'no Redis'}, commit ${machine.commit}; load average ${machine.loadAvgBefore} before, ${machine.loadAvgAfter} after.
`
  process.stdout.write(`\n${md}`)
  if (!args['no-write']) {
    const { writeResults } = await import('./lib/harness.js')
    writeResults('state-backends', args.quick, { items: ITEMS, batch: BATCH, runs, rows, machine: { ...machine, redis: redisVersion } }, md)
  }
  exitIfFailed(rows.some((r) => !r.ok))
}

await runRole(args, { orchestrator, run: child })

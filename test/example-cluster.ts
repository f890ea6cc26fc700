// examples/cluster/start.js as its README runs it (needs dist/ and a Redis: REDIS_URL, else
// redis://127.0.0.1:6379; skipped without one outside CI): 2 front-ends and 3 workers start, one
// worker is killed (-9) and the others carry on, examples/reviews.csv streams through both
// front-ends with `run --endpoint A --endpoint B`, and Ctrl-C (SIGINT) stops every process and
// deletes the prefix's keys.
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { cliProcess } from './helpers/cli.js'
import { REDIS_SKIP, REDIS_URL, redisReachable, RedisTestSpace } from './helpers/redis.js'
import { until } from './helpers/until.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const space = new RedisTestSpace()
const reachable = await redisReachable()
if (reachable) t.teardown(() => space.cleanup())

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

t.test('examples/cluster/start.js: 2 front-ends, 3 workers, a run through both, Ctrl-C', { skip: reachable ? false : REDIS_SKIP }, async (t) => {
  const prefix = space.prefix()
  const dir = mkdtempSync(join(tmpdir(), 'example-cluster-'))
  const child = spawn(process.execPath, ['examples/cluster/start.js', '--port', '0', '--prefix', prefix], {
    cwd: root,
    env: { ...process.env, REDIS_URL },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  let err = ''
  child.stdout.on('data', (d) => (out += d))
  child.stderr.on('data', (d) => (err += d))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
  const pids: number[] = []
  t.teardown(() => {
    // Whatever the test did: nothing it started outlives it.
    for (const pid of [child.pid!, ...pids]) if (alive(pid)) process.kill(pid, 'SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  })

  await until(() => out.includes('Ctrl-C stops the cluster') || child.exitCode !== null, 'the cluster to start', 90_000)
  t.match(out, new RegExp(`cluster on ${REDIS_URL.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}, key prefix ${prefix}`), `out: ${out}\nerr: ${err}`)
  const urls = [...out.matchAll(/^front-end \d: (http:\/\/\S+) \(pid (\d+)\)$/gm)]
  const workers = [...out.matchAll(/^worker \d: health (http:\/\/\S+) \(pid (\d+)\)$/gm)]
  t.equal(urls.length, 2, 'two front-ends')
  t.equal(workers.length, 3, 'three workers')
  pids.push(...urls.map((m) => Number(m[2])), ...workers.map((m) => Number(m[2])))
  for (const m of workers) t.equal(((await (await fetch(m[1]!)).json()) as { role: string }).role, 'worker')
  const tryLine = /^try: inference-stream run examples\/reviews\.csv --model builtin\/sentiment --endpoint (\S+) --endpoint (\S+) -o reviews\.jsonl$/m.exec(out)
  t.ok(tryLine, 'prints the run command')
  t.same([tryLine?.[1], tryLine?.[2]], urls.map((m) => m[1]))

  // One worker dies: the others carry on.
  process.kill(Number(workers[0]![2]), 'SIGKILL')
  await until(() => /worker 1 \(pid \d+\) exited \(SIGKILL\); the others go on/.test(err), 'the script to notice', 10_000)

  const output = join(dir, 'reviews.jsonl')
  const run = cliProcess(['run', 'examples/reviews.csv', '--model', 'builtin/sentiment', '--endpoint', urls[0]![1]!, '--endpoint', urls[1]![1]!, '-o', output])
  const r = await run.exited
  t.equal(r.code, 0, 'the run exits 0', { stderr: run.err() })
  const rows = readFileSync(output, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { input_id: string; label: string; error: unknown })
  t.equal(rows.length, 300)
  t.equal(new Set(rows.map((x) => x.input_id)).size, 300, 'every row once')
  t.equal(rows.filter((x) => x.error !== null).length, 0, 'no failed row')
  t.ok(rows.every((x) => x.label === 'POSITIVE' || x.label === 'NEGATIVE'))
  t.ok((await space.keys(prefix)).length > 0, 'the cluster keeps its state under the prefix')

  child.kill('SIGINT')
  const e = await exited
  t.equal(e.code, 0, 'Ctrl-C: the script exits 0', { stderr: err })
  t.match(out, /stopping…\ndeleted \d+ keys of .*\nstopped\n$/)
  for (const pid of pids) t.notOk(alive(pid), `process ${pid} stopped`)
  t.same(await space.keys(prefix), [], 'no key of the prefix left')
})

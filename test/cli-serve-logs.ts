import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { prettyLine } from '../lib/cli/log.js'
import { cliProcess } from './helpers/cli.js'
import { connect } from './helpers/ws-client.js'

async function started(p: ReturnType<typeof cliProcess>): Promise<string> {
  const deadline = Date.now() + 90_000 // not-stuck bound: a CLI started from source under the TS loader on a loaded machine
  while (!/listening on (\S+)/.test(p.out()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
  const base = /listening on (\S+)/.exec(p.out())?.[1]
  if (!base) throw new Error(`server did not start: ${p.err()}`)
  return base
}

function records(text: string): Record<string, unknown>[] {
  return text
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
}

async function until(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 90_000 // not-stuck bound: a CLI started from source under the TS loader on a loaded machine
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

t.test('serve logs uploads, jobs and refused tokens at info, as JSON when stderr is not a terminal, never a token', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'is-logs-'))
  const p = cliProcess(['serve', '--port', '0', '--token', 'sekrit-token-1', '--data-dir', dir])
  t.teardown(() => p.child.kill('SIGKILL'))
  const base = await started(p)
  const auth = { authorization: 'Bearer sekrit-token-1' }

  // Refused: a wrong token on HTTP, on a stream, and none at all.
  t.equal((await fetch(`${base}/bulk/jobs`, { headers: { authorization: 'Bearer wrong-guess-42' } })).status, 401)
  t.equal((await fetch(`${base}/bulk/jobs`)).status, 401)
  const ws = await connect(`${base.replace('http', 'ws')}/bulk/stream/cpu/builtin/echo`, { token: 'wrong-guess-43' })
  t.equal((await ws.closed).code, 1008)

  const up = await fetch(`${base}/bulk/datasets/reviews/default/train.csv`, { method: 'PUT', headers: auth, body: 'text\nhello\nworld\n' })
  t.equal(up.status, 201)
  const run = await fetch(`${base}/bulk/run/cpu/builtin/echo`, {
    method: 'POST',
    headers: { ...auth, 'content-type': 'application/json' },
    body: JSON.stringify({ dataset_name: 'reviews', dataset_config: 'default', dataset_split: 'train', dataset_column: 'text' }),
  })
  t.equal(run.status, 200)
  const { jobid } = (await run.json()) as { jobid: string }
  await until(() => records(p.err()).some((r) => r.msg === 'bulk job completed'), 'the job to complete')

  const recs = records(p.err())
  t.ok(recs.length > 0 && p.err().split('\n').filter(Boolean).every((l) => l.startsWith('{')), 'every line is JSON')
  const refused = recs.filter((r) => String(r.msg).startsWith('refused'))
  t.equal(refused.length, 3, 'each refusal logged')
  t.ok(refused.every((r) => r.level === 30 && typeof r.remote === 'string' && typeof r.route === 'string'), 'at info, with address and route')
  t.match(refused.map((r) => `${r.msg} ${r.route}`).sort(), [/Invalid token GET \/bulk\/jobs/, /Invalid token stream cpu\/builtin\/echo/, /Missing .*GET \/bulk\/jobs/])
  const uploaded = recs.find((r) => r.msg === 'dataset uploaded')
  t.match(uploaded, { level: 30, dataset: 'reviews/default/train.csv', bytes: 17, tenant: /^t-[0-9a-f]{12}$/ })
  t.match(recs.find((r) => r.msg === 'bulk job submitted'), { job: jobid, model: 'builtin/echo', dataset: 'reviews/default/train', column: 'text' })
  t.match(recs.find((r) => r.msg === 'bulk job started'), { job: jobid, rows: 2 })
  t.match(recs.find((r) => r.msg === 'bulk job completed'), { job: jobid, rows: 2, revision: /^[0-9a-f]{40}$/ })
  t.notMatch(p.err(), /sekrit-token-1|wrong-guess/, 'no token, accepted or refused, is ever logged')
})

t.test('refusals are rate limited: a token guesser cannot flood the log', async (t) => {
  const p = cliProcess(['serve', '--port', '0', '--token', 'right'])
  t.teardown(() => p.child.kill('SIGKILL'))
  const base = await started(p)
  for (let i = 0; i < 60; i++) {
    const res = await fetch(`${base}/models/builtin/echo`, { method: 'POST', headers: { authorization: `Bearer guess-${i}` }, body: '{"inputs":"x"}' })
    if (res.status !== 401) t.fail(`guess ${i}: ${res.status}`)
  }
  const refused = records(p.err()).filter((r) => String(r.msg).startsWith('refused'))
  t.equal(refused.length, 20, 'at most 20 lines a minute')
  t.match(refused[0], { msg: 'refused: Invalid token', route: 'POST /models/builtin/echo' })
})

t.test('--log-format pretty gives readable lines', async (t) => {
  const p = cliProcess(['serve', '--port', '0', '--log-format', 'pretty'])
  t.teardown(() => p.child.kill('SIGKILL'))
  await started(p)
  // Each log line is its own write: wait for both (the warning may come in a later chunk).
  await until(() => /server started/.test(p.err()) && /No token configured/.test(p.err()), 'the start line and the warning')
  t.match(p.err(), /^\d\d:\d\d:\d\d\.\d{3} INFO  server started url=http:\/\/127\.0\.0\.1:\d+ models=\[/m)
  t.match(p.err(), /^\d\d:\d\d:\d\d\.\d{3} WARN  No token configured/m)
  t.notMatch(p.err(), /^\{/m, 'no JSON lines')
  const bad = cliProcess(['serve', '--log-format', 'xml'])
  t.equal((await bad.exited).code, 2)
  t.match(bad.err(), /--log-format.*xml.*Allowed choices are auto, pretty, json/)
})

t.test('prettyLine', async (t) => {
  t.equal(prettyLine('not json'), 'not json\n')
  const line = prettyLine(JSON.stringify({ level: 40, time: 0, pid: 1, hostname: 'h', msg: 'hi', job: 'abc', text: 'a b', n: 3 }))
  t.match(line, /^\d\d:\d\d:\d\d\.000 WARN  hi job=abc text="a b" n=3\n$/)
  const err = prettyLine(JSON.stringify({ level: 50, time: 0, msg: 'boom', err: { message: 'x', stack: 'Error: x\n    at f (a.js:1:1)' } }))
  t.match(err, /ERROR boom\n    Error: x\n        at f \(a\.js:1:1\)\n$/)
  t.match(prettyLine(JSON.stringify({ level: 30, time: 0, msg: 'c' }), true), /\x1b\[32mINFO \x1b\[0m c/)
})

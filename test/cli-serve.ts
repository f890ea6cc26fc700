import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { collectTokens } from '../lib/cli/serve.js'
import { cliProcess } from './helpers/cli.js'
import { connect } from './helpers/ws-client.js'


t.test('collectTokens merges flags, env and file', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'is-tokens-'))
  const file = join(dir, 'tokens')
  writeFileSync(file, '# comment\nfile-token\n\n  spaced  \nacme: a1\nacme:a2\n')
  t.same(collectTokens(['flag'], file, { INFERENCE_STREAM_TOKENS: 'env1,env2,flag' }), {
    tokens: ['flag', 'env1', 'env2', 'file-token', 'spaced'],
    tenants: { acme: ['a1', 'a2'] },
  })
  writeFileSync(file, 'ok\ntwo words here\n')
  t.throws(() => collectTokens([], file), { code: 'ERR_INVALID_OPTION', message: /line 2: expected "TOKEN" or "TENANT: TOKEN"/ })
  t.throws(() => collectTokens([], join(dir, 'missing')), { code: 'ERR_INVALID_OPTION', message: /Cannot read --token-file/ })
})

t.test('serve: listens, checks tokens from a file and env, shuts down on SIGTERM', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'is-serve-'))
  const file = join(dir, 'tokens')
  writeFileSync(file, 'from-file\nacme: acme-1\nacme: acme-2\n')
  const p = cliProcess(['serve', '--port', '0', '--token-file', file, '--log-level', 'warn', '--metrics-token', 'ops'], { INFERENCE_STREAM_TOKENS: 'from-env' })
  t.teardown(() => p.child.kill('SIGKILL'))
  const deadline = Date.now() + 90_000 // not-stuck bound: a CLI started from source under the TS loader on a loaded machine
  while (!/listening on (\S+)/.test(p.out()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
  const base = /listening on (\S+)/.exec(p.out())?.[1]
  t.ok(base, 'printed its address')
  const url = `${base!.replace('http', 'ws')}/bulk/stream/cpu/builtin/echo`
  const bad = await connect(url, { token: 'nope' })
  t.equal((await bad.closed).code, 1008)
  for (const token of ['from-file', 'from-env']) {
    const c = await connect(url, { token })
    c.send({ id: 'x', inputs: token })
    await c.waitFor(() => c.results().has('x'), 'result')
    t.equal(c.results().get('x'), token)
    await c.close()
  }
  // Two tokens of one tenant share its results: what acme-1 sent (and left) reaches acme-2.
  const a1 = await connect(url, { token: 'acme-1' })
  a1.send({ id: 'shared', inputs: 'from acme-1' })
  await a1.waitFor(() => a1.results().has('shared'), 'result')
  await a1.close()
  const a2 = await connect(url, { token: 'acme-2' })
  a2.send({ id: 'shared', inputs: 'from acme-1' })
  await a2.waitFor(() => a2.results().has('shared'), 'stored result')
  t.equal(a2.results().get('shared'), 'from acme-1')
  await a2.close()
  t.equal((await fetch(`${base}/metrics`, { headers: { authorization: 'Bearer acme-1' } })).status, 401, 'a tenant token does not read the metrics')
  const metrics = await fetch(`${base}/metrics`, { headers: { authorization: 'Bearer ops' } })
  t.equal(metrics.status, 200)
  t.match(await metrics.text(), /inference_stream_billed_items_total\{tenant="acme"\} 1\n/, 'acme billed once, under its name')
  p.child.kill('SIGTERM')
  t.equal((await p.exited).code, 0, 'graceful exit')
})

t.test('serve without --data-dir: bulk routes say the server runs no bulk jobs (501, never a bare 404); bulk run says so, exit 2', async (t) => {
  const p = cliProcess(['serve', '--port', '0', '--log-level', 'warn'])
  t.teardown(() => p.child.kill('SIGKILL'))
  const deadline = Date.now() + 90_000
  while (!/listening on (\S+)/.test(p.out()) && Date.now() < deadline && p.child.exitCode === null) await new Promise((r) => setTimeout(r, 20))
  const base = /listening on (\S+)/.exec(p.out())?.[1]
  t.ok(base, p.err())
  const message = /^This server runs no bulk jobs: it was started without a data folder; start it with `inference-stream serve --data-dir DIR`/
  for (const [method, route] of [['POST', '/bulk/run/cpu/builtin/echo'], ['GET', '/bulk/status/abc'], ['GET', '/bulk/jobs'], ['PUT', '/bulk/datasets/x/default/train.csv']] as const) {
    const res = await fetch(`${base}${route}`, { method, body: method === 'GET' ? undefined : '{}' })
    t.equal(res.status, 501, `${method} ${route}`)
    t.match(await res.json(), { error: message, code: 'ERR_BULK_DISABLED' }, `${method} ${route}`)
  }
  t.equal((await fetch(`${base}/nope`)).status, 404, 'a route that does not exist is still a 404')
  const run = cliProcess(['bulk', 'run', '-m', 'builtin/echo', '--dataset', 'reviews', '--split', 'train', '--column', 'text', '--endpoint', base!], { INFERENCE_STREAM_TOKEN: '' })
  t.equal((await run.exited).code, 2, run.err())
  t.match(run.err(), /^inference-stream: This server runs no bulk jobs: .*serve --data-dir DIR.* \(POST \/bulk\/run\/cpu\/builtin\/echo: HTTP 501, ERR_BULK_DISABLED\)\n$/)
  p.child.kill('SIGTERM')
  t.equal((await p.exited).code, 0, 'graceful exit')
})

t.test('bad flags give one clear line and exit 2', async (t) => {
  const p = cliProcess(['serve', '--port', 'abc'])
  t.equal((await p.exited).code, 2)
  t.match(p.err(), /--port must be a non-negative integer, got "abc"/)
  t.notMatch(p.err(), /\n\s+at /, 'no stack trace')
  const r = cliProcess(['serve', '--max-retained-bytes', '12 parsecs'])
  t.equal((await r.exited).code, 2)
  t.match(r.err(), /--max-retained-bytes must be a size such as 1048576, 512k, 64MiB or 1g, got "12 parsecs"/)
  const q = cliProcess(['serve', '--bogus'])
  t.not((await q.exited).code, 0)
  t.match(q.err(), /unknown option '--bogus'/)
})

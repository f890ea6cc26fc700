// The idempotency-key rule (DESIGN §4): the same id with the same inputs gets its stored result,
// not billed again; the same id with other inputs or parameters fails with ERR_ID_CONFLICT, is not
// run and not billed — on a legacy stream, on a v1 stream resent after a resume, and in `run
// --id-column`.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { cliProcess } from './helpers/cli.js'
import { startServer } from './helpers/server.js'
import { connect, countResults } from './helpers/ws-client.js'

const ECHO = 'builtin/echo'
const conflict = { code: 'ERR_ID_CONFLICT', error: /Id "a" was already used with other inputs or parameters/ }

t.test('legacy stream: same id same inputs → stored result, other inputs or parameters → ERR_ID_CONFLICT', async (t) => {
  const server = await startServer(t, { tokens: ['k1', 'k2'] })
  const c = await connect(server.streamUrl(ECHO), { token: 'k1' })
  c.send({ id: 'a', inputs: 'first', parameters: { x: 1 } })
  await c.waitFor(() => countResults(c, 'a') === 1, 'a')
  t.equal(await server.billed('k1'), 1)
  c.send({ parameters: { x: 1 }, inputs: 'first', id: 'a' }) // same payload, other key order
  await c.waitFor(() => countResults(c, 'a') === 2, 'a again')
  const resultsOf = (id: string) => c.messages.filter((m) => m.type === 'results' && m.id === id).map((m) => (m as { outputs: unknown }).outputs)
  t.same(resultsOf('a')[1], 'first', 'the stored result')
  c.send({ id: 'a', inputs: 'second', parameters: { x: 1 } })
  await c.waitFor(() => countResults(c, 'a') === 3, 'a conflict')
  t.match(resultsOf('a')[2], conflict)
  c.send({ id: 'a', inputs: 'first', parameters: { x: 2 } })
  await c.waitFor(() => countResults(c, 'a') === 4, 'a conflict on parameters')
  t.match(resultsOf('a')[3], conflict)
  c.send({ id: 'b', inputs: 'after' })
  await c.waitFor(() => countResults(c, 'b') === 1, 'b')
  t.equal(await server.billed('k1'), 2, 'only a (once) and b billed')
  // Another tenant may use the same id for other inputs: ids are per tenant.
  const d = await connect(server.streamUrl(ECHO), { token: 'k2' })
  d.send({ id: 'a', inputs: 'theirs' })
  await d.waitFor(() => countResults(d, 'a') === 1, 'other tenant a')
  t.same(d.results().get('a'), 'theirs')
  t.equal(await server.billed('k2'), 1)
  await c.close()
  await d.close()
})

t.test('a pending id: the same inputs wait for the one result, other inputs conflict at once', async (t) => {
  const server = await startServer(t, { tokens: ['k'] })
  const c = await connect(server.streamUrl(ECHO), { token: 'k' })
  c.send({ id: 'p', inputs: 'slow', parameters: { delay_ms: 300 } })
  c.send({ id: 'p', inputs: 'slow', parameters: { delay_ms: 300 } })
  c.send({ id: 'p', inputs: 'other', parameters: { delay_ms: 300 } })
  await c.waitFor(() => countResults(c, 'p') === 1, 'conflict answered')
  t.match(c.results().get('p'), { code: 'ERR_ID_CONFLICT' }, 'the conflict comes first, before the run ends')
  await c.waitFor(() => countResults(c, 'p') === 2, 'the result')
  t.same(c.results().get('p'), 'slow')
  await new Promise((r) => setTimeout(r, 50))
  t.equal(countResults(c, 'p'), 2, 'the pending duplicate got no second result')
  t.equal(await server.billed('k'), 1)
  await c.close()
})

t.test('v1: after a cut and a resume query, a resent id with other inputs conflicts; with the same inputs it gets the result', async (t) => {
  const server = await startServer(t, { tokens: ['k'] })
  const c = await connect(server.streamUrl(ECHO), { token: 'k', v1: true })
  c.send([{ id: 'r1', inputs: 'one' }, { id: 'r2', inputs: 'two' }])
  await c.waitFor(() => c.results().size === 2, 'both results')
  c.send({ type: 'ack', ids: ['r1', 'r2'] })
  t.equal(server.terminateStreams(), 1)
  await c.closed
  const d = await connect(server.streamUrl(ECHO), { token: 'k', v1: true })
  d.send({ type: 'resume', ids: ['r1', 'r2', 'r3'] })
  await d.waitFor(() => d.messages.some((m) => (m as { type: string }).type === 'resume'), 'resume answer')
  t.same((d.messages.find((m) => (m as { type: string }).type === 'resume') as unknown as { unknown: string[] }).unknown, ['r3'])
  // r1 comes back by the resume (retained); the client resends r2 with other inputs (a bug of its) and r3 new.
  d.send([{ id: 'r1', inputs: 'one' }, { id: 'r2', inputs: 'TWO?' }, { id: 'r3', inputs: 'three' }])
  await d.waitFor(() => d.results().has('r3') && d.messages.some((m) => m.type === 'results' && m.id === 'r2' && (m.outputs as { code?: string })?.code === 'ERR_ID_CONFLICT'), 'answers')
  const r2 = d.messages.filter((m) => m.type === 'results' && m.id === 'r2').map((m) => (m as { outputs: unknown }).outputs)
  // (r2 may also come back once more on connect, if the ack had not reached the server before the cut.)
  t.same(r2[0], 'two', 'the resume re-delivered the stored r2')
  t.equal(r2.filter((o) => (o as { code?: string })?.code === 'ERR_ID_CONFLICT').length, 1, 'the resend with other inputs conflicts')
  t.ok(r2.every((o) => o === 'two' || (o as { code?: string })?.code === 'ERR_ID_CONFLICT'), 'r2: its own result or the conflict, nothing else')
  t.ok(d.messages.filter((m) => m.type === 'results' && m.id === 'r1').every((m) => (m as { outputs: unknown }).outputs === 'one'), 'r1: only its own result')
  t.same(d.results().get('r3'), 'three')
  t.equal(await server.billed('k'), 3, 'r1, r2, r3 billed once each')
  await d.close()
})

t.test('run --id-column: a repeated id fails its row with ERR_ID_CONFLICT (exit 3); a second run with reused ids conflicts on the server', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'is-ids-'))
  const server = await startServer(t, { tokens: ['k'] })
  const input = join(dir, 'in.csv')
  const rows = ['id,text', 'dup,I love it']
  for (let i = 0; i < 3000; i++) rows.push(`n${i},row ${i}`)
  rows.push('dup,This is terrible and awful')
  writeFileSync(input, rows.join('\n') + '\n')
  const out = join(dir, 'out.jsonl')
  const base = ['--model', ECHO, '--column', 'text', '--id-column', 'id', '--endpoint', server.url, '--token', 'k', '--no-progress']
  const p = cliProcess(['run', input, '-o', out, ...base])
  const { code } = await p.exited
  t.equal(code, 3, p.err())
  t.match(p.out(), /failed: 1 \(ERR_ID_CONFLICT ×1, e\.g\. .*was already used by an earlier row.*\) \(duplicate ids: 1\)/)
  const lines = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l))
  t.equal(lines.length, 3002, 'every row is in the output')
  t.same(lines[0].outputs, 'I love it')
  t.equal(lines[0].error, null)
  const last = lines[3001]
  t.equal(last.text, 'This is terrible and awful')
  t.match(last.error, /ERR_ID_CONFLICT|already used by an earlier row/)
  t.not(last.outputs, 'I love it', 'never the other row\'s result')
  t.equal(await server.billed('k'), 3001, 'the duplicate row was not run')

  // Second run, other file, ids 1 and 2 reused: the server knows them with other inputs.
  const a = join(dir, 'a.csv')
  const b = join(dir, 'b.csv')
  writeFileSync(a, 'id,text\n1,alpha\n2,beta\n')
  writeFileSync(b, 'id,text\n1,gamma\n2,beta\n')
  const r1 = cliProcess(['run', a, '-o', join(dir, 'a.jsonl'), ...base])
  t.equal((await r1.exited).code, 0, r1.err())
  const billed = await server.billed('k')
  // The first run's results must be acked (delivered) first: an unacked one would be handed to the
  // next stream of the token — the second run — as results belong to the token.
  const deadline = Date.now() + 5000
  while ((await server.counts('k', ECHO)).undelivered > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
  t.equal((await server.counts('k', ECHO)).undelivered, 0, 'the first run acked every result before it closed')
  const r2 = cliProcess(['run', b, '-o', join(dir, 'b.jsonl'), ...base])
  t.equal((await r2.exited).code, 3, r2.err() + r2.out())
  const bl = readFileSync(join(dir, 'b.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l))
  t.match(bl[0].error, /ERR_ID_CONFLICT|already used with other inputs/)
  t.not(bl[0].outputs, 'alpha', 'not the first file\'s result')
  t.same(bl[1].outputs, 'beta', 'same id and inputs: the stored result')
  t.equal(bl[1].error, null)
  t.equal(await server.billed('k'), billed, 'nothing billed by the second run')
})

t.test('HTTP with Idempotency-Key: a retry replays the stored result unbilled; another body is 422 ERR_ID_CONFLICT', async (t) => {
  const server = await startServer(t, { tokens: ['k1', 'k2'] })
  const post = (token: string, body: unknown, key?: string) =>
    fetch(`${server.url}/models/${ECHO}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...(key ? { 'idempotency-key': key } : {}) },
      body: JSON.stringify(body),
    })
  const first = await post('k1', { inputs: 'first', parameters: { x: 1 } }, 'req-1')
  t.equal(first.status, 200)
  t.same(await first.json(), 'first')
  t.equal(await server.billed('k1'), 1)
  const again = await post('k1', { parameters: { x: 1 }, inputs: 'first' }, 'req-1')
  t.equal(again.status, 200)
  t.equal(again.headers.get('idempotent-replayed'), 'true')
  t.same(await again.json(), 'first')
  t.equal(await server.billed('k1'), 1, 'a replay is not billed')
  const other = await post('k1', { inputs: 'second', parameters: { x: 1 } }, 'req-1')
  t.equal(other.status, 422)
  t.match(await other.json(), { code: 'ERR_ID_CONFLICT', error: /Idempotency-Key "req-1" was already used with other inputs/ })
  t.equal(await server.billed('k1'), 1, 'a conflict is not run')
  // use_cache does not bypass the key: the key decides.
  const cached = await post('k1', { inputs: 'second', parameters: { x: 1 }, options: { use_cache: true } }, 'req-1')
  t.equal(cached.status, 422)
  // Keys are per tenant; a bad key is a 400.
  const theirs = await post('k2', { inputs: 'theirs' }, 'req-1')
  t.same(await theirs.json(), 'theirs')
  t.equal(await server.billed('k2'), 1)
  const bad = await post('k1', { inputs: 'x' }, 'has space')
  t.equal(bad.status, 400)
  t.match(await bad.json(), { code: 'ERR_INVALID_PAYLOAD', error: /Idempotency-Key/ })
  // A failed keyed request replays its failure, with its status.
  const failing = await post('k1', { inputs: 'x', parameters: { delay_ms: 999_999 } }, 'req-fail')
  t.equal(failing.status, 400)
  const failingAgain = await post('k1', { inputs: 'x', parameters: { delay_ms: 999_999 } }, 'req-fail')
  t.equal(failingAgain.status, 400)
  t.equal(failingAgain.headers.get('idempotent-replayed'), 'true')
  t.match(await failingAgain.json(), { code: 'ERR_MODEL_INPUT' })
})

t.test('HTTP with Idempotency-Key: a retry while the first still runs is 409 with retry-after', async (t) => {
  const server = await startServer(t, { tokens: ['k1'] })
  const post = (body: unknown) =>
    fetch(`${server.url}/models/${ECHO}`, { method: 'POST', headers: { authorization: 'Bearer k1', 'idempotency-key': 'slow' }, body: JSON.stringify(body) })
  const slow = post({ inputs: 'slow', parameters: { delay_ms: 1500 } })
  await new Promise((r) => setTimeout(r, 300))
  const during = await post({ inputs: 'slow', parameters: { delay_ms: 1500 } })
  t.equal(during.status, 409)
  t.equal(during.headers.get('retry-after'), '1')
  t.match(await during.json(), { code: 'ERR_ID_CONFLICT', error: /still running/ })
  t.same(await (await slow).json(), 'slow')
  const after = await post({ inputs: 'slow', parameters: { delay_ms: 1500 } })
  t.equal(after.status, 200)
  t.same(await after.json(), 'slow')
  t.equal(await server.billed('k1'), 1)
})

// UpstreamPipeline end to end: a second server of ours serves `remote/...` ids by forwarding to a
// first one (real servers on port 0); small real HTTP servers stand in for flaky upstreams.
import http from 'node:http'
import { once } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { InvalidOptionError, ModelError, ModelInputError, ShuttingDownError } from '../lib/errors.js'
import { infer } from '../lib/client/infer.js'
import type { Pipeline } from '../lib/models/pipeline.js'
import { createModelRegistry } from '../lib/models/registry.js'
import { parseRetryAfter, parseUpstreamSpec, UPSTREAM_DEFAULTS, UpstreamPipeline, type UpstreamPipelineOptions } from '../lib/models/upstream-pipeline.js'
import { createServer, type InferenceServer } from '../lib/server/server.js'
import { MemoryStateBackend } from '../lib/server/state/memory-backend.js'
import { SqliteStateBackend } from '../lib/server/state/sqlite-backend.js'
import type { StateBackend } from '../lib/server/state/state-backend.js'
import { listen, startServer } from './helpers/server.js'
import { connect } from './helpers/ws-client.js'

/** A downstream server whose registry serves `models`; the registry is closed in teardown. */
async function downstream(t: Test, models: Record<string, Pipeline>, options: Parameters<typeof startServer>[1] = {}): Promise<InferenceServer> {
  const registry = createModelRegistry({ models })
  const server = await startServer(t, { ...options, registry })
  // A registry passed in is not closed by the server: close the server first, then the registry.
  t.teardown(async () => {
    await server.close()
    await registry.close()
  })
  return server
}

function post(url: string, body: unknown, token?: string): Promise<Response> {
  const headers: Record<string, string> = { 'content-type': 'application/json' }
  if (token !== undefined) headers.authorization = `Bearer ${token}`
  return fetch(url, { method: 'POST', headers, body: JSON.stringify(body) })
}

interface Seen {
  body: { inputs: unknown; parameters?: Record<string, unknown>; options?: Record<string, unknown> }
  headers: http.IncomingHttpHeaders
  at: number
}

/** A scripted upstream: `handle` answers each request; every request body is recorded in `seen`. */
async function scripted(t: Test, handle: (req: Seen, res: http.ServerResponse, seen: Seen[]) => void) {
  const seen: Seen[] = []
  const server = http.createServer((req, res) => {
    let data = ''
    req.setEncoding('utf8')
    req.on('data', (c: string) => (data += c))
    req.on('end', () => {
      const s: Seen = { body: JSON.parse(data) as Seen['body'], headers: req.headers, at: performance.now() }
      seen.push(s)
      handle(s, res, seen)
    })
  })
  const base = await listen(t, server)
  return { url: `${base}/models/flaky`, seen, countOf: (input: unknown) => seen.filter((s) => s.body.inputs === input).length }
}

function reply(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers })
  res.end(JSON.stringify(body))
}

/** A real forwarding proxy in front of `target` that counts requests in flight through it. */
async function countingProxy(t: Test, target: string) {
  const stats = { inFlight: 0, max: 0, total: 0 }
  const server = http.createServer((req, res) => {
    stats.total++
    stats.max = Math.max(stats.max, ++stats.inFlight)
    let done = false
    const finish = (): void => {
      if (!done) stats.inFlight--
      done = true
    }
    // 'finish': the answer is handed to the socket, before the client can read it and send another.
    res.on('finish', finish)
    res.on('close', finish)
    const up = http.request(`${target}${req.url}`, { method: req.method, headers: req.headers }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, upRes.headers)
      upRes.pipe(res)
    })
    up.on('error', () => res.destroy())
    req.pipe(up)
  })
  return { url: await listen(t, server), stats }
}

function pipelineOf(t: Test, options: Partial<UpstreamPipelineOptions> & { url: string }): UpstreamPipeline {
  const p = new UpstreamPipeline({ id: 'remote/flaky', retryBaseMs: 1, maxRetryDelayMs: 5, ...options })
  t.teardown(() => p.close())
  return p
}

t.test('options: defaults, and each bad option is an InvalidOptionError naming it', async (t) => {
  const p = new UpstreamPipeline({ id: 'remote/x', url: 'http://127.0.0.1:1/models/x' })
  t.equal(p.id, 'remote/x')
  t.equal(p.task, 'unknown')
  t.equal(p.url, 'http://127.0.0.1:1/models/x')
  t.same(UPSTREAM_DEFAULTS, { task: 'unknown', concurrency: 8, maxRetries: 5, retryBaseMs: 200, maxRetryDelayMs: 10_000, maxWaitSeconds: 60, timeoutMs: 120_000, maxBatchBytes: 1024 * 1024 })
  t.equal(new UpstreamPipeline({ id: 'a', url: 'https://x.test', task: 'text-classification' }).task, 'text-classification')
  t.equal(new UpstreamPipeline({ id: 'a', url: 'https://x.test', task: undefined, concurrency: undefined }).task, 'unknown', 'undefined takes the default')
  const ok = { id: 'remote/x', url: 'http://127.0.0.1:1/' }
  const bad: Array<[Record<string, unknown>, RegExp]> = [
    [{ id: '' }, /^Option "id" must be a non-empty model id without spaces, got ""$/],
    [{ id: 'a b' }, /^Option "id" must be/],
    [{ url: undefined }, /^Option "url" must be an http or https URL, got undefined$/],
    [{ url: 'not a url' }, /^Option "url" must be an http or https URL, got "not a url"$/],
    [{ url: 'ftp://host/x' }, /^Option "url" must be an http or https URL, got "ftp:\/\/host\/x" \(ftp:\)$/],
    [{ url: 'http://user:pw@host/x' }, /^Option "url" must not contain credentials; pass the token as the "token" option$/],
    [{ task: '' }, /^Option "task" must be a non-empty string/],
    [{ concurrency: 0 }, /^Option "concurrency" must be an integer between 1 and 1000000, got 0$/],
    [{ concurrency: 1.5 }, /^Option "concurrency" must be an integer/],
    [{ maxRetries: -1 }, /^Option "maxRetries" must be an integer between 0 and 1000, got -1$/],
    [{ retryBaseMs: '10' }, /^Option "retryBaseMs" must be an integer .*, got "10"$/],
    [{ maxRetryDelayMs: 2 ** 31 }, /^Option "maxRetryDelayMs" must be an integer/],
    [{ timeoutMs: 0 }, /^Option "timeoutMs" must be an integer between 1 and/],
    [{ maxWaitSeconds: -1 }, /^Option "maxWaitSeconds" must be a number of seconds between 0 and 86400, got -1$/],
    [{ maxWaitSeconds: Number.NaN }, /^Option "maxWaitSeconds" must be/],
    [{ token: '' }, /^Option "token" must be a non-empty string/],
    [{ token: 'a\nb' }, /^Option "token" must be/],
    [{ headers: [] }, /^Option "headers" must be an object/],
    [{ headers: { 'x-a': 1 } }, /^Option "headers" must have string values; "x-a" is 1$/],
    [{ headers: { 'bad header': 'v' } }, /^Option "headers" is not valid: /],
  ]
  for (const [override, message] of bad) {
    t.throws(() => new UpstreamPipeline({ ...ok, ...override } as unknown as UpstreamPipelineOptions), { name: 'InvalidOptionError', code: 'ERR_INVALID_OPTION', message }, JSON.stringify(override))
  }
  t.throws(() => new UpstreamPipeline(null as unknown as UpstreamPipelineOptions), InvalidOptionError)
})

t.test('parseUpstreamSpec: ID=URL, split at the first "="', async (t) => {
  t.same(parseUpstreamSpec('remote/sentiment=http://127.0.0.1:8080/models/builtin/sentiment'), {
    id: 'remote/sentiment',
    url: 'http://127.0.0.1:8080/models/builtin/sentiment',
  })
  t.same(parseUpstreamSpec('m=https://x.endpoints.huggingface.cloud/?a=b'), { id: 'm', url: 'https://x.endpoints.huggingface.cloud/?a=b' })
  const bad: Array<[string, RegExp]> = [
    ['remote/sentiment', /^Upstream must be "ID=URL" \(e\.g\. .*\), got "remote\/sentiment": no "="$/],
    ['=http://x', /must start with a model id without spaces before "="/],
    ['a b=http://x', /must start with a model id/],
    ['m=', /^Upstream "m=": the URL after "=" must be an http or https URL, got ""$/],
    ['m=localhost:8080', /the URL after "=" must be an http or https URL, got "localhost:8080" \(localhost:\)/],
    ['m=ws://x', /must be an http or https URL/],
  ]
  for (const [spec, message] of bad) t.throws(() => parseUpstreamSpec(spec), { code: 'ERR_INVALID_OPTION', message }, spec)
})

t.test('parseRetryAfter: seconds or an HTTP date', async (t) => {
  const now = Date.parse('Wed, 21 Oct 2015 07:28:00 GMT')
  t.equal(parseRetryAfter('3', now), 3000)
  t.equal(parseRetryAfter(' 0.5 ', now), 500)
  t.equal(parseRetryAfter('Wed, 21 Oct 2015 07:28:07 GMT', now), 7000)
  t.equal(parseRetryAfter('Wed, 21 Oct 2015 07:27:00 GMT', now), 0, 'a past date: at once')
  for (const v of [null, undefined, '', '-1', 'soon', '1e3']) t.equal(parseRetryAfter(v, now), undefined, String(v))
})

t.test('end to end: a second server serves remote/sentiment from the first, stream and HTTP', async (t) => {
  // The upstream requires its token, so the pipeline's Authorization is checked too; its HTTP cache
  // is off so every forwarded item is billed there. One request per item here (batched requests:
  // test/upstream-batching.ts).
  const upstream = await startServer(t, { tokens: ['up-token', 'direct'], httpCacheSize: 0 })
  const upstreamUrl = `${upstream.url}/models/builtin/sentiment`
  const remote = new UpstreamPipeline({ id: 'remote/sentiment', url: upstreamUrl, token: 'up-token', task: 'text-classification', batch: false })
  const server = await downstream(t, { 'remote/sentiment': remote })

  const texts = Array.from({ length: 12 }, (_, i) => (i % 2 === 0 ? `I love this, it is wonderful ${i}` : `This is terrible and awful ${i}`))
  const outputs: unknown[] = []
  for await (const r of infer(texts, { url: server.url, model: 'remote/sentiment', token: 'client' })) {
    t.equal(r.error, undefined)
    outputs.push(r.outputs)
  }
  t.equal(await upstream.billed('up-token'), texts.length, 'the upstream ran each item once')
  t.equal(await server.billed('client'), texts.length)

  const expected: unknown[] = []
  for (const text of texts) expected.push(await (await post(upstreamUrl, { inputs: text }, 'direct')).json())
  t.same(outputs, expected, 'stream outputs equal the upstream\'s own answers, in order')
  t.match(expected[0], [[{ label: 'POSITIVE' }, { label: 'NEGATIVE' }]])
  t.match(expected[1], [[{ label: 'NEGATIVE' }, { label: 'POSITIVE' }]])

  const res = await post(`${server.url}/models/remote/sentiment`, { inputs: 'A fine and lovely day' })
  t.equal(res.status, 200)
  const direct = await post(upstreamUrl, { inputs: 'A fine and lovely day' }, 'direct')
  t.same(await res.json(), await direct.json(), 'HTTP outputs equal the upstream\'s')
  t.equal(await upstream.billed('up-token'), texts.length + 1)

  // parameters travel: top_k 1 keeps one label.
  const top1 = await post(`${server.url}/models/remote/sentiment`, { inputs: 'lovely', parameters: { top_k: 1 } })
  t.match(await top1.json(), [[{ label: 'POSITIVE' }]])
  t.equal(await upstream.billed('up-token'), texts.length + 2)

  // The upstream's 400 is the item's error (an input error here too: 400), and it is not retried.
  const bad = await post(`${server.url}/models/remote/sentiment`, { inputs: 5 })
  t.equal(bad.status, 400)
  const body = (await bad.json()) as { error: string; code: string }
  t.equal(body.code, 'ERR_MODEL_INPUT')
  t.match(body.error, /^Upstream http:\/\/127\.0\.0\.1:\d+\/models\/builtin\/sentiment answered 400: .*expects inputs to be a string/)
  t.notMatch(body.error, /attempts/)
  t.equal(await upstream.billed('up-token'), texts.length + 3, 'one request for the bad item: no retry')
})

t.test('concurrency: requests in flight upstream never exceed the bound, across batches', async (t) => {
  const upstream = await startServer(t)
  const proxy = await countingProxy(t, upstream.url)
  const remote = new UpstreamPipeline({ id: 'remote/echo', url: `${proxy.url}/models/builtin/echo`, concurrency: 3 })
  // Four workers with small batches: several batches run at once and share the one bound.
  const server = await downstream(t, { 'remote/echo': remote }, { workers: 4, maxBatch: 4 })
  const inputs = Array.from({ length: 30 }, (_, i) => ({ n: i, text: `item ${i}` }))
  const outputs: unknown[] = []
  for await (const r of infer(inputs.map((inputs) => ({ inputs })), { url: server.url, model: 'remote/echo', token: 'c', parameters: { delay_ms: 25 } })) {
    outputs.push(r.outputs)
  }
  t.same(outputs, inputs, 'every item echoed, in order')
  t.equal(proxy.stats.total, inputs.length, 'one request per item')
  t.equal(await upstream.billed('anonymous'), inputs.length)
  t.equal(proxy.stats.max, 3, `at most 3 in flight, and the bound is reached (max ${proxy.stats.max})`)
  t.equal(proxy.stats.inFlight, 0)
  t.equal(remote.inFlight, 0)
})

t.test('503 with estimated_time: waits that long, then retries with wait_for_model', async (t) => {
  const up = await scripted(t, (req, res, seen) => {
    if (seen.length === 1) return reply(res, 503, { error: 'Model flaky is currently loading', estimated_time: 0.3 })
    reply(res, 200, [{ got: req.body.inputs }])
  })
  const p = pipelineOf(t, { url: up.url, token: 'tok', headers: { 'x-extra': 'yes' } })
  const started = performance.now()
  t.same(await p.run(['hello'], {}), [[{ got: 'hello' }]])
  t.equal(up.seen.length, 2)
  const waited = up.seen[1].at - up.seen[0].at
  t.ok(waited >= 280, `waited estimated_time (${waited.toFixed(0)} ms), not the 1 ms backoff`)
  t.ok(performance.now() - started < 2000)
  t.same(up.seen[0].body, { inputs: 'hello' }, 'empty parameters are omitted; no options on the first try')
  t.same(up.seen[1].body, { inputs: 'hello', options: { wait_for_model: true } })
  t.equal(up.seen[0].headers.authorization, 'Bearer tok')
  t.equal(up.seen[0].headers['x-extra'], 'yes')
  t.equal(up.seen[0].headers['content-type'], 'application/json')

  // estimated_time over maxWaitSeconds is waited for maxWaitSeconds only.
  const long = await scripted(t, (req, res, seen) => {
    if (seen.length === 1) return reply(res, 503, { error: 'loading', estimated_time: 500 })
    reply(res, 200, { ok: req.body.parameters })
  })
  const capped = pipelineOf(t, { url: long.url, maxWaitSeconds: 0.2 })
  const t0 = performance.now()
  t.same(await capped.run(['x'], { top_k: 2 }), [{ ok: { top_k: 2 } }], 'parameters are sent')
  const took = performance.now() - t0
  t.ok(took >= 180 && took < 3000, `capped at maxWaitSeconds (${took.toFixed(0)} ms)`)
})

t.test('429 honours Retry-After; without it, and on 502/504/plain 503/network errors, backs off', async (t) => {
  const up = await scripted(t, (req, res, seen) => {
    if (seen.length === 1) return reply(res, 429, { error: 'Rate limit reached' }, { 'retry-after': '1' })
    reply(res, 200, req.body.inputs)
  })
  const p = pipelineOf(t, { url: up.url })
  t.same(await p.run(['a'], {}), ['a'])
  const waited = up.seen[1].at - up.seen[0].at
  t.ok(waited >= 950, `waited Retry-After: 1 (${waited.toFixed(0)} ms)`)
  t.same(up.seen[1].body, { inputs: 'a' }, 'no wait_for_model after a 429')

  // Every retryable kind once, then success: 5 attempts, all quick (backoff of 1-5 ms).
  const kinds = await scripted(t, (req, res, seen) => {
    switch (seen.length) {
      case 1: return reply(res, 502, { error: 'bad gateway' })
      case 2: return reply(res, 504, { error: 'gateway timeout' })
      case 3: return reply(res, 503, { error: 'overloaded' })
      case 4: return reply(res, 429, { error: 'slow down' })
      case 5: return res.socket?.destroy()
      default: return reply(res, 200, { echo: req.body.inputs })
    }
  })
  const q = pipelineOf(t, { url: kinds.url, maxRetries: 5 })
  const t0 = performance.now()
  t.same(await q.run(['b'], {}), [{ echo: 'b' }])
  t.equal(kinds.seen.length, 6)
  t.ok(performance.now() - t0 < 1000, 'backoff, not a long wait')

  // A request that times out is retried too.
  const slow = await scripted(t, (req, res, seen) => {
    if (seen.length === 1) return // never answered
    reply(res, 200, req.body.inputs)
  })
  const r = pipelineOf(t, { url: slow.url, timeoutMs: 100 })
  t.same(await r.run(['c'], {}), ['c'])
  t.equal(slow.seen.length, 2)
})

t.test('a final failure is that item\'s error; the other items of the batch succeed', async (t) => {
  const up = await scripted(t, (req, res) => {
    if (req.body.inputs === 'bad') return reply(res, 503, { error: 'Service overloaded' })
    reply(res, 200, { echo: req.body.inputs })
  })
  const p = pipelineOf(t, { url: up.url, maxRetries: 2 })
  const outputs = await p.run(['a', 'bad', 'c'], {})
  t.equal(outputs.length, 3)
  t.same(outputs[0], { echo: 'a' })
  t.same(outputs[2], { echo: 'c' })
  t.type(outputs[1], ModelError)
  t.match(outputs[1], {
    name: 'ModelError',
    code: 'ERR_MODEL',
    message: `Upstream ${up.url} answered 503: Service overloaded (after 3 attempts)`,
  })
  t.equal(up.countOf('bad'), 3, 'first try + maxRetries')

  // The same through a server's stream: one batch, one {"error"} result, the rest succeed.
  const batches: number[] = []
  const remote = pipelineOf(t, { id: 'remote/flaky', url: up.url, maxRetries: 1 })
  const spy: Pipeline = {
    id: 'remote/flaky',
    task: remote.task,
    run(inputs, parameters, signal) {
      batches.push(inputs.length)
      return remote.run(inputs, parameters, signal)
    },
  }
  const server = await downstream(t, { 'remote/flaky': spy }, { workers: 1 })
  const c = await connect(server.streamUrl('remote/flaky'), { v1: true })
  c.send([
    { id: '1', inputs: 'x' },
    { id: '2', inputs: 'bad' },
    { id: '3', inputs: 'y' },
  ])
  await c.waitFor(() => c.results().size === 3, 'three results')
  t.same(batches, [3], 'the three items were one batch')
  const results = c.results()
  t.same(results.get('1'), { echo: 'x' })
  t.same(results.get('3'), { echo: 'y' })
  t.same(results.get('2'), { error: `Upstream ${up.url} answered 503: Service overloaded (after 2 attempts)`, code: 'ERR_MODEL' })
  t.equal(await server.billed('test-token'), 3)
  await c.close()
})

t.test('4xx other than 429 is not retried; an upstream error list is joined', async (t) => {
  const up = await scripted(t, (req, res) => {
    switch (req.body.inputs) {
      case 'invalid': return reply(res, 400, { error: ['inputs must be a string', 'inputs is too long'] })
      case 'unprocessable': return reply(res, 422, { error: 'Input validation error: `inputs` must have less than 1024 tokens', error_type: 'validation' })
      case 'denied': return reply(res, 401, { error: 'Invalid credentials in Authorization header' })
      case 'missing': res.writeHead(404, { 'content-type': 'text/plain' }); return res.end('Not Found')
      case 'crash': return reply(res, 500, { error: 'CUDA out of memory' })
      default: res.writeHead(200); return res.end('<html>not json</html>')
    }
  })
  const p = pipelineOf(t, { url: up.url })
  const outputs = await p.run(['invalid', 'unprocessable', 'denied', 'missing', 'crash', 'html'], {})
  t.type(outputs[0], ModelInputError)
  t.match(outputs[0], { code: 'ERR_MODEL_INPUT', message: `Upstream ${up.url} answered 400: inputs must be a string; inputs is too long` })
  t.match(outputs[1], { code: 'ERR_MODEL_INPUT', message: /answered 422: Input validation error/ })
  t.match(outputs[2], { code: 'ERR_MODEL', message: /answered 401: Invalid credentials in Authorization header$/ })
  t.match(outputs[3], { code: 'ERR_MODEL', message: /answered 404: Not Found$/ })
  t.match(outputs[4], { code: 'ERR_MODEL', message: /answered 500: CUDA out of memory$/ })
  t.match(outputs[5], { code: 'ERR_MODEL', message: /answered 200 with a body that is not JSON: <html>not json<\/html>$/ })
  t.equal(up.seen.length, 6, 'one request each: none retried')
})

t.test('network failures past maxRetries name the cause', async (t) => {
  // A port that was just closed: connection refused.
  const s = http.createServer()
  s.listen(0, '127.0.0.1')
  await once(s, 'listening')
  const port = (s.address() as AddressInfo).port
  await new Promise<void>((r) => s.close(() => r()))
  const p = pipelineOf(t, { url: `http://127.0.0.1:${port}/x?secret=1`, maxRetries: 1 })
  const [out] = await p.run(['a'], {})
  t.match(out, { code: 'ERR_MODEL', message: new RegExp(`^Upstream http://127\\.0\\.0\\.1:${port}/x could not be reached: fetch failed: .*ECONNREFUSED.* \\(after 2 attempts\\)$`) })
  t.notMatch((out as Error).message, /secret/, 'the query string is not shown')
})

t.test('abort stops a retry wait at once; close() stops pending retries', async (t) => {
  const up = await scripted(t, (req, res) => {
    if (req.body.inputs === 'hang') return // answered never
    reply(res, 503, { error: 'loading', estimated_time: 30 })
  })
  const p = pipelineOf(t, { url: up.url })
  const ac = new AbortController()
  const started = performance.now()
  const run = p.run(['a', 'b'], {}, ac.signal)
  while (up.seen.length < 2) await new Promise((r) => setTimeout(r, 5))
  const reason = new Error('stop now')
  ac.abort(reason)
  await t.rejects(run, reason, 'rejects with the signal\'s reason')
  t.ok(performance.now() - started < 2000, 'did not wait the 30 s estimated_time')
  t.equal(up.seen.length, 2, 'no retry after the abort')
  await t.rejects(p.run(['a'], {}, ac.signal), reason, 'an aborted signal rejects at once')

  // concurrency 1: one batch holds the slot with a hanging request; another batch queued behind it
  // still rejects at once on abort, and close() ends the first.
  const q = pipelineOf(t, { url: up.url, concurrency: 1 })
  const holding = q.run(['hang'], {})
  while (up.countOf('hang') < 1) await new Promise((r) => setTimeout(r, 5))
  const queuedAbort = new AbortController()
  const queued = q.run(['never-sent'], {}, queuedAbort.signal)
  queuedAbort.abort()
  await t.rejects(queued, { name: 'AbortError' })
  t.equal(q.inFlight, 1)
  const t0 = performance.now()
  await q.close()
  await t.rejects(holding, ShuttingDownError)
  await t.rejects(holding, { code: 'ERR_SHUTTING_DOWN', message: 'Upstream pipeline remote/flaky is closed' })
  t.ok(performance.now() - t0 < 1000)
  t.equal(q.inFlight, 0)
  t.equal(up.countOf('never-sent'), 0, 'the aborted batch never reached the upstream')
  await t.rejects(q.run(['x'], {}), { code: 'ERR_SHUTTING_DOWN' }, 'runs after close() reject')
  t.same(await q.run([], {}).catch((e: Error) => e.name), 'ShuttingDownError')
})

t.test('a server shutting down hands back a batch waiting on an upstream retry', async (t) => {
  const up = await scripted(t, (_req, res) => reply(res, 503, { error: 'loading', estimated_time: 30 }))
  const remote = pipelineOf(t, { url: up.url })
  const registry = createModelRegistry({ models: { 'remote/flaky': remote } })
  t.teardown(() => registry.close())
  const server = createServer({ registry, shutdownTimeoutMs: 50 })
  await server.listen(0)
  const res = post(`${server.url}/models/remote/flaky`, { inputs: 'a' })
  while (up.seen.length < 1) await new Promise((r) => setTimeout(r, 5))
  const t0 = performance.now()
  await server.close()
  t.ok(performance.now() - t0 < 2000, `closed without waiting for the retry (${(performance.now() - t0).toFixed(0)} ms)`)
  t.equal(await server.billed('anonymous'), 0, 'handed back, not billed')
  const answer = await res
  t.equal(answer.status, 503)
  t.match(await answer.json(), { code: 'ERR_SHUTTING_DOWN' })
  t.equal(up.seen.length, 1)
})

t.test('onItem reports each item once, as soon as it is final; an aborted item is not reported', async (t) => {
  let release = (): void => {}
  const held = new Promise<void>((r) => (release = r))
  const up = await scripted(t, (req, res) => {
    const input = req.body.inputs as string
    if (input === 'bad') return reply(res, 400, { error: 'no' })
    if (input.startsWith('held')) return void held.then(() => reply(res, 200, { echo: input }))
    reply(res, 200, { echo: input })
  })
  const p = pipelineOf(t, { url: up.url })
  const reported: Array<[number, unknown]> = []
  const onItem = (i: number, out: unknown): void => void reported.push([i, out])
  const run = p.run(['a', 'held-1', 'bad', 'held-2'], {}, undefined, { onItem })
  while (up.seen.length < 4 || p.inFlight > 2) await new Promise((r) => setTimeout(r, 5))
  t.same(reported.map(([i]) => i).sort(), [0, 2], 'the answered items, before the batch is done')
  t.same(reported.find(([i]) => i === 0)?.[1], { echo: 'a' })
  t.match(reported.find(([i]) => i === 2)?.[1], { code: 'ERR_MODEL_INPUT', message: /answered 400: no$/ })
  release()
  const outputs = await run
  t.same(reported.map(([i]) => i).sort(), [0, 1, 2, 3], 'every item once')
  for (const [i, out] of reported) t.equal(out, outputs[i], `item ${i}: the very entry run returns`)

  // Aborted: the held item is never reported.
  const stuck = await scripted(t, (req, res) => {
    if (req.body.inputs === 'hang') return
    reply(res, 200, req.body.inputs)
  })
  const q = pipelineOf(t, { url: stuck.url })
  const ac = new AbortController()
  const got: number[] = []
  const aborted = q.run(['x', 'hang'], {}, ac.signal, { onItem: (i) => void got.push(i) })
  while (stuck.seen.length < 2 || q.inFlight > 1) await new Promise((r) => setTimeout(r, 5))
  ac.abort(new Error('stop'))
  await t.rejects(aborted, { message: 'stop' })
  await new Promise((r) => setTimeout(r, 20))
  t.same(got, [0], 'only the answered item')
})

/**
 * A server shutting down while an upstream holds some items of a batch and has answered the others:
 * the answered ones are finished there (billed once, their results routed: a stream's written, an
 * HTTP request answered 200), only the held ones are handed back, and a second server on the same
 * state runs those alone. `next` gives the second server's state (the same object, or the file
 * reopened).
 */
async function partialShutdown(t: Test, first: StateBackend, next: (state: StateBackend) => Promise<StateBackend>): Promise<void> {
  let holding = true
  const up = await scripted(t, (req, res) => {
    const input = req.body.inputs as string
    // Held: never answered (the downstream gives up at shutdown and the request is cut).
    if (holding && input.startsWith('held')) return
    reply(res, 200, { echo: input })
  })
  const remote = pipelineOf(t, { url: up.url })
  const batches: unknown[][] = []
  const spy: Pipeline = {
    id: 'remote/flaky',
    task: remote.task,
    run(inputs, parameters, signal, options) {
      batches.push(inputs)
      return remote.run(inputs, parameters, signal, options)
    },
  }
  const registry = createModelRegistry({ models: { 'remote/flaky': spy } })
  t.teardown(() => registry.close())
  // One worker and a batch of exactly five: the stream's four items and the HTTP request run as one
  // batch. One tenant secret: the second server must know the first one's tenants.
  const options = { registry, workers: 1, maxBatch: 5, maxWaitMs: 5000, shutdownTimeoutMs: 50, tenantSecret: Buffer.alloc(32, 7) }
  const server = createServer({ ...options, state: first })
  await server.listen(0)
  t.teardown(() => server.close())

  const c = await connect(server.streamUrl('remote/flaky'), { v1: true })
  c.send([
    { id: 'q1', inputs: 'quick-1' },
    { id: 'h1', inputs: 'held-1' },
    { id: 'q2', inputs: 'quick-2' },
    { id: 'h2', inputs: 'held-2' },
  ])
  const waiting = post(`${server.url}/models/remote/flaky`, { inputs: 'quick-http' }, 'test-token')
  // The three quick items answered, the two held ones waiting upstream.
  await c.waitFor(() => up.seen.length === 5 && remote.inFlight === 2, 'the upstream to answer the quick items and hold the others')
  t.same(batches.map((b) => b.length), [5], 'one batch of five')
  t.same(await server.billed('test-token'), 0, 'nothing billed while the batch runs')

  await server.close()
  t.equal(await server.billed('test-token'), 3, 'the answered items are billed at shutdown')
  t.equal((await first.ledger()).reduce((n, e) => n + e.items, 0), 3, 'the ledger counts them once')
  t.match(await first.stats(), { queued: 2, processing: 0 }, 'the held items are queued again')
  const answer = await waiting
  t.equal(answer.status, 200, 'the waiting HTTP request got its result, not 503')
  t.same(await answer.json(), { echo: 'quick-http' }, 'its answer is the upstream\'s')
  await c.closed
  t.same(
    [...c.results()].sort(),
    [
      ['q1', { echo: 'quick-1' }],
      ['q2', { echo: 'quick-2' }],
    ],
    'the stream got the answered items before it closed',
  )

  holding = false
  const state = await next(first)
  const again = createServer({ ...options, maxWaitMs: 10, state })
  await again.listen(0)
  t.teardown(() => again.close())
  // The held items run on the second server (nobody connected: results belong to the token).
  const deadline = Date.now() + 10_000
  for (let st = await state.stats(); st.queued + st.processing > 0; st = await state.stats()) {
    if (Date.now() > deadline) throw new Error(`the held items did not run: ${JSON.stringify(st)}`)
    await new Promise((r) => setTimeout(r, 5))
  }
  // A stream opened now gets every result the client has not acknowledged. (One opened before
  // would not be told of these: they are routed to the first server's node id.)
  const d = await connect(again.streamUrl('remote/flaky'), { v1: true })
  await d.waitFor(() => d.results().size === 4, 'every stream result on the second server')
  t.same(
    [...d.results()].sort(),
    [
      ['h1', { echo: 'held-1' }],
      ['h2', { echo: 'held-2' }],
      ['q1', { echo: 'quick-1' }],
      ['q2', { echo: 'quick-2' }],
    ],
    'the unacknowledged results again, and the held ones run',
  )
  t.same(batches.slice(1), [['held-1', 'held-2']], 'only the held items ran again')
  t.equal(await again.billed('test-token'), 5, 'all five billed, each once')
  t.same(
    ['quick-1', 'quick-2', 'quick-http', 'held-1', 'held-2'].map((input) => up.countOf(input)),
    [1, 1, 1, 2, 2],
    'the upstream got each answered item once (a held one again, after its cut request)',
  )
  t.match(await state.stats(), { queued: 0, processing: 0 }, 'nothing left')
  await d.close()
  await again.close()
}

t.test('shutdown mid-batch: items the upstream answered are finished and billed once, the rest run on the next server (one memory state)', async (t) => {
  const state = new MemoryStateBackend({ maxRetained: 1000, retentionMs: 60_000 })
  t.teardown(() => state.close())
  await partialShutdown(t, state, async (s) => s)
})

t.test('shutdown mid-batch: the same across a restart on a SQLite state file', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'is-upstream-partial-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const path = join(dir, 'state.sqlite')
  const limits = { maxRetained: 1000, retentionMs: 60_000 }
  const first = new SqliteStateBackend({ path, ...limits })
  let last: StateBackend = first
  t.teardown(() => last.close())
  await partialShutdown(t, first, async (s) => {
    await s.close()
    last = new SqliteStateBackend({ path, ...limits })
    return last
  })
})

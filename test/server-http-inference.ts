import t, { type Test } from 'tap'
import { InvalidOptionError } from '../lib/errors.js'
import type { Pipeline } from '../lib/models/pipeline.js'
import { createModelRegistry } from '../lib/models/registry.js'
import { countCharacters, httpStatusOf } from '../lib/server/http-inference.js'
import { resolveServerOptions } from '../lib/server/options.js'
import { MemoryStateBackend } from '../lib/server/state/memory-backend.js'
import { httpOwnerKey, ownerKey } from '../lib/server/store/result-store.js'
import type { StreamHub } from '../lib/server/stream-hub.js'
import type { InferenceServer } from '../lib/server/server.js'
import { startServer } from './helpers/server.js'
import { connect } from './helpers/ws-client.js'

type Recorder = Pipeline & { batches: unknown[][] }

/** A model that records its batches, answers `{echo: input}` after `delayMs` (longer for input 'block'). */
function recorder(delayMs: number, id = 'test/recorder'): Recorder {
  const p: Recorder = {
    id,
    task: 'echo',
    batches: [],
    async run(inputs: unknown[]) {
      p.batches.push(inputs)
      await new Promise((r) => setTimeout(r, inputs.includes('block') ? 300 : delayMs))
      return inputs.map((i) => ({ echo: i }))
    },
  }
  return p
}

async function withRegistry(t: Test, models: Pipeline[]) {
  const registry = createModelRegistry({ models })
  t.teardown(() => registry.close())
  return registry
}

function post(server: InferenceServer, model: string, body: unknown, init: RequestInit = {}): Promise<Response> {
  return fetch(`${server.url}/models/${model}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(init.headers as Record<string, string> | undefined) },
    body: typeof body === 'string' ? body : JSON.stringify(body),
    signal: init.signal,
  })
}

function hubOf(server: InferenceServer): StreamHub {
  return (server as unknown as { hub: StreamHub }).hub
}

t.test('builtin/sentiment: one string gives [[{label, score}, ...]], exactly a stream result\'s outputs', async (t) => {
  const server = await startServer(t)
  const res = await post(server, 'builtin/sentiment', { inputs: 'I love this, it is wonderful' })
  t.equal(res.status, 200)
  t.equal(res.headers.get('content-type'), 'application/json')
  const outputs = (await res.json()) as Array<Array<{ label: string; score: number }>>
  t.equal(outputs.length, 1)
  t.same(outputs[0].map((x) => x.label), ['POSITIVE', 'NEGATIVE'])
  t.ok(outputs[0][0].score > 0.5 && outputs[0][0].score <= 1)
  const c = await connect(server.streamUrl('builtin/sentiment'))
  c.send({ id: 'same', inputs: 'I love this, it is wonderful' })
  await c.waitFor(() => c.results().has('same'), 'stream result')
  t.same(c.results().get('same'), outputs, 'the HTTP body is what the stream result carries')
  await c.close()
})

t.test('a list input and builtin/echo', async (t) => {
  const server = await startServer(t)
  const list = await post(server, 'builtin/sentiment', { inputs: ['great', 'terrible', ''] })
  t.equal(list.status, 200)
  const outputs = (await list.json()) as Array<Array<{ label: string }>>
  t.equal(outputs.length, 3, 'one list of labels per string')
  t.equal(outputs[0][0].label, 'POSITIVE')
  t.equal(outputs[1][0].label, 'NEGATIVE')
  const inputs = { question: 'why?', context: ['a', 1, null, { k: true }] }
  const echo = await post(server, 'builtin/echo', { inputs })
  t.equal(echo.status, 200)
  t.same(await echo.json(), inputs)
  const scalar = await post(server, 'builtin/echo', { inputs: 0, parameters: { delay_ms: 1 }, id: 'ignored' })
  t.same(await scalar.json(), 0)
})

t.test('a list of inputs answers a list in order, entry k what inputs[k] alone gets; one request, one item, one limit', async (t) => {
  const server = await startServer(t, { httpCacheSize: 0, maxInputsBytes: 400 })
  const texts = ['I love it', 'awful, terrible', 'a table', 'wonderful and great', '']
  const list = await post(server, 'builtin/sentiment', { inputs: texts, parameters: { top_k: 1 } })
  t.equal(list.status, 200)
  const entries = (await list.json()) as unknown[]
  t.equal(entries.length, texts.length)
  for (let k = 0; k < texts.length; k++) {
    const alone = (await (await post(server, 'builtin/sentiment', { inputs: texts[k], parameters: { top_k: 1 } })).json()) as unknown[]
    // One string answers a list of one list: the entry of a list is that list.
    t.same([entries[k]], alone, `entry ${k}`)
  }
  t.equal(await server.billed('anonymous'), 1 + texts.length, 'the list is one item, billed once')
  const echo = await post(server, 'builtin/echo', { inputs: ['a', { b: 1 }, null] })
  t.same(await echo.json(), ['a', { b: 1 }, null], 'echo: the list as sent')

  // One bad entry refuses the request (the Inference API's rule), naming the entry.
  const bad = await post(server, 'builtin/sentiment', { inputs: ['fine', 5, 'good'] })
  t.equal(bad.status, 400)
  t.match(await bad.json(), { code: 'ERR_MODEL_INPUT', error: /got number 5 at inputs\[1\]$/ })
  const long = await post(server, 'builtin/sentiment', { inputs: ['fine', 'x'.repeat(100_001)], parameters: { truncation: false } })
  t.equal(long.status, 413, 'maxInputsBytes counts the whole list (over it before any model runs)')
  // The list's inputs as a whole are under maxInputsBytes, as any item's.
  const over = await post(server, 'builtin/echo', { inputs: Array.from({ length: 40 }, () => 'ten chars!') })
  t.equal(over.status, 413)
  t.match(await over.json(), { code: 'ERR_LIMIT_EXCEEDED', error: /"inputs" is 521 bytes, over the limit of 400/ })
})

t.test('400 (413 for inputs over maxInputsBytes): bad JSON, missing inputs, bad parameters/options, model input errors', async (t) => {
  const server = await startServer(t, { maxInputsBytes: 100 })
  const cases: Array<[string, string, unknown, RegExp]> = [
    ['builtin/echo', 'ERR_INVALID_JSON', '{"inputs": ', /^Body is not valid JSON/],
    ['builtin/echo', 'ERR_INVALID_PAYLOAD', [1, 2], /Body must be a JSON object with "inputs"/],
    ['builtin/echo', 'ERR_MISSING_INPUT', { parameters: {} }, /^Payload has no "inputs" \(missing\)$/],
    ['builtin/echo', 'ERR_MISSING_INPUT', { inputs: null }, /^Payload has no "inputs" \(null\)$/],
    ['builtin/echo', 'ERR_INVALID_PAYLOAD', { inputs: 'x', parameters: [1] }, /"parameters" must be a JSON object/],
    ['builtin/echo', 'ERR_INVALID_PAYLOAD', { inputs: 'x', options: 'no' }, /"options" must be a JSON object/],
    ['builtin/echo', 'ERR_INVALID_PAYLOAD', { inputs: 'x', options: { use_cache: 'no' } }, /"options.use_cache" must be a boolean/],
    ['builtin/echo', 'ERR_INVALID_PAYLOAD', { inputs: 'x', options: { wait_for_model: 1 } }, /"options.wait_for_model" must be a boolean/],
    ['builtin/echo', 'ERR_LIMIT_EXCEEDED', { inputs: 'x'.repeat(200) }, /"inputs" is 202 bytes, over the limit of 100/],
    ['builtin/sentiment', 'ERR_MODEL_INPUT', { inputs: 5 }, /expects inputs to be a string/],
    ['builtin/sentiment', 'ERR_MODEL_INPUT', { inputs: 'x', parameters: { top_k: 0 } }, /top_k must be a positive integer/],
    ['builtin/echo', 'ERR_MODEL_INPUT', { inputs: 'x', parameters: { delay_ms: -1 } }, /delay_ms must be/],
  ]
  for (const [model, code, body, message] of cases) {
    const res = await post(server, model, body)
    t.equal(res.status, code === 'ERR_LIMIT_EXCEEDED' ? 413 : 400, code)
    t.equal(res.headers.get('content-type'), 'application/json')
    const json = (await res.json()) as { error: string; code: string }
    t.equal(json.code, code)
    t.match(json.error, message)
  }
  t.equal(await server.billed('anonymous'), 3, 'model input errors ran a model (billed); the others never reached the queue')
})

t.test('401 with tokens configured: missing, malformed and wrong Authorization', async (t) => {
  const server = await startServer(t, { tokens: ['secret'] })
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{}, /Missing "Authorization: Bearer <token>" header/],
    [{ authorization: 'secret' }, /must be "Bearer <token>"/],
    [{ authorization: 'Bearer nope' }, /Invalid token/],
  ]
  for (const [headers, message] of cases) {
    const res = await post(server, 'builtin/echo', { inputs: 1 }, { headers })
    t.equal(res.status, 401)
    t.equal(res.headers.get('www-authenticate'), 'Bearer')
    t.match(await res.json(), { error: message, code: 'ERR_AUTHENTICATION' })
  }
  const unknownModel = await post(server, 'nope/model', { inputs: 1 }, { headers: { authorization: 'Bearer nope' } })
  t.equal(unknownModel.status, 401, 'the model list is not revealed before authentication')
  const ok = await post(server, 'builtin/echo', { inputs: 1 }, { headers: { authorization: 'Bearer secret' } })
  t.equal(ok.status, 200)
  t.same(await ok.json(), 1)
  t.equal(await server.billed('secret'), 1)
})

t.test('404 for an unknown model (ids may contain "/"), 405 for other methods', async (t) => {
  const server = await startServer(t)
  const res = await post(server, 'org/sub/missing-model', { inputs: 'x' })
  t.equal(res.status, 404)
  t.match(await res.json(), { error: /^Model org\/sub\/missing-model does not exist \(served here: builtin\/echo/, code: 'ERR_UNKNOWN_MODEL' })
  const encoded = await post(server, 'builtin%2Fecho', { inputs: 'x' })
  t.equal(encoded.status, 200, 'an encoded "/" names the same model')
  for (const method of ['GET', 'PUT', 'DELETE']) {
    const r = await fetch(`${server.url}/models/builtin/echo`, { method })
    t.equal(r.status, 405, method)
    t.equal(r.headers.get('allow'), 'POST')
    t.match(await r.json(), { error: `Method ${method} is not allowed on /models/builtin/echo: use POST` })
  }
  const other = await fetch(`${server.url}/models`, { method: 'POST', body: '{}' })
  t.equal(other.status, 404, '/models without an id is not the endpoint')
})

t.test('413 for a body over maxFrameBytes, declared or streamed; the server stays usable', async (t) => {
  const server = await startServer(t, { maxFrameBytes: 1024, maxInputsBytes: 512 })
  const big = JSON.stringify({ inputs: 'x'.repeat(5000) })
  const declared = await post(server, 'builtin/echo', big)
  t.equal(declared.status, 413)
  t.match(await declared.json(), { error: 'Body is over the limit of 1024 bytes', code: 'ERR_LIMIT_EXCEEDED' })
  // A chunked body has no content-length: the cap applies while reading.
  const chunks = [big.slice(0, 800), big.slice(800, 1600), big.slice(1600)]
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      const next = chunks.shift()
      if (next === undefined) controller.close()
      else controller.enqueue(new TextEncoder().encode(next))
    },
  })
  const streamed = await fetch(`${server.url}/models/builtin/echo`, { method: 'POST', body, duplex: 'half' } as RequestInit)
  t.equal(streamed.status, 413)
  t.match(await streamed.json(), { code: 'ERR_LIMIT_EXCEEDED' })
  const inputsOver = await post(server, 'builtin/echo', { inputs: 'y'.repeat(600) })
  t.equal(inputsOver.status, 413, 'within the body cap, inputs over maxInputsBytes: too large all the same (one status a code)')
  const fine = await post(server, 'builtin/echo', { inputs: 'ok' })
  t.equal(fine.status, 200)
  t.same(await fine.json(), 'ok')
})

t.test('500 for a failed batch, 503 when a token has too much waiting', async (t) => {
  const broken: Pipeline = {
    id: 'test/broken',
    task: 'echo',
    async run() {
      throw new Error('boom')
    },
  }
  const slow = recorder(200, 'test/slow')
  const registry = await withRegistry(t, [broken, slow])
  const server = await startServer(t, { registry, maxQueuedPerToken: 2, workers: 1, maxBatch: 1 })
  const res = await post(server, 'test/broken', { inputs: 1 })
  t.equal(res.status, 500)
  t.same(await res.json(), { error: 'Model test/broken failed: boom', code: 'ERR_MODEL' })
  const first = [post(server, 'test/slow', { inputs: 1 }), post(server, 'test/slow', { inputs: 2 })]
  await new Promise((r) => setTimeout(r, 50))
  const third = await post(server, 'test/slow', { inputs: 3 })
  t.equal(third.status, 503)
  t.equal(third.headers.get('retry-after'), '1')
  t.match(await third.json(), { code: 'ERR_OVERLOADED' })
  const other = await post(server, 'test/slow', { inputs: 4 }, { headers: { authorization: 'Bearer someone-else' } })
  t.equal(other.status, 200, 'the bound is per token')
  for (const r of await Promise.all(first)) t.equal(r.status, 200)
})

t.test('use_cache: a hit answers at once and is not billed; use_cache false runs again; size 0 disables', async (t) => {
  const model = recorder(1)
  const registry = await withRegistry(t, [model])
  const server = await startServer(t, { registry, tokens: ['tok'] })
  const auth = { authorization: 'Bearer tok' }
  const first = await post(server, 'test/recorder', { inputs: 'same', parameters: { a: 1, b: 2 } }, { headers: auth })
  t.equal(first.headers.get('x-compute-type'), 'cpu')
  t.same(await first.json(), { echo: 'same' })
  t.equal(await server.billed('tok'), 1)
  // Same parameters in another key order: the same cache entry.
  const hit = await post(server, 'test/recorder', { inputs: 'same', parameters: { b: 2, a: 1 } }, { headers: auth })
  t.equal(hit.status, 200)
  t.same(await hit.json(), { echo: 'same' })
  t.equal(hit.headers.get('x-compute-type'), 'cache')
  t.equal(hit.headers.get('x-compute-time'), '0')
  t.equal(await server.billed('tok'), 1, 'a cache hit is not billed')
  t.equal(model.batches.length, 1, 'nor run')
  const other = await post(server, 'test/recorder', { inputs: 'same', parameters: { a: 2, b: 2 } }, { headers: auth })
  t.equal(other.headers.get('x-compute-type'), 'cpu', 'other parameters are another entry')
  t.equal(await server.billed('tok'), 2)
  const fresh = await post(server, 'test/recorder', { inputs: 'same', parameters: { a: 1, b: 2 }, options: { use_cache: false } }, { headers: auth })
  t.equal(fresh.headers.get('x-compute-type'), 'cpu')
  t.same(await fresh.json(), { echo: 'same' })
  t.equal(await server.billed('tok'), 3, 'use_cache false runs the model again')
  const header = await post(server, 'test/recorder', { inputs: 'same', parameters: { a: 1, b: 2 } }, { headers: { ...auth, 'x-use-cache': 'false' } })
  t.equal(header.headers.get('x-compute-type'), 'cpu', 'the x-use-cache: false header of the original API works too')
  t.equal(await server.billed('tok'), 4)
  const errors = [await post(server, 'test/recorder', { inputs: 'e' }, { headers: auth }), await post(server, 'builtin/echo', { inputs: 'e', parameters: { delay_ms: 'x' } }, { headers: auth })]
  t.same(errors.map((r) => r.status), [200, 400])
  const again = await post(server, 'builtin/echo', { inputs: 'e', parameters: { delay_ms: 'x' } }, { headers: auth })
  t.equal(again.status, 400)
  t.equal(again.headers.get('x-compute-type'), 'cpu', 'errors are never cached')

  const uncached = await startServer(t, { registry, httpCacheSize: 0 })
  for (let i = 0; i < 3; i++) {
    const r = await post(uncached, 'test/recorder', { inputs: 'same' })
    t.equal(r.headers.get('x-compute-type'), 'cpu')
  }
  t.equal(await uncached.billed('anonymous'), 3, 'httpCacheSize 0: every request runs')
})

t.test('the cache is bounded: least recently used entries go first', async (t) => {
  const server = await startServer(t, { httpCacheSize: 2 })
  const type = async (inputs: string) => (await post(server, 'builtin/echo', { inputs })).headers.get('x-compute-type')
  t.equal(await type('a'), 'cpu')
  t.equal(await type('b'), 'cpu')
  t.equal(await type('a'), 'cache')
  t.equal(await type('c'), 'cpu') // evicts b, the least recently used
  t.equal(await type('a'), 'cache')
  t.equal(await type('b'), 'cpu')
})

t.test('billing without tokens: the bearer token given, else "anonymous"', async (t) => {
  const server = await startServer(t, { httpCacheSize: 0 })
  await (await post(server, 'builtin/echo', { inputs: 1 })).json()
  await (await post(server, 'builtin/echo', { inputs: 1 }, { headers: { authorization: 'Bearer alice' } })).json()
  await (await post(server, 'builtin/echo', { inputs: 1 }, { headers: { authorization: 'Bearer alice' } })).json()
  t.equal(await server.billed('anonymous'), 1)
  t.equal(await server.billed('alice'), 2)
  const metrics = await (await fetch(`${server.url}/metrics`)).text()
  t.notMatch(metrics, 'alice', 'tokens never appear in metrics')
})

t.test('100 concurrent requests batch together (maxBatch 32), each gets its own outputs', async (t) => {
  const model = recorder(20)
  const registry = await withRegistry(t, [model])
  const server = await startServer(t, { registry, maxBatch: 32, workers: 2 })
  const N = 100
  const responses = await Promise.all(Array.from({ length: N }, (_, i) => post(server, 'test/recorder', { inputs: `r${i}` })))
  const bodies = await Promise.all(responses.map((r) => r.json()))
  for (let i = 0; i < N; i++) t.same(bodies[i], { echo: `r${i}` }, `r${i}`)
  const sizes = model.batches.map((b) => b.length)
  t.equal(sizes.reduce((a, b) => a + b, 0), N, 'every request run once')
  t.ok(Math.max(...sizes) > 1, `the model saw batches > 1 (largest ${Math.max(...sizes)})`)
  t.ok(sizes.every((s) => s <= 32), 'none over maxBatch')
  t.equal(await server.billed('anonymous'), N)
  t.equal(hubOf(server).sinks.size, 0, 'no waiter left')
})

t.test('stream items and HTTP items of one token batch together but never see each other\'s results', async (t) => {
  const model = recorder(5)
  const registry = await withRegistry(t, [model])
  const store = new MemoryStateBackend({ maxRetained: 1000, retentionMs: 60_000 })
  const server = await startServer(t, { registry, state: store, tokens: ['tok'], maxBatch: 32, workers: 1 })
  const c = await connect(server.streamUrl('test/recorder'), { token: 'tok' })
  // Keep the only worker busy so both kinds queue up behind it.
  c.send({ id: 'block', inputs: 'block' })
  await c.waitFor(() => model.batches.length === 1, 'blocker running')
  const auth = { authorization: 'Bearer tok' }
  const http = Array.from({ length: 20 }, (_, i) => post(server, 'test/recorder', { inputs: `h${i}` }, { headers: auth }))
  // Stream ids equal to what an HTTP id could be are no problem either: the id spaces are apart.
  for (let i = 0; i < 20; i++) c.send({ id: `s${i}`, inputs: `s${i}` })
  const bodies = await Promise.all((await Promise.all(http)).map((r) => r.json()))
  for (let i = 0; i < 20; i++) t.same(bodies[i], { echo: `h${i}` })
  await c.waitFor(() => c.results().size === 21, 'stream results')
  const ids = [...c.results().keys()].sort()
  t.same(ids, ['block', ...Array.from({ length: 20 }, (_, i) => `s${i}`)].sort(), 'the stream got exactly its own ids')
  for (const [id, outputs] of c.results()) t.same(outputs, { echo: id })
  t.ok(
    model.batches.some((b) => b.some((x) => String(x).startsWith('h')) && b.some((x) => String(x).startsWith('s'))),
    'some batch mixed HTTP and stream items',
  )
  t.equal(await server.billed('tok'), 41, 'both billed to the token')
  await new Promise((r) => setTimeout(r, 50))
  t.equal(c.results().size, 21, 'nothing else arrived on the stream')
  t.match(await store.counts(ownerKey('tok', 'test/recorder')), { queued: 0, processing: 0, undelivered: 0 })
  t.match(await store.counts(httpOwnerKey('tok', 'test/recorder')), { queued: 0, processing: 0, undelivered: 0 }, 'HTTP results are not kept')
  await c.close()
})

t.test('compute headers: x-compute-type cpu, x-compute-time of the batch, x-compute-characters', async (t) => {
  const model = recorder(60)
  const registry = await withRegistry(t, [model])
  const server = await startServer(t, { registry })
  const res = await post(server, 'test/recorder', { inputs: 'héllo 👋' })
  t.equal(res.headers.get('x-compute-type'), 'cpu')
  const seconds = Number(res.headers.get('x-compute-time'))
  t.ok(seconds >= 0.05 && seconds < 5, `x-compute-time ${seconds}`)
  t.equal(res.headers.get('x-compute-characters'), '7', 'code points of the string inputs')
  const list = await post(server, 'test/recorder', { inputs: ['ab', 'cde'] })
  t.equal(list.headers.get('x-compute-characters'), '5')
  // A missing header would be Number(null) = 0: check its form, and that it is the batch's time.
  const echo = await post(server, 'builtin/echo', { inputs: 'x', parameters: { delay_ms: 40 } })
  const echoTime = echo.headers.get('x-compute-time')
  t.match(echoTime, /^\d+(\.\d+)?$/, 'x-compute-time is a number of seconds')
  t.ok(Number(echoTime) >= 0.04 && Number(echoTime) < 5, `x-compute-time ${echoTime} covers the 40 ms the model took`)
  t.equal(countCharacters({ question: 'abc', context: ['de', 1, { x: 'f' }] }), 6, 'keys are not counted')
})

t.test('a client that goes away: its waiter is dropped, nothing leaks, the item still runs', async (t) => {
  const model = recorder(150)
  const registry = await withRegistry(t, [model])
  const store = new MemoryStateBackend({ maxRetained: 1000, retentionMs: 60_000 })
  const server = await startServer(t, { registry, state: store })
  const ac = new AbortController()
  const pending = post(server, 'test/recorder', { inputs: 'gone' }, { signal: ac.signal })
  await new Promise((r) => setTimeout(r, 50))
  t.equal(hubOf(server).sinks.size, 1)
  ac.abort()
  await t.rejects(pending)
  const deadline = Date.now() + 2000
  while (hubOf(server).sinks.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5))
  t.equal(hubOf(server).sinks.size, 0, 'the waiter is dropped on close')
  await new Promise((r) => setTimeout(r, 200))
  t.equal(model.batches.length, 1, 'the item ran')
  t.match(await store.counts(httpOwnerKey('anonymous', 'test/recorder')), { queued: 0, processing: 0, undelivered: 0 })
  const next = await post(server, 'test/recorder', { inputs: 'next' })
  t.same(await next.json(), { echo: 'next' })
})

t.test('shutdown: a request whose item cannot finish in time is answered 503', async (t) => {
  const { createServer } = await import('../lib/server/server.js')
  const server = createServer({ shutdownTimeoutMs: 0 })
  await server.listen(0)
  const pending = post(server, 'builtin/echo', { inputs: 1, parameters: { delay_ms: 5000 } })
  const deadline = Date.now() + 2000
  while (hubOf(server).sinks.size === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5))
  await new Promise((r) => setTimeout(r, 20))
  await server.close()
  const res = await pending
  t.equal(res.status, 503)
  t.same(await res.json(), { error: 'Server is shutting down', code: 'ERR_SHUTTING_DOWN' })
})

t.test('options: httpCacheSize and httpCacheMaxBytes', async (t) => {
  const o = resolveServerOptions({})
  t.equal(o.httpCacheSize, 10_000)
  t.equal(o.httpCacheMaxBytes, 64 * 1024 * 1024)
  t.equal(resolveServerOptions({ httpCacheSize: 0 }).httpCacheSize, 0)
  t.throws(() => resolveServerOptions({ httpCacheSize: -1 }), new InvalidOptionError('Option "httpCacheSize" must be an integer >= 0, got -1'))
  t.throws(() => resolveServerOptions({ httpCacheMaxBytes: 1.5 }), { name: 'InvalidOptionError', code: 'ERR_INVALID_OPTION', message: /"httpCacheMaxBytes"/ })
})

t.test('httpStatusOf maps every server error code', async (t) => {
  t.same(
    ['ERR_INVALID_JSON', 'ERR_INVALID_PAYLOAD', 'ERR_LIMIT_EXCEEDED', 'ERR_MODEL_INPUT', 'ERR_AUTHENTICATION', 'ERR_UNKNOWN_MODEL', 'ERR_MODEL', 'ERR_OVERLOADED', 'ERR_SHUTTING_DOWN', undefined].map(httpStatusOf),
    [400, 400, 413, 400, 401, 404, 500, 503, 503, 500],
  )
})

t.test('deeply nested parameters or inputs: a 400 or a 500, never a crash', async (t) => {
  const server = await startServer(t)
  const deepParams = '{"a":'.repeat(20_000) + '1' + '}'.repeat(20_000)
  const params = await post(server, 'builtin/echo', `{"inputs":1,"parameters":${deepParams}}`)
  t.equal(params.status, 400)
  t.same(await params.json(), { error: '"parameters" is nested too deeply', code: 'ERR_INVALID_PAYLOAD' })
  // Echo returns inputs that JSON.stringify cannot write back (it recurses).
  const deepInputs = '['.repeat(20_000) + ']'.repeat(20_000)
  const inputs = await post(server, 'builtin/echo', `{"inputs":${deepInputs}}`)
  t.equal(inputs.status, 500)
  t.same(await inputs.json(), { error: 'Model builtin/echo returned outputs that cannot be serialized as JSON', code: 'ERR_MODEL' })
  const fine = await post(server, 'builtin/echo', { inputs: 'still here' })
  t.same(await fine.json(), 'still here')
})

// Batched upstream requests: one POST with `inputs: [..]` per pulled batch. Our own server is the
// upstream (real servers on port 0, a counting proxy in front); small local HTTP servers stand in
// for the error shapes of other upstreams (TEI's 422 naming one input, an answer of the wrong length).
import http from 'node:http'
import t, { type Test } from 'tap'
import { registryFromFlags } from '../lib/cli/model-flags.js'
import { InvalidOptionError, ModelError, ModelInputError } from '../lib/errors.js'
import { infer } from '../lib/client/infer.js'
import { createModelRegistry } from '../lib/models/registry.js'
import { UPSTREAM_BATCH_ITEMS, UpstreamPipeline, type UpstreamPipelineOptions } from '../lib/models/upstream-pipeline.js'
import { listen, startServer } from './helpers/server.js'

interface Body {
  inputs: unknown
  parameters?: Record<string, unknown>
}

/** Reads a request's body. */
function bodyOf(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve) => {
    let data = ''
    req.setEncoding('utf8')
    req.on('data', (c: string) => (data += c))
    req.on('end', () => resolve(data))
  })
}

/** A real forwarding proxy in front of `target` that records every request body it passes on. */
async function recordingProxy(t: Test, target: string) {
  const bodies: string[] = []
  const server = http.createServer((req, res) => {
    void bodyOf(req).then((data) => {
      bodies.push(data)
      const up = http.request(`${target}${req.url}`, { method: req.method, headers: req.headers }, (upRes) => {
        res.writeHead(upRes.statusCode ?? 502, upRes.headers)
        upRes.pipe(res)
      })
      up.on('error', () => res.destroy())
      up.end(data)
    })
  })
  const url = await listen(t, server)
  return { url, bodies, parsed: () => bodies.map((b) => JSON.parse(b) as Body) }
}

/** A scripted upstream: `handle` answers each request; every body is recorded. */
async function scripted(t: Test, handle: (body: Body, res: http.ServerResponse) => void) {
  const seen: Body[] = []
  const server = http.createServer((req, res) => {
    void bodyOf(req).then((data) => {
      const body = JSON.parse(data) as Body
      seen.push(body)
      handle(body, res)
    })
  })
  return { url: `${await listen(t, server)}/models/x`, seen }
}

/** Request bodies' inputs, in a fixed order (requests run concurrently, so they arrive in any order). */
const sortedInputs = (bodies: Body[]): unknown[] => bodies.map((b) => b.inputs).sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1))

function reply(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' })
  res.end(JSON.stringify(body))
}

function pipelineOf(t: Test, options: Partial<UpstreamPipelineOptions> & { url: string }): UpstreamPipeline {
  const p = new UpstreamPipeline({ id: 'remote/x', retryBaseMs: 1, maxRetryDelayMs: 5, ...options })
  t.teardown(() => p.close())
  return p
}

const texts = (n: number): string[] =>
  Array.from({ length: n }, (_, i) => (i % 3 === 0 ? `I love this, it is wonderful ${i}` : i % 3 === 1 ? `This is terrible and awful ${i}` : `A table ${i}`))

/** What the upstream answers each text alone. */
async function singleAnswers(url: string, inputs: unknown[], parameters?: Record<string, unknown>, token?: string): Promise<unknown[]> {
  const out: unknown[] = []
  const headers: Record<string, string> = { 'content-type': 'application/json' }
  if (token !== undefined) headers.authorization = `Bearer ${token}`
  for (const inputs1 of inputs) {
    const res = await fetch(url, { method: 'POST', headers, body: JSON.stringify({ inputs: inputs1, parameters }) })
    out.push(await res.json())
  }
  return out
}

t.test('options: batching is on for list-taking tasks, off otherwise; bad values name the option', async (t) => {
  const url = 'http://127.0.0.1:1/models/m'
  t.equal(new UpstreamPipeline({ id: 'a', url, task: 'text-classification' }).batchItems, UPSTREAM_BATCH_ITEMS)
  t.equal(new UpstreamPipeline({ id: 'a', url, task: 'feature-extraction', batch: 8 }).batchItems, 8)
  t.equal(new UpstreamPipeline({ id: 'a', url, task: 'echo', batch: true }).batchItems, UPSTREAM_BATCH_ITEMS)
  t.equal(new UpstreamPipeline({ id: 'a', url, task: 'text-classification', batch: false }).batchItems, 1)
  for (const task of ['unknown', 'zero-shot-classification', 'question-answering', 'automatic-speech-recognition', 'sentence-similarity']) {
    t.equal(new UpstreamPipeline({ id: 'a', url, task }).batchItems, 1, `${task}: off by default`)
    t.throws(() => new UpstreamPipeline({ id: 'a', url, task, batch: true }), {
      name: 'InvalidOptionError',
      message: new RegExp(`^Option "batch" needs a task whose API takes a list of inputs .*; task is "${task}"$`),
    })
  }
  t.throws(() => new UpstreamPipeline({ id: 'a', url, task: 'echo', batch: 0 }), new InvalidOptionError('Option "batch" must be an integer between 1 and 1000000, got 0'))
  t.throws(() => new UpstreamPipeline({ id: 'a', url, task: 'echo', maxBatchBytes: 0 }), new InvalidOptionError('Option "maxBatchBytes" must be an integer between 1 and 2147483647, got 0'))

  // The CLI: --upstream-batch N applies where the task allows a list, ID=N insists, 0 turns it off.
  const up = (o: Parameters<typeof registryFromFlags>[0]) => {
    const registry = registryFromFlags(o)
    t.teardown(() => registry.close())
    return (id: string) => (registry.get(id) as UpstreamPipeline).batchItems
  }
  const spec = ['s=http://h/models/s', 'e=http://h/models/e', 'u=http://h/models/u']
  let get = up({ upstream: spec, task: ['s=sentiment-analysis', 'e=feature-extraction'] })
  t.same([get('s'), get('e'), get('u')], [UPSTREAM_BATCH_ITEMS, UPSTREAM_BATCH_ITEMS, 1], 'defaults')
  get = up({ upstream: spec, task: ['s=text-classification', 'e=feature-extraction'], upstreamBatch: ['4', 'e=0'] })
  t.same([get('s'), get('e'), get('u')], [4, 1, 1], 'N for all, ID=0 off, an unknown task stays off')
  t.throws(() => up({ upstream: spec, upstreamBatch: ['u=4'] }), { name: 'InvalidOptionError', message: /Option "batch" needs a task/ })
  t.throws(() => up({ upstream: spec, upstreamBatch: ['x=4'] }), new InvalidOptionError('--upstream-batch x=4: x is not an --upstream id'))
  t.throws(() => up({ upstream: spec, upstreamBatch: ['-1'] }), { message: /expected N or ID=N/ })
})

t.test('our server as the upstream: one request per list, each result returns to its own item in order', async (t) => {
  const upstream = await startServer(t, { httpCacheSize: 0 })
  const proxy = await recordingProxy(t, upstream.url)
  const url = `${proxy.url}/models/builtin/sentiment`
  const p = pipelineOf(t, { url, task: 'text-classification', batch: 16 })
  const inputs = texts(40)
  const outputs = await p.run(inputs, {})
  const lists = proxy.parsed().map((b) => b.inputs as string[]).sort((a, b) => inputs.indexOf(a[0]) - inputs.indexOf(b[0]))
  t.same(lists.map((l) => l.length), [16, 16, 8], 'three requests of at most 16')
  t.same(lists.flat(), inputs, 'every input once, each list a run of the batch in order')
  const expected = await singleAnswers(`${upstream.url}/models/builtin/sentiment`, inputs)
  t.same(outputs, expected, 'each output is what the upstream answers that input alone')
  t.match(outputs[0], [[{ label: 'POSITIVE' }, { label: 'NEGATIVE' }]])
  t.match(outputs[1], [[{ label: 'NEGATIVE' }, { label: 'POSITIVE' }]])

  // parameters travel with the list.
  proxy.bodies.length = 0
  const top1 = await p.run(inputs.slice(0, 3), { top_k: 1 })
  t.same(proxy.parsed(), [{ inputs: inputs.slice(0, 3), parameters: { top_k: 1 } }])
  t.same(top1, await singleAnswers(`${upstream.url}/models/builtin/sentiment`, inputs.slice(0, 3), { top_k: 1 }))

  // echo takes any JSON, entries as they are; a list-taking text task sends an item that is already a list alone.
  const echo = pipelineOf(t, { url: `${proxy.url}/models/builtin/echo`, task: 'echo' })
  proxy.bodies.length = 0
  const objects = [{ a: 1 }, ['x', 'y'], 'z', null, 7]
  t.same(await echo.run(objects, {}), objects)
  t.same(proxy.parsed(), [{ inputs: objects }], 'one request')
  proxy.bodies.length = 0
  const mixed = ['good', ['two', 'texts'], 'fine']
  const out = await p.run(mixed, {})
  t.same(sortedInputs(proxy.parsed()), [['good', 'fine'], ['two', 'texts']], 'the strings in one list, the list item alone (its own request body)')
  t.same(out, await singleAnswers(`${upstream.url}/models/builtin/sentiment`, mixed))
})

t.test('end to end: a second server streams through a batched upstream; the upstream bills one item per request', async (t) => {
  const upstream = await startServer(t, { tokens: ['up'], httpCacheSize: 0 })
  const proxy = await recordingProxy(t, upstream.url)
  const remote = new UpstreamPipeline({ id: 'remote/sentiment', url: `${proxy.url}/models/builtin/sentiment`, token: 'up', task: 'text-classification' })
  const registry = createModelRegistry({ models: { 'remote/sentiment': remote } })
  const server = await startServer(t, { registry, maxBatch: 32 })
  t.teardown(() => registry.close())
  const inputs = texts(100)
  const outputs: unknown[] = []
  for await (const r of infer(inputs, { url: server.url, model: 'remote/sentiment', token: 'client' })) {
    t.equal(r.error, undefined)
    outputs.push(r.outputs)
  }
  const requests = proxy.parsed()
  t.ok(requests.length < inputs.length, `fewer requests (${requests.length}) than items`)
  t.ok(requests.every((b) => typeof b.inputs === 'string' || (b.inputs as unknown[]).length <= 32))
  t.same(requests.flatMap((b) => b.inputs).sort(), [...inputs].sort(), 'every input sent once')
  t.equal(await upstream.billed('up'), requests.length, 'the upstream billed one item per request')
  t.equal(await server.billed('client'), inputs.length, 'each item billed here')
  t.same(outputs, await singleAnswers(`${upstream.url}/models/builtin/sentiment`, inputs, undefined, 'up'), 'outputs as if each had been sent alone, in order')
})

t.test('one bad input in a list (our server refuses the request): it gets its own error, the others succeed', async (t) => {
  const upstream = await startServer(t, { httpCacheSize: 0 })
  const proxy = await recordingProxy(t, upstream.url)
  const p = pipelineOf(t, { url: `${proxy.url}/models/builtin/sentiment`, task: 'text-classification' })
  // truncation false: a text over 100 000 characters is refused, and with it the whole list.
  const long = 'word '.repeat(20_001)
  const inputs = ['great', 'awful', long, 'lovely']
  const reported: number[] = []
  const outputs = await p.run(inputs, { truncation: false }, undefined, { onItem: (i) => void reported.push(i) })
  t.equal(proxy.bodies.length, 1 + inputs.length, 'the list, then each item alone')
  t.same(proxy.parsed()[0].inputs, inputs)
  t.type(outputs[2], ModelInputError)
  t.match((outputs[2] as Error).message, /answered 400: .*reads at most 100000 characters .*this text has 100005/)
  t.same([outputs[0], outputs[1], outputs[3]], await singleAnswers(`${upstream.url}/models/builtin/sentiment`, ['great', 'awful', 'lovely'], { truncation: false }))
  t.same(reported.sort(), [0, 1, 2, 3], 'each item reported once')
})

t.test('a 422 naming one input (TEI style): sent again one per item, each gets its own result or error', async (t) => {
  const up = await scripted(t, (body, res) => {
    const list = Array.isArray(body.inputs) ? body.inputs : [body.inputs]
    const bad = list.findIndex((x) => x === 'bad')
    if (bad >= 0) return reply(res, 422, { error: `Input validation error: inputs[${bad}] is bad`, error_type: 'Validation' })
    // feature-extraction: a vector per text (here one number per letter).
    const vector = (x: unknown): number[] => [...String(x)].map((c) => c.charCodeAt(0))
    reply(res, 200, Array.isArray(body.inputs) ? list.map(vector) : vector(body.inputs))
  })
  const p = pipelineOf(t, { url: up.url, task: 'feature-extraction' })
  const outputs = await p.run(['a', 'bad', 'c'], {})
  t.same(up.seen[0].inputs, ['a', 'bad', 'c'])
  t.same(sortedInputs(up.seen.slice(1)), ['a', 'bad', 'c'], 'then each alone')
  t.same(outputs[0], [97])
  t.same(outputs[2], [99])
  t.type(outputs[1], ModelInputError)
  t.match((outputs[1] as Error).message, /answered 422: Input validation error: inputs\[0\] is bad$/)

  // A list without the bad one is one request.
  up.seen.length = 0
  t.same(await p.run(['x', 'yz'], {}), [[120], [121, 122]])
  t.equal(up.seen.length, 1)
})

t.test('an answer whose length does not match (or is not a list, or of entries that are not lists) falls back to one request per item', async (t) => {
  for (const answer of ['short', 'object', 'not json', 'pair']) {
    const up = await scripted(t, (body, res) => {
      if (!Array.isArray(body.inputs)) return reply(res, 200, [`one:${String(body.inputs)}`])
      if (answer === 'short') return reply(res, 200, body.inputs.slice(1).map((x) => [x]))
      // TEI's /predict reads a list of two texts as one pair: the labels of that pair, not a list per text.
      if (answer === 'pair') return reply(res, 200, [{ label: 'A', score: 0.9 }, { label: 'B', score: 0.1 }, { label: 'C', score: 0 }, { label: 'D', score: 0 }])
      if (answer === 'object') return reply(res, 200, { embeddings: body.inputs })
      res.writeHead(200)
      res.end('<html>')
    })
    const p = pipelineOf(t, { url: up.url, task: 'fill-mask' })
    const outputs = await p.run(['a', 'b', 'c', 'd'], {})
    t.same(outputs, [['one:a'], ['one:b'], ['one:c'], ['one:d']], answer)
    t.equal(up.seen.length, 5, `${answer}: the list, then 4 requests`)
  }
})

t.test('max items and max bytes split a batch; an item over maxBatchBytes goes alone; the option off sends one per item', async (t) => {
  const upstream = await startServer(t, { httpCacheSize: 0 })
  const proxy = await recordingProxy(t, upstream.url)
  const url = `${proxy.url}/models/builtin/echo`
  const ten = Array.from({ length: 10 }, (_, i) => `item ${i}`)
  const byItems = pipelineOf(t, { url, task: 'echo', batch: 4 })
  t.same(await byItems.run(ten, {}), ten)
  t.same(proxy.parsed().map((b) => b.inputs), [ten.slice(0, 4), ten.slice(4, 8), ten.slice(8)])

  // 100-character strings are 103 bytes in a list (quotes, comma); the frame {"inputs":[...]} 13: three fit in 350.
  proxy.bodies.length = 0
  const hundred = Array.from({ length: 7 }, (_, i) => String(i).repeat(100))
  const big = 'B'.repeat(400)
  const byBytes = pipelineOf(t, { url, task: 'echo', maxBatchBytes: 350 })
  t.same(await byBytes.run([...hundred.slice(0, 3), big, ...hundred.slice(3)], {}), [...hundred.slice(0, 3), big, ...hundred.slice(3)])
  t.same(
    sortedInputs(proxy.parsed()),
    sortedInputs([{ inputs: hundred.slice(0, 3) }, { inputs: hundred.slice(3, 6) }, { inputs: hundred[6] }, { inputs: big }]),
    'lists of 3; the last item alone (a list of one is its own body); the big one alone',
  )
  t.ok(proxy.bodies.every((b) => b === JSON.stringify({ inputs: big }) || Buffer.byteLength(b) <= 350), 'every other body within maxBatchBytes')

  proxy.bodies.length = 0
  const off = pipelineOf(t, { url: `${proxy.url}/models/builtin/sentiment`, task: 'text-classification', batch: false })
  const outputs = await off.run(ten, {})
  t.equal(proxy.bodies.length, ten.length, 'one request per item')
  t.same(proxy.parsed().map((b) => b.inputs).sort(), [...ten].sort())
  t.same(outputs, await singleAnswers(`${upstream.url}/models/builtin/sentiment`, ten))
})

t.test('transient errors retry the whole list; other final failures are every item\'s error, without a fallback', async (t) => {
  let calls = 0
  const flaky = await scripted(t, (body, res) => {
    calls++
    if (calls <= 2) return reply(res, calls === 1 ? 503 : 429, { error: 'busy' })
    reply(res, 200, (body.inputs as string[]).map((x) => [{ entity_group: x.toUpperCase() }]))
  })
  const p = pipelineOf(t, { url: flaky.url, task: 'token-classification' })
  t.same(await p.run(['a', 'b', 'c'], {}), [[{ entity_group: 'A' }], [{ entity_group: 'B' }], [{ entity_group: 'C' }]])
  t.same(flaky.seen.map((b) => b.inputs), [['a', 'b', 'c'], ['a', 'b', 'c'], ['a', 'b', 'c']], 'the same list three times')

  const down = await scripted(t, (_body, res) => reply(res, 500, { error: 'the model crashed' }))
  const q = pipelineOf(t, { url: down.url, task: 'token-classification' })
  const outputs = await q.run(['a', 'b'], {})
  t.equal(down.seen.length, 1)
  for (const o of outputs) {
    t.type(o, ModelError)
    t.notOk(o instanceof ModelInputError)
    t.match((o as Error).message, /answered 500: the model crashed$/)
  }

  const gone = await scripted(t, (_body, res) => reply(res, 503, { error: 'down' }))
  const r = pipelineOf(t, { url: gone.url, task: 'token-classification', maxRetries: 2 })
  const failed = await r.run(['a', 'b'], {})
  t.equal(gone.seen.length, 3, 'the list, retried twice, never item by item')
  for (const o of failed) t.match((o as Error).message, /answered 503: down \(after 3 attempts\)$/)
})

t.test('onItem: each list\'s items are reported when that list is answered, before the batch is done', async (t) => {
  let release = (): void => {}
  const held = new Promise<void>((r) => (release = r))
  const up = await scripted(t, (body, res) => {
    const list = body.inputs as string[]
    if (list.includes('held')) return void held.then(() => reply(res, 200, list))
    reply(res, 200, list)
  })
  const p = pipelineOf(t, { url: up.url, task: 'echo', batch: 2 })
  const reported: Array<[number, unknown]> = []
  const run = p.run(['a', 'b', 'held', 'c'], {}, undefined, { onItem: (i, out) => void reported.push([i, out]) })
  while (reported.length < 2) await new Promise((r) => setTimeout(r, 5))
  await new Promise((r) => setTimeout(r, 20))
  t.same(reported, [[0, 'a'], [1, 'b']], 'the first list, before the held one')
  release()
  t.same(await run, ['a', 'b', 'held', 'c'])
  t.same(reported.map(([i]) => i), [0, 1, 2, 3])
})

import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import t from 'tap'
import { InferenceStream, type InferenceResult } from '../lib/client/inference-stream.js'
import { infer } from '../lib/client/infer.js'
import { createModelRegistry } from '../lib/models/registry.js'
import type { Pipeline } from '../lib/models/pipeline.js'
import { connect, countResults } from './helpers/ws-client.js'
import { until } from './helpers/until.js'
import { startServer } from './helpers/server.js'

// A model whose every batch takes a random time: results come back out of order.
function jittery(maxMs: number): Pipeline & { calls: number } {
  const p = {
    id: 'test/jitter',
    task: 'echo',
    calls: 0,
    async run(inputs: unknown[]) {
      p.calls++
      await new Promise((r) => setTimeout(r, Math.random() * maxMs))
      return inputs
    },
  }
  return p
}

async function collect<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = []
  for await (const x of stream) out.push(x)
  return out
}

function sink(into: unknown[]): Writable {
  return new Writable({
    objectMode: true,
    write(chunk, _e, cb) {
      into.push(chunk)
      cb()
    },
  })
}

t.test('pipeline(): every record in, one result out each, in order (v1 and legacy)', async (t) => {
  const server = await startServer(t)
  for (const protocol of ['v1', 'legacy'] as const) {
    const N = 3000
    const records = [...Array(N).keys()].map((i) => ({ inputs: `r${i}` }))
    const stream = new InferenceStream({ url: server.url, model: 'builtin/echo', token: `pipe-${protocol}`, protocol, runId: 'run' })
    const out: InferenceResult[] = []
    await pipeline(Readable.from(records), stream, sink(out))
    t.equal(out.length, N, protocol)
    t.same(out.map((r) => r.outputs), records.map((r) => r.inputs), `${protocol}: outputs in input order`)
    t.same(out[5], { id: 'run-5', outputs: 'r5', record: { inputs: 'r5' } })
    t.match(stream.stats, { written: N, sent: N, received: N, failed: 0, inFlight: 0, reconnects: 0, resent: 0, ignored: 0 })
    t.equal(await server.billed(`pipe-${protocol}`), N)
  }
})

t.test('in-flight never exceeds maxInFlight and the source pauses (random latency)', async (t) => {
  const model = jittery(15)
  const registry = createModelRegistry({ models: [model] })
  t.teardown(() => registry.close())
  const server = await startServer(t, { registry, maxBatch: 8, workers: 4 })
  const maxInFlight = 50
  const stream = new InferenceStream<number>({ url: server.url, model: 'test/jitter', token: 'bound', maxInFlight, input: (n) => ({ inputs: n }) })
  let pulled = 0
  let emitted = 0
  let peakGap = 0
  let peakServer = 0
  const source = Readable.from(
    (function* () {
      for (let i = 0; i < 2000; i++) {
        pulled++
        yield i
      }
    })(),
  )
  const sampler = setInterval(() => {
    void server.counts('bound', 'test/jitter').then((k) => (peakServer = Math.max(peakServer, k.queued + k.processing + k.undelivered)))
    t.ok(stream.inFlight <= maxInFlight || t.fail(`inFlight ${stream.inFlight}`))
  }, 1)
  const out: number[] = []
  await pipeline(
    source,
    stream,
    new Writable({
      objectMode: true,
      write(r: InferenceResult, _e, cb) {
        emitted++
        peakGap = Math.max(peakGap, pulled - emitted)
        out.push(r.outputs as number)
        cb()
      },
    }),
  )
  clearInterval(sampler)
  t.ok(stream.peakInFlight <= maxInFlight, `peak records between the sides: ${stream.peakInFlight}`)
  t.equal(stream.peakInFlight, maxInFlight, 'the window was used')
  t.ok(peakServer <= maxInFlight, `server never held more than the window: ${peakServer}`)
  // Pulled but not yet out: the window plus the stream buffers on each side (16 + 16) and one in hand.
  t.ok(peakGap <= maxInFlight + 16 + 16 + 2, `source paused: at most ${peakGap} records ahead of the output`)
  t.same(out, [...Array(2000).keys()], 'order restored under random latency')
})

t.test('ordered:false emits as results arrive, no head-of-line blocking', async (t) => {
  const slow: Pipeline = {
    id: 'test/slow-first',
    task: 'echo',
    async run(inputs) {
      if (inputs.includes('slow')) await new Promise((r) => setTimeout(r, 400))
      return inputs
    },
  }
  const registry = createModelRegistry({ models: [slow] })
  t.teardown(() => registry.close())
  const server = await startServer(t, { registry, maxBatch: 1, workers: 2 })
  const records = ['slow', ...[...Array(20).keys()].map((i) => `fast${i}`)]
  const unordered = await collect(infer(records, { url: server.url, model: 'test/slow-first', token: 'u', ordered: false }))
  t.equal(unordered.length, 21)
  t.not(unordered[0].outputs, 'slow', 'fast results were not held behind the slow one')
  t.equal(unordered[unordered.length - 1].outputs, 'slow')
  const ordered = await collect(infer(records, { url: server.url, model: 'test/slow-first', token: 'o' }))
  t.same(ordered.map((r) => r.outputs), records)
})

t.test('a stream cut by the server mid-run: reconnect, nothing resent on v1, each input one result, bill = inputs', async (t) => {
  for (const protocol of ['v1', 'legacy'] as const) {
    await t.test(protocol, async (t) => {
      const server = await startServer(t, { maxBatch: 16 })
      const N = 2000
      const token = `cut-${protocol}`
      const stream = new InferenceStream<number>({
        url: server.url,
        model: 'builtin/echo',
        token,
        protocol,
        maxInFlight: 400,
        parameters: { delay_ms: 2 },
        input: (n) => ({ inputs: n }),
        reconnect: { minDelayMs: 20, maxDelayMs: 100 },
      })
      let cuts = 0
      const out: number[] = []
      await pipeline(
        Readable.from([...Array(N).keys()]),
        stream,
        new Writable({
          objectMode: true,
          write(r: InferenceResult, _e, cb) {
            out.push(r.outputs as number)
            // Cut three times while items are in flight.
            if ((out.length === 300 || out.length === 900 || out.length === 1500) && server.terminateStreams() > 0) cuts++
            cb()
          },
        }),
      )
      t.equal(cuts, 3)
      t.same(out, [...Array(N).keys()], 'every input exactly one result, in order')
      t.equal(stream.stats.reconnects, 3)
      const dups = (await server.metrics.duplicates.get()).values.reduce((a, v) => a + v.value, 0)
      // v1 asks before resending: it never sends an id the server already has.
      if (protocol === 'v1') t.equal(dups, 0, `v1 sent no id twice to the server (resent ${stream.stats.resent} the server did not know)`)
      t.equal(await server.billed(token), N, 'billed once per input')
    })
  }
})

t.test('results for ids never sent are ignored and counted', async (t) => {
  const server = await startServer(t)
  // Another client of the same token leaves results behind; the stream gets them on connect.
  const other = await connect(server.streamUrl('builtin/echo'), { token: 'shared' })
  for (let i = 0; i < 5; i++) other.send({ id: `foreign${i}`, inputs: i, parameters: { delay_ms: 50 } })
  await new Promise((r) => setTimeout(r, 20))
  await other.close()
  await new Promise((r) => setTimeout(r, 150))
  const s = new InferenceStream({ url: server.url, model: 'builtin/echo', token: 'shared', runId: 'mine' })
  const out = await collect(Readable.from(['a', 'b']).pipe(s))
  t.same(out.map((r) => (r as InferenceResult).outputs), ['a', 'b'])
  t.equal(s.stats.ignored, 5, 'the five foreign results were ignored')
  t.equal((await server.counts('shared', 'builtin/echo')).undelivered, 0)
})

t.test('results a run drops are acked: leftovers past maxQueuedPerToken do not stall the next run', async (t) => {
  // A server keeps each v1 result against the connection it was handed to until acked, and hands
  // a connection holding maxQueuedPerToken of them nothing more. Copies a run drops (another run's
  // leftovers, a second copy after a server crash lost its ack) must be acked too, or they fill it.
  const server = await startServer(t, { maxQueuedPerToken: 8 })
  // A v1 run that never acks and goes away: its 8 results wait for the token's next stream.
  const other = await connect(server.streamUrl('builtin/echo'), { token: 'leftovers', v1: true })
  for (let i = 0; i < 8; i++) other.send({ id: `abandoned${i}`, inputs: i })
  await other.waitFor(() => other.results().size === 8, 'the 8 results')
  await other.close()
  await until(async () => (await server.counts('leftovers', 'builtin/echo')).undelivered === 8, 'the abandoned results to be stored', 10_000)
  const s = new InferenceStream({ url: server.url, model: 'builtin/echo', token: 'leftovers', runId: 'next', maxInFlight: 4 })
  const out: InferenceResult[] = []
  const done = pipeline(Readable.from([...Array(50).keys()].map((i) => `r${i}`)), s, sink(out))
  const stalled = new Promise((_, reject) => setTimeout(() => reject(new Error(`stalled after ${out.length} of 50 results`)), 20_000).unref())
  await Promise.race([done, stalled])
  t.equal(out.length, 50, 'every result of the run arrived')
  t.equal(s.stats.ignored, 8, 'the 8 leftovers were dropped')
  const counts = await server.counts('leftovers', 'builtin/echo')
  t.equal(counts.undelivered, 0, 'and acked: none waits for a stream')
  // Acked, not lost: the run that owns them can still ask for them.
  const owner = await connect(server.streamUrl('builtin/echo'), { token: 'leftovers', v1: true })
  owner.send({ type: 'resume', ids: ['abandoned3'] })
  await until(() => countResults(owner, 'abandoned3') === 1, 'the owner to get its result again', 10_000)
  t.equal(owner.results().get('abandoned3'), 3, 'acked, not lost: its owner resumes it')
  await owner.close()
})

t.test('maxInFlight above what the server takes from one connection: capped by its X-Max-In-Flight, no deadlock', async (t) => {
  // The server stops reading a socket whose owner has maxQueuedPerToken items queued or waiting, and
  // hands a connection holding that many unacked results nothing more: a client with a larger
  // window would wait for results while the server waits for acks it no longer reads.
  const server = await startServer(t, { maxQueuedPerToken: 32 })
  const s = new InferenceStream({ url: server.url, model: 'builtin/echo', token: 'wide', maxInFlight: 5000, ordered: false })
  const out: InferenceResult[] = []
  const done = pipeline(Readable.from([...Array(3000).keys()].map((i) => `w${i}`)), s, sink(out))
  const stalled = new Promise((_, reject) => setTimeout(() => reject(new Error(`stalled after ${out.length} of 3000 results`)), 20_000).unref())
  await Promise.race([done, stalled])
  t.equal(out.length, 3000, 'every result arrived')
  t.ok(s.peakInFlight <= 32, `at most the server's 32 in flight (saw ${s.peakInFlight})`)
})

t.test('server down longer than the reconnect budget: ERR_CONNECTION_LOST saying how many are unanswered', async (t) => {
  const { createServer } = await import('../lib/server/server.js')
  const server = createServer({ shutdownTimeoutMs: 0 })
  await server.listen(0)
  const stream = new InferenceStream<number>({
    url: server.url,
    model: 'builtin/echo',
    token: 'down',
    parameters: { delay_ms: 10_000 },
    input: (n) => ({ inputs: n }),
    reconnect: { maxAttempts: 3, minDelayMs: 10, maxDelayMs: 20 },
  })
  const source = Readable.from([1, 2, 3, 4, 5])
  const done = pipeline(source, stream, sink([]))
  while (stream.stats.sent < 5) await new Promise((r) => setTimeout(r, 5))
  await server.close()
  await t.rejects(done, { name: 'ConnectionLostError', code: 'ERR_CONNECTION_LOST', unanswered: 5, message: /after 3 attempts.*5 items sent and unanswered/ })
})

t.test('an endpoint that never answers fails at once, saying nothing was sent (backoff is for cuts)', async (t) => {
  const started = Date.now()
  const records = [...Array(500).keys()]
  await t.rejects(
    pipeline(Readable.from(records), new InferenceStream<number>({ url: 'http://127.0.0.1:9', model: 'builtin/echo', token: 't', input: (n) => ({ inputs: n }) }), sink([])),
    { name: 'ConnectionLostError', code: 'ERR_CONNECTION_LOST', unanswered: 0, message: /^Cannot reach ws:\/\/127\.0\.0\.1:9\/bulk\/stream\/cpu\/builtin\/echo \(.*ECONNREFUSED.*\); nothing was sent$/ },
  )
  t.ok(Date.now() - started < 5000, `failed fast (${Date.now() - started} ms), not after the reconnect budget`)
})

t.test('errors propagate through pipeline() with their codes', async (t) => {
  const server = await startServer(t, { tokens: ['good'] })
  await t.rejects(
    pipeline(Readable.from(['x']), new InferenceStream({ url: server.url, model: 'builtin/echo', token: 'bad' }), sink([])),
    { name: 'AuthenticationError', code: 'ERR_AUTHENTICATION', message: 'Invalid token' },
  )
  await t.rejects(
    pipeline(Readable.from(['x']), new InferenceStream({ url: server.url, model: 'no/such', token: 'good' }), sink([])),
    { name: 'UnknownModelError', code: 'ERR_UNKNOWN_MODEL' },
  )
  await t.rejects(
    pipeline(
      Readable.from([{ inputs: 1 }, { inputs: 2, parameters: { delay_ms: 'x' } }]),
      new InferenceStream({ url: server.url, model: 'builtin/echo', token: 'good', onError: 'emit' }),
      sink([]),
    ),
    { name: 'InferenceItemError', code: 'ERR_ITEM_FAILED', remoteCode: 'ERR_MODEL_INPUT', message: /delay_ms/ },
  )
  const sourceError = Object.assign(new Error('source broke'), { code: 'E_SOURCE' })
  await t.rejects(
    pipeline(
      new Readable({ objectMode: true, read() { this.destroy(sourceError) } }),
      new InferenceStream({ url: server.url, model: 'builtin/echo', token: 'good' }),
      sink([]),
    ),
    { code: 'E_SOURCE' },
  )
  await t.rejects(collect(infer(['x'], { url: server.url.replace(/:\d+$/, ':1'), model: 'builtin/echo', token: 'good', reconnect: false })), { code: 'ERR_CONNECTION_LOST' })
})

t.test('failed items: record (default) keeps the order, skip drops them, bad records fail alone', async (t) => {
  const server = await startServer(t)
  const records = [{ inputs: 1 }, { inputs: 2, parameters: { delay_ms: -5 } }, { text: 'no inputs' }, { inputs: 4 }]
  const recorded = await collect(infer(records, { url: server.url, model: 'builtin/echo', token: 'e', runId: 'e' }))
  t.equal(recorded.length, 4)
  t.equal(recorded[0].outputs, 1)
  t.match(recorded[1], { id: 'e-1', error: { code: 'ERR_ITEM_FAILED', remoteCode: 'ERR_MODEL_INPUT' }, outputs: { error: /delay_ms/ } })
  t.match(recorded[2], { id: 'e-2', error: { code: 'ERR_INVALID_PAYLOAD', message: /neither a string nor an object with "inputs"/ }, record: { text: 'no inputs' } })
  t.equal(recorded[3].outputs, 4)
  const s = new InferenceStream({ url: server.url, model: 'builtin/echo', token: 'e2', onError: 'skip' })
  const skipped = await collect(Readable.from(records).pipe(s))
  t.same(skipped.map((r) => (r as InferenceResult).outputs), [1, 4])
  t.equal(s.stats.failed, 2)
})

t.test('for await over Readable.from(...).pipe(stream), and duplicate ids in flight fail alone', async (t) => {
  const server = await startServer(t)
  const s = new InferenceStream<{ k: string }>({ url: server.url, model: 'builtin/echo', token: 'd', id: (r) => r.k, input: (r) => ({ inputs: r.k }), ordered: false })
  const results = await collect(Readable.from([{ k: 'a' }, { k: 'a' }, { k: 'b' }]).pipe(s))
  t.equal(results.length, 3)
  const failed = (results as InferenceResult[]).filter((r) => r.error)
  t.equal(failed.length, 1)
  t.match(failed[0].error, { code: 'ERR_INVALID_PAYLOAD', message: /already in flight/ })
})

t.test('a refused handshake: the HTTP status and the server\'s words, read from ws\'s unexpected-response', async (t) => {
  const { createServer } = await import('node:http')
  const answers: Record<string, [number, string]> = {
    '/a/bulk/stream/cpu/builtin/echo': [404, JSON.stringify({ error: 'No websocket endpoint here' })],
    '/b/bulk/stream/cpu/builtin/echo': [401, 'go away'],
    '/c/bulk/stream/cpu/builtin/echo': [503, JSON.stringify({ error: 'Server is shutting down' })],
  }
  const http = createServer((req, res) => {
    const [status, body] = answers[req.url ?? ''] ?? [500, '']
    res.writeHead(status, { 'content-type': 'text/plain' }).end(body)
  })
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', r))
  t.teardown(() => http.close())
  const base = `http://127.0.0.1:${(http.address() as { port: number }).port}`
  const run = (path: string) => pipeline(Readable.from(['x']), new InferenceStream({ url: `${base}${path}`, model: 'builtin/echo', token: 't' }), sink([]))
  await t.rejects(run('/a'), { name: 'ProtocolError', code: 'ERR_PROTOCOL', message: /\/a\/bulk\/stream\/cpu\/builtin\/echo is not a stream endpoint \(HTTP 404: No websocket endpoint here\)$/ })
  await t.rejects(run('/b'), { name: 'AuthenticationError', message: /refused the connection \(HTTP 401: go away\)$/ })
  await t.rejects(run('/c'), { name: 'ConnectionLostError', message: /Cannot reach .*\/c\/bulk\/stream\/cpu\/builtin\/echo \(HTTP 503: Server is shutting down\); nothing was sent$/ })
})

// InferenceStream over several front-ends sharing one state backend: the first connection takes the
// first that answers, a cut fails over to the next (round robin) and resumes there with the v1
// resume query (legacy: resends, deduplicated by the shared state); nothing runs or is billed twice.
import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync } from 'node:fs'
import { createServer as createNetServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import t, { type Test } from 'tap'
import { InferenceStream, type InferenceResult } from '../lib/client/inference-stream.js'
import { createServer, type InferenceServer } from '../lib/server/server.js'
import type { ServerOptions } from '../lib/server/options.js'
import { MemoryStateBackend } from '../lib/server/state/memory-backend.js'

const MODEL = 'builtin/echo'

/** A port nothing listens on (it was bound, then closed). */
async function deadPort(): Promise<number> {
  const s = createNetServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()))
  const port = (s.address() as { port: number }).port
  await new Promise((r) => s.close(r))
  return port
}

/**
 * Two front-ends `a` and `b` on one MemoryStateBackend (one tenant secret, so a token is the same
 * tenant on both), each on its own port; the state is closed after both.
 */
async function cluster(t: Test, options: ServerOptions = {}): Promise<{ state: MemoryStateBackend; a: InferenceServer; b: InferenceServer }> {
  const state = new MemoryStateBackend({ maxRetained: 100_000, retentionMs: 600_000 })
  const tenantSecret = randomBytes(32)
  const a = createServer({ state, nodeId: 'a', tenantSecret, shutdownTimeoutMs: 0, ...options })
  const b = createServer({ state, nodeId: 'b', tenantSecret, shutdownTimeoutMs: 0, ...options })
  await a.listen(0)
  await b.listen(0)
  t.teardown(async () => {
    await a.close()
    await b.close()
    await state.close()
  })
  return { state, a, b }
}

/** Kills a front-end as abruptly as this process allows: no new connections, its streams cut now, its workers stopped. */
function kill(server: InferenceServer): Promise<void> {
  const closed = server.close()
  server.terminateStreams()
  return closed
}

/** Items of `model` billed to all tenants, read from the shared state's ledger. */
async function billed(state: MemoryStateBackend, model = MODEL): Promise<number> {
  return (await state.ledger()).filter((e) => e.model === model).reduce((n, e) => n + e.items, 0)
}

function collectInto(out: number[], each?: (n: number) => void): Writable {
  return new Writable({
    objectMode: true,
    write(r: InferenceResult, _e, cb) {
      out.push(r.outputs as number)
      each?.(out.length)
      cb()
    },
  })
}

t.test('front-end A dies mid-stream: the client fails over to B, every result once, in order, the shared ledger bills each item once', async (t) => {
  for (const protocol of ['v1', 'legacy'] as const) {
    await t.test(protocol, async (t) => {
      const { state, a, b } = await cluster(t, { maxBatch: 16 })
      const N = 3000
      const stream = new InferenceStream<number>({
        url: [a.url, b.url],
        model: MODEL,
        token: `failover-${protocol}`,
        protocol,
        maxInFlight: 400,
        parameters: { delay_ms: 2 },
        input: (n) => ({ inputs: n }),
        reconnect: { minDelayMs: 20, maxDelayMs: 100 },
      })
      const reconnecting: string[] = []
      stream.on('reconnecting', (_attempt: number, _delay: number, _cause: Error, url: string) => reconnecting.push(url))
      t.equal(stream.url, `${a.url.replace('http:', 'ws:')}/bulk/stream/cpu/${MODEL}`, 'starts on the first URL')
      let killed: Promise<void> | undefined
      const out: number[] = []
      await pipeline(
        Readable.from([...Array(N).keys()]),
        stream,
        collectInto(out, (n) => {
          if (n === 1000) {
            t.ok(stream.inFlight > 0, `${stream.inFlight} items in flight when A dies`)
            killed = kill(a)
          }
        }),
      )
      await killed
      t.same(out, [...Array(N).keys()], 'every input exactly one result, in order')
      t.equal(stream.stats.reconnects, 1, 'one failover')
      t.ok(reconnecting.length >= 1 && reconnecting[0].startsWith(b.url.replace('http:', 'ws:')), `the reconnect went to B (${reconnecting.join(', ')})`)
      t.ok(stream.url.startsWith(b.url.replace('http:', 'ws:')), 'finished on B')
      t.equal(await billed(state), N, 'the shared ledger bills each item once')
      if (protocol === 'v1') t.ok(stream.stats.resent < 400, `v1 resent only ids B did not know (${stream.stats.resent})`)
    })
  }
})

t.test('items A took, finished after the failover with nothing else in flight, still reach the client on B (asked about again)', async (t) => {
  const { state, a, b } = await cluster(t, { maxBatch: 4 })
  const N = 20
  const stream = new InferenceStream<number>({
    url: [a.url, b.url],
    model: MODEL,
    token: 'tail',
    parameters: { delay_ms: 150 },
    input: (n) => ({ inputs: n }),
    reconnect: { minDelayMs: 10, maxDelayMs: 20 },
  })
  const out: number[] = []
  const done = pipeline(Readable.from([...Array(N).keys()]), stream, collectInto(out))
  // Every item sent to A and taken by it (queued or running under A's name) before A dies.
  while (stream.stats.sent < N) await new Promise((r) => setTimeout(r, 5))
  for (const deadline = Date.now() + 10_000; (await state.stats()).queued + (await state.stats()).processing < N && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 5))
  await kill(a)
  // B's workers run them now; their results are routed to A's node, which has no stream: B hands
  // them over when the client asks about them again.
  await done
  t.same(out, [...Array(N).keys()])
  t.equal(stream.stats.reconnects, 1)
  t.equal(stream.stats.resent, 0, 'B knew every id: none was sent again')
  t.equal(await billed(state), N)
})

t.test('the first URL is down from the start: the stream runs on the next one', async (t) => {
  const { state, b } = await cluster(t)
  const down = `http://127.0.0.1:${await deadPort()}`
  const stream = new InferenceStream<number>({ url: [down, b.url], model: MODEL, token: 'first-down', input: (n) => ({ inputs: n }) })
  const skipped: string[] = []
  stream.on('unreachable', (url: string) => skipped.push(url))
  const out: number[] = []
  await pipeline(Readable.from([...Array(200).keys()]), stream, collectInto(out))
  t.same(out, [...Array(200).keys()])
  t.same(skipped, [`${down.replace('http:', 'ws:')}/bulk/stream/cpu/${MODEL}`], 'the dead URL was skipped once')
  t.equal(stream.stats.reconnects, 0, 'skipping a URL at the start is not a reconnect')
  t.equal(await billed(state), 200)
})

t.test('no URL answers: fails fast, naming every URL tried, nothing sent', async (t) => {
  const p1 = await deadPort()
  const p2 = await deadPort()
  const started = Date.now()
  const stream = new InferenceStream<number>({ url: [`http://127.0.0.1:${p1}`, `http://127.0.0.1:${p2}`], model: MODEL, token: 't', input: (n) => ({ inputs: n }) })
  await t.rejects(pipeline(Readable.from([1, 2, 3]), stream, collectInto([])), {
    name: 'ConnectionLostError',
    code: 'ERR_CONNECTION_LOST',
    unanswered: 0,
    message: new RegExp(`^Cannot reach any of the 2 endpoints tried: ws://127\\.0\\.0\\.1:${p1}/bulk/stream/cpu/builtin/echo \\(.*ECONNREFUSED.*\\), ws://127\\.0\\.0\\.1:${p2}/bulk/stream/cpu/builtin/echo \\(.*ECONNREFUSED.*\\); nothing was sent$`),
  })
  t.ok(Date.now() - started < 5000, `failed fast (${Date.now() - started} ms)`)
})

t.test('a refusal retrying cannot fix is not failed over: a bad token on the first URL fails the stream', async (t) => {
  const { b } = await cluster(t, { tokens: ['good'] })
  const stream = new InferenceStream({ url: [b.url, `http://127.0.0.1:${await deadPort()}`], model: MODEL, token: 'bad' })
  await t.rejects(pipeline(Readable.from(['x']), stream, collectInto([])), { name: 'AuthenticationError', code: 'ERR_AUTHENTICATION' })
})

t.test('every server gone after a cut: the budget counts attempts across the list, the error names them', async (t) => {
  const { a, b } = await cluster(t)
  const stream = new InferenceStream<number>({
    url: [a.url, b.url],
    model: MODEL,
    token: 'all-gone',
    parameters: { delay_ms: 10_000 },
    input: (n) => ({ inputs: n }),
    reconnect: { maxAttempts: 4, minDelayMs: 10, maxDelayMs: 20 },
  })
  const tried: string[] = []
  stream.on('reconnecting', (_n: number, _d: number, _c: Error, url: string) => tried.push(new URL(url).port))
  const pa = new URL(a.url).port
  const pb = new URL(b.url).port
  const done = pipeline(Readable.from([1, 2, 3]), stream, collectInto([]))
  while (stream.stats.sent < 3) await new Promise((r) => setTimeout(r, 5))
  await Promise.all([kill(b), kill(a)])
  await t.rejects(done, { code: 'ERR_CONNECTION_LOST', unanswered: 3, message: /^Could not reconnect to any of ws:.*, ws:.* after 4 attempts \(the last, to ws:.*\).*3 items sent and unanswered$/ })
  t.same(tried, [pb, pa, pb, pa], 'round robin from the URL that was cut, one budget for the list')
})

t.test('option checks: an empty list, different models, a URL twice', async (t) => {
  t.throws(() => new InferenceStream({ url: [], model: MODEL, token: 't' }), { code: 'ERR_INVALID_OPTION', message: /at least one server/ })
  t.throws(() => new InferenceStream({ url: ['ws://a:1/bulk/stream/cpu/x', 'ws://b:1/bulk/stream/cpu/y'], token: 't' }), { code: 'ERR_INVALID_OPTION', message: /same compute and model/ })
  t.throws(() => new InferenceStream({ url: ['http://a:1', 'http://a:1/'], model: MODEL, token: 't' }), { code: 'ERR_INVALID_OPTION', message: /twice/ })
  t.throws(() => new InferenceStream({ url: ['http://a:1', 7 as unknown as string], model: MODEL, token: 't' }), { code: 'ERR_INVALID_OPTION', message: /"url"\[1\] must be a URL string/ })
  // Path prefixes may differ (front-ends behind different proxies): the model part is what counts.
  const s = new InferenceStream({ url: ['http://127.0.0.1:9/x', 'http://127.0.0.1:9/y/'], model: MODEL, token: 't', reconnect: false })
  s.on('error', () => {})
  t.same(s.urls, ['ws://127.0.0.1:9/x/bulk/stream/cpu/builtin/echo', 'ws://127.0.0.1:9/y/bulk/stream/cpu/builtin/echo'])
  s.destroy()
})

t.test('checkpoint: a run on A stopped, A died; the resume with the list in another order finishes on B, each row once', async (t) => {
  const { state, a, b } = await cluster(t, { maxBatch: 8 })
  const path = join(mkdtempSync(join(tmpdir(), 'is-failover-')), 'run.ckpt')
  const N = 1200
  const records = [...Array(N).keys()]
  const crash = new Error('simulated crash')
  const runOnce = async (url: string[], stopAfter?: number): Promise<{ out: number[]; stream: InferenceStream<number> }> => {
    const stream = new InferenceStream<number>({
      url,
      model: MODEL,
      token: 'ckpt-failover',
      checkpoint: { path, commitIntervalMs: 5 },
      parameters: { delay_ms: 3 },
      input: (r) => ({ inputs: r }),
      maxInFlight: 128,
    })
    const out: number[] = []
    await pipeline(
      Readable.from(records),
      stream,
      new Writable({
        objectMode: true,
        write(r: InferenceResult, _e, cb) {
          out.push(r.outputs as number)
          cb(stopAfter !== undefined && out.length >= stopAfter ? crash : null)
        },
      }),
    ).catch((err: unknown) => {
      if (err !== crash) throw err
    })
    return { out, stream }
  }
  const aUrl = a.url
  const first = await runOnce([aUrl, b.url], 300)
  t.equal(first.out.length, 300)
  // A dies with the first run's last items queued or running there: their results, when B's
  // workers finish them, are routed to A's node, which has no stream any more.
  await kill(a)
  for (const deadline = Date.now() + 10_000; existsSync(`${path}.lock`) && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 10))
  const second = await runOnce([b.url, aUrl])
  t.same(second.out, records, 'the whole output again, in order, each row once')
  t.ok(second.stream.stats.replayed >= 300, `replayed ${second.stream.stats.replayed} from the journal`)
  t.equal(await billed(state), N, 'billed once per row across both servers')
})

t.test('a checkpoint names what is run, not where: a base URL path prefix (old checkpoints kept it) does not refuse a resume', async (t) => {
  const { CheckpointJournal } = await import('../lib/client/checkpoint-journal.js')
  const path = join(mkdtempSync(join(tmpdir(), 'is-failover-')), 'prefix.ckpt')
  const j = await CheckpointJournal.open(path, { model: '/proxy/bulk/stream/cpu/builtin/echo', parameters: '' })
  j.appendSent('x-0', 'h')
  await j.close()
  const again = await CheckpointJournal.open(path, { model: '/bulk/stream/cpu/builtin/echo', parameters: '' })
  t.equal(again.unansweredCount, 1, 'the same model, another prefix: resumed')
  await again.close()
  await t.rejects(CheckpointJournal.open(path, { model: '/bulk/stream/gpu/builtin/echo', parameters: '' }), { code: 'ERR_CHECKPOINT', message: /builtin\/echo, not builtin\/echo \(gpu\)/ })
})

// The process roles of a cluster, in one process over each shared state backend: a front-end with
// `workers: 0` (a catalogue of the models, never loaded) and worker runners (`createWorker`)
// serving some models each. The multi-process version, with SIGKILL and SIGSTOP, is
// test/cluster*.ts.
import { randomBytes } from 'node:crypto'
import { Readable } from 'node:stream'
import t, { type Test } from 'tap'
import WebSocket from 'ws'
import { InvalidOptionError } from '../lib/errors.js'
import { InferenceStream, type InferenceResult } from '../lib/client/inference-stream.js'
import { createModelRegistry } from '../lib/models/registry.js'
import type { Pipeline } from '../lib/models/pipeline.js'
import { createServer } from '../lib/server/server.js'
import type { StateBackend } from '../lib/server/state/state-backend.js'
import { createWorker } from '../lib/server/worker.js'
import { STATE_BACKENDS } from './helpers/backends.js'

/** A model that counts its loads and runs: upper-cases its inputs. */
function countingModel(id: string): Pipeline & { loads: number; runs: number } {
  let loaded = false
  const m = {
    id,
    task: 'text-generation',
    loads: 0,
    runs: 0,
    async load() {
      m.loads++
      loaded = true
    },
    loadState: () => ({ state: loaded ? ('ready' as const) : ('unloaded' as const) }),
    async run(inputs: unknown[]) {
      m.runs++
      return inputs.map((x) => String(x).toUpperCase())
    },
  }
  return m
}

async function collect(stream: InferenceStream, items: string[]): Promise<InferenceResult[]> {
  const out: InferenceResult[] = []
  Readable.from(items.map((inputs) => ({ inputs }))).pipe(stream)
  for await (const r of stream) out.push(r as InferenceResult)
  return out
}

/** Status messages a raw stream hears in its first `ms`. */
async function statuses(url: string, ms: number): Promise<Array<Record<string, unknown>>> {
  const ws = new WebSocket(url)
  const got: Array<Record<string, unknown>> = []
  ws.on('open', () => ws.send('Bearer tok'))
  ws.on('message', (m) => got.push(JSON.parse(String(m)) as Record<string, unknown>))
  await new Promise((r) => setTimeout(r, ms))
  ws.close()
  return got
}

t.test('workers: 0 needs a shared state', async (t) => {
  t.throws(() => createServer({ workers: 0 }), InvalidOptionError)
  t.throws(() => createServer({ workers: 0 }), /shared "state"/)
})

t.test('createWorker refuses a model its registry lacks', async (t) => {
  const state = STATE_BACKENDS[0].make()
  t.teardown(() => state.close())
  t.throws(() => createWorker({ state, registry: createModelRegistry({ transformers: false }), models: ['nope/model'] }), /nope\/model is not served/)
})

for (const backend of STATE_BACKENDS) {
  t.test(`${backend.name}: a front-end runs no model; workers run those they serve`, async (t) => {
    const state: StateBackend = backend.make()
    const upper = countingModel('test/upper')
    const frontModel = countingModel('test/upper')
    const frontRegistry = createModelRegistry({ transformers: false, models: [frontModel] })
    const front = createServer({ state, workers: 0, tenantSecret: randomBytes(32), registry: frontRegistry, shutdownTimeoutMs: 0 })
    const url = await front.listen(0)
    const echoOnly = createWorker({ state, registry: createModelRegistry({ transformers: false }), models: ['builtin/echo'], workers: 2 })
    let upperWorker: ReturnType<typeof createWorker> | undefined
    t.teardown(async () => {
      await front.close()
      await echoOnly.close()
      await upperWorker?.close()
      await state.close()
    })
    const health = (await (await fetch(`${url}/health`)).json()) as Record<string, any>
    t.equal(health.workers, 0)
    t.same(health.workers_online.map((w: { models: string[] }) => w.models), [['builtin/echo']], '/health lists the worker online and its models')

    // A model the front-end knows and no worker serves: the stream is told, its items wait.
    const heard = await statuses(front.streamUrl('test/upper'), 500)
    t.match(heard.map((m) => m.message).join('\n'), /No worker process serves test\/upper now \(1 online\)/)

    const echo = await collect(new InferenceStream({ url, model: 'builtin/echo', token: 'tok' }), ['a', 'b', 'c'])
    t.same(echo.map((r) => r.outputs), ['a', 'b', 'c'], 'echo runs on the echo worker')

    const waiting = new InferenceStream({ url, model: 'test/upper', token: 'tok' })
    const upperDone = collect(waiting, ['x', 'y'])
    await new Promise((r) => setTimeout(r, 300))
    // (Redis: a worker that does not serve the model may hold them for a moment while it looks: it hands them back at once.)
    const s = await state.stats()
    t.equal(s.queued + s.processing, 2, 'items of a model no worker serves stay queued')
    t.equal(await front.billed('tok'), 3, 'and are not run')
    upperWorker = createWorker({ state, registry: createModelRegistry({ transformers: false, models: [upper] }), models: ['test/upper'] })
    t.same((await upperDone).map((r) => r.outputs), ['X', 'Y'], 'a worker that serves it runs them once it starts')
    t.equal(upper.runs > 0, true)
    t.equal((front.registry.get('test/upper') as Pipeline).load, undefined, "the front-end's pipelines cannot load")
    t.same([frontModel.loads, frontModel.runs], [0, 0], "the front-end's model was never loaded nor run")
    t.equal(await front.billed('tok'), 5, 'the ledger is the shared one')
  })
}

t.test('a worker serves /health and /metrics only; /metrics for loopback or the metrics token', async (t) => {
  const state = STATE_BACKENDS[0].make()
  const worker = createWorker({ state, registry: createModelRegistry({ transformers: false }), workers: 3, metricsToken: 'm-secret' })
  const url = await worker.listen(0)
  t.teardown(async () => {
    await worker.close()
    await state.close()
  })
  const health = (await (await fetch(`${url}/health`)).json()) as Record<string, any>
  t.match(health, { status: 'ok', role: 'worker', node: worker.node, busy: 0, workers: 3 })
  t.ok(health.models.includes('builtin/echo'))
  t.equal((await fetch(`${url}/metrics`)).status, 401, 'a metrics token set: needed even from loopback')
  const metrics = await fetch(`${url}/metrics`, { headers: { authorization: 'Bearer m-secret' } })
  t.equal(metrics.status, 200)
  t.match(await metrics.text(), /inference_stream_queue_items/)
  t.equal((await fetch(`${url}/bulk/stream/cpu/builtin/echo`)).status, 404)
})

t.test('a front-end on a shared state closes without waiting for the cluster\'s queue', async (t: Test) => {
  const state = STATE_BACKENDS[0].make()
  t.teardown(() => state.close())
  const front = createServer({ state, workers: 0, tenantSecret: randomBytes(32), shutdownTimeoutMs: 20_000 })
  const url = await front.listen(0)
  const res = await fetch(`${url}/models/builtin/echo`, { method: 'POST', body: JSON.stringify({ inputs: 'never run' }), signal: AbortSignal.timeout(300) }).catch((err: Error) => err)
  t.type(res, Error, 'no worker: the request waits')
  const started = Date.now()
  await front.close()
  t.ok(Date.now() - started < 5000, `closed in ${Date.now() - started} ms, not after shutdownTimeoutMs`)
  t.equal((await state.stats()).queued, 1, 'the item stays queued for the cluster')
})

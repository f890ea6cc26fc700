import t from 'tap'
import { createModelRegistry } from '../lib/models/registry.js'
import type { Pipeline } from '../lib/models/pipeline.js'
import { connect } from './helpers/ws-client.js'
import { startServer } from './helpers/server.js'

function recorder(delayMs: number): Pipeline & { batches: number[]; params: unknown[] } {
  const p = {
    id: 'test/recorder',
    task: 'echo',
    batches: [] as number[],
    params: [] as unknown[],
    async run(inputs: unknown[], parameters: Record<string, unknown>) {
      p.batches.push(inputs.length)
      p.params.push(parameters)
      await new Promise((r) => setTimeout(r, delayMs))
      return inputs
    },
  }
  return p
}

t.test('the queue batches: with maxBatch 32 and many items queued, the model sees batches > 1', async (t) => {
  const model = recorder(10)
  const registry = createModelRegistry({ models: [model] })
  t.teardown(() => registry.close())
  const server = await startServer(t, { registry, maxBatch: 32, workers: 2 })
  const c = await connect(server.streamUrl('test/recorder'))
  const N = 1000
  for (let i = 0; i < N; i++) c.send({ id: `q${i}`, inputs: i })
  await c.waitFor(() => c.results().size === N, 'all results')
  t.equal(model.batches.reduce((a, b) => a + b, 0), N, 'every item run once')
  t.ok(Math.max(...model.batches) > 1, `largest batch ${Math.max(...model.batches)}`)
  t.ok(model.batches.every((b) => b <= 32), 'no batch over maxBatch')
  t.ok(model.batches.length < N / 4, `${model.batches.length} model calls for ${N} items`)
  await c.close()
})

t.test('batches never mix parameters', async (t) => {
  const model = recorder(5)
  const registry = createModelRegistry({ models: [model] })
  t.teardown(() => registry.close())
  const server = await startServer(t, { registry, maxBatch: 64, workers: 1 })
  const c = await connect(server.streamUrl('test/recorder'))
  for (let i = 0; i < 300; i++) c.send({ id: `p${i}`, inputs: i, parameters: { k: i % 3, z: 1 } })
  await c.waitFor(() => c.results().size === 300, 'all results')
  // Key order does not matter: {z, k} batches with {k, z}.
  t.equal(new Set(model.params.map((p) => JSON.stringify(p))).size, 3)
  t.equal(model.batches.reduce((a, b) => a + b, 0), 300)
  await c.close()
})

t.test('flow control: a token with too much queued stops being read, memory stays bounded', async (t) => {
  const model = recorder(5)
  const registry = createModelRegistry({ models: [model] })
  t.teardown(() => registry.close())
  const limit = 64
  const server = await startServer(t, { registry, maxBatch: 32, workers: 1, maxQueuedPerToken: limit })
  const c = await connect(server.streamUrl('test/recorder'), { token: 'flood' })
  const N = 20_000
  let peak = 0
  const sampler = setInterval(() => {
    void server.counts('flood', 'test/recorder').then((k) => (peak = Math.max(peak, k.queued + k.processing + k.undelivered)))
  }, 2)
  for (let i = 0; i < N; i++) c.send({ id: `f${i}`, inputs: i })
  await c.waitFor(() => c.results().size === N, 'all results', 60_000)
  clearInterval(sampler)
  // Pausing the socket takes effect after the frames already read from the kernel: the bound is
  // the limit plus what one read can hold, never the whole input.
  t.ok(peak >= limit, `reached the limit (${peak})`)
  t.ok(peak < N / 4, `server-side backlog bounded: peak ${peak} for ${N} sent`)
  t.ok(c.ws.bufferedAmount === 0, 'client send buffer drained')
  t.equal(await server.billed('flood'), N)
  await c.close()
})

t.test('status messages on connect and while work is pending', async (t) => {
  const server = await startServer(t, { statusIntervalMs: 50 })
  const c = await connect(server.streamUrl('builtin/echo'))
  await c.waitFor(() => c.messages.length > 0, 'connect status')
  t.match(c.messages[0], { type: 'status', message: 'Connected to builtin/echo (cpu)', queued: 0, processing: 0 })
  for (let i = 0; i < 40; i++) c.send({ id: `s${i}`, inputs: i, parameters: { delay_ms: 100 } })
  await c.waitFor(() => c.results().size === 40, 'all results')
  const periodic = c.messages.filter((m) => m.type === 'status' && /queued/.test(m.message as string))
  t.ok(periodic.length >= 1, `periodic status messages: ${periodic.length}`)
  t.match(periodic[0], { queued: Number, processing: Number })
  await c.close()
})

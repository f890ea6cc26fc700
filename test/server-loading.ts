// Models that load (Pipeline.load / loadState): one worker waits for a loading model while the
// others keep serving other models; streams hear loading status; HTTP answers 503 with
// estimated_time unless wait_for_model; shutdown during a load hands the batch back unbilled.
import t from 'tap'
import type { ModelLoadState, Parameters, Pipeline } from '../lib/models/pipeline.js'
import { createModelRegistry } from '../lib/models/registry.js'
import { startServer } from './helpers/server.js'
import { connect } from './helpers/ws-client.js'

/** A model whose load takes `ms` (or never ends until `finish()`), counting loads and batches. */
class SlowLoading implements Pipeline {
  readonly task = 'echo'
  loads = 0
  batches = 0
  private state: ModelLoadState = { state: 'unloaded', estimatedTime: 7 }
  private loading: Promise<void> | undefined
  finish: () => void = () => {}
  constructor(readonly id: string, private readonly ms: number | 'forever') {}
  loadState(): ModelLoadState {
    return this.state
  }
  load(): Promise<void> {
    this.loading ??= new Promise<void>((resolve) => {
      this.loads++
      this.state = { state: 'loading', estimatedTime: 7 }
      this.finish = () => {
        this.state = { state: 'ready' }
        resolve()
      }
      if (this.ms !== 'forever') setTimeout(this.finish, this.ms)
    })
    return this.loading
  }
  async run(inputs: unknown[], _p: Parameters): Promise<unknown[]> {
    await this.load()
    this.batches++
    return inputs
  }
}

t.test('a loading model holds one worker; other models are served meanwhile; status and 503 say it is loading', async (t) => {
  const slow = new SlowLoading('slow/model', 1500)
  const registry = createModelRegistry({ models: [slow] })
  t.teardown(() => registry.close())
  // Three workers: one tenant holds at most workers - 1 (one is left for other tenants), so two.
  const server = await startServer(t, { tokens: ['t'], registry, workers: 3, maxBatch: 4, statusIntervalMs: 100 })

  const a = await connect(server.streamUrl('slow/model'), { token: 't' })
  t.teardown(() => a.close())
  for (let i = 0; i < 40; i++) a.send({ id: `s${i}`, inputs: i })
  await a.waitFor(() => slow.loads === 1, 'the load to start')

  const started = Date.now()
  const b = await connect(server.streamUrl('builtin/echo'), { token: 't' })
  t.teardown(() => b.close())
  for (let i = 0; i < 40; i++) b.send({ id: `e${i}`, inputs: i })
  await b.waitFor(() => b.results().size === 40, 'echo results while the other model loads')
  t.ok(Date.now() - started < 1000, `echo answered in ${Date.now() - started} ms, before the load ended`)
  t.equal(slow.loadState().state, 'loading', 'and the slow model was still loading then')
  t.equal(a.results().size, 0)

  const http = await fetch(`${server.url}/models/slow/model`, { method: 'POST', headers: { authorization: 'Bearer t' }, body: '{"inputs":1}' })
  t.equal(http.status, 503)
  t.same(await http.json(), { error: 'Model slow/model is currently loading', code: 'ERR_MODEL_LOADING', estimated_time: 7 })

  await a.waitFor(() => a.results().size === 40, 'the slow model results', 10_000)
  t.equal(slow.loads, 1, 'loaded once')
  const statuses = a.messages.filter((m) => m.type === 'status') as Array<{ loading?: boolean; estimated_time?: number }>
  t.ok(statuses.filter((s) => s.loading === true).length >= 2, 'loading status at connect and on the interval')
  t.ok(statuses.some((s) => s.loading === false), 'then loaded')
  t.equal(await server.billed('t'), 80)

  const waited = await fetch(`${server.url}/models/slow/model`, { method: 'POST', headers: { authorization: 'Bearer t' }, body: '{"inputs":5,"options":{"wait_for_model":true}}' })
  t.equal(waited.status, 200)
  t.same(await waited.json(), 5)
})

t.test('shutdown while a model loads: the waiting batch goes back to the queue, unbilled', async (t) => {
  const stuck = new SlowLoading('stuck/model', 'forever')
  const registry = createModelRegistry({ models: [stuck] })
  t.teardown(() => registry.close())
  const server = await startServer(t, { tokens: ['t'], registry, workers: 2, shutdownTimeoutMs: 200 })
  const c = await connect(server.streamUrl('stuck/model'), { token: 't' })
  for (let i = 0; i < 3; i++) c.send({ id: `x${i}`, inputs: i })
  await c.waitFor(() => stuck.loads === 1, 'the load to start')
  const t0 = Date.now()
  await server.close()
  t.ok(Date.now() - t0 < 5000, 'close did not wait for the load')
  t.equal(await server.billed('t'), 0)
  t.equal(stuck.batches, 0)
  await c.closed
})

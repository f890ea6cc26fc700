import t from 'tap'
import { isLoopback } from '../lib/server/server.js'
import { connect } from './helpers/ws-client.js'
import { startServer } from './helpers/server.js'
import { until } from './helpers/until.js'

t.test('/health reports models and queue depth', async (t) => {
  const server = await startServer(t)
  const res = await fetch(`${server.url}/health`)
  t.equal(res.status, 200)
  const body = (await res.json()) as { models: string[] }
  t.match(body, { status: 'ok', queued: 0, processing: 0, streams: 0 })
  t.ok(body.models.includes('builtin/echo') && body.models.includes('builtin/sentiment'))
})

t.test('/metrics shows the bill per tenant label, in Prometheus text', async (t) => {
  const server = await startServer(t)
  const c = await connect(server.streamUrl('builtin/echo'), { token: 'metered' })
  for (let i = 0; i < 30; i++) c.send({ id: `x${i}`, inputs: i })
  await c.waitFor(() => c.results().size === 30, 'results')
  for (let i = 0; i < 30; i++) c.send({ id: `x${i}`, inputs: i }) // finished duplicates: answered again, not billed
  await c.waitFor(() => c.messages.filter((m) => m.type === 'results').length === 60, 'duplicates answered')
  const res = await fetch(`${server.url}/metrics`)
  t.match(res.headers.get('content-type'), /text\/plain/)
  const text = await res.text()
  t.match(text, `inference_stream_billed_items_total{tenant="${server.tenants.defaultTenant('metered').name}"} 30`)
  t.notMatch(text, 'metered', 'the token itself never appears')
  t.match(text, /inference_stream_duplicate_items_total\{state="(pending|done)"\} \d+/)
  t.match(text, /inference_stream_batch_size_bucket/)
  await c.close()
})

t.test('unknown paths answer 404 with a JSON error, HTTP and websocket', async (t) => {
  const server = await startServer(t)
  const res = await fetch(`${server.url}/nope`)
  t.equal(res.status, 404)
  t.match(await res.json(), { error: /Not found: GET \/nope/ })
  await t.rejects(connect(`${server.url.replace('http', 'ws')}/bulk/stream/tpu/builtin/echo`), /Unexpected server response: 404/)
})

t.test('isLoopback', async (t) => {
  for (const a of ['127.0.0.1', '127.1.2.3', '::1', '::ffff:127.0.0.1']) t.ok(isLoopback(a), a)
  for (const a of ['10.0.0.1', '192.168.1.1', '::ffff:10.0.0.1', '', undefined]) t.notOk(isLoopback(a), String(a))
})

t.test('graceful shutdown: queued work finishes and is delivered, then 1001; new streams refused', async (t) => {
  const { createServer } = await import('../lib/server/server.js')
  const server = createServer({ maxBatch: 8 })
  await server.listen(0)
  const url = server.streamUrl('builtin/echo')
  const base = server.url
  const c = await connect(url)
  for (let i = 0; i < 40; i++) c.send({ id: `g${i}`, inputs: i, parameters: { delay_ms: 200 } })
  await until(async () => {
    const k = await server.counts('test-token', 'builtin/echo')
    return k.queued + k.processing === 40
  }, 'queued')
  const closing = server.close()
  const { code } = await c.closed
  await closing
  t.equal(code, 1001)
  t.equal(c.results().size, 40, 'every queued item answered before the close')
  t.match(c.messages.find((m) => m.type === 'status' && m.code === 'ERR_SHUTTING_DOWN'), { message: 'Server is shutting down' })
  await t.rejects(fetch(`${base}/health`), 'no longer listening')
})

// Byte budgets (DESIGN §4 "Fair share and bounds"): retained results are bounded in bytes, a
// tenant whose client does not read stops being read at its byte budget while another tenant is
// still served, and HTTP requests over the queued budget get 503 ERR_OVERLOADED.
import v8 from 'node:v8'
import vm from 'node:vm'
import t from 'tap'
import WebSocket from 'ws'
import { createModelRegistry } from '../lib/models/registry.js'
import type { Pipeline } from '../lib/models/pipeline.js'
import { SUBPROTOCOL_V1 } from '../lib/protocol.js'
import type { InferenceServer } from '../lib/server/server.js'
import type { StateBackend } from '../lib/server/state/state-backend.js'
import type { StreamHub } from '../lib/server/stream-hub.js'
import { startServer } from './helpers/server.js'
import { connect, countResults } from './helpers/ws-client.js'

const MiB = 1024 * 1024
const internals = (s: InferenceServer) => s as unknown as { state: StateBackend; hub: StreamHub }
const tenantId = (s: InferenceServer, token: string): string => (s.tenants.authenticate(token) as { id: string }).id

// A model whose every output is a fresh string of `size` characters: big results from small inputs.
function bigResults(size: number): Pipeline {
  return {
    id: 'test/big',
    task: 'echo',
    async run(inputs: unknown[]) {
      return inputs.map((i) => `${i}:`.padEnd(size, 'x'))
    },
  } as unknown as Pipeline
}

t.test('~1 GiB of 256 KiB results read and acked on v1: RSS stays near the retained budget', async (t) => {
  const registry = createModelRegistry({ models: [bigResults(256 * 1024)] })
  t.teardown(() => registry.close())
  const maxRetainedBytes = 64 * MiB
  const server = await startServer(t, { tokens: ['k'], registry, maxRetainedBytes, maxUndeliveredBytesPerTenant: 16 * MiB })
  // A gc function in this process (the server runs in it): measure live memory, not garbage.
  v8.setFlagsFromString('--expose-gc')
  const gc = vm.runInNewContext('gc') as (() => void) | undefined
  gc?.()
  const rss0 = process.memoryUsage().rss
  const N = Number(process.env.BIG_N ?? 4096) // × 256 KiB = 1 GiB
  const ws = new WebSocket(server.streamUrl('test/big'), [SUBPROTOCOL_V1])
  await new Promise((r) => ws.once('open', r))
  ws.send('Bearer k')
  let received = 0
  let maxRss = rss0
  let maxRetained = 0
  const store = internals(server).state
  const done = new Promise<void>((resolve) => {
    ws.on('message', (data) => {
      const v = JSON.parse(data.toString())
      const msgs = Array.isArray(v) ? v : [v]
      const ids: string[] = []
      for (const m of msgs) if (m.type === 'results') ids.push(m.id)
      received += ids.length
      if (ids.length > 0) ws.send(JSON.stringify({ type: 'ack', ids }))
      void store.stats().then((st) => (maxRetained = Math.max(maxRetained, st.retainedBytes)))
      if (received >= N) resolve()
    })
  })
  const sampler = setInterval(() => (maxRss = Math.max(maxRss, process.memoryUsage().rss)), 20)
  // Send in frames of 64 as the window allows (at most 128 unanswered).
  let sent = 0
  while (sent < N) {
    if (sent - received >= 128) {
      await new Promise((r) => setTimeout(r, 2))
      continue
    }
    const frame = []
    for (let i = 0; i < 64 && sent < N; i++) frame.push({ id: `i${sent++}`, inputs: sent })
    ws.send(JSON.stringify(frame))
  }
  await done
  clearInterval(sampler)
  ws.close()
  t.equal(received, N, 'every result arrived')
  t.ok(maxRetained <= maxRetainedBytes, `retained bytes peaked at ${(maxRetained / MiB).toFixed(1)} MiB <= 64 MiB`)
  t.ok((await store.stats()).retainedBytes <= maxRetainedBytes)
  gc?.()
  await new Promise((r) => setTimeout(r, 100))
  gc?.()
  const grew = (process.memoryUsage().rss - rss0) / MiB
  t.comment(`RSS growth after: ${grew.toFixed(0)} MiB, peak: ${((maxRss - rss0) / MiB).toFixed(0)} MiB (gc ${gc ? 'exposed' : 'not exposed'})`)
  t.ok(grew < 300, `RSS grew ${grew.toFixed(0)} MiB after ~1 GiB of results (bound 300 MiB)`)
})

t.test('a client that never reads stops being read at its byte budget; another tenant is still served', async (t) => {
  const budget = 1 * MiB
  const server = await startServer(t, { tokens: ['slow', 'other'], maxQueuedBytesPerTenant: budget, maxUndeliveredBytesPerTenant: budget })
  const store = internals(server).state
  const hub = internals(server).hub
  const slowTenant = tenantId(server, 'slow')
  const slow = await connect(server.streamUrl('builtin/echo'), { token: 'slow' })
  await slow.waitFor(() => slow.messages.length > 0, 'connect status')
  slow.ws.pause() // never reads from here on
  const text = 'z'.repeat(64 * 1024)
  const frameBytes = Buffer.byteLength(JSON.stringify({ id: 'i0000', inputs: text }))
  let peak = 0
  const sampler = setInterval(() => {
    void store.tenantBytes(slowTenant).then((b) => (peak = Math.max(peak, b.queued + b.undelivered)))
  }, 2)
  for (let i = 0; i < 200; i++) slow.send({ id: `i${String(i).padStart(4, '0')}`, inputs: text }) // 12.5 MiB
  await slow.waitFor(() => hub.sockets.tenantPaused(slowTenant), 'the slow tenant paused', 20_000)
  // Let everything that was read finish and pile up.
  await new Promise((r) => setTimeout(r, 500))
  const b = await store.tenantBytes(slowTenant)
  peak = Math.max(peak, b.queued + b.undelivered)
  t.ok(hub.sockets.tenantPaused(slowTenant), 'still paused')
  // Promise: queued + undelivered at most the budget plus what one socket read held when it paused
  // (the frame that crossed it and frames in the same read): two frames here.
  t.ok(peak <= budget + 2 * frameBytes, `queued+undelivered peaked at ${peak} bytes (budget ${budget} + 2 frames of ${frameBytes})`)
  t.ok(b.undelivered > 0, 'results wait undelivered')
  // Another tenant is served meanwhile.
  const other = await connect(server.streamUrl('builtin/echo'), { token: 'other' })
  for (let i = 0; i < 20; i++) other.send({ id: `o${i}`, inputs: `hello ${i}` })
  await other.waitFor(() => other.results().size === 20, 'the other tenant served')
  t.same(other.results().get('o7'), 'hello 7')
  // The slow client reads again: everything arrives, once each.
  slow.ws.resume()
  await slow.waitFor(() => slow.results().size === 200, 'all 200 results', 30_000)
  clearInterval(sampler)
  t.ok([...Array(200).keys()].every((i) => countResults(slow, `i${String(i).padStart(4, '0')}`) === 1), 'each once')
  t.equal(await server.billed('slow'), 200)
  await slow.close()
  await other.close()
})

t.test('HTTP: a request over the tenant\'s queued-bytes budget gets 503 ERR_OVERLOADED with retry-after', async (t) => {
  const server = await startServer(t, { tokens: ['k'], maxQueuedBytesPerTenant: 1000 })
  const post = (inputs: unknown, parameters?: unknown) =>
    fetch(`${server.url}/models/builtin/echo`, {
      method: 'POST',
      headers: { authorization: 'Bearer k', 'content-type': 'application/json' },
      body: JSON.stringify({ inputs, parameters, options: { use_cache: false } }),
    })
  const first = post('a'.repeat(800), { delay_ms: 400 }) // queued for 400 ms
  await new Promise((r) => setTimeout(r, 100))
  const second = await post('b'.repeat(400))
  t.equal(second.status, 503)
  t.equal(second.headers.get('retry-after'), '1')
  t.match(await second.json(), { code: 'ERR_OVERLOADED', error: /queued inputs are over their budget of 1000 bytes/ })
  const small = await post('c')
  t.equal(small.status, 200, 'a small one still fits')
  t.equal((await first).status, 200)
  const after = await post('b'.repeat(400))
  t.equal(after.status, 200, 'accepted again once the queue drained')
  t.equal(await server.billed('k'), 3, 'the refused request was not billed')
})

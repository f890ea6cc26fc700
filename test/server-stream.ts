import t from 'tap'
import { connect, countResults } from './helpers/ws-client.js'
import { startServer } from './helpers/server.js'
import { until } from './helpers/until.js'

t.test('round trip of many items, with and without ids, text and binary, legacy', async (t) => {
  const server = await startServer(t)
  const c = await connect(server.streamUrl('builtin/echo'))
  await c.waitFor(() => c.messages.some((m) => m.type === 'status'), 'connect status')
  const N = 500
  for (let i = 0; i < N; i++) c.send({ id: `item-${i}`, inputs: `text ${i}` }, { binary: i % 2 === 0 })
  for (let i = 0; i < N; i++) c.send({ inputs: { n: i } }, { binary: i % 2 === 1 })
  await c.waitFor(() => c.results().size === 2 * N, 'all results')
  const res = c.results()
  for (let i = 0; i < N; i++) t.equal(res.get(`item-${i}`), `text ${i}`)
  // Generated ids are returned with the result; every input comes back exactly once.
  const generated = [...res.entries()].filter(([id]) => !id.startsWith('item-'))
  t.equal(generated.length, N)
  t.same(generated.map(([, o]) => (o as { n: number }).n).sort((a, b) => a - b), [...Array(N).keys()])
  t.equal(new Set(generated.map(([id]) => id)).size, N, 'generated ids are distinct')
  t.equal(await server.billed('test-token'), 2 * N)
  await c.close()
})

t.test('round trip on v1: several payloads per frame, several results per frame, acks', async (t) => {
  const server = await startServer(t)
  const c = await connect(server.streamUrl('builtin/echo'), { v1: true, binaryAuth: true })
  t.equal(c.ws.protocol, 'inference-stream.v1')
  const N = 2000
  for (let i = 0; i < N; i += 100) {
    const frame = []
    for (let j = i; j < i + 100; j++) frame.push(j % 3 === 0 ? { inputs: j } : { id: `v${j}`, inputs: j })
    c.send(frame, { binary: i % 200 === 0 })
  }
  await c.waitFor(() => c.results().size === N, 'all results')
  t.ok(c.frames < N / 2, `results came batched: ${c.frames} frames for ${N} results`)
  const outputs = [...c.results().values()].sort((a, b) => (a as number) - (b as number))
  t.same(outputs, [...Array(N).keys()])
  c.send({ type: 'ack', ids: [...c.results().keys()] })
  t.equal(await server.billed('test-token'), N)
  await c.close()
})

t.test('a cut stream: results of items sent before the cut arrive after reconnect, none run twice', async (t) => {
  for (const v1 of [false, true]) {
    await t.test(v1 ? 'v1: nothing resent' : 'legacy', async (t) => {
      const server = await startServer(t, { maxBatch: 16 })
      const url = server.streamUrl('builtin/echo')
      const c1 = await connect(url, { v1, token: 'tok-cut' })
      const N = 300
      const params = { delay_ms: 20 }
      for (let i = 0; i < N; i++) c1.send({ id: `c${i}`, inputs: i, parameters: params })
      // Some results arrive, then the socket dies with work still queued.
      await c1.waitFor(() => c1.results().size >= 20, 'first results')
      c1.ws.terminate()
      await c1.closed
      const before = c1.results()
      const c2 = await connect(url, { v1, token: 'tok-cut' })
      const missing = (): string[] => {
        const out: string[] = []
        for (let i = 0; i < N; i++) if (!before.has(`c${i}`) && !c2.results().has(`c${i}`)) out.push(`c${i}`)
        return out
      }
      const idle = async (): Promise<boolean> => {
        const k = await server.counts('tok-cut', 'builtin/echo')
        return k.queued + k.processing + k.undelivered === 0
      }
      await until(async () => (await idle()) && (v1 ? missing().length === 0 : true), 'the rest after reconnect')
      if (!v1) {
        // Legacy has no acks: a result written to the socket just before it died is lost in transit
        // (documented). The legacy way to recover is to resend the ids without a result; finished
        // ones come back from retention, not run again.
        const lost = missing()
        t.ok(lost.length < N / 2, `lost in transit at the cut: ${lost.length}`)
        for (const id of lost) c2.send({ id, inputs: Number(id.slice(1)), parameters: params })
        await c2.waitFor(() => missing().length === 0, 'resent ids answered')
      }
      for (let i = 0; i < N; i++) {
        const id = `c${i}`
        t.equal(before.get(id) ?? c2.results().get(id), i, `${id} delivered`)
      }
      t.equal(await server.billed('tok-cut'), N, 'billed once per id')
      await c2.close()
    })
  }
})

t.test('v1 keeps unacked results across a cut', async (t) => {
  const server = await startServer(t)
  const url = server.streamUrl('builtin/echo')
  const c1 = await connect(url, { v1: true, token: 'tok-ack' })
  for (let i = 0; i < 50; i++) c1.send({ id: `k${i}`, inputs: i })
  await c1.waitFor(() => c1.results().size === 50, 'all results')
  // Ack only the first 20, then cut: the other 30 must come again on the next stream.
  c1.send({ type: 'ack', ids: [...Array(20).keys()].map((i) => `k${i}`) })
  await new Promise((r) => setTimeout(r, 50))
  c1.ws.terminate()
  await c1.closed
  const c2 = await connect(url, { v1: true, token: 'tok-ack' })
  await c2.waitFor(() => c2.results().size === 30, 'unacked results redelivered')
  for (let i = 20; i < 50; i++) t.equal(c2.results().get(`k${i}`), i)
  t.equal(await server.billed('tok-ack'), 50)
  await c2.close()
})

t.test('resending every id after reconnect does not raise the bill', async (t) => {
  const server = await startServer(t)
  const url = server.streamUrl('builtin/echo')
  const c1 = await connect(url, { token: 'tok-dup' })
  const N = 200
  for (let i = 0; i < N; i++) c1.send({ id: `d${i}`, inputs: i, parameters: { delay_ms: 5 } })
  await c1.waitFor(() => c1.results().size >= 50, 'some results')
  c1.ws.terminate()
  await c1.closed
  const c2 = await connect(url, { token: 'tok-dup' })
  // Resend everything, twice: queued, running and finished duplicates alike.
  for (let r = 0; r < 2; r++) for (let i = 0; i < N; i++) c2.send({ id: `d${i}`, inputs: i, parameters: { delay_ms: 5 } })
  await c2.waitFor(() => {
    for (let i = 0; i < N; i++) if (!c2.results().has(`d${i}`)) return false
    return true
  }, 'every id answered on the new stream')
  await until(async () => {
    const k = await server.counts('tok-dup', 'builtin/echo')
    return k.queued + k.processing === 0
  }, 'idle')
  t.equal(await server.billed('tok-dup'), N, 'billed once per id')
  for (let i = 0; i < N; i++) t.equal(c2.results().get(`d${i}`), i)
  await c2.close()
})

t.test('a result with no open stream waits for the next stream of its token', async (t) => {
  const server = await startServer(t)
  const url = server.streamUrl('builtin/echo')
  const c1 = await connect(url, { token: 'tok-away' })
  for (let i = 0; i < 20; i++) c1.send({ id: `w${i}`, inputs: i, parameters: { delay_ms: 100 } })
  await new Promise((r) => setTimeout(r, 30))
  await c1.close()
  // Work goes on while nobody is connected.
  const deadline = Date.now() + 5000
  while ((await server.counts('tok-away', 'builtin/echo')).undelivered < 20 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
  t.equal((await server.counts('tok-away', 'builtin/echo')).undelivered, 20, 'finished while disconnected')
  const c2 = await connect(url, { token: 'tok-away' })
  await c2.waitFor(() => c2.results().size === 20, 'delivered on open')
  await c2.close()
})

t.test('two tokens never see each other\'s results', async (t) => {
  const server = await startServer(t)
  const url = server.streamUrl('builtin/echo')
  const a = await connect(url, { token: 'alice' })
  const b = await connect(url, { token: 'bob' })
  for (let i = 0; i < 100; i++) {
    a.send({ id: `same${i}`, inputs: `alice ${i}` })
    b.send({ id: `same${i}`, inputs: `bob ${i}` })
  }
  await a.waitFor(() => a.results().size === 100, 'alice results')
  await b.waitFor(() => b.results().size === 100, 'bob results')
  for (let i = 0; i < 100; i++) {
    t.equal(a.results().get(`same${i}`), `alice ${i}`)
    t.equal(b.results().get(`same${i}`), `bob ${i}`)
    t.equal(countResults(a, `same${i}`), 1)
  }
  t.equal(await server.billed('alice'), 100)
  t.equal(await server.billed('bob'), 100)
  await a.close()
  await b.close()
})

t.test('with several open streams of a token each result goes to exactly one', async (t) => {
  const server = await startServer(t)
  const url = server.streamUrl('builtin/echo')
  const s1 = await connect(url, { token: 'multi' })
  const s2 = await connect(url, { token: 'multi' })
  for (let i = 0; i < 100; i++) (i % 2 ? s1 : s2).send({ id: `m${i}`, inputs: i })
  await s1.waitFor(() => s1.results().size + s2.results().size === 100, 'all results')
  await new Promise((r) => setTimeout(r, 50))
  for (let i = 0; i < 100; i++) t.equal(countResults(s1, `m${i}`) + countResults(s2, `m${i}`), 1)
  await s1.close()
  await s2.close()
})

t.test('ids are scoped per model: the same ids on two models of one token never mix', async (t) => {
  const server = await startServer(t)
  const echo = await connect(server.streamUrl('builtin/echo'), { token: 'scoped' })
  for (let i = 0; i < 3; i++) echo.send({ id: String(i), inputs: `text ${i}` })
  await echo.waitFor(() => echo.results().size === 3, 'echo results')
  const senti = await connect(server.streamUrl('builtin/sentiment'), { token: 'scoped' })
  for (let i = 0; i < 3; i++) senti.send({ id: String(i), inputs: `text ${i}` })
  await senti.waitFor(() => senti.results().size === 3, 'sentiment results')
  for (let i = 0; i < 3; i++) {
    t.equal(echo.results().get(String(i)), `text ${i}`)
    t.match(senti.results().get(String(i)), [[{ label: String, score: Number }, { label: String, score: Number }]])
  }
  t.equal(await server.billed('scoped'), 6)
  await echo.close()
  await senti.close()
})

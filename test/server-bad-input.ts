import t, { type Test } from 'tap'
import WebSocket from 'ws'
import { connect, type TestClient } from './helpers/ws-client.js'
import { startServer } from './helpers/server.js'
import type { StatusMessage } from '../lib/protocol.js'

// After each bad message, a good item must still come back: the stream carries on.
async function stillWorks(t: Test, c: TestClient, id: string): Promise<void> {
  c.send({ id, inputs: id })
  await c.waitFor(() => c.results().has(id), `result of ${id}`)
  t.equal(c.results().get(id), id, `stream still works after: ${id}`)
}

function lastStatus(c: TestClient): StatusMessage {
  const s = c.messages.filter((m) => m.type === 'status') as StatusMessage[]
  return s[s.length - 1]
}

t.test('each bad message gets a clear answer and the stream keeps working', async (t) => {
  const server = await startServer(t, { maxFrameBytes: 4096, maxInputsBytes: 1024, maxItemsPerFrame: 10 })
  for (const v1 of [false, true]) {
    const c = await connect(server.streamUrl('builtin/echo'), { v1 })
    await c.waitFor(() => c.messages.length > 0, 'connect status')

    c.sendRaw('{"inputs": ')
    await c.waitFor(() => lastStatus(c).code === 'ERR_INVALID_JSON', 'malformed JSON answer')
    t.match(lastStatus(c).message, /not valid JSON/)
    await stillWorks(t, c, `after-json-${v1}`)

    c.send({ id: `no-inputs-${v1}` })
    await c.waitFor(() => c.results().has(`no-inputs-${v1}`), 'missing inputs answer')
    t.same(c.results().get(`no-inputs-${v1}`), { error: 'Payload has no "inputs" (missing)', code: 'ERR_MISSING_INPUT' })

    c.send({ id: 42, inputs: 'x' })
    await c.waitFor(() => /"id" must be a non-empty string/.test(lastStatus(c).message), 'numeric id answer')
    t.equal(lastStatus(c).code, 'ERR_INVALID_PAYLOAD')

    c.send({ id: `bad-params-${v1}`, inputs: 'x', parameters: 'fast' })
    await c.waitFor(() => c.results().has(`bad-params-${v1}`), 'parameters type answer')
    t.match(c.results().get(`bad-params-${v1}`), { error: /"parameters" must be a JSON object/, code: 'ERR_INVALID_PAYLOAD' })

    c.send('just a string')
    await c.waitFor(() => /must be a JSON object/.test(lastStatus(c).message), 'non-object payload answer')

    c.send({ id: `big-${v1}`, inputs: 'x'.repeat(2000) })
    await c.waitFor(() => c.results().has(`big-${v1}`), 'inputs too large answer')
    t.match(c.results().get(`big-${v1}`), { error: /"inputs" is \d+ bytes, over the limit of 1024/, code: 'ERR_LIMIT_EXCEEDED' })

    c.sendRaw(JSON.stringify({ id: 'huge', inputs: 'y'.repeat(5000) }))
    await c.waitFor(() => /Frame is \d+ bytes, over the limit of 4096/.test(lastStatus(c).message), 'frame too large answer')
    t.equal(lastStatus(c).code, 'ERR_LIMIT_EXCEEDED')

    c.send({ id: `bad-type-${v1}`, inputs: 5, parameters: { delay_ms: -1 } })
    await c.waitFor(() => c.results().has(`bad-type-${v1}`), 'model input error')
    t.match(c.results().get(`bad-type-${v1}`), { error: /delay_ms/, code: 'ERR_MODEL_INPUT' })

    if (v1) {
      const frame = [...Array(11).keys()].map((i) => ({ id: `many${i}`, inputs: i }))
      c.send(frame)
      await c.waitFor(() => c.results().has('many10'), 'too many items answer')
      t.match(c.results().get('many0'), { error: /holds 11 messages, over the limit of 10/, code: 'ERR_LIMIT_EXCEEDED' })
      c.send({ type: 'ack', ids: 'all' })
      await c.waitFor(() => /"ack" message needs "ids"/.test(lastStatus(c).message), 'bad ack answer')
      // A mixed frame: the bad message is answered, the good ones run.
      c.send([{ id: 'mix-ok', inputs: 1 }, { id: 'mix-bad' }, { id: 'mix-ok2', inputs: 2 }])
      await c.waitFor(() => c.results().has('mix-ok2') && c.results().has('mix-bad') && c.results().has('mix-ok'), 'mixed frame')
      t.equal(c.results().get('mix-ok'), 1)
      t.match(c.results().get('mix-bad'), { code: 'ERR_MISSING_INPUT' })
    } else {
      c.send([{ id: 'arr', inputs: 1 }])
      await c.waitFor(() => /need websocket subprotocol inference-stream.v1/.test(lastStatus(c).message), 'array on legacy answer')
      c.send({ type: 'ack', ids: ['x'] })
      await c.waitFor(() => /"ack" messages need websocket subprotocol/.test(lastStatus(c).message), 'ack on legacy answer')
    }
    await stillWorks(t, c, `final-${v1}`)
    t.equal(c.ws.readyState, WebSocket.OPEN, 'still open')
    await c.close()
  }
})

t.test('a frame far over the limit closes the socket with 1009 (hard cap)', async (t) => {
  const server = await startServer(t, { maxFrameBytes: 1024 })
  const c = await connect(server.streamUrl('builtin/echo'))
  c.sendRaw('z'.repeat(1024 * 4 + 10))
  const { code } = await c.closed
  t.equal(code, 1009)
})

t.test('unknown model: status with the reason, then close 1008', async (t) => {
  const server = await startServer(t)
  const c = await connect(server.streamUrl('org/not-a-model'))
  const { code } = await c.closed
  t.equal(code, 1008)
  t.match(c.messages[0], { type: 'status', code: 'ERR_UNKNOWN_MODEL', message: /^Model org\/not-a-model does not exist.*\(served here: builtin\/echo, / })
})

t.test('first frame not Bearer: status with the reason, then close 1008', async (t) => {
  const server = await startServer(t)
  const c = await connect(server.streamUrl('builtin/echo'), { token: null })
  c.sendRaw(JSON.stringify({ inputs: 'hello' }))
  const { code } = await c.closed
  t.equal(code, 1008)
  t.match(c.messages[0], { type: 'status', code: 'ERR_AUTHENTICATION', message: /First frame must be "Bearer <token>"/ })
})

t.test('tokens configured: a wrong token is refused, a right one accepted, text or binary', async (t) => {
  const server = await startServer(t, { tokens: ['right'] })
  const bad = await connect(server.streamUrl('builtin/echo'), { token: 'wrong' })
  const { code } = await bad.closed
  t.equal(code, 1008)
  t.match(bad.messages[0], { type: 'status', code: 'ERR_AUTHENTICATION', message: 'Invalid token' })
  for (const binaryAuth of [false, true]) {
    const good = await connect(server.streamUrl('builtin/echo'), { token: 'right', binaryAuth })
    await stillWorks(t, good, `ok-${binaryAuth}`)
    await good.close()
  }
})

t.test('no Bearer frame in time closes with 1008', async (t) => {
  const server = await startServer(t, { authTimeoutMs: 100 })
  const c = await connect(server.streamUrl('builtin/echo'), { token: null })
  const { code } = await c.closed
  t.equal(code, 1008)
  t.match(c.messages[0], { code: 'ERR_AUTHENTICATION', message: /in time/ })
})

t.test('a model that fails a whole batch answers each item with an error and goes on', async (t) => {
  const { createModelRegistry } = await import('../lib/models/registry.js')
  let calls = 0
  const registry = createModelRegistry({
    models: {
      'test/flaky': {
        id: 'test/flaky',
        task: 'echo',
        async run(inputs) {
          calls++
          if (inputs.includes('boom')) throw new Error('kaboom')
          return inputs
        },
      },
    },
  })
  const server = await startServer(t, { registry, maxBatch: 1 })
  t.teardown(() => registry.close())
  const c = await connect(server.streamUrl('test/flaky'))
  c.send({ id: 'b', inputs: 'boom' })
  c.send({ id: 'ok', inputs: 'fine' })
  await c.waitFor(() => c.results().size === 2, 'both answered')
  t.same(c.results().get('b'), { error: 'Model test/flaky failed: kaboom', code: 'ERR_MODEL' })
  t.equal(c.results().get('ok'), 'fine')
  t.equal(calls, 2)
  await c.close()
})

t.test('parameters nested too deeply for a key: an error result, not a crashed server', async (t) => {
  const server = await startServer(t)
  const c = await connect(server.streamUrl('builtin/echo'))
  const deep = '{"a":'.repeat(20_000) + '1' + '}'.repeat(20_000)
  c.sendRaw(`{"id":"deep","inputs":1,"parameters":${deep}}`)
  await c.waitFor(() => c.results().has('deep'), 'deep parameters answer')
  t.same(c.results().get('deep'), { error: '"parameters" is nested too deeply', code: 'ERR_INVALID_PAYLOAD' })
  await stillWorks(t, c, 'after-deep')
  await c.close()
})

t.test('outputs JSON cannot write (echo of deeply nested inputs): an ERR_MODEL result, not a crash or a stuck item', async (t) => {
  const server = await startServer(t)
  const deep = '['.repeat(20_000) + ']'.repeat(20_000)
  for (const v1 of [false, true]) {
    const c = await connect(server.streamUrl('builtin/echo'), { v1 })
    c.sendRaw(`{"id":"deep-${v1}","inputs":${deep}}`)
    c.send({ id: `next-${v1}`, inputs: 1 })
    await c.waitFor(() => c.results().has(`deep-${v1}`) && c.results().has(`next-${v1}`), 'both answered')
    t.same(c.results().get(`deep-${v1}`), { error: 'Model builtin/echo returned outputs that cannot be serialized as JSON', code: 'ERR_MODEL' })
    t.equal(c.results().get(`next-${v1}`), 1)
    t.match(await server.counts('test-token', 'builtin/echo'), { queued: 0, processing: 0 })
    await c.close()
  }
})

import t from 'tap'
import { AuthenticationError, InvalidJsonError, InvalidPayloadError, LimitExceededError, MissingInputError } from '../lib/errors.js'
import { frameText, parametersKey, parseBearer, parseClientFrame, parseInferenceBody, parseServerFrame, stableStringify } from '../lib/protocol.js'

const limits = { maxItemsPerFrame: 3, maxInputsBytes: 20 }

t.test('parseBearer', async (t) => {
  t.equal(parseBearer('Bearer abc'), 'abc')
  t.equal(parseBearer('Bearer   hf_xyz \n'), 'hf_xyz')
  for (const bad of ['abc', 'bearer abc', 'Bearer', 'Bearer a b', '{"inputs":1}']) {
    t.throws(() => parseBearer(bad), AuthenticationError, bad)
  }
  t.throws(() => parseBearer('x'.repeat(100)), { code: 'ERR_AUTHENTICATION', message: /…"$/ })
})

t.test('frameText decodes text and binary frames', async (t) => {
  t.equal(frameText('a'), 'a')
  t.equal(frameText(Buffer.from('é')), 'é')
  t.equal(frameText([Buffer.from('a'), Buffer.from('b')]), 'ab')
  t.equal(frameText(new Uint8Array(Buffer.from('zz')).buffer), 'zz')
})

t.test('parseClientFrame: payloads', async (t) => {
  t.same(parseClientFrame('{"inputs":"hi"}', false, limits), [{ kind: 'payload', payload: { id: undefined, inputs: 'hi' } }])
  t.same(parseClientFrame('{"id":"a","inputs":[1],"parameters":{"k":1},"options":{"use_cache":false}}', false, limits), [
    { kind: 'payload', payload: { id: 'a', inputs: [1], parameters: { k: 1 }, options: { use_cache: false } } },
  ])
  t.same(parseClientFrame('{"id":null,"inputs":0,"parameters":null}', false, limits), [{ kind: 'payload', payload: { id: undefined, inputs: 0 } }])
})

t.test('parseClientFrame: every problem is an error entry, with the id when usable', async (t) => {
  const one = (text: string, v1 = false) => parseClientFrame(text, v1, limits)[0]
  t.match(one('{'), { kind: 'error', error: { code: 'ERR_INVALID_JSON' } })
  t.match(one('{"id":"a"}'), { kind: 'error', id: 'a', error: { code: 'ERR_MISSING_INPUT', message: 'Payload has no "inputs" (missing)' } })
  t.match(one('{"id":"a","inputs":null}'), { kind: 'error', id: 'a', error: { code: 'ERR_MISSING_INPUT', message: 'Payload has no "inputs" (null)' } })
  t.same(one('{"id":"a","inputs":""}'), { kind: 'payload', payload: { id: 'a', inputs: '' } }, 'an empty string is an input')
  t.match(one('{"id":7,"inputs":1}'), { kind: 'error', id: undefined, error: { message: /"id" must be/ } })
  t.match(one('{"id":"","inputs":1}'), { kind: 'error', error: { message: /"id" must be/ } })
  t.match(one(`{"id":"${'x'.repeat(257)}","inputs":1}`), { kind: 'error', error: { message: /at most 256/ } })
  t.match(one('{"id":"a","inputs":1,"parameters":[1]}'), { kind: 'error', id: 'a', error: { message: /"parameters" must be a JSON object/ } })
  t.match(one('{"id":"a","inputs":1,"options":5}'), { kind: 'error', id: 'a', error: { message: /"options" must be a JSON object/ } })
  t.match(one('[1]'), { kind: 'error', error: { message: /need websocket subprotocol inference-stream.v1/ } })
  t.match(one('"str"', true), { kind: 'error', error: { message: /must be a JSON object/ } })
  t.match(one('{"id":"a","inputs":"' + 'x'.repeat(30) + '"}'), { kind: 'error', id: 'a', error: { code: 'ERR_LIMIT_EXCEEDED', message: /"inputs" is 32 bytes, over the limit of 20/ } })
})

t.test('parseClientFrame: v1 arrays, acks and resume', async (t) => {
  const entries = parseClientFrame('[{"id":"a","inputs":1},{"type":"ack","ids":["x"]},{"type":"resume","ids":["y","z"]},{"inputs":2,"id":3}]', true, { ...limits, maxItemsPerFrame: 4 })
  t.match(entries, [
    { kind: 'payload', payload: { id: 'a', inputs: 1 } },
    { kind: 'ack', ids: ['x'] },
    { kind: 'resume', ids: ['y', 'z'] },
    { kind: 'error' },
  ])
  t.match(parseClientFrame('{"type":"ack","ids":["x"]}', false, limits)[0], { kind: 'error', error: { message: /need websocket subprotocol/ } })
  t.match(parseClientFrame('{"type":"resume","ids":[1]}', true, limits)[0], { kind: 'error', error: { message: /"resume" message needs "ids"/ } })
  const tooMany = parseClientFrame('[{"id":"a","inputs":1},{"id":"b","inputs":1},{"inputs":1},{"id":"d","inputs":1}]', true, limits)
  t.same(tooMany.map((e) => (e.kind === 'error' ? e.id : null)), ['a', 'b', 'd'], 'every recoverable id answered')
  t.match(tooMany[0], { error: { code: 'ERR_LIMIT_EXCEEDED', message: 'Frame holds 4 messages, over the limit of 3' } })
})

t.test('parametersKey is stable under key order', async (t) => {
  t.equal(parametersKey(undefined), '')
  t.equal(parametersKey({}), '')
  t.equal(parametersKey({ a: 1, b: { d: 2, c: 3 } }), parametersKey({ b: { c: 3, d: 2 }, a: 1 }))
  t.not(parametersKey({ a: 1 }), parametersKey({ a: 2 }))
})

t.test('parameters nested too deeply to key are an error entry, not a throw', async (t) => {
  const deep = '{"a":'.repeat(20_000) + '1' + '}'.repeat(20_000)
  const [e] = parseClientFrame(`{"id":"d","inputs":1,"parameters":${deep}}`, false, limits)
  t.match(e, { kind: 'error', id: 'd', error: { code: 'ERR_INVALID_PAYLOAD', message: '"parameters" is nested too deeply' } })
  const deepInputs = '['.repeat(200_000) + ']'.repeat(200_000)
  t.match(parseClientFrame(`{"id":"i","inputs":${deepInputs}}`, false, limits)[0], {
    kind: 'error',
    id: 'i',
    error: { code: 'ERR_INVALID_PAYLOAD', message: '"inputs" is nested too deeply' },
  }, 'when the frame is large enough for inputs to be measured')
})

t.test('parseInferenceBody: the classic HTTP body, checked as a payload', async (t) => {
  t.same(parseInferenceBody('{"inputs":"hi","id":5}', limits), { inputs: 'hi' }, 'an id is ignored')
  t.same(parseInferenceBody('{"inputs":[1],"parameters":{"k":1},"options":{"use_cache":false,"wait_for_model":true,"x":1}}', limits), {
    inputs: [1],
    parameters: { k: 1 },
    options: { use_cache: false, wait_for_model: true, x: 1 },
  })
  t.throws(() => parseInferenceBody('{', limits), InvalidJsonError)
  t.throws(() => parseInferenceBody('{', limits), { message: /^Body is not valid JSON: / })
  t.throws(() => parseInferenceBody('"text"', limits), new InvalidPayloadError('Body must be a JSON object with "inputs"'))
  t.throws(() => parseInferenceBody('{"inputs":null}', limits), new MissingInputError('Payload has no "inputs" (null)'))
  t.throws(() => parseInferenceBody('{}', limits), new MissingInputError('Payload has no "inputs" (missing)'))
  t.same(parseInferenceBody('{"inputs":""}', limits), { inputs: '' }, 'an empty string is an input')
  t.throws(() => parseInferenceBody('{"inputs":1,"parameters":1}', limits), new InvalidPayloadError('"parameters" must be a JSON object'))
  t.throws(() => parseInferenceBody('{"inputs":1,"options":[]}', limits), new InvalidPayloadError('"options" must be a JSON object'))
  t.throws(() => parseInferenceBody('{"inputs":1,"options":{"use_cache":"yes"}}', limits), new InvalidPayloadError('"options.use_cache" must be a boolean'))
  t.throws(() => parseInferenceBody(JSON.stringify({ inputs: 'x'.repeat(30) }), limits), new LimitExceededError('"inputs" is 32 bytes, over the limit of 20'))
})

t.test('stableStringify sorts keys at every depth', async (t) => {
  t.equal(stableStringify({ b: [{ d: 1, c: 2 }], a: 'x' }), '{"a":"x","b":[{"c":2,"d":1}]}')
  t.equal(stableStringify('s'), '"s"')
})

t.test('parseServerFrame: messages and v1 arrays; what it cannot use is one ignored entry, never a throw', async (t) => {
  t.same(parseServerFrame('{"type":"results","id":"1","outputs":[1]}'), [{ kind: 'result', id: '1', outputs: [1] }])
  t.same(parseServerFrame('[{"type":"results","id":"a","outputs":null},{"type":"resume","unknown":["b"]},{"type":"status","message":"hi","queued":1}]'), [
    { kind: 'result', id: 'a', outputs: null },
    { kind: 'resume', unknown: ['b'] },
    { kind: 'status', status: { type: 'status', message: 'hi', queued: 1 } },
  ])
  t.same(parseServerFrame('{"type":"results","id":1}'), [{ kind: 'ignored', reason: 'unknown message type "results"' }])
  t.same(parseServerFrame('not json'), [{ kind: 'ignored', reason: 'frame is not JSON' }])
  t.same(parseServerFrame('[1,{"type":"resume","unknown":[2]}]'), [
    { kind: 'ignored', reason: 'message is not an object' },
    { kind: 'ignored', reason: 'unknown message type "resume"' },
  ])
  t.same(parseServerFrame('{"type":"status"}'), [{ kind: 'ignored', reason: 'unknown message type "status"' }], 'a status without a message')
})

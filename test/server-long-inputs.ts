// Issue 11, point 7: one very long input must not stall an ordered run. Through a real server
// (streams and HTTP), a 200 000-character word and a 1 MB text each finish well inside a
// "not stuck" bound on builtin/sentiment and builtin/ner (they took 26 s and 41 s), the rows
// after them are not held up, and parameters.truncation / max_length are honoured.
import t from 'tap'
import { infer } from '../lib/client/infer.js'
import type { InferenceServer } from '../lib/server/server.js'
import { startServer } from './helpers/server.js'
import { connect } from './helpers/ws-client.js'

// Generous: each long item takes < 100 ms here; a shared machine may be much slower, never 26 s.
const NOT_STUCK_MS = 3000
const word200k = 'a'.repeat(200_000)
const sentence = 'The screen is great, but the battery died on Monday after 3 days and cost me $40. '
const text1mb = sentence.repeat(Math.ceil(1_000_000 / sentence.length)).slice(0, 1_000_000)
const MODELS = ['builtin/sentiment', 'builtin/ner'] as const

function post(server: InferenceServer, model: string, body: unknown): Promise<Response> {
  return fetch(`${server.url}/models/${model}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
}

async function warm(server: InferenceServer, model: string): Promise<void> {
  // The wink thread loads its model on the first batch (about a second): not what is measured.
  const res = await post(server, model, { inputs: 'warm up' })
  await res.json()
}

t.test('ordered stream: the long rows finish fast and the rows after them are not held up', async (t) => {
  const server = await startServer(t)
  for (const model of MODELS) {
    await warm(server, model)
    const rows = ['I love it', word200k, 'It broke on Monday, awful', text1mb, `${'x'.repeat(5000)} then I love it on Monday`, 'great, 5 stars', `${word200k} I love it`]
    const started = performance.now()
    const at: number[] = []
    const outputs: unknown[] = []
    for await (const r of infer(rows, { url: server.streamUrl(model), token: 't', maxInFlight: 2 })) {
      at.push(performance.now() - started)
      outputs.push(r.outputs)
      t.notOk(r.error, `${model} row ${outputs.length - 1} answered`)
    }
    t.equal(outputs.length, rows.length)
    t.ok(at.at(-1)! < NOT_STUCK_MS, `${model}: all ${rows.length} rows in ${Math.round(at.at(-1)!)} ms (times ${at.map(Math.round).join(', ')})`)
    if (model === 'builtin/sentiment') {
      const best = (o: unknown): string => (o as Array<Array<{ label: string }>>)[0]![0]!.label
      const neutral = [[{ label: 'POSITIVE', score: 0.5 }, { label: 'NEGATIVE', score: 0.5 }]]
      t.same([0, 2, 4, 5].map((i) => best(outputs[i])), ['POSITIVE', 'NEGATIVE', 'POSITIVE', 'POSITIVE'], 'the short rows and the one after a 5000-character word')
      t.same(outputs[1], neutral, 'a 200k-character word says nothing: neutral')
      t.same(outputs[6], neutral, 'what follows a word that crosses 100 000 characters is past the cut (truncation, as the Inference API)')
    } else {
      t.same(outputs[1], [], 'a 200k-character word is no entity')
      t.same(outputs[2], [{ entity_group: 'DATE', score: 1, word: 'Monday', start: 12, end: 18 }])
      // After an opaque word, offsets are still into the row as sent.
      const row = rows[4]!
      t.same(outputs[4], [{ entity_group: 'DATE', score: 1, word: 'Monday', start: row.indexOf('Monday'), end: row.length }])
      t.same(outputs[6], [], 'past the 100 000-character cut')
      // The 1 MB text: entities of its first 512 tokens only, at their offsets in it.
      const entities = outputs[3] as Array<{ word: string; start: number; end: number }>
      t.ok(entities.length > 10, `${entities.length} entities`)
      t.ok(entities.every((e) => text1mb.slice(e.start, e.end) === e.word), 'offsets slice back')
      t.ok(entities.at(-1)!.end < 3000, 'all within the first 512 tokens')
    }
  }
})

t.test('HTTP: long inputs answer fast; truncation false refuses what is over the limit, naming it', async (t) => {
  const server = await startServer(t)
  for (const model of MODELS) {
    await warm(server, model)
    for (const inputs of [word200k, text1mb]) {
      const started = performance.now()
      const res = await post(server, model, { inputs })
      t.equal(res.status, 200)
      await res.json()
      t.ok(performance.now() - started < NOT_STUCK_MS, `${model} ${inputs.length} chars: ${Math.round(performance.now() - started)} ms`)
    }
    for (const parameters of [{ truncation: false }, { truncation: 'do_not_truncate' }, { truncate: false }]) {
      const res = await post(server, model, { inputs: text1mb, parameters })
      t.equal(res.status, 400)
      t.same(await res.json(), {
        error: `${model} reads at most 100000 characters of a text when parameters.truncation is false; this text has 1000000: leave truncation on (the default, the first max_length tokens) or split the text`,
        code: 'ERR_MODEL_INPUT',
      }, JSON.stringify(parameters))
    }
    const bad = await post(server, model, { inputs: 'x', parameters: { max_length: 0 } })
    t.equal(bad.status, 400)
    t.match(await bad.json(), { code: 'ERR_MODEL_INPUT', error: /^parameters\.max_length must be a positive integer/ })
  }
})

t.test('truncation is honoured on every path: max_length and truncate (TGI) change what is read', async (t) => {
  const server = await startServer(t)
  const text = `I love it. ${'This is terrible, awful and broken. '.repeat(30)}`
  const label = (o: unknown): string => (o as Array<Array<{ label: string }>>)[0]![0]!.label
  const http = async (parameters: Record<string, unknown>): Promise<unknown> => (await post(server, 'builtin/sentiment', { inputs: text, parameters })).json()
  t.equal(label(await http({})), 'NEGATIVE', 'default: the first 512 tokens hold the complaint')
  t.equal(label(await http({ max_length: 3 })), 'POSITIVE', 'max_length 3: "I love it"')
  t.equal(label(await http({ truncate: 3 })), 'POSITIVE', 'TGI truncate 3')
  t.equal(label(await http({ truncation: true, max_length: 3 })), 'POSITIVE')
  // The same through a stream, with per-row parameters.
  const c = await connect(server.streamUrl('builtin/ner'))
  t.teardown(() => c.close())
  const ner = 'On Monday at 5 pm we paid $20.'
  c.send({ id: 'all', inputs: ner })
  c.send({ id: 'two', inputs: ner, parameters: { max_length: 2 } })
  await c.waitFor(() => c.results().has('all') && c.results().has('two'), 'both answers')
  t.same((c.results().get('all') as Array<{ word: string }>).map((e) => e.word), ['Monday', '5 pm', '$20'])
  t.same(c.results().get('two'), [{ entity_group: 'DATE', score: 1, word: 'Monday', start: 3, end: 9 }])
})

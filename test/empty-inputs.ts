// Issue 11, point 10: one rule for empty and missing inputs, on every path and every model.
// A string — '' and blank ones included — is an input: the model answers as it does for empty text
// (builtin/sentiment neutral 0.5 / 0.5, builtin/ner and token-classification `[]`, echo the string,
// transformers.js models their own result). No value (absent, null) is ERR_MISSING_INPUT and never
// reaches a model. Paths: the library (infer, inputFromColumn), the websocket protocol (legacy and
// v1), the HTTP route, and bulk jobs. The CLI is in test/cli-inputs.ts.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parquetReadObjects } from 'hyparquet'
import t, { type Test } from 'tap'
import { infer } from '../lib/client/infer.js'
import { InferenceStream } from '../lib/client/inference-stream.js'
import { inputFromColumn } from '../lib/io/mapping.js'
import { createModelRegistry } from '../lib/models/registry.js'
import type { InferenceServer } from '../lib/server/server.js'
import { makeTinyModels } from './fixtures/tiny-models.js'
import { startServer } from './helpers/server.js'
import { connect } from './helpers/ws-client.js'

const root = mkdtempSync(join(tmpdir(), 'is-empty-'))
t.teardown(() => rmSync(root, { recursive: true, force: true }))
const modelsDir = join(root, 'models')
await makeTinyModels(modelsDir)

const NEUTRAL = [[{ label: 'POSITIVE', score: 0.5 }, { label: 'NEGATIVE', score: 0.5 }]]
const EMPTY_TEXTS = ['', ' ', '\n\t  ']

// What each model answers for an empty text, checked on every path (undefined: its own result,
// the same on every path and not an error).
const MODELS: Array<[string, (text: string) => unknown]> = [
  ['builtin/sentiment', () => NEUTRAL],
  ['builtin/ner', () => []],
  ['builtin/echo', (text) => text],
  ['tiny/sentiment', () => undefined],
  ['tiny/ner', () => []],
  ['tiny/embed', () => undefined],
]

async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = []
  for await (const item of items) out.push(item)
  return out
}

function post(server: InferenceServer, model: string, body: unknown): Promise<Response> {
  return fetch(`${server.url}/models/${model}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...(body as object), options: { wait_for_model: true } }),
  })
}

async function server(t: Test, options: Record<string, unknown> = {}): Promise<InferenceServer> {
  const registry = createModelRegistry({ transformers: { modelsDir, cacheDir: join(root, 'cache'), hubCacheDir: join(root, 'hub') } })
  t.teardown(() => registry.close())
  return startServer(t, { registry, ...options })
}

t.test('an empty or blank string gets the model\'s answer for empty text, the same on HTTP, both stream protocols and infer()', async (t) => {
  const s = await server(t)
  for (const [model, expected] of MODELS) {
    const legacy = await connect(s.streamUrl(model))
    const v1 = await connect(s.streamUrl(model), { v1: true })
    t.teardown(() => Promise.all([legacy.close(), v1.close()]))
    // The connect status names the task (what `[]` means); a model loading on first use names it once loaded.
    await legacy.waitFor(() => legacy.messages.length > 0, 'connect status')
    const task = { 'builtin/sentiment': 'text-classification', 'builtin/ner': 'token-classification', 'builtin/echo': 'echo' }[model]
    if (task) t.match(legacy.messages[0], { type: 'status', message: `Connected to ${model} (cpu)`, task })
    for (const [i, text] of EMPTY_TEXTS.entries()) {
      const res = await post(s, model, { inputs: text })
      t.equal(res.status, 200, `${model} ${JSON.stringify(text)} HTTP`)
      const http = await res.json()
      t.notOk(http !== null && typeof http === 'object' && 'error' in http, 'not an error')
      const want = expected(text)
      if (want !== undefined) t.same(http, want, `${model} ${JSON.stringify(text)}: the answer for empty text`)
      // Distinct ids: one id of one tenant and model runs once, whichever stream sent it.
      legacy.send({ id: `legacy-${i}`, inputs: text })
      v1.send([{ id: `v1-${i}`, inputs: text }])
      await legacy.waitFor(() => legacy.results().has(`legacy-${i}`), 'legacy answer', 30_000)
      await v1.waitFor(() => v1.results().has(`v1-${i}`), 'v1 answer', 30_000)
      t.same(legacy.results().get(`legacy-${i}`), http, 'legacy stream = HTTP')
      t.same(v1.results().get(`v1-${i}`), http, 'v1 stream = HTTP')
      const [r] = await collect(infer([text], { url: s.streamUrl(model), token: 't' }))
      t.notOk(r!.error)
      t.same(r!.outputs, http, 'infer() = HTTP')
    }
  }
  // InferenceStream knows the task from the connect status (writers take it: `task: () => stream.task`).
  const stream = new InferenceStream({ url: s.streamUrl('builtin/ner'), token: 't' })
  t.equal(stream.task, undefined, 'not before the server said')
  stream.end('')
  const [only] = await collect(stream)
  t.same(only!.outputs, [])
  t.equal(stream.task, 'token-classification')
  // A list holding an empty string: one answer per text, the empty one like any other.
  const res = await post(s, 'builtin/ner', { inputs: ['', 'on Monday', ' '] })
  t.same(await res.json(), [[], [{ entity_group: 'DATE', score: 1, word: 'Monday', start: 3, end: 9 }], []])
  const sentiment = await post(s, 'builtin/sentiment', { inputs: ['', 'I love it'] })
  const both = (await sentiment.json()) as unknown[]
  t.same(both[0], NEUTRAL[0])
})

t.test('no value (absent, null) is ERR_MISSING_INPUT on every path and reaches no model', async (t) => {
  const s = await server(t)
  for (const body of [{}, { inputs: null }, { parameters: { top_k: 1 } }]) {
    const res = await post(s, 'builtin/sentiment', body)
    t.equal(res.status, 400, JSON.stringify(body))
    t.match(await res.json(), { code: 'ERR_MISSING_INPUT', error: /^Payload has no "inputs" \((missing|null)\)$/ })
  }
  for (const v1 of [false, true]) {
    const c = await connect(s.streamUrl('builtin/ner'), { v1, token: 't' })
    t.teardown(() => c.close())
    const send = (m: object): void => (v1 ? c.send([m]) : c.send(m))
    const billed = await s.billed('t')
    send({ id: `absent-${v1}` })
    send({ id: `null-${v1}`, inputs: null })
    await c.waitFor(() => c.results().has(`absent-${v1}`) && c.results().has(`null-${v1}`), 'two answers')
    t.same(c.results().get(`absent-${v1}`), { error: 'Payload has no "inputs" (missing)', code: 'ERR_MISSING_INPUT' })
    t.same(c.results().get(`null-${v1}`), { error: 'Payload has no "inputs" (null)', code: 'ERR_MISSING_INPUT' })
    t.equal(await s.billed('t'), billed, 'not billed: no model ran')
    send({ id: `empty-${v1}`, inputs: '' })
    await c.waitFor(() => c.results().has(`empty-${v1}`), 'empty answer')
    t.same(c.results().get(`empty-${v1}`), [])
    t.equal(await s.billed('t'), billed + 1, 'an empty string is run and billed like any input')
  }
  // The library fails such a record itself (nothing is sent) with the same code.
  const records: unknown[] = [{ inputs: null }, { inputs: '' }, '', { inputs: 'I love it' }]
  const results = await collect(infer(records, { url: s.streamUrl('builtin/sentiment'), token: 't' }))
  t.same(results.map((r) => (r.error as { code?: string } | undefined)?.code ?? null), ['ERR_MISSING_INPUT', null, null, null])
  t.same(results[1]!.outputs, NEUTRAL)
  t.same(results[2]!.outputs, NEUTRAL)
  // Records mapped from a column: a JSON null or an absent key is missing; '' is text.
  const rows = [{ text: null }, {}, { text: '' }, { text: '  ' }, { text: 'on Monday' }]
  const mapped = await collect(infer(rows, { url: s.streamUrl('builtin/ner'), token: 't', input: inputFromColumn('text') }))
  t.same(mapped.map((r) => (r.error as { code?: string } | undefined)?.code ?? null), ['ERR_MISSING_INPUT', 'ERR_MISSING_INPUT', null, null, null])
  t.same(mapped.slice(2).map((r) => r.outputs), [[], [], [{ entity_group: 'DATE', score: 1, word: 'Monday', start: 3, end: 9 }]])
  t.equal(await s.billed('t'), 2 + 3 + 3, 'in all: the streams\' empty strings and the records with a value')
})

t.test('bulk job: an empty cell is run, a null one fails with ERR_MISSING_INPUT; entities are [] from the first row', async (t) => {
  const dir = mkdtempSync(join(root, 'bulk-'))
  const split = join(dir, 'datasets', 'notes', 'default')
  mkdirSync(split, { recursive: true })
  writeFileSync(join(split, 'train.jsonl'), ['{"text":""}', '{"text":"  "}', '{"text":null}', '{"other":1}', '{"text":"on Monday"}', '{"text":"nothing"}'].join('\n') + '\n')
  const s = await startServer(t, { tokens: ['t'], dataDir: dir })
  const auth = { authorization: 'Bearer t', 'content-type': 'application/json' }
  const started = await fetch(`${s.url}/bulk/run/cpu/builtin/ner`, {
    method: 'POST',
    headers: auth,
    body: JSON.stringify({ dataset_name: 'notes', dataset_config: 'default', dataset_split: 'train', dataset_column: 'text' }),
  })
  const { jobid, bulk_name: name } = (await started.json()) as { jobid: string; bulk_name: string }
  let state: Record<string, unknown> = {}
  for (const deadline = Date.now() + 60_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 20))) {
    state = ((await (await fetch(`${s.url}/bulk/status/${jobid}`, { headers: auth })).json()) as { status: Record<string, unknown> }).status
    if (state.state === 'completed' || state.state === 'failed') break
  }
  t.match(state, { state: 'completed', total: 6, processed: 6, failed: 2 })
  const info = (await (await fetch(`${s.url}/api/datasets/${name}`, { headers: auth })).json()) as { sha: string; siblings: { rfilename: string }[] }
  const shard = info.siblings.map((f) => f.rfilename).find((f) => f.endsWith('.parquet'))!
  const buf = await (await fetch(`${s.url}/datasets/${name}/resolve/${info.sha}/${shard}`, { headers: auth })).arrayBuffer()
  const rows = (await parquetReadObjects({ file: buf })) as Array<Record<string, unknown>>
  t.same(rows.map((r) => [r.text, r.entities, r.entity_count, r.error_code]), [
    ['', '[]', 0, null],
    ['  ', '[]', 0, null],
    [null, null, null, 'ERR_MISSING_INPUT'],
    [null, null, null, 'ERR_MISSING_INPUT'],
    ['on Monday', '[{"entity_group":"DATE","score":1,"word":"Monday","start":3,"end":9}]', 1, null],
    ['nothing', '[]', 0, null],
  ])
})

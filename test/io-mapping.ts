import t from 'tap'
import { InferenceItemError, InvalidPayloadError, MissingInputError } from '../lib/errors.js'
import { detectTask, flattenOutputs, inputFromColumn } from '../lib/io/mapping.js'
import { inferColumnType, parquetCell, planColumns } from '../lib/io/output-columns.js'
import { ResultRows } from '../lib/io/result-row.js'

t.test('inputFromColumn: inputs from a column, constant and per-row parameters', async (t) => {
  const input = inputFromColumn('text')
  t.same(input({ text: 'hi', other: 1 }), { inputs: 'hi' })
  t.same(input({ text: ['a', 'b'] }), { inputs: ['a', 'b'] }, 'any JSON value is an input')
  t.same(inputFromColumn('text', { parameters: { top_k: 1 } })({ text: 'hi' }), { inputs: 'hi', parameters: { top_k: 1 } })
  const perRow = inputFromColumn('text', { parameters: { top_k: 1, x: 0 }, parametersColumn: 'params' })
  t.same(perRow({ text: 'a', params: '{"x": 5}' }), { inputs: 'a', parameters: { top_k: 1, x: 5 } }, 'a JSON string (a CSV field)')
  t.same(perRow({ text: 'a', params: { y: 2 } }), { inputs: 'a', parameters: { top_k: 1, x: 0, y: 2 } }, 'an object (JSONL, Parquet)')
  t.same(perRow({ text: 'a', params: '' }), { inputs: 'a', parameters: { top_k: 1, x: 0 } }, 'empty: the constant ones')
  t.same(inputFromColumn('text', { parametersColumn: 'p' })({ text: 'a' }), { inputs: 'a' })
  t.throws(() => perRow({ text: 'a', params: '{bad' }), InvalidPayloadError)
  t.throws(() => perRow({ text: 'a', params: '[1]' }), { code: 'ERR_INVALID_PAYLOAD', message: /Column "params" must hold an object of parameters/ })
})

t.test('inputFromColumn: a missing value throws MissingInputError naming the column; an empty string is a value', async (t) => {
  const input = inputFromColumn('review')
  t.same(input({ review: '' }), { inputs: '' }, 'an empty string (a CSV empty cell) is text')
  t.same(input({ review: '  ' }), { inputs: '  ' }, 'a blank one too, unchanged')
  for (const [record, message] of [
    [{ title: 'x', stars: 5 }, 'The record has no column "review" (it has "title", "stars")'],
    [{ review: null }, `The record's column "review" has no value (null)`],
    [{ review: undefined }, `The record's column "review" has no value (undefined)`],
    ['a string', 'Input column "review": the record is not an object with columns'],
  ] as const) {
    let err: unknown
    try {
      input(record)
    } catch (e) {
      err = e
    }
    t.ok(err instanceof MissingInputError)
    t.match(err, { code: 'ERR_MISSING_INPUT', column: 'review', message })
  }
  t.throws(() => inputFromColumn(''), { code: 'ERR_INVALID_OPTION' })
  t.throws(() => inputFromColumn('a', { parameters: [] as never }), { code: 'ERR_INVALID_OPTION', message: /"parameters"/ })
  t.throws(() => inputFromColumn('a', { parametersColumn: '' }), { code: 'ERR_INVALID_OPTION', message: /"parametersColumn"/ })
})

t.test('flattenOutputs: each task shape; detected when no task is given', async (t) => {
  const tc = [[{ label: 'NEGATIVE', score: 0.3 }, { label: 'POSITIVE', score: 0.7 }]]
  t.same(flattenOutputs(tc), { label: 'POSITIVE', score: 0.7 }, 'text-classification [[...]]: the best label')
  t.same(flattenOutputs(tc[0]), { label: 'POSITIVE', score: 0.7 }, 'text-classification [...]')
  t.same(flattenOutputs([[{ label: 'A', score: 1 }], [{ label: 'B', score: 1 }]], 'text-classification'), {}, 'several texts: no single label')
  const zs = { sequence: 'who won?', labels: ['sport', 'politics'], scores: [0.9, 0.1] }
  t.same(flattenOutputs(zs), { label: 'sport', score: 0.9, labels: ['sport', 'politics'], scores: [0.9, 0.1] })
  t.same(flattenOutputs({ ...zs, scores: [0.1, 0.9] }, 'zero-shot-classification'), { label: 'politics', score: 0.9, labels: ['sport', 'politics'], scores: [0.1, 0.9] })
  const ents = [{ entity_group: 'PER', score: 0.99, word: 'Ada', start: 0, end: 3 }]
  t.same(flattenOutputs(ents), { entities: ents, entity_count: 1 })
  t.same(flattenOutputs([], 'token-classification'), { entities: [], entity_count: 0 }, 'no entities, task given')
  t.same(flattenOutputs([], 'ner'), { entities: [], entity_count: 0 }, 'an alias')
  t.same(flattenOutputs([]), {}, 'an empty list tells no task')
  t.same(flattenOutputs([[0.1, 0.2], [0.3, 0.4]]), {}, 'feature-extraction stays raw')
  t.same(flattenOutputs([0.1, 0.2], 'feature-extraction'), {})
  t.same(flattenOutputs({ error: 'bad', code: 'ERR_MODEL_INPUT' }), { error: 'bad', error_code: 'ERR_MODEL_INPUT' })
  t.same(flattenOutputs({ error: 'Model X is currently loading', estimated_time: 3 }, 'text-classification'), { error: 'Model X is currently loading' })
  t.same(flattenOutputs('echoed text'), {})
  t.same(flattenOutputs({ labels: 'x' }, 'zero-shot-classification'), {}, 'a wrong shape for the task: nothing, no throw')
  t.same(flattenOutputs(ents, 'translation'), {}, 'a task without flat columns')

  t.equal(detectTask(tc), 'text-classification')
  t.equal(detectTask(zs), 'zero-shot-classification')
  t.equal(detectTask(ents), 'token-classification')
  t.equal(detectTask([{ entity: 'B-PER', score: 0.9, index: 1, word: 'Ada', start: 0, end: 3 }]), 'token-classification')
  t.equal(detectTask([[[0.1]]]), 'feature-extraction')
  t.equal(detectTask([0.5]), 'feature-extraction')
  t.equal(detectTask({ error: 'x' }), undefined)
  t.equal(detectTask([]), undefined)
  t.equal(detectTask([{ generated_text: 'x' }]), undefined)
})

t.test('ResultRows: one flat row per result; input columns renamed on collision; task fixed once seen', async (t) => {
  const rows = new ResultRows()
  t.same(rows.toRow({ id: 'a', outputs: [], record: { id: 1, text: 't', label: 'gold', error: 'e' } }), {
    id: 'a',
    input_id: 1,
    text: 't',
    input_label: 'gold',
    input_error: 'e',
    outputs: [],
    error: null,
    error_code: null,
  }, 'an empty list before the task is known: no flat columns')
  t.equal(rows.task, undefined)
  t.match(rows.toRow({ id: 'b', outputs: [{ entity_group: 'LOC', word: 'Paris', start: 0, end: 5, score: 1 }] }), { entities: [{ word: 'Paris' }], entity_count: 1 })
  t.equal(rows.task, 'token-classification')
  t.match(rows.toRow({ id: 'c', outputs: [] }), { entities: [], entity_count: 0 }, 'now [] is known to be no entities')
  t.same(rows.toRow({ id: 'd', outputs: { error: 'boom' }, error: new InferenceItemError('boom', 'd', 'ERR_MODEL') }), {
    id: 'd',
    outputs: { error: 'boom' },
    error: 'boom',
    error_code: 'ERR_MODEL',
  }, 'the server code of an item error')
  t.same(rows.toRow({ id: 'e', outputs: 'x', record: 'a string record' }), { id: 'e', record: 'a string record', outputs: 'x', error: null, error_code: null })
  t.same(new ResultRows({ flatten: false }).toRow({ id: 'f', outputs: [[{ label: 'A', score: 1 }]] }), { id: 'f', outputs: [[{ label: 'A', score: 1 }]], error: null, error_code: null })
  t.same(new ResultRows({ kind: 'records' }).toRow({ any: 1 }), { any: 1 })
  t.throws(() => rows.toRow({ text: 'not a result' }), { code: 'ERR_INVALID_OPTION', message: /pass kind: 'records'/ })
  t.same(rows.order(['error', 'score', 'text', 'outputs', 'label', 'id', 'zz']), ['id', 'text', 'zz', 'label', 'score', 'outputs', 'error'])
})

t.test('ResultRows: a task function is asked until it answers (the task a server names on connect)', async (t) => {
  let told: string | undefined
  let asked = 0
  const rows = new ResultRows({
    task: () => {
      asked++
      return told
    },
  })
  t.same(rows.toRow({ id: 'a', outputs: [] }), { id: 'a', outputs: [], error: null, error_code: null }, 'not told yet: detected, and [] shows nothing')
  told = 'token-classification'
  t.match(rows.toRow({ id: 'b', outputs: [] }), { entities: [], entity_count: 0 }, 'told: [] is no entities')
  t.equal(rows.task, 'token-classification')
  told = 'text-classification'
  t.match(rows.toRow({ id: 'c', outputs: [] }), { entities: [], entity_count: 0 }, 'fixed once told')
  t.equal(asked, 2)
  const echo = new ResultRows({ task: () => 'echo' })
  t.same(echo.toRow({ id: 'e', outputs: [] }), { id: 'e', outputs: [], error: null, error_code: null }, 'a task without flat columns: none, even for outputs that look like entities')
  t.same(echo.toRow({ id: 'f', outputs: [{ entity_group: 'X', word: 'w', start: 0, end: 1, score: 1 }] }).entities, undefined)
  t.throws(() => new ResultRows({ task: 5 as never }), { code: 'ERR_INVALID_OPTION', message: 'Option "task" must be a string or a function returning one, got 5' })
})

t.test('column types: inferred from a sample, given, known; cells checked', async (t) => {
  t.equal(inferColumnType(['a', null, 'b']), 'string')
  t.equal(inferColumnType([1, 2.5, undefined]), 'double')
  t.equal(inferColumnType([true, false]), 'boolean')
  t.equal(inferColumnType([{ a: 1 }, [1]]), 'json')
  t.equal(inferColumnType([1, 'a']), 'json', 'mixed kinds')
  t.equal(inferColumnType([null, null]), 'json', 'all null')
  const rows = new ResultRows({ task: 'text-classification' })
  const sample = [rows.toRow({ id: 'a', outputs: { error: 'x' }, record: { text: 'hi', n: 1 } })]
  t.same(planColumns(sample, rows, { schema: { n: 'int64' } }), [
    { name: 'id', type: 'string' },
    { name: 'text', type: 'string' },
    { name: 'n', type: 'int64' },
    { name: 'label', type: 'string' },
    { name: 'score', type: 'double' },
    { name: 'outputs', type: 'json' },
    { name: 'error', type: 'string' },
    { name: 'error_code', type: 'string' },
  ])
  t.same(planColumns(sample, rows, { columns: ['text', 'label'] }), [{ name: 'text', type: 'string' }, { name: 'label', type: 'string' }])
  t.equal(parquetCell({ name: 'x', type: 'double' }, NaN, 0), null, 'NaN, which parquetjs-lite cannot write, is null')
  t.equal(parquetCell({ name: 'x', type: 'json' }, 'a', 0), '"a"')
  t.equal(parquetCell({ name: 'x', type: 'json' }, { n: 10n }, 0), '{"n":"10"}')
  t.throws(() => parquetCell({ name: 'x', type: 'int32' }, 2 ** 31, 4), { code: 'ERR_SCHEMA_MISMATCH', column: 'x', message: /^Row 4, column "x": a number/ })
  t.throws(() => parquetCell({ name: 'x', type: 'boolean' }, 'true', 0), { code: 'ERR_SCHEMA_MISMATCH' })
})

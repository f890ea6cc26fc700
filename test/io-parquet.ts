import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects } from 'hyparquet'
import parquet from 'parquetjs-lite'
import { InferenceItemError, InputFileError, MissingInputError, OutputFileError, SchemaMismatchError } from '../lib/errors.js'
import { countRows } from '../lib/io/count-rows.js'
import { readParquet } from '../lib/io/read-parquet.js'
import { writeParquet } from '../lib/io/write-parquet.js'
import { collect, drain, settle } from './fixtures/io/helpers.js'

/** Rows and metadata of a Parquet file as hyparquet, an independent implementation, reads them. */
async function hyparquet(path: string) {
  const file = await asyncBufferFromFile(path)
  const metadata = await parquetMetadataAsync(file)
  const rows = await parquetReadObjects({ file })
  const types = Object.fromEntries(metadata.schema.slice(1).map((s) => [s.name, s.converted_type ? `${s.type}/${s.converted_type}` : s.type]))
  return { rows, metadata, types, groups: metadata.row_groups.map((g) => Number(g.num_rows)) }
}

const POS = [[{ label: 'POSITIVE', score: 0.98 }, { label: 'NEGATIVE', score: 0.02 }]]
const NEG = [[{ label: 'NEGATIVE', score: 0.75 }, { label: 'POSITIVE', score: 0.25 }]]

function results() {
  return [
    { id: 'r0', outputs: POS, record: { id: '7', text: 'Great "value", naïve café 😀' } },
    {
      id: 'r1',
      outputs: { error: 'inputs must be a string', code: 'ERR_MODEL_INPUT' },
      record: { id: '8', text: '' },
      error: new InferenceItemError('inputs must be a string', 'r1', 'ERR_MODEL_INPUT'),
    },
    { id: 'r2', outputs: NEG, record: { id: '9', text: 'line one\nline two, 日本語' } },
    { id: 'r3', outputs: { error: 'The record has no column "text"', code: 'ERR_MISSING_INPUT' }, record: { id: '10' }, error: new MissingInputError('The record has no column "text"', 'text') },
  ]
}

t.test('writeParquet → readParquet and hyparquet: input columns beside result columns, nulls, errors, unicode', async (t) => {
  const path = join(t.testdir(), 'out.parquet')
  await pipeline(Readable.from(results()), writeParquet(path))
  t.ok(existsSync(path))
  t.notOk(existsSync(`${path}.partial`), 'the partial file was renamed into place')

  const expected = [
    { id: 'r0', input_id: '7', text: 'Great "value", naïve café 😀', label: 'POSITIVE', score: 0.98, outputs: JSON.stringify(POS), error: null, error_code: null },
    {
      id: 'r1',
      input_id: '8',
      text: '',
      label: null,
      score: null,
      outputs: '{"error":"inputs must be a string","code":"ERR_MODEL_INPUT"}',
      error: 'inputs must be a string',
      error_code: 'ERR_MODEL_INPUT',
    },
    { id: 'r2', input_id: '9', text: 'line one\nline two, 日本語', label: 'NEGATIVE', score: 0.75, outputs: JSON.stringify(NEG), error: null, error_code: null },
    {
      id: 'r3',
      input_id: '10',
      text: null,
      label: null,
      score: null,
      outputs: '{"error":"The record has no column \\"text\\"","code":"ERR_MISSING_INPUT"}',
      error: 'The record has no column "text"',
      error_code: 'ERR_MISSING_INPUT',
    },
  ]
  const h = await hyparquet(path)
  t.same(h.rows, expected, 'hyparquet reads every value back')
  t.same(Object.keys(h.rows[0]), ['id', 'input_id', 'text', 'label', 'score', 'outputs', 'error', 'error_code'], 'column order')
  t.same(h.types, {
    id: 'BYTE_ARRAY/UTF8',
    input_id: 'BYTE_ARRAY/UTF8',
    text: 'BYTE_ARRAY/UTF8',
    label: 'BYTE_ARRAY/UTF8',
    score: 'DOUBLE',
    outputs: 'BYTE_ARRAY/UTF8',
    error: 'BYTE_ARRAY/UTF8',
    error_code: 'BYTE_ARRAY/UTF8',
  })
  t.same(await collect(readParquet(path)), expected, 'our reader reads the same')
  t.same(JSON.parse(h.rows[0].outputs as string), POS, 'the raw outputs are JSON text')
})

t.test('schema inference: errors first, all-null and mixed columns, task given, zero rows', async (t) => {
  const dir = t.testdir()
  // The first results are errors: without `task` there is nothing to tell label/score from...
  const items = [
    { id: 'a', outputs: { error: 'x' }, record: { n: 1, flag: true, tags: null, mixed: 1 } },
    { id: 'b', outputs: POS, record: { n: 2.5, flag: null, tags: null, mixed: 'two' } },
    { id: 'c', outputs: NEG, record: { n: null, flag: false, tags: ['a'], mixed: { three: 3 } } },
  ]
  const path = join(dir, 'inferred.parquet')
  await pipeline(Readable.from(items), writeParquet(path, { task: 'text-classification' }))
  const h = await hyparquet(path)
  t.match(h.types, { n: 'DOUBLE', flag: 'BOOLEAN', tags: 'BYTE_ARRAY/UTF8', mixed: 'BYTE_ARRAY/UTF8', label: 'BYTE_ARRAY/UTF8', score: 'DOUBLE' })
  t.same(
    h.rows.map((r) => [r.n, r.flag, r.tags, r.mixed, r.label, r.score, r.error]),
    [
      [1, true, null, '1', null, null, 'x'],
      [2.5, null, null, '"two"', 'POSITIVE', 0.98, null],
      [null, false, '["a"]', '{"three":3}', 'NEGATIVE', 0.75, null],
    ],
    'mixed and all-null columns hold JSON text',
  )

  const zshot = join(dir, 'zero-shot.parquet')
  const zs = { sequence: 's', labels: ['sport', 'politics'], scores: [0.2, 0.8] }
  await pipeline(Readable.from([{ id: 'z', outputs: zs }]), writeParquet(zshot))
  t.match((await hyparquet(zshot)).rows, [{ id: 'z', label: 'politics', score: 0.8, labels: '["sport","politics"]', scores: '[0.2,0.8]' }])

  const ner = join(dir, 'ner.parquet')
  const entities = [{ entity_group: 'PER', score: 0.9, word: 'Ada', start: 0, end: 3 }]
  await pipeline(Readable.from([{ id: 'e', outputs: entities }, { id: 'f', outputs: [] }]), writeParquet(ner))
  const nerRows = (await hyparquet(ner)).rows
  t.same(nerRows.map((r) => [r.entities, r.entity_count]), [[JSON.stringify(entities), 1], ['[]', 0]])
  t.equal((await hyparquet(ner)).types.entity_count, 'INT32')

  const empty = join(dir, 'empty.parquet')
  await pipeline(Readable.from([]), writeParquet(empty))
  const e = await hyparquet(empty)
  t.same(e.rows, [])
  t.same(Object.keys(e.types), ['id', 'outputs', 'error', 'error_code'], 'an empty results file still has the result columns')
})

t.test('rowGroupSize and rowGroupBytes are honoured (hyparquet metadata); countRows reads the footer', async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'groups.parquet')
  const items = Array.from({ length: 25 }, (_, i) => ({ id: `r${i}`, outputs: POS, record: { text: `row ${i}` } }))
  await pipeline(Readable.from(items), writeParquet(path, { rowGroupSize: 10, sampleSize: 4 }))
  const h = await hyparquet(path)
  t.same(h.groups, [10, 10, 5])
  t.equal(h.rows.length, 25)
  t.same(h.rows.map((r) => r.id), items.map((i) => i.id), 'order kept across the held sample and row groups')
  t.equal(await countRows(path), 25)

  const big = join(dir, 'bytes.parquet')
  const vector = Array.from({ length: 256 }, (_, i) => i / 7)
  const embeddings = Array.from({ length: 40 }, (_, i) => ({ id: `e${i}`, outputs: [vector] }))
  // ~5 KB of JSON per row: a 20 KB cap cuts a group every few rows, long before 10 000.
  await pipeline(Readable.from(embeddings), writeParquet(big, { rowGroupBytes: 20_000 }))
  const b = await hyparquet(big)
  t.ok(b.groups.length >= 8, `cut by bytes into ${b.groups.length} groups (${b.groups.join(', ')})`)
  t.ok(b.groups.every((n) => n <= 5))
  t.equal(b.rows.length, 40)
  t.same(JSON.parse(b.rows[39].outputs as string), [vector], 'feature-extraction outputs stay raw')
})

t.test('schema option, kind records, compression, metadata, column names with commas', async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'records.parquet')
  const records = [
    { 'price, usd': 1.5, count: 3, big: 2 ** 40, ok: true, nested: { a: [1, 2] }, name: 'é' },
    { 'price, usd': null, count: -1, big: null, ok: false, nested: null, name: null },
  ]
  await pipeline(
    Readable.from(records),
    writeParquet(path, { kind: 'records', schema: { count: 'int32', big: 'int64', extra: 'string' }, compression: 'GZIP', metadata: { model: 'builtin/echo' } }),
  )
  const r = await collect(readParquet(path))
  t.same(r, [
    { 'price_ usd': 1.5, count: 3, big: 2 ** 40, ok: true, nested: '{"a":[1,2]}', name: 'é', extra: null },
    { 'price_ usd': null, count: -1, big: null, ok: false, nested: null, name: null, extra: null },
  ])
  const types = await (async () => {
    const reader = await parquet.ParquetReader.openFile(path)
    const out = Object.fromEntries(reader.getSchema().fieldList.map((f) => [f.name, f.primitiveType]))
    const meta = reader.getMetadata()
    await reader.close()
    return { out, meta }
  })()
  t.same(types.out, { 'price_ usd': 'DOUBLE', count: 'INT32', big: 'INT64', ok: 'BOOLEAN', nested: 'BYTE_ARRAY', name: 'BYTE_ARRAY', extra: 'BYTE_ARRAY' })
  t.equal(types.meta.model, 'builtin/echo')

  const snappy = join(dir, 'snappy.parquet')
  await pipeline(Readable.from(records), writeParquet(snappy, { kind: 'records', compression: 'UNCOMPRESSED' }))
  const h = await hyparquet(snappy)
  t.same(h.rows[0], { 'price_ usd': 1.5, count: 3, big: 2 ** 40, ok: true, nested: '{"a":[1,2]}', name: 'é' })
  t.same(h.metadata.row_groups[0].columns.map((c) => c.meta_data?.codec), Array(6).fill('UNCOMPRESSED'))

  const options = [
    [{ rowGroupSize: 0 }, /"rowGroupSize" must be an integer >= 1/],
    [{ compression: 'LZ4' }, /"compression" must be "SNAPPY" or "GZIP" or "UNCOMPRESSED"/],
    [{ schema: { a: 'text' } }, /"schema.a" must be one of string, double, int32, int64, boolean, json/],
    [{ metadata: { a: 1 } }, /"metadata" must be an object of string values/],
    [{ kind: 'rows' }, /"kind" must be "results" or "records"/],
    [{ sampleSize: 0 }, /"sampleSize"/],
  ] as const
  for (const [o, message] of options) t.throws(() => writeParquet(join(dir, 'x.parquet'), o as never), { code: 'ERR_INVALID_OPTION', message })
})

t.test('a value that does not fit its column fails the writer naming column and row; no file at the path', async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'mismatch.parquet')
  const items = [
    ...Array.from({ length: 3 }, (_, i) => ({ id: `r${i}`, outputs: POS, record: { stars: i } })),
    { id: 'r3', outputs: POS, record: { stars: 'five' } },
  ]
  const writer = writeParquet(path, { sampleSize: 2 })
  const errors: Error[] = []
  writer.on('error', (e) => errors.push(e))
  await t.rejects(pipeline(Readable.from(items), writer), SchemaMismatchError)
  t.equal(errors.length, 1, "'error' once")
  t.match(errors[0], {
    code: 'ERR_SCHEMA_MISMATCH',
    column: 'stars',
    message: /^Row 3, column "stars": a string \("five"\) does not fit the column's type double .*pass schema: \{"stars": 'json'\}/,
  })
  t.notOk(existsSync(path), 'nothing at the path: the file is only renamed into place when complete')
  t.ok(existsSync(`${path}.partial`))
  // With the schema given, the same rows are written.
  await pipeline(Readable.from(items), writeParquet(path, { sampleSize: 2, schema: { stars: 'json' } }))
  t.same((await hyparquet(path)).rows.map((r) => r.stars), ['0', '1', '2', '"five"'])
})

t.test('writer errors: a missing folder fails at once with OutputFileError; non-results need kind records', async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'no', 'such', 'out.parquet')
  const writer = writeParquet(path)
  const [err] = await Promise.all([new Promise<Error>((r) => writer.once('error', r))])
  t.ok(err instanceof OutputFileError)
  t.match(err, { code: 'ERR_OUTPUT_FILE', path, message: `Cannot create output file ${JSON.stringify(path)}: no such file or directory (ENOENT)` })
  await t.rejects(pipeline(Readable.from([{ text: 'a plain record' }]), writeParquet(join(dir, 'x.parquet'))), {
    code: 'ERR_INVALID_OPTION',
    message: /Expected an InferenceStream result \{id, outputs, record\?, error\?\}.*pass kind: 'records'/,
  })
})

t.test('readParquet: columns, a missing column, files it cannot read', async (t) => {
  const dir = t.testdir({ 'not.parquet': 'hello, this is not parquet at all' })
  const path = join(dir, 'in.parquet')
  await pipeline(Readable.from(results()), writeParquet(path))
  t.same(await collect(readParquet(path, { columns: ['text', 'label'] })), [
    { text: 'Great "value", naïve café 😀', label: 'POSITIVE' },
    { text: '', label: null },
    { text: 'line one\nline two, 日本語', label: 'NEGATIVE' },
    { text: null, label: null },
  ])
  t.match((await drain(readParquet(path, { columns: ['nope'] }))).error, { code: 'ERR_INPUT_FILE', message: /no column "nope" \(columns: id, input_id, text/ })
  const missing = await drain(readParquet(join(dir, 'missing.parquet')))
  t.ok(missing.error instanceof InputFileError)
  t.match(missing.error!.message, /^Cannot read Parquet file ".*missing\.parquet": no such file or directory \(ENOENT\)$/)
  t.match((await drain(readParquet(join(dir, 'not.parquet')))).error, { code: 'ERR_INPUT_FILE', message: /not\.parquet": not a Parquet file$/ })
  const v2 = fileURLToPath(new URL('./fixtures/io/hyparquet-writer-v2.parquet', import.meta.url))
  t.match((await drain(readParquet(v2))).error, { code: 'ERR_INPUT_FILE', message: /Parquet format version 2 .* parquetjs-lite reads only version 1 files/ })
  t.equal(await countRows(v2).catch((e: Error) => e.message), `Cannot read Parquet file ${JSON.stringify(v2)}: its footer says Parquet format version 2 (as pyarrow and most current writers write); parquetjs-lite reads only version 1 files`)
})

t.test('readParquet streams row group by row group, only as the consumer reads', async (t) => {
  const path = join(t.testdir(), 'groups.parquet')
  const items = Array.from({ length: 1000 }, (_, i) => ({ id: `r${i}`, outputs: POS, record: { text: `row ${i}` } }))
  await pipeline(Readable.from(items), writeParquet(path, { rowGroupSize: 100 }))
  const envelope = (parquet as unknown as { ParquetEnvelopeReader: { prototype: { readRowGroup: (...a: unknown[]) => unknown } } }).ParquetEnvelopeReader.prototype
  const original = envelope.readRowGroup
  let groupsRead = 0
  envelope.readRowGroup = function (this: unknown, ...args: unknown[]) {
    groupsRead++
    return original.apply(this, args)
  }
  t.teardown(() => {
    envelope.readRowGroup = original
  })
  const reader = readParquet(path)
  const it = reader[Symbol.asyncIterator]()
  for (let i = 0; i < 5; i++) await it.next()
  await settle(100)
  t.equal(groupsRead, 1, 'one row group read while the consumer holds back')
  await it.return!()
  const all = await collect(readParquet(path))
  t.equal(all.length, 1000)
  t.equal(groupsRead, 11)
})

t.test('writeParquet honours backpressure: write() returns false while a row group is flushed', async (t) => {
  const path = join(t.testdir(), 'bp.parquet')
  const writer = writeParquet(path, { rowGroupSize: 50, sampleSize: 1, highWaterMark: 4 })
  let sawFalse = false
  for (let i = 0; i < 200; i++) {
    if (!writer.write({ id: `r${i}`, outputs: POS })) {
      sawFalse = true
      await new Promise((r) => writer.once('drain', r))
    }
  }
  writer.end()
  await new Promise((r) => writer.once('finish', r))
  t.ok(sawFalse)
  t.equal(writer.rowsWritten, 200)
  t.same((await hyparquet(path)).groups, [50, 50, 50, 50])
})

import { spawnSync } from 'node:child_process'
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readSync, writeFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { fileURLToPath } from 'node:url'
import * as zlib from 'node:zlib'
import t from 'tap'
import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects } from 'hyparquet'
import parquet from 'parquetjs-lite'
import { InferenceItemError, InputFileError, MissingInputError, OutputFileError, SchemaMismatchError } from '../lib/errors.js'
import { countRows } from '../lib/io/count-rows.js'
import { parquetColumns, readParquet, type ParquetRowGroupEvent } from '../lib/io/read-parquet.js'
import { parquetHeader } from '../lib/io/hyparquet-pages.js'
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

const FIXTURES = fileURLToPath(new URL('./fixtures/io/hyparquet-writer-fixtures.mjs', import.meta.url))
const V2 = fileURLToPath(new URL('./fixtures/io/hyparquet-writer-v2.parquet', import.meta.url))

/**
 * Writes `path` with hyparquet-writer, an independent Parquet writer (format version 2, DATA_PAGE_V2,
 * RLE_DICTIONARY), through test/fixtures/io/hyparquet-writer-fixtures.mjs run by plain node (tap's
 * TypeScript loader cannot resolve hyparquet-writer's own imports).
 */
function hyparquetWriter(path: string, kind: 'mixed' | 'rows' | 'codec', ...args: string[]): string {
  const env = { ...process.env }
  delete env.NODE_OPTIONS
  const r = spawnSync(process.execPath, [FIXTURES, kind, path, ...args], { encoding: 'utf8', env })
  if (r.status !== 0) throw new Error(`hyparquet-writer-fixtures.mjs ${kind} failed: ${r.stderr}`)
  return path
}

/** The records of `readParquet(path, options)`, and the row groups it announced as it decoded them. */
async function readWithGroups(path: string, options = {}) {
  const reader = readParquet(path, options)
  const groups: ParquetRowGroupEvent[] = []
  reader.on('row-group', (e: ParquetRowGroupEvent) => groups.push(e))
  return { records: await collect(reader), groups }
}

/**
 * Reads 5 records of `readParquet(path)`, waits while holding back, then reads on to the end or an
 * error: whether the reader had failed while held back, the records, the error.
 */
async function readUntilError(path: string) {
  const reader = readParquet(path)
  const it = reader[Symbol.asyncIterator]()
  const records: Record<string, unknown>[] = []
  let error: (Error & { code?: string }) | undefined
  let failedEarly = false
  try {
    for (let i = 0; i < 5; i++) records.push((await it.next()).value as Record<string, unknown>)
    await settle(100)
    failedEarly = reader.destroyed
    for (;;) {
      const next = await it.next()
      if (next.done) break
      records.push(next.value as Record<string, unknown>)
    }
  } catch (err) {
    error = err as Error
  }
  return { failedEarly, records, error }
}

/** Open file descriptors of this process (Linux), to see that a reader closed its file. */
function openFds(): number | undefined {
  return existsSync('/proc/self/fd') ? readdirSync('/proc/self/fd').length : undefined
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
  writeFileSync(join(dir, 'empty.parquet'), '')
  t.match((await drain(readParquet(join(dir, 'empty.parquet')))).error, { code: 'ERR_INPUT_FILE', message: /empty\.parquet": not a Parquet file$/ })
  writeFileSync(join(dir, 'par1.parquet'), 'PAR1')
  t.match((await drain(readParquet(join(dir, 'par1.parquet')))).error, { code: 'ERR_INPUT_FILE', message: /par1\.parquet": not a Parquet file$/ })
  mkdirSync(join(dir, 'folder.parquet'))
  t.match((await drain(readParquet(join(dir, 'folder.parquet')))).error, { code: 'ERR_INPUT_FILE', message: /folder\.parquet": it is a directory \(EISDIR\)$/ })
  // countRows and the column listing of input datasets fail the same way, from the footer.
  await t.rejects(countRows(join(dir, 'not.parquet')), { code: 'ERR_INPUT_FILE', message: /not\.parquet": not a Parquet file$/ })
  await t.rejects(parquetColumns(join(dir, 'missing.parquet')), { code: 'ERR_INPUT_FILE', message: /no such file or directory \(ENOENT\)$/ })

  // A compression that cannot be decompressed here fails naming it, and what can be read.
  const lzo = hyparquetWriter(join(dir, 'lzo.parquet'), 'codec', 'LZO')
  t.equal(await countRows(lzo), 3, 'the footer is still read')
  t.match((await drain(readParquet(lzo))).error, {
    code: 'ERR_INPUT_FILE',
    message: /^Cannot read Parquet file ".*lzo\.parquet" \(row group 1 of 1, rows 0-2\): it uses the LZO compression, which cannot be decompressed here \(readable: UNCOMPRESSED, SNAPPY, GZIP, BROTLI, ZSTD, LZ4, LZ4_RAW\)$/,
  })
})

t.test('readParquet reads the version 2 file parquetjs-lite refused (format version 2 footer, DATA_PAGE_V2)', async (t) => {
  // Made by hyparquet-writer (test/fixtures/io/README.md): parquetjs-lite, our former reader, refused it.
  t.strictSame(await collect(readParquet(V2)), [
    { text: 'great product', stars: 5 },
    { text: 'broke after a day', stars: 1 },
    { text: 'great product', stars: 5 },
  ])
  t.equal(await countRows(V2), 3)
  t.same(await parquetColumns(V2), ['text', 'stars'])
  t.same(await collect(readParquet(V2, { columns: ['stars'] })), [{ stars: 5 }, { stars: 1 }, { stars: 5 }])
})

const LABELS = ['positive', 'negative', 'neutral']

/** Row `i` of hyparquet-writer-fixtures.mjs's `mixed` file, as readParquet gives it. */
function mixedRecord(i: number) {
  return {
    text: i % 7 === 3 ? null : `review ${i % 10}: ${LABELS[i % 3]} 😀`,
    label: LABELS[i % 3],
    stars: (i % 5) + 1,
    // INT64: a number while it is a safe integer, else its decimal text.
    big: i === 7 ? '1152921504606846977' : i === 8 ? null : i * 1000,
    score: i / 4,
    // DATE: YYYY-MM-DD.
    day: i === 9 ? '1969-12-31' : new Date(Date.UTC(2024, 0, 1 + i)).toISOString().slice(0, 10),
    // TIMESTAMP(MICROS): ISO 8601 UTC with microseconds; a pre-1970 one counts its fraction forwards.
    at: i === 9 ? '1969-12-31T23:59:59.999999Z' : `${new Date(Date.UTC(2024, 0, 1, 0, 0, i)).toISOString().slice(0, 19)}.${String(i).padStart(6, '0')}Z`,
    // TIMESTAMP_MILLIS: ISO 8601 UTC with milliseconds.
    at_ms: new Date(Date.UTC(2024, 0, 1, 12, 0, 0, i)).toISOString(),
    // BYTE_ARRAY without a text annotation: base64.
    bin: Buffer.from([i & 255, 0, 255]).toString('base64'),
    // LIST: an array (null stays null, an empty list is []); a struct: an object.
    tags: i % 4 === 0 ? null : LABELS.slice(0, i % 3),
    meta: { source: LABELS[i % 3], n: i },
  }
}

t.test('readParquet: several row groups of dictionary pages, types other writers use (hyparquet-writer)', async (t) => {
  const dir = t.testdir()
  const path = hyparquetWriter(join(dir, 'mixed.parquet'), 'mixed')
  const h = await hyparquet(path)
  t.equal(h.metadata.version, 2, 'format version 2 footer')
  t.same(h.groups, [100, 100, 50], 'three row groups')
  const chunks = h.metadata.row_groups.flatMap((g) => g.columns.map((c) => c.meta_data!))
  const text = chunks.filter((c) => c.path_in_schema[0] === 'text')
  t.ok(text.every((c) => c.encodings.includes('RLE_DICTIONARY') && c.dictionary_page_offset !== undefined), 'text: a dictionary page and RLE_DICTIONARY data pages')
  t.ok(
    text.every((c) => c.encoding_stats!.some((s) => s.page_type === 'DATA_PAGE_V2' && s.encoding === 'RLE_DICTIONARY' && s.count >= 2) || c.num_values < 100n),
    'several DATA_PAGE_V2 pages per full column chunk',
  )

  const expected = Array.from({ length: 250 }, (_, i) => mixedRecord(i))
  const { records, groups } = await readWithGroups(path)
  t.strictSame(records, expected, 'every value, of the right type, across row groups and pages')
  t.same(Object.keys(records[0]), ['text', 'label', 'stars', 'big', 'score', 'day', 'at', 'at_ms', 'bin', 'tags', 'meta'], 'column order of the file')
  t.strictSame(JSON.parse(JSON.stringify(records)), records, 'records survive JSON (no BigInt, Date or bytes left)')
  t.same(
    groups,
    [
      { index: 0, count: 3, rowStart: 0, rows: 100 },
      { index: 1, count: 3, rowStart: 100, rows: 100 },
      { index: 2, count: 3, rowStart: 200, rows: 50 },
    ],
    "one 'row-group' event per row group",
  )
  t.equal(await countRows(path), 250)
  t.same(await parquetColumns(path), Object.keys(expected[0]))

  t.strictSame(
    await collect(readParquet(path, { columns: ['meta', 'big', 'text'] })),
    expected.map((r) => ({ meta: r.meta, big: r.big, text: r.text })),
    'columns: only these, in this order',
  )

  // The records go through our writer as they are: dates and bytes as text; lists and structs as
  // JSON text; `big`, numbers and one decimal string beyond 2^53, mixes kinds: JSON text too.
  const out = join(dir, 'copy.parquet')
  await pipeline(readParquet(path), writeParquet(out, { kind: 'records' }))
  const copy = await collect(readParquet(out))
  t.equal(copy.length, 250)
  const jsonText = (v: unknown) => (v === null ? null : JSON.stringify(v))
  const json = (r: ReturnType<typeof mixedRecord>) => ({ ...r, big: jsonText(r.big), tags: jsonText(r.tags), meta: jsonText(r.meta) })
  t.strictSame(copy.slice(0, 12), expected.slice(0, 12).map(json))
})

t.test('readParquet decompresses GZIP, BROTLI, ZSTD, LZ4 and LZ4_RAW pages (on Node 20 too)', async (t) => {
  const dir = t.testdir()
  const rows = [
    { text: 'great product', stars: 5 },
    { text: 'broke after a day', stars: 1 },
    { text: 'great product', stars: 5 },
  ]
  for (const codec of ['GZIP', 'BROTLI', 'ZSTD', 'LZ4', 'LZ4_RAW']) {
    const path = hyparquetWriter(join(dir, `${codec}.parquet`), 'codec', codec)
    t.equal((await parquetMetadataAsync(await asyncBufferFromFile(path))).row_groups[0].columns[0].meta_data?.codec, codec)
    t.same(await collect(readParquet(path)), rows, codec)
  }
})

t.test('readParquet streams row group by row group, only as the consumer reads', async (t) => {
  const dir = t.testdir()
  const ours = join(dir, 'ours.parquet')
  const items = Array.from({ length: 1000 }, (_, i) => ({ id: `r${i}`, outputs: POS, record: { text: `row ${i}` } }))
  await pipeline(Readable.from(items), writeParquet(ours, { rowGroupSize: 100 }))
  const theirs = hyparquetWriter(join(dir, 'theirs.parquet'), 'rows', '1000', '100')
  for (const path of [ours, theirs]) {
    const fds = openFds()
    const reader = readParquet(path)
    const decoded: number[] = []
    reader.on('row-group', (e: ParquetRowGroupEvent) => decoded.push(e.index))
    const it = reader[Symbol.asyncIterator]()
    for (let i = 0; i < 5; i++) await it.next()
    await settle(100)
    t.same(decoded, [0], 'one row group decoded while the consumer holds back')
    for (let i = 5; i < 101; i++) await it.next()
    await settle(50)
    t.same(decoded, [0, 1], 'the next one only once the consumer is past the first')
    await it.return!()
    await settle(50)
    t.ok(reader.destroyed)
    if (fds !== undefined) t.equal(openFds(), fds, 'a reader stopped early closes its file')
    const all = await readWithGroups(path)
    t.equal(all.records.length, 1000)
    t.same(all.records.slice(998).map((r) => r.id), ['r998', 'r999'])
    t.same(all.groups.map((g) => g.index), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    if (fds !== undefined) t.equal(openFds(), fds, 'and so does one read to the end')
  }
})

t.test('readParquet never touches a row group before the consumer needs it (later groups corrupt)', async (t) => {
  const path = hyparquetWriter(join(t.testdir(), 'corrupt.parquet'), 'rows', '1000', '100')
  // Zero the pages of every row group but the first; the footer stays intact.
  const { metadata } = await hyparquet(path)
  const fd = openSync(path, 'r+')
  for (const group of metadata.row_groups.slice(1)) {
    for (const { meta_data: m } of group.columns) {
      const start = Number(m!.dictionary_page_offset ?? m!.data_page_offset)
      writeSync(fd, Buffer.alloc(Number(m!.total_compressed_size)), 0, Number(m!.total_compressed_size), start)
    }
  }
  const probe = Buffer.alloc(4)
  readSync(fd, probe, 0, 4, 0)
  closeSync(fd)
  t.equal(probe.toString(), 'PAR1')
  const { failedEarly, records, error } = await readUntilError(path)
  t.notOk(failedEarly, 'no error while the consumer is in the first row group: the second was not read')
  t.equal(records.length, 100, 'every record of the first row group, then the error')
  t.match(error, { code: 'ERR_INPUT_FILE', message: /^Cannot read Parquet file ".*corrupt\.parquet" \(row group 2 of 10, rows 100-199\): / })
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

t.test('readParquet decodes a row group page by page, only as the consumer reads (later pages corrupt)', async (t) => {
  // One row group of 50k rows, as pandas writes it (1 MiB pages, no page index): zero the `text`
  // column from its third data page on. The rows before it come out; the error only when reached.
  const path = join(t.testdir(), 'one-group.parquet')
  const env = { ...process.env }
  delete env.NODE_OPTIONS
  const gen = spawnSync(process.execPath, [FIXTURES, 'big', path, '50000'], { encoding: 'utf8', env })
  t.equal(gen.status, 0, gen.stderr)
  const { metadata } = await hyparquet(path)
  t.equal(metadata.row_groups.length, 1)
  const text = metadata.row_groups[0].columns.find((c) => c.meta_data!.path_in_schema[0] === 'text')!.meta_data!
  const start = Number(text.dictionary_page_offset || text.data_page_offset)
  const end = start + Number(text.total_compressed_size)
  const fd = openSync(path, 'r+')
  const bytes = Buffer.alloc(end - start)
  readSync(fd, bytes, 0, bytes.length, start)
  // Walk the page headers to the third data page, counting the rows before it.
  const reader = { view: new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), offset: 0 }
  let dataPages = 0
  let rowsBefore = 0
  while (dataPages < 2) {
    const header = parquetHeader(reader)
    reader.offset += header.compressed_page_size
    if (header.type === 'DICTIONARY_PAGE') continue
    dataPages++
    rowsBefore += Number(header.data_page_header_v2?.num_rows ?? header.data_page_header?.num_values)
  }
  t.ok(rowsBefore > 1024 && rowsBefore < 40000, `the first two pages hold ${rowsBefore} rows`)
  writeSync(fd, Buffer.alloc(bytes.length - reader.offset), 0, bytes.length - reader.offset, start + reader.offset)
  closeSync(fd)

  const { failedEarly, records, error } = await readUntilError(path)
  t.notOk(failedEarly, 'no error while the consumer is in the first pages: the corrupt ones were not read')
  t.same(records.map((r) => r.id), Array.from(records, (_, i) => i), 'in order')
  // Rows come in slices of 1024: the slice that reaches the corrupt page is lost with it.
  t.equal(records.length, Math.floor(rowsBefore / 1024) * 1024, 'every slice of rows before the corrupt page, in order, then the error')
  t.match(error, { code: 'ERR_INPUT_FILE', message: /^Cannot read Parquet file ".*one-group\.parquet" \(row group 1 of 1, rows 0-49999\): / })
})

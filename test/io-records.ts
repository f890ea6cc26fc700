import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { PassThrough, Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import t from 'tap'
import { InferenceItemError, InputFileError, UnknownFormatError } from '../lib/errors.js'
import { countRows } from '../lib/io/count-rows.js'
import { formatOf } from '../lib/io/formats.js'
import { readRecords } from '../lib/io/read-records.js'
import { writeCsv } from '../lib/io/write-csv.js'
import { writeJsonl } from '../lib/io/write-jsonl.js'
import { writeRecords } from '../lib/io/write-records.js'
import { collect, drain } from './fixtures/io/helpers.js'

const RECORDS = [
  { id: '1', text: 'plain' },
  { id: '2', text: 'comma, "quote" and\nnewline' },
  { id: '3', text: 'unicode é 😀 日本語' },
]
const POS = [[{ label: 'POSITIVE', score: 0.9 }]]

function results() {
  return [
    { id: 'a', outputs: POS, record: RECORDS[0] },
    { id: 'b', outputs: { error: 'bad', code: 'ERR_MODEL_INPUT' }, record: RECORDS[1], error: new InferenceItemError('bad', 'b', 'ERR_MODEL_INPUT') },
    { id: 'c', outputs: POS, record: RECORDS[2] },
  ]
}

t.test('formatOf: by extension, case-insensitive, or given', async (t) => {
  t.equal(formatOf('a/b.CSV'), 'csv')
  t.equal(formatOf('x.tsv'), 'tsv')
  t.equal(formatOf('x.ndjson'), 'jsonl')
  t.equal(formatOf('x.jsonl'), 'jsonl')
  t.equal(formatOf('x.json'), 'json')
  t.equal(formatOf('x.parquet'), 'parquet')
  t.equal(formatOf('x.txt', 'csv'), 'csv')
  t.throws(() => formatOf('data.txt'), {
    code: 'ERR_UNKNOWN_FORMAT',
    message: 'Cannot tell the format of "data.txt" from its extension ".txt": use .csv, .tsv, .jsonl, .ndjson, .json or .parquet, or pass the "format" option',
  })
  t.throws(() => formatOf('noext'), { message: /^Cannot tell the format of "noext" from its extension: use/ })
  t.throws(() => formatOf('x.csv', 'xlsx'), { code: 'ERR_UNKNOWN_FORMAT', message: 'Unknown format "xlsx": expected one of csv, tsv, jsonl, json, parquet' })
})

t.test('writeRecords → readRecords round trip for every format, picked by extension', async (t) => {
  const dir = t.testdir()
  for (const ext of ['csv', 'tsv', 'jsonl', 'ndjson', 'parquet']) {
    const path = join(dir, `out.${ext}`)
    const writer = writeRecords(path)
    t.equal(writer.format, ext === 'ndjson' ? 'jsonl' : ext)
    await pipeline(Readable.from(results()), writer)
    t.equal(writer.rowsWritten, 3)
    const reader = readRecords(path)
    const rows = (await collect(reader)) as Record<string, unknown>[]
    t.equal(rows.length, 3, ext)
    t.same(rows.map((r) => [r.id, r.input_id, r.text, r.label]), [
      ['a', '1', 'plain', 'POSITIVE'],
      ['b', '2', 'comma, "quote" and\nnewline', ext === 'jsonl' || ext === 'ndjson' ? undefined : ext === 'parquet' ? null : ''],
      ['c', '3', 'unicode é 😀 日本語', 'POSITIVE'],
    ], `${ext}: records and results survive`)
    t.equal(rows[1].error, 'bad', `${ext}: the error column`)
    t.equal(rows[1].error_code, 'ERR_MODEL_INPUT')
    // Records, not lines: the quoted line break of row b does not count in CSV either.
    t.equal(await countRows(path), 3, `${ext}: countRows`)
  }
  const tsv = readFileSync(join(dir, 'out.tsv'), 'utf8')
  t.ok(tsv.startsWith('id\tinput_id\ttext\tlabel\tscore\toutputs\terror\terror_code\n'), 'a .tsv is tab-delimited')
  const jsonl = readFileSync(join(dir, 'out.jsonl'), 'utf8').split('\n')
  t.same(JSON.parse(jsonl[0]), { id: 'a', input_id: '1', text: 'plain', label: 'POSITIVE', score: 0.9, outputs: POS, error: null, error_code: null }, 'JSONL keeps outputs as JSON')
})

t.test('readRecords reads JSON arrays; format overrides the extension; options reach the reader', async (t) => {
  const dir = t.testdir({
    'in.json': JSON.stringify(RECORDS),
    'in.txt': 'a;b\n1;2\n',
    'in.tsv': 'a\tb\n"x\ty"\t2\n',
  })
  t.same(await collect(readRecords(join(dir, 'in.json'), { columns: ['text'] })), RECORDS.map((r) => ({ text: r.text })))
  t.equal(await countRows(join(dir, 'in.json')), undefined, 'no cheap count for a JSON array')
  t.same(await collect(readRecords(join(dir, 'in.txt'), { format: 'csv', delimiter: ';', typed: true })), [{ a: 1, b: 2 }])
  const tsv = readRecords(join(dir, 'in.tsv'))
  t.equal(tsv.format, 'tsv')
  t.same(await collect(tsv), [{ a: 'x\ty', b: '2' }])
})

t.test('unknown extensions and missing files give clear errors', async (t) => {
  const dir = t.testdir()
  t.throws(() => readRecords(join(dir, 'in.xlsx')), UnknownFormatError)
  t.throws(() => writeRecords(join(dir, 'out.xlsx')), { code: 'ERR_UNKNOWN_FORMAT', message: /"out\.xlsx"|out\.xlsx/ })
  t.throws(() => writeRecords(join(dir, 'out.json')), { code: 'ERR_UNKNOWN_FORMAT', message: /does not write \.json .* use \.jsonl/ })
  t.throws(() => writeRecords(new PassThrough()), { code: 'ERR_UNKNOWN_FORMAT', message: /needs the "format" option/ })
  await t.rejects(countRows(join(dir, 'in.xlsx')), { code: 'ERR_UNKNOWN_FORMAT' })
  for (const ext of ['csv', 'tsv', 'jsonl', 'json', 'parquet']) {
    const path = join(dir, `missing.${ext}`)
    const { error } = await drain(readRecords(path))
    t.ok(error instanceof InputFileError, ext)
    t.match(error, { code: 'ERR_INPUT_FILE', path, message: /no such file or directory \(ENOENT\)/ })
    t.match(error!.message, JSON.stringify(path))
    await t.rejects(countRows(path), { code: 'ERR_INPUT_FILE', message: /no such file or directory/ }, `countRows ${ext}`)
  }
})

t.test('writeCsv: columns, nulls, JSON cells, BOM, delimiter; a stream target; zero rows still has a header', async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'out.csv')
  await pipeline(Readable.from(results()), writeCsv(path, { columns: ['id', 'text', 'label', 'outputs', 'error'], bom: true, delimiter: ';' }))
  const text = readFileSync(path, 'utf8')
  t.equal(
    text,
    '\uFEFFid;text;label;outputs;error\n' +
      'a;plain;POSITIVE;"[[{""label"":""POSITIVE"",""score"":0.9}]]";\n' +
      'b;"comma, ""quote"" and\nnewline";;"{""error"":""bad"",""code"":""ERR_MODEL_INPUT""}";bad\n' +
      'c;unicode é 😀 日本語;POSITIVE;"[[{""label"":""POSITIVE"",""score"":0.9}]]";\n',
  )
  const out = new PassThrough()
  const chunks: string[] = []
  out.on('data', (c) => chunks.push(String(c)))
  await pipeline(Readable.from([{ a: 1, b: null }, { a: true, b: { x: 1 } }]), writeRecords(out, { format: 'csv', kind: 'records' }))
  t.equal(chunks.join(''), 'a,b\n1,\ntrue,"{""x"":1}"\n')
  const empty = join(dir, 'empty.csv')
  await pipeline(Readable.from([]), writeCsv(empty))
  t.equal(readFileSync(empty, 'utf8'), 'id,outputs,error,error_code\n')
})

t.test('writers: atomic by default, or written in place; finish only once the file is whole', async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'out.jsonl')
  const writer = writeJsonl(path)
  writer.write(results()[0])
  await new Promise((r) => setTimeout(r, 20))
  t.notOk(existsSync(path), 'nothing at the path while writing')
  t.ok(existsSync(`${path}.partial`))
  writer.end()
  await new Promise((r) => writer.once('finish', r))
  t.ok(existsSync(path))
  t.notOk(existsSync(`${path}.partial`))
  t.equal(readFileSync(path, 'utf8').split('\n').length, 2)

  const inPlace = join(dir, 'in-place.jsonl')
  const w2 = writeJsonl(inPlace, { atomic: false })
  w2.write(results()[0])
  await new Promise((r) => setTimeout(r, 20))
  t.ok(existsSync(inPlace))
  w2.end()
  await new Promise((r) => w2.once('finish', r))
  t.notOk(existsSync(`${inPlace}.partial`))
})

t.test('writers surface errors through destroy: error once, close last', async (t) => {
  const dir = t.testdir()
  writeFileSync(join(dir, 'file'), '')
  for (const make of [writeCsv, writeJsonl]) {
    const w = make(join(dir, 'file', 'out.x'))
    const events: string[] = []
    w.on('error', (e: NodeJS.ErrnoException) => events.push(`error ${(e as { code?: string }).code}`))
    w.on('close', () => events.push('close'))
    await new Promise((r) => w.once('close', r))
    t.same(events, ['error ERR_OUTPUT_FILE', 'close'])
  }
})

t.test('writeJsonl honours backpressure of its target', async (t) => {
  const out = new PassThrough({ highWaterMark: 64 })
  const writer = writeJsonl(out, { highWaterMark: 2 })
  let sawFalse = false
  let written = 0
  const writing = (async () => {
    for (let i = 0; i < 100; i++) {
      written++
      if (!writer.write({ id: `r${i}`, outputs: 'x'.repeat(100) })) {
        sawFalse = true
        await new Promise((r) => writer.once('drain', r))
      }
    }
    writer.end()
  })()
  await new Promise((r) => setTimeout(r, 50))
  t.ok(written < 100, `the writer waits for its reader (${written} written)`)
  const lines = (await collect(out)).join('').trim().split('\n')
  await writing
  t.ok(sawFalse)
  t.equal(lines.length, 100)
})

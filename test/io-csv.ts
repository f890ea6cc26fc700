import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import t from 'tap'
import { BadRecordError, InputFileError } from '../lib/errors.js'
import { CsvRows, type CsvRow } from '../lib/io/csv-rows.js'
import { readCsv } from '../lib/io/read-csv.js'
import { drain, lazySource, settle } from './fixtures/io/helpers.js'

// Lines:          1         2                     3  4      5         6 7        8           9
const TRICKY = 'id,text\r\n1,"a, ""quoted"" word"\r\n\r\n2,"two\nlines"\n3,  spaced \n\n4,"é😀"\n5,"x\r\ny\r\nz"\n6,end'

function parseAll(chunks: string[]): CsvRow[] {
  const rows = new CsvRows()
  const out: CsvRow[] = []
  for (const c of chunks) out.push(...rows.push(c))
  out.push(...rows.end())
  return out
}

t.test('CsvRows: rows and their lines are the same however the text is chunked', async (t) => {
  const whole = parseAll([TRICKY])
  t.same(whole, [
    { fields: ['id', 'text'], line: 1 },
    { fields: ['1', 'a, "quoted" word'], line: 2 },
    { fields: ['2', 'two\nlines'], line: 4 },
    { fields: ['3', '  spaced '], line: 6 },
    { fields: ['4', 'é😀'], line: 8 },
    { fields: ['5', 'x\r\ny\r\nz'], line: 9 },
    { fields: ['6', 'end'], line: 12 },
  ])
  for (let i = 1; i < TRICKY.length; i++) t.same(parseAll([TRICKY.slice(0, i), TRICKY.slice(i)]), whole, `split at ${i}`)
  t.same(parseAll([...TRICKY]), whole, 'one character at a time')
})

t.test('CsvRows: a malformed row is reported with its line and parsing resumes after it', async (t) => {
  const text = 'a,b\n1,2\n3,"x"y\n4,5\n"unclosed,6\n7,8\n'
  const expected = [
    { fields: ['a', 'b'], line: 1 },
    { fields: ['1', '2'], line: 2 },
    { error: 'text after a closing quote: expected "," or a line break, got "y"', line: 3 },
    { fields: ['4', '5'], line: 4 },
    { error: 'unclosed quote: no closing " before the end of the input', line: 5 },
    { fields: ['7', '8'], line: 6 },
  ]
  t.same(parseAll([text]), expected)
  for (let i = 1; i < text.length; i++) t.same(parseAll([text.slice(0, i), text.slice(i)]), expected, `split at ${i}`)
})

t.test('CsvRows: an unclosed quote cannot hold more than maxRecordLength', async (t) => {
  const rows = new CsvRows({ maxRecordLength: 100 })
  const out: CsvRow[] = rows.push('a\n"never closed\n')
  for (let i = 0; i < 50; i++) out.push(...rows.push(`line ${i}\n`))
  out.push(...rows.end())
  t.same(out[0], { fields: ['a'], line: 1 })
  t.same(out[1], { error: 'row longer than 100 characters (an unclosed quote?)', line: 2 })
  // Parsing resumed on line 3: every later line is a row of its own.
  t.same(out.slice(2).map((r) => ('fields' in r ? r.fields[0] : r.error)), Array.from({ length: 50 }, (_, i) => `line ${i}`))
  t.equal(out[2].line, 3)
})

t.test('readCsv: header, quoting, embedded line breaks, commas, BOM, CRLF, unicode', async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'reviews.csv')
  writeFileSync(path, `\uFEFF${TRICKY}`)
  const { records, bad } = await drain(readCsv(path))
  t.same(bad, [])
  t.same(records, [
    { id: '1', text: 'a, "quoted" word' },
    { id: '2', text: 'two\nlines' },
    { id: '3', text: '  spaced ' },
    { id: '4', text: 'é😀' },
    { id: '5', text: 'x\r\ny\r\nz' },
    { id: '6', text: 'end' },
  ])
})

t.test('readCsv: delimiter ";", quote, typed numbers, headers given, columns picked', async (t) => {
  const text = 'name;price;note\n"a;b";1.5;x\nc;-2e3;"say ""hi"""\nd;12abc;\n'
  const r1 = await drain(readCsv(Readable.from([text]), { delimiter: ';' }))
  t.same(r1.records, [
    { name: 'a;b', price: '1.5', note: 'x' },
    { name: 'c', price: '-2e3', note: 'say "hi"' },
    { name: 'd', price: '12abc', note: '' },
  ])
  const r2 = await drain(readCsv(Readable.from([text]), { delimiter: ';', typed: true, columns: ['price', 'name'] }))
  t.same(r2.records, [
    { price: 1.5, name: 'a;b' },
    { price: -2000, name: 'c' },
    { price: '12abc', name: 'd' },
  ])
  t.same(Object.keys(r2.records[0]), ['price', 'name'], 'columns in the order asked')
  const r3 = await drain(readCsv(Readable.from(["x|'y|z'\n"]), { headers: ['a', 'b'], delimiter: '|', quote: "'" }))
  t.same(r3.records, [{ a: 'x', b: 'y|z' }])
  const r4 = await drain(readCsv(Readable.from(['a,,c\n1,2,3\n'])))
  t.same(r4.records, [{ a: '1', column_2: '2', c: '3' }], 'an empty header name gets a name')
})

t.test('readCsv: bad rows are skipped with an event naming the line; the stream goes on', async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'bad.csv')
  writeFileSync(path, 'id,text\n1,ok\n2,"a"b\n3,too,many\n4\n5,"fine\nstill"\n6,"open\n7,last\n')
  const reader = readCsv(path)
  const { records, bad, error } = await drain(reader)
  t.notOk(error)
  t.same(records, [
    { id: '1', text: 'ok' },
    { id: '5', text: 'fine\nstill' },
    { id: '7', text: 'last' },
  ])
  t.same(bad.map((e) => e.line), [3, 4, 5, 8])
  t.ok(bad.every((e) => e instanceof BadRecordError && e.code === 'ERR_BAD_RECORD' && e.path === path))
  t.match(bad[0].message, `${path} line 3: text after a closing quote`)
  t.match(bad[1].message, `${path} line 4: expected 2 columns, got 3`)
  t.match(bad[2].message, 'line 5: expected 2 columns, got 1')
  t.match(bad[3].message, 'line 8: unclosed quote')
  t.equal(reader.badRecords, 4)
  t.equal(reader.recordsRead, 3)
  t.same(
    bad.map((e) => e.reason),
    ['text after a closing quote: expected "," or a line break, got "b"', 'expected 2 columns, got 3', 'expected 2 columns, got 1', 'unclosed quote: no closing " before the end of the input'],
    'reason: what is wrong, without where',
  )
})

t.test('CsvRows: a bad row after blank lines (a lone CR among them) is reported once, on its own line', async (t) => {
  const text = 'a,b\n1,"multi\nline"\n\r\n\r"x"y,2\n3,4\n'
  for (const chunks of [[text], text.split('')]) {
    t.same(parseAll(chunks), [
      { fields: ['a', 'b'], line: 1 },
      { fields: ['1', 'multi\nline'], line: 2 },
      { error: 'text after a closing quote: expected "," or a line break, got "y"', line: 6 },
      { fields: ['3', '4'], line: 7 },
    ])
  }
})

t.test("readCsv onBadRecord: 'error' fails at the bad row, after every row before it", async (t) => {
  const { records, error } = await drain(readCsv(Readable.from(['a\n1\n2\n"x"y\n3\n']), { onBadRecord: 'error' }))
  t.same(records, [{ a: '1' }, { a: '2' }])
  t.ok(error instanceof BadRecordError)
  t.match(error, { code: 'ERR_BAD_RECORD', line: 4, message: /^line 4: text after a closing quote/ })
})

t.test('readCsv: a missing file, a directory, a duplicate header, a missing column: InputFileError naming it', async (t) => {
  const dir = t.testdir({ 'dup.csv': 'a,b,a\n1,2,3\n', 'ok.csv': 'a,b\n1,2\n' })
  const missing = await drain(readCsv(join(dir, 'nope.csv')))
  t.ok(missing.error instanceof InputFileError)
  t.match(missing.error, { code: 'ERR_INPUT_FILE', path: join(dir, 'nope.csv') })
  t.equal(missing.error!.message, `Cannot read input file ${JSON.stringify(join(dir, 'nope.csv'))}: no such file or directory (ENOENT)`)
  t.match((await drain(readCsv(dir))).error, { code: 'ERR_INPUT_FILE', message: /it is a directory \(EISDIR\)/ })
  t.match((await drain(readCsv(join(dir, 'dup.csv')))).error, { code: 'ERR_INPUT_FILE', message: /line 1: the header names column "a" twice/ })
  t.match((await drain(readCsv(join(dir, 'ok.csv'), { columns: ['a', 'zz'] }))).error, {
    code: 'ERR_INPUT_FILE',
    message: /no column "zz" in the header \(a, b\)/,
  })
})

t.test('readCsv: options are checked, naming the option', async (t) => {
  t.throws(() => readCsv('x.csv', { delimiter: ';;' }), { code: 'ERR_INVALID_OPTION', message: /"delimiter"/ })
  t.throws(() => readCsv('x.csv', { onBadRecord: 'ignore' as never }), { code: 'ERR_INVALID_OPTION', message: /"onBadRecord" must be "skip" or "error"/ })
  t.throws(() => readCsv('x.csv', { columns: [] }), { message: /"columns"/ })
  t.throws(() => readCsv('x.csv', { typed: 1 as never }), { message: /"typed" must be a boolean/ })
  t.throws(() => readCsv('x.csv', { maxRecordLength: 0 }), { message: /"maxRecordLength" must be an integer >= 1/ })
})

t.test('readCsv: multi-byte characters split across chunks', async (t) => {
  const bytes = Buffer.from('t\n"é😀,ü"\n')
  const chunks = [...bytes].map((b) => Buffer.from([b]))
  const { records } = await drain(readCsv(Readable.from(chunks)))
  t.same(records, [{ t: 'é😀,ü' }])
})

t.test('readCsv honours backpressure: a paused consumer pauses the source', async (t) => {
  const chunk = Array.from({ length: 100 }, (_, i) => `${i},some text for row ${i}\n`).join('')
  const source = lazySource((function* () {
    yield 'n,text\n'
    for (let i = 0; i < 10_000; i++) yield chunk
  })())
  const reader = readCsv(source)
  const it = reader[Symbol.asyncIterator]()
  for (let i = 0; i < 5; i++) await it.next()
  await settle(100)
  const pulled = source.pulled()
  t.ok(pulled < 50, `only a few chunks read ahead (${pulled} of 10001)`)
  await settle(100)
  t.equal(source.pulled(), pulled, 'nothing more is read while paused')
  await it.return!()
  t.ok(reader.destroyed)
  t.ok(source.destroyed, 'destroying the reader destroys its source')
})

import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { countRows } from '../lib/io/count-rows.js'
import { CsvRecordCounter, type CsvCountDialect } from '../lib/io/csv-count.js'
import { CsvRows, type CsvRowsOptions } from '../lib/io/csv-rows.js'
import { readRecords } from '../lib/io/read-records.js'
import { drain } from './fixtures/io/helpers.js'
import { prng } from './helpers/prng.js'

// Feeds `text` to a counter in chunks of `size` bytes, going back when it asks to.
function count(text: string, size: number, dialect: CsvCountDialect = {}): number {
  const buf = Buffer.from(text)
  const counter = new CsvRecordCounter(dialect)
  let from: number | undefined = 0
  for (let guard = 0; from !== undefined; guard++) {
    if (guard > 1000) throw new Error('the counter keeps going back')
    const base: number = from
    from = undefined
    for (let o = base; o < buf.length && from === undefined; o += size) from = counter.push(buf.subarray(o, Math.min(o + size, buf.length)), o)
    if (from === undefined) from = counter.end()
  }
  return counter.records
}

function readerRows(text: string, options: CsvRowsOptions = {}): number {
  const rows = new CsvRows(options)
  return [...rows.push(text), ...rows.end()].length
}

t.test('CsvRecordCounter counts what the reader parses: random CSV, every chunking (seeded)', async (t) => {
  const dialects: [string, string[], CsvCountDialect][] = [
    ['quote "', ['a', 'b', ',', '"', '"', '\n', '\n', ' ', '\r\n', 'é', '😀', '\t', '""', ',"', '"\n'], {}],
    ['escape \\', ['a', ',', '"', '"', '\n', ' ', '\r\n', '\\', '\\"', ',"', '"\n'], { escape: '\\' }],
    ['delimiter ; quote \'', ['a', ';', "'", "'", '\n', ' ', '\r\n', ',', "''", ";'", "'\n"], { delimiter: ';', quote: "'" }],
  ]
  for (const [name, alphabet, dialect] of dialects) {
    const seed = 20240611
    const random = prng(seed)
    let checked = 0
    for (let i = 0; i < 3000; i++) {
      let text = ''
      const length = Math.floor(random() * 40)
      for (let j = 0; j < length; j++) text += alphabet[Math.floor(random() * alphabet.length)]
      const expected = readerRows(text, dialect as CsvRowsOptions)
      for (const size of [1, 2, 5, 1024]) {
        const got = count(text, size, dialect)
        if (got !== expected) {
          t.fail(`${name}: ${JSON.stringify(text)} in chunks of ${size}: counted ${got}, the reader gives ${expected} (seed ${seed})`)
          return
        }
        checked++
      }
    }
    t.pass(`${name}: ${checked} texts × chunkings agree`)
  }
})

t.test('CsvRecordCounter: quoted line breaks, blank lines, CRLF, malformed rows', async (t) => {
  const cases: [string, string, number][] = [
    ['quoted line breaks are not records', 'id,text\n1,"two\nlines"\n2,"x\r\ny\r\nz"\n3,end', 4],
    ['blank and whitespace-only lines do not count', 'a,b\n\n  \r\n1,2\n\t\n', 2],
    ['a quote inside a field is text', 'a,b\n5" screen,x\n3,4\n', 3],
    ['a quote after blanks opens a field', 'a,b\n "q\nq",2\n3,4\n', 3],
    ['text after a closing quote: one bad row, resumed on the next line', 'a,b\n1,"x"y\n3,4\n', 3],
    ['a quote never closed: one bad row, the lines after it count', 'a,b\n1,"open\n2,x\n3,y\n', 4],
    ['no final line break', 'a\n1\n2', 3],
    ['an empty file', '', 0],
  ]
  for (const [name, text, n] of cases) {
    t.equal(count(text, 1024), n, name)
    t.equal(readerRows(text), n, `${name} (the reader agrees)`)
  }
})

t.test('CsvRecordCounter goes back to an earlier chunk for a malformed row spanning chunks', async (t) => {
  const text = `a,b\n1,"${'x'.repeat(50)}\n${'y'.repeat(50)}"z\n2,"ok"\n`
  const expected = readerRows(text)
  t.equal(expected, 4, 'the reader: header, the bad row, "yyy…z" as a row of its own, row 2')
  t.equal(count(text, 16), expected)
  // An unclosed quote past maxRecordLength ends as the reader's does, without holding the rest.
  const open = `a\n"${'x'.repeat(100)}\n1\n2\n`
  t.equal(count(open, 8, { maxRecordLength: 50 }), readerRows(open, { maxRecordLength: 50 }))
})

t.test('countRows: records, not lines, for CSV, TSV and JSONL; the header and blank lines do not count', async (t) => {
  const dir = t.testdir({
    'multi.csv': 'id,text\n1,"a\nb\nc"\n\n2,"x, ""y"""\n3,"bad"row\n4,last',
    'multi.tsv': 'id\ttext\n1\t"a\nb"\n2\tplain\n',
    'lines.jsonl': '{"a":1}\n\n   \n{"a":2}\r\nnot json\n{"a":3}',
    'lines.ndjson': '',
  })
  t.equal(await countRows(join(dir, 'multi.csv')), 4, 'one of them malformed: the reader reports it, the bar counts it')
  const read = await drain(readRecords(join(dir, 'multi.csv')))
  t.equal(read.records.length + read.bad.length, 4, 'records + bad records = the count')
  t.equal(await countRows(join(dir, 'multi.tsv')), 2)
  t.equal(await countRows(join(dir, 'lines.jsonl')), 4, 'a line that is not JSON is a (bad) record; blank lines are not')
  t.equal(await countRows(join(dir, 'lines.ndjson')), 0)
  t.equal(await countRows(join(dir, 'multi.csv'), { headers: ['id', 'text'] }), 5, 'headers given: the first row is a record')
  writeFileSync(join(dir, 'semi.txt'), "a;b\n1;'x;\ny'\n")
  t.equal(await countRows(join(dir, 'semi.txt'), { format: 'csv', delimiter: ';', quote: "'" }), 1, 'the dialect is followed')
  await t.rejects(countRows(join(dir, 'missing.csv')), { code: 'ERR_INPUT_FILE' })
})

t.test('countRows stops on its signal with AbortError', async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'big.csv')
  writeFileSync(path, `id,text\n${'1,"a\nb"\n'.repeat(400_000)}`)
  const ac = new AbortController()
  const counting = countRows(path, { signal: ac.signal })
  ac.abort()
  await t.rejects(counting, { name: 'AbortError', code: 'ABORT_ERR' })
  t.equal(await countRows(path), 400_000, 'without a signal it counts them all')
})

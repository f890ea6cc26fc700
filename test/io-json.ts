import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import t from 'tap'
import { BadRecordError, InputFileError } from '../lib/errors.js'
import { LineSplitter, type Line } from '../lib/io/line-splitter.js'
import { readJson } from '../lib/io/read-json.js'
import { readJsonl } from '../lib/io/read-jsonl.js'
import { drain, lazySource, settle } from './fixtures/io/helpers.js'

t.test('LineSplitter: lines and numbers whatever the chunking; CRLF; over-long lines dropped as they stream', async (t) => {
  const text = 'a\r\nbb\n\nccc\nlast'
  const whole = new LineSplitter(100).push(text)
  const all = new LineSplitter(100)
  const out: Line[] = []
  for (const c of text) all.push(c, out)
  all.end(out)
  t.same(out, [...whole, { text: 'last', line: 5 }])
  t.same(whole, [
    { text: 'a', line: 1 },
    { text: 'bb', line: 2 },
    { text: '', line: 3 },
    { text: 'ccc', line: 4 },
  ])
  const s = new LineSplitter(5)
  const long: Line[] = []
  s.push('ok\n0123', long)
  s.push('456789', long)
  s.push('abc\nfine\n', long)
  s.end(long)
  t.same(long, [{ text: 'ok', line: 1 }, { tooLong: true, line: 2 }, { text: 'fine', line: 3 }])
})

t.test('readJsonl: one value per line; a bad line is skipped with an error naming its line number', async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'in.jsonl')
  writeFileSync(path, '\uFEFF{"text":"héllo 😀","n":1}\r\n\n{"text": oops}\n  \n"a string"\n[1,2]\nnull\n{"text":"last"}')
  const reader = readJsonl(path)
  const { records, bad, error } = await drain(reader)
  t.notOk(error)
  t.same(records, [{ text: 'héllo 😀', n: 1 }, 'a string', [1, 2], { text: 'last' }])
  t.equal(bad.length, 2)
  t.ok(bad[0] instanceof BadRecordError)
  t.match(bad[0], { code: 'ERR_BAD_RECORD', line: 3, path })
  t.match(bad[0].message, `${path} line 3: not valid JSON (`)
  t.match(bad[1], { line: 7, message: `${path} line 7: null is not a record` })
  t.equal(reader.badRecords, 2)
  t.equal(reader.recordsRead, 4)
})

t.test("readJsonl: onBadRecord 'error', columns, maxRecordLength", async (t) => {
  const text = '{"a":1,"b":2}\n{"a":3}\n{bad\n{"a":4}\n'
  const strict = await drain(readJsonl(Readable.from([text]), { onBadRecord: 'error', columns: ['b', 'a'] }))
  t.same(strict.records, [{ b: 2, a: 1 }, { a: 3 }])
  t.match(strict.error, { code: 'ERR_BAD_RECORD', line: 3, message: /^line 3: not valid JSON/ })
  const long = await drain(readJsonl(Readable.from([`{"a":"${'x'.repeat(100)}"}\n{"a":1}\n`]), { maxRecordLength: 50 }))
  t.same(long.records, [{ a: 1 }])
  t.match(long.bad[0], { line: 1, message: 'line 1: longer than 50 characters' })
})

t.test('readJsonl: a missing file is an InputFileError naming the path', async (t) => {
  const { error } = await drain(readJsonl('/nonexistent/in.jsonl'))
  t.ok(error instanceof InputFileError)
  t.equal(error!.message, 'Cannot read input file "/nonexistent/in.jsonl": no such file or directory (ENOENT)')
})

t.test('readJson: the elements of a top-level array, streamed', async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'in.json')
  writeFileSync(path, '\uFEFF[\n {"text": "a", "x": {"deep": [1, 2]}},\n "str", 3, null, true,\n {"text": "é😀"}\n]\n')
  const { records, bad } = await drain(readJson(path))
  t.same(records, [{ text: 'a', x: { deep: [1, 2] } }, 'str', 3, true, { text: 'é😀' }])
  t.match(bad, [{ code: 'ERR_BAD_RECORD', message: `${path} element 3: null is not a record` }], 'null cannot travel in a stream')
  const picked = await drain(readJson(path, { columns: ['text'], batchSize: 1 }))
  t.same(picked.records, [{ text: 'a' }, 'str', 3, true, { text: 'é😀' }])
})

t.test('readJson: invalid JSON or a top level that is not an array fails with InputFileError naming where', async (t) => {
  const dir = t.testdir({
    'bad.json': '[{"a": 1},\n {"b": [1, 2}]',
    'object.json': '{"a": 1}',
    'empty.json': '',
  })
  const bad = await drain(readJson(join(dir, 'bad.json')))
  t.ok(bad.error instanceof InputFileError)
  t.match(bad.error!.message, /bad\.json: invalid JSON at line 2, column \d+ after \d elements?: /)
  const object = await drain(readJson(join(dir, 'object.json')))
  t.match(object.error, { code: 'ERR_INPUT_FILE', message: /object\.json: the top level is not an array: a \.json input is one JSON array of records; for one record a line, use JSON Lines \(\.jsonl, readJsonl\)$/ })
  t.match((await drain(readJson(join(dir, 'empty.json')))).error, { code: 'ERR_INPUT_FILE', message: /empty\.json: invalid JSON/ })
  t.match((await drain(readJson(join(dir, 'nope.json')))).error, { code: 'ERR_INPUT_FILE', message: /no such file or directory/ })
})

t.test('readJson honours backpressure: a paused consumer pauses the source', async (t) => {
  const source = lazySource((function* () {
    yield '['
    for (let i = 0; i < 100_000; i++) yield `${i ? ',' : ''}{"i":${i},"text":"some text to make the element longer"}`
    yield ']'
  })())
  const reader = readJson(source, { batchSize: 16 })
  const it = reader[Symbol.asyncIterator]()
  for (let i = 0; i < 5; i++) await it.next()
  await settle(100)
  const pulled = source.pulled()
  t.ok(pulled < 2000, `only a little read ahead (${pulled} of 100002 pieces)`)
  await settle(100)
  t.equal(source.pulled(), pulled, 'nothing more is read while paused')
  await it.return!()
  t.ok(source.destroyed)
})

// The main job of DESIGN section 1, end to end on a real server: CSV in, InferenceStream, Parquet out.
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import t from 'tap'
import { asyncBufferFromFile, parquetReadObjects } from 'hyparquet'
import { InferenceStream } from '../lib/client/inference-stream.js'
import { inputFromColumn } from '../lib/io/mapping.js'
import { readCsv } from '../lib/io/read-csv.js'
import { readRecords } from '../lib/io/read-records.js'
import { writeParquet } from '../lib/io/write-parquet.js'
import { writeRecords } from '../lib/io/write-records.js'
import { collect } from './fixtures/io/helpers.js'
import { startServer } from './helpers/server.js'

t.test('pipeline(readCsv, InferenceStream, writeParquet) with builtin/sentiment', async (t) => {
  const server = await startServer(t)
  const dir = t.testdir({
    'reviews.csv': 'id,text\n1,I love it. Wonderful!\n2,\n3,"Terrible, it broke in a day."\n4,"a"b\n5,"Great value,\nwould buy again"\n',
  })
  const out = join(dir, 'reviews.parquet')
  const reader = readCsv(join(dir, 'reviews.csv'))
  const bad: number[] = []
  reader.on('bad-record', (e) => bad.push(e.line))
  await pipeline(
    reader,
    new InferenceStream({ url: server.streamUrl('builtin/sentiment'), token: 'test', input: inputFromColumn('text'), runId: 'reviews' }),
    writeParquet(out),
  )
  t.same(bad, [5], 'the malformed row is skipped, naming its line')
  const rows = await parquetReadObjects({ file: await asyncBufferFromFile(out) })
  t.same(rows.map((r) => r.input_id), ['1', '2', '3', '5'], 'every good input row once, in order')
  t.same(rows.map((r) => r.label), ['POSITIVE', 'POSITIVE', 'NEGATIVE', 'POSITIVE'])
  t.ok(rows.every((r) => r.error === null && typeof r.score === 'number' && r.score >= 0.5))
  t.match(rows[1], { text: '', score: 0.5, error: null }, 'an empty cell is empty text: neutral, not an error')
  t.equal(await server.billed('test'), 4, 'the empty row ran like the others')
})

t.test('pipeline(readRecords, InferenceStream, writeRecords) with builtin/ner, JSONL to CSV', async (t) => {
  const server = await startServer(t)
  const dir = t.testdir({ 'in.jsonl': '{"text":"Meet me on Monday, 5 days later at 50%."}\n{"text":"nothing here"}\n' })
  const out = join(dir, 'out.csv')
  await pipeline(
    readRecords(join(dir, 'in.jsonl')),
    new InferenceStream({ url: server.streamUrl('builtin/ner'), token: 'test', input: inputFromColumn('text') }),
    writeRecords(out, { task: 'token-classification' }),
  )
  const rows = (await collect(readRecords(out))) as Record<string, string>[]
  t.equal(rows.length, 2)
  t.ok(Number(rows[0].entity_count) >= 1, `entities found: ${rows[0].entities}`)
  t.equal(rows[1].entity_count, '0')
  t.equal(rows[1].entities, '[]')
})

// writeParquet(…, {thread: true}): the row groups are encoded on a worker thread. The file must be
// byte for byte the one written on the writer's own thread (any columns, nulls, unicode, row groups
// cut by rows and by bytes), errors must be the same (a value that does not fit names its row and
// column, no file at the path), and a stalled output must stop the rows (bounded memory).
import { once } from 'node:events'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import t from 'tap'
import { asyncBufferFromFile, parquetReadObjects } from 'hyparquet'
import { InferenceItemError, SchemaMismatchError } from '../lib/errors.js'
import { writeParquet, type ParquetWriteOptions } from '../lib/io/write-parquet.js'
import { prng } from './helpers/prng.js'

const WORDS = ['good', 'bad', 'é', '😀', 'naïve', '"q"', 'a,b', '', 'x\ny', '日本', 'long '.repeat(40)]

/** n results of mixed shapes, the same for a seed: strings, numbers, booleans, nulls, nested outputs, errors. */
function results(n: number, seed: number): Record<string, unknown>[] {
  const rand = prng(seed)
  const word = (): string => WORDS[Math.floor(rand() * WORDS.length)]
  return Array.from({ length: n }, (_, i) => {
    const failed = rand() < 0.05
    return {
      id: `run-${i}`,
      record: { id: `r${i}`, text: `${word()} ${word()} ${i}`, rating: Math.floor(rand() * 5) + 1, weight: rand() < 0.1 ? null : rand(), flag: rand() < 0.5, note: rand() < 0.3 ? null : word() },
      outputs: failed ? { error: 'boom', code: 'ERR_MODEL' } : [{ label: rand() < 0.5 ? 'POSITIVE' : 'NEGATIVE', score: rand() }],
      ...(failed ? { error: new InferenceItemError('boom', 'ERR_MODEL') } : {}),
    }
  })
}

async function write(path: string, rows: unknown[], options: ParquetWriteOptions): Promise<void> {
  await pipeline(Readable.from(rows), writeParquet(path, options))
}

t.test('thread: true writes the very bytes the writer writes on its own thread', async (t) => {
  const dir = t.testdir()
  const cases: [string, number, ParquetWriteOptions][] = [
    ['defaults', 3000, {}],
    ['small row groups', 2500, { rowGroupSize: 333 }],
    ['groups cut by bytes', 2000, { rowGroupBytes: 20_000 }],
    ['gzip, metadata, schema', 1500, { compression: 'GZIP', metadata: { a: 'b' }, schema: { rating: 'int32' }, sampleSize: 7 }],
    ['fewer rows than the sample', 40, {}],
    ['no rows', 0, { columns: ['id', 'outputs'] }],
  ]
  for (const [name, n, options] of cases) {
    const rows = results(n, n + 1)
    const here = join(dir, `${name}.here.parquet`)
    const there = join(dir, `${name}.thread.parquet`)
    await write(here, rows, options)
    await write(there, rows, { ...options, thread: true })
    const a = readFileSync(here)
    const b = readFileSync(there)
    t.ok(a.length > 0 && a.equals(b), `${name}: identical files (${a.length} and ${b.length} bytes)`)
    // hyparquet alone reads no GZIP (test/io-parquet.ts reads that with parquetjs-lite).
    if (n > 0 && options.compression !== 'GZIP') {
      const back = await parquetReadObjects({ file: await asyncBufferFromFile(there) })
      t.equal(back.length, n, `${name}: ${n} rows read back`)
      t.equal(back[n - 1].id, `run-${n - 1}`)
    }
  }
})

t.test('thread: true, a value that does not fit its column fails the writer naming row and column; no file at the path', async (t) => {
  const path = join(t.testdir(), 'bad.parquet')
  const rows = results(5000, 3).map((r) => ({ ...r, record: { ...(r.record as object) } })) as { record: Record<string, unknown> }[]
  rows[4321].record.rating = 'five'
  const err = await pipeline(Readable.from(rows), writeParquet(path, { thread: true })).then(
    () => undefined,
    (e: unknown) => e,
  )
  t.type(err, SchemaMismatchError)
  t.equal((err as SchemaMismatchError).code, 'ERR_SCHEMA_MISMATCH')
  t.match((err as Error).message, /^Row 4321, column "rating": a string \("five"\) does not fit the column's type double/)
  t.notOk(existsSync(path), 'nothing at the path')
})

t.test('thread: true, a stalled output stops the rows: memory is bounded, then every row arrives', async (t) => {
  const N = 200_000
  let pulled = 0
  const source = Readable.from(
    (function* () {
      for (let i = 0; i < N; i++) {
        pulled++
        yield { id: `e-${i}`, outputs: 'x'.repeat(50), record: { text: `row ${i} ${'y'.repeat(60)}` } }
      }
    })(),
  )
  // An output that takes nothing until released.
  const chunks: Buffer[] = []
  let release!: () => void
  const released = new Promise<void>((r) => (release = r))
  const out = new Writable({
    highWaterMark: 64 * 1024,
    write(chunk: Buffer, _e, cb) {
      chunks.push(chunk)
      released.then(() => cb())
    },
  })
  const writer = writeParquet(out, { thread: true, rowGroupSize: 2000 })
  const done = pipeline(source, writer)
  // Let it run into the stall.
  let last = -1
  for (let i = 0; i < 50 && pulled !== last; i++) {
    last = pulled
    await new Promise((r) => setTimeout(r, 100))
  }
  const bound = 100 + 4 * 1024 + 2 * 1024 + 64 // sample, batches on their way, one being filled, stream buffers
  t.ok(pulled < bound, `stalled: ${pulled} rows pulled of ${N} (bound ${bound})`)
  const peak = (writer as unknown as { peakBatchesInFlight: number }).peakBatchesInFlight
  t.ok(peak >= 1 && peak <= 4, `at most 4 batches on their way to the worker (peak ${peak})`)
  release()
  await done
  t.equal(pulled, N)
  t.equal(writer.rowsWritten, N)
  t.ok(Buffer.concat(chunks).subarray(-4).toString() === 'PAR1', 'the file ends with its footer')
})

t.test('thread: true, a writer destroyed half-way ends its worker (the process is not held)', async (t) => {
  const path = join(t.testdir(), 'destroyed.parquet')
  const writer = writeParquet(path, { thread: true })
  for (const r of results(3000, 9)) writer.write(r)
  await new Promise((r) => setTimeout(r, 200))
  writer.destroy(new Error('stop'))
  const [err] = await once(writer, 'error')
  t.equal((err as Error).message, 'stop')
  t.notOk(existsSync(path))
  const worker = (writer as unknown as { worker?: unknown }).worker
  t.equal(worker, undefined, 'the worker is let go')
})

t.test('thread must be a boolean', async (t) => {
  t.throws(() => writeParquet(join(t.testdir(), 'x.parquet'), { thread: 'yes' as unknown as boolean }), { code: 'ERR_INVALID_OPTION', message: /"thread"/ })
})

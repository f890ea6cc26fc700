import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import t from 'tap'
import {
  DatasetLayoutError,
  DatasetNotFoundError,
  InvalidDatasetNameError,
  LimitExceededError,
  UnknownFormatError,
} from '../lib/errors.js'
import { readRecords } from '../lib/io/read-records.js'
import { writeParquet } from '../lib/io/write-parquet.js'
import { InputDatasets } from '../lib/server/datasets/input-datasets.js'

const root = mkdtempSync(join(tmpdir(), 'is-input-datasets-'))
t.teardown(() => rmSync(root, { recursive: true, force: true }))
const ds = new InputDatasets(root)

function put(rel: string, content: string): void {
  const path = join(root, rel)
  mkdirSync(dirname(path), { recursive: true })
  writeFileSync(path, content)
}

async function putParquet(rel: string, records: Record<string, unknown>[]): Promise<void> {
  const path = join(root, rel)
  mkdirSync(dirname(path), { recursive: true })
  await pipeline(Readable.from(records), writeParquet(path, { kind: 'records' }))
}

async function readAll(files: string[], format: Parameters<typeof readRecords>[1] extends infer O ? O extends { format?: infer F } ? F : never : never): Promise<unknown[]> {
  const out: unknown[] = []
  for (const f of files) for await (const r of readRecords(f, { format })) out.push(r)
  return out
}

const CSV = '\ufeffid,text,\n1,good,x\n2,"bad, really",y\n'

t.before(async () => {
  put('reviews/default/train.csv', CSV)
  put('reviews/default/test.tsv', 'id\ttext\n1\tfine\n')
  put('reviews/default/validation.jsonl', '{"id":1,"text":"a"}\n\n{"id":2,"text":"b","extra":true}\n')
  put('reviews/small/train.json', '[{"text":"x","n":1},{"text":"y","n":2}]')
  put('reviews/small/notes.txt', 'not a data file')
  put('reviews/small/.hidden.csv', 'a\n1\n')
  await putParquet('org/reviews/default/train.parquet', [{ text: 'p1', label: 1 }, { text: 'p2', label: 0 }])
  // Shards, named so that a string sort would put 10 before 2.
  for (const n of [0, 1, 2, 10]) await putParquet(`org/reviews/default/test-${n}.parquet`, [{ text: `shard ${n}`, n }])
  for (const n of [0, 1]) put(`org/reviews/lines/train-${String(n).padStart(5, '0')}-of-00002.jsonl`, `{"text":"line ${n}"}\n`)
  put('org/reviews/lines/train-clean.csv', 'text\nclean\n')
  put('org/other/default/train.ndjson', '"just a string"\n')
  put('mixed/default/train.csv', 'a\n1\n')
  put('mixed/default/train.parquet', 'PAR1')
  put('mixed/default/test.jsonl', '{}\n')
  put('mixed/default/test-00000.jsonl', '{}\n')
})

t.test('a single file per format', async (t) => {
  const cases: [string, string, string, string, string][] = [
    ['reviews', 'default', 'train', 'reviews/default/train.csv', 'csv'],
    ['reviews', 'default', 'test', 'reviews/default/test.tsv', 'tsv'],
    ['reviews', 'default', 'validation', 'reviews/default/validation.jsonl', 'jsonl'],
    ['reviews', 'small', 'train', 'reviews/small/train.json', 'json'],
    ['org/reviews', 'default', 'train', 'org/reviews/default/train.parquet', 'parquet'],
    ['org/other', 'default', 'train', 'org/other/default/train.ndjson', 'jsonl'],
  ]
  for (const [name, config, split, file, format] of cases) {
    const r = await ds.resolve(name, config, split)
    t.same(r, { name, config, split, files: [join(root, file)], format, shown: [file] }, `${name}/${config}/${split}`)
  }
})

t.test('shards come in shard order (numeric), names with "/" work, a split may contain "-"', async (t) => {
  const r = await ds.resolve('org/reviews', 'default', 'test')
  t.equal(r.format, 'parquet')
  t.same(
    r.files,
    [0, 1, 2, 10].map((n) => join(root, `org/reviews/default/test-${n}.parquet`)),
  )
  t.same(await readAll(r.files, r.format), [0, 1, 2, 10].map((n) => ({ text: `shard ${n}`, n })))
  t.equal(await ds.countRows(r), 4)

  const lines = await ds.resolve('org/reviews', 'lines', 'train')
  t.same(lines.files, [0, 1].map((n) => join(root, `org/reviews/lines/train-0000${n}-of-00002.jsonl`)))
  t.equal(lines.format, 'jsonl')
  const clean = await ds.resolve('org/reviews', 'lines', 'train-clean')
  t.same(clean.files, [join(root, 'org/reviews/lines/train-clean.csv')])
})

t.test('not found: the message names exactly what is missing and lists what there is', async (t) => {
  await t.rejects(ds.resolve('nope', 'default', 'train'), {
    constructor: DatasetNotFoundError,
    code: 'ERR_DATASET_NOT_FOUND',
    message: 'No dataset "nope" in the datasets folder',
  })
  // `org` is only a namespace: no configs of its own.
  await t.rejects(ds.resolve('org', 'reviews', 'train'), { code: 'ERR_DATASET_NOT_FOUND', message: 'No dataset "org" in the datasets folder' })
  await t.rejects(ds.resolve('reviews', 'large', 'train'), {
    constructor: DatasetNotFoundError,
    code: 'ERR_DATASET_NOT_FOUND',
    message: 'Dataset "reviews" has no config "large" (configs: default, small)',
  })
  await t.rejects(ds.resolve('org/reviews', 'default', 'validation'), {
    constructor: DatasetNotFoundError,
    code: 'ERR_DATASET_NOT_FOUND',
    message: 'Config "default" of dataset "org/reviews" has no split "validation" (splits: test, train)',
  })
  // Files that are not data files do not make splits.
  await t.rejects(ds.resolve('reviews', 'small', 'notes'), { message: 'Config "small" of dataset "reviews" has no split "notes" (splits: train)' })
  await t.rejects(ds.resolve('reviews', 'small', 'hidden'), { code: 'ERR_DATASET_NOT_FOUND' })
})

t.test('names that could leave the folder are refused before any file is touched', async (t) => {
  for (const [name, config, split] of [
    ['..', 'default', 'train'],
    ['../x', 'default', 'train'],
    ['reviews/../../etc', 'default', 'train'],
    ['/etc', 'default', 'train'],
    ['a/b/c', 'default', 'train'],
    ['', 'default', 'train'],
    ['reviews', '..', 'train'],
    ['reviews', 'default', '../../x'],
    ['reviews', 'default', 'a/b'],
    ['reviews', 'default', '.hidden'],
    ['reviews', 'de fault', 'train'],
    ['reviews', 'default', 'train-00001'],
  ]) {
    await t.rejects(ds.resolve(name, config, split), { constructor: InvalidDatasetNameError, code: 'ERR_INVALID_DATASET_NAME' }, `${name}/${config}/${split}`)
  }
})

t.test('two layouts for one split is an error naming the files', async (t) => {
  await t.rejects(ds.resolve('mixed', 'default', 'train'), {
    constructor: DatasetLayoutError,
    code: 'ERR_DATASET_LAYOUT',
    message: 'Split "train" of mixed/default has files of more than one format: train.csv, train.parquet; keep one',
  })
  await t.rejects(ds.resolve('mixed', 'default', 'test'), {
    code: 'ERR_DATASET_LAYOUT',
    message: 'Split "test" of mixed/default has both a single file and shards: test-00000.jsonl, test.jsonl; keep one',
  })
})

t.test('columns: CSV header, TSV, first JSONL/JSON record, Parquet schema', async (t) => {
  t.same(await ds.columns(await ds.resolve('reviews', 'default', 'train')), ['id', 'text', 'column_3'], 'BOM dropped, empty name as the reader names it')
  t.same(await ds.columns(await ds.resolve('reviews', 'default', 'test')), ['id', 'text'])
  t.same(await ds.columns(await ds.resolve('reviews', 'default', 'validation')), ['id', 'text'], 'keys of the first record only')
  t.same(await ds.columns(await ds.resolve('reviews', 'small', 'train')), ['text', 'n'])
  t.same(await ds.columns(await ds.resolve('org/reviews', 'default', 'train')), ['text', 'label'])
  t.same(await ds.columns(await ds.resolve('org/reviews', 'default', 'test')), ['text', 'n'])
  t.same(await ds.columns(await ds.resolve('org/other', 'default', 'train')), [], 'a record that is not an object has no columns')

  // A header-only CSV still has its columns; an empty file has none.
  put('edge/default/train.csv', 'a,b\n')
  t.same(await ds.columns(await ds.resolve('edge', 'default', 'train')), ['a', 'b'])
  put('edge/default/test.csv', '')
  t.same(await ds.columns(await ds.resolve('edge', 'default', 'test')), [])
  // A Parquet file that is not one fails with InputFileError.
  put('edge/broken/train.parquet', 'not parquet at all')
  await t.rejects(ds.columns(await ds.resolve('edge', 'broken', 'train')), { code: 'ERR_INPUT_FILE' })
})

t.test('columns of a big file read only its start', async (t) => {
  // 20 MB of JSONL and of CSV: columns come from the first chunk, not a read of the file.
  const line = JSON.stringify({ text: 'x'.repeat(1000), n: 1 }) + '\n'
  put('big/default/train.jsonl', line.repeat(20_000))
  put('big/default/test.csv', 'text,n\n' + `${'y'.repeat(1000)},1\n`.repeat(20_000))
  const before = process.memoryUsage().rss
  const start = performance.now()
  t.same(await ds.columns(await ds.resolve('big', 'default', 'train')), ['text', 'n'])
  t.same(await ds.columns(await ds.resolve('big', 'default', 'test')), ['text', 'n'])
  t.ok(performance.now() - start < 1000, 'fast')
  t.ok(process.memoryUsage().rss - before < 15 * 1024 * 1024, 'memory did not grow by the file size')
})

t.test('countRows sums the files; undefined for a JSON array', async (t) => {
  t.equal(await ds.countRows(await ds.resolve('reviews', 'default', 'train')), 2)
  t.equal(await ds.countRows(await ds.resolve('org/reviews', 'default', 'train')), 2)
  t.equal(await ds.countRows(await ds.resolve('org/reviews', 'lines', 'train')), 2)
  t.equal(await ds.countRows(await ds.resolve('reviews', 'small', 'train')), undefined)
})

t.test('list: every split of every dataset, sorted', async (t) => {
  const list = await ds.list()
  const names = list.map((e) => `${e.name}/${e.config}/${e.split}`)
  for (const expected of [
    'org/other/default/train',
    'org/reviews/default/test',
    'org/reviews/default/train',
    'org/reviews/lines/train',
    'org/reviews/lines/train-clean',
    'reviews/default/test',
    'reviews/default/train',
    'reviews/default/validation',
    'reviews/small/train',
  ]) {
    t.ok(names.includes(expected), expected)
  }
  t.notOk(names.some((n) => n.includes('notes') || n.includes('hidden')))
  t.same(names, [...names].sort())
  t.same(await new InputDatasets(join(root, 'missing')).list(), [], 'a missing root is an empty folder')
})

t.test('upload: streamed, atomic, replaces the split', async (t) => {
  const up = new InputDatasets(join(root, 'uploads'))
  const r1 = await up.upload('user/new', 'default', 'train', 'csv', Readable.from(['text\n', 'one\n', 'two\n']), { maxBytes: 1000 })
  t.equal(r1.path, join(root, 'uploads/user/new/default/train.csv'))
  t.equal(r1.bytes, 13)
  t.equal(readFileSync(r1.path, 'utf8'), 'text\none\ntwo\n')
  const resolved = await up.resolve('user/new', 'default', 'train')
  t.same(await up.columns(resolved), ['text'])
  t.equal(await up.countRows(resolved), 2)

  // Re-upload in another format: the split is replaced, never left with two layouts.
  const r2 = await up.upload('user/new', 'default', 'train', '.jsonl', Readable.from([Buffer.from('{"text":"a"}\n')]))
  t.equal(r2.format, 'jsonl')
  t.same((await up.resolve('user/new', 'default', 'train')).files, [r2.path])
  t.same(readdirSync(join(root, 'uploads/user/new/default')), ['train.jsonl'], 'no temporary file, no old file')

  // A large body goes through in chunks (a 64 MiB stream of 64 KiB chunks, never held whole).
  let sent = 0
  const chunk = Buffer.alloc(64 * 1024, 'a')
  const big = new Readable({
    read() {
      if (sent >= 1024) return void this.push(null)
      sent++
      this.push(sent === 1 ? Buffer.from('text\n') : chunk)
    },
  })
  const before = process.memoryUsage().rss
  const r3 = await up.upload('user/new', 'default', 'big', 'csv', big, { maxBytes: 128 * 1024 * 1024 })
  t.equal(r3.bytes, 5 + 1023 * 64 * 1024)
  t.ok(process.memoryUsage().rss - before < 48 * 1024 * 1024, 'memory did not grow by the body size')
})

t.test('upload: traversal, bad names and unknown extensions are refused before anything is written', async (t) => {
  const upRoot = join(root, 'uploads2')
  const up = new InputDatasets(upRoot)
  for (const [name, config, split] of [
    ['../escape', 'default', 'train'],
    ['ok', '../../escape', 'train'],
    ['ok', 'default', '../train'],
    ['ok', 'default', 'a/b'],
    ['/abs', 'default', 'train'],
    ['a/b/c', 'default', 'train'],
    ['ok', 'default', '.train'],
    ['ok', 'default', 'x..y'],
  ]) {
    await t.rejects(up.upload(name, config, split, 'csv', Readable.from(['a\n1\n'])), InvalidDatasetNameError, `${name}/${config}/${split}`)
  }
  for (const ext of ['txt', 'exe', '', 'csv/../x', 'parquet.gz']) {
    await t.rejects(up.upload('ok', 'default', 'train', ext, Readable.from(['a\n'])), { constructor: UnknownFormatError, code: 'ERR_UNKNOWN_FORMAT' }, JSON.stringify(ext))
  }
  t.notOk(existsSync(upRoot), 'nothing was created')
  t.notOk(existsSync(join(root, 'escape')))
})

t.test('upload: a body over maxBytes is refused and nothing is kept; the body is left to the caller', async (t) => {
  const up = new InputDatasets(join(root, 'uploads3'))
  await up.upload('ok', 'default', 'train', 'csv', Readable.from(['a\n1\n']))
  const body = Readable.from(['a\n', 'x'.repeat(600), 'y'.repeat(600), 'z'.repeat(600), 'w'.repeat(600)], { highWaterMark: 1 })
  await t.rejects(up.upload('ok', 'default', 'train', 'csv', body, { maxBytes: 1000 }), {
    constructor: LimitExceededError,
    code: 'ERR_LIMIT_EXCEEDED',
    message: 'Upload of ok/default/train.csv is over the limit of 1000 bytes',
  })
  t.notOk(body.destroyed, 'not destroyed: the server can still answer 413')
  body.destroy()
  t.same(readdirSync(join(root, 'uploads3/ok/default')), ['train.csv'], 'no temporary file left')
  t.equal(readFileSync(join(root, 'uploads3/ok/default/train.csv'), 'utf8'), 'a\n1\n', 'the old split is untouched')

  // A body that fails midway leaves nothing either.
  const failing = new Readable({
    read() {
      this.destroy(new Error('client went away'))
    },
  })
  await t.rejects(up.upload('ok', 'default', 'test', 'csv', failing), { message: 'client went away' })
  t.same(readdirSync(join(root, 'uploads3/ok/default')), ['train.csv'])
  await t.rejects(up.upload('ok', 'default', 'train', 'csv', Readable.from(['a']), { maxBytes: 0 }), { code: 'ERR_INVALID_OPTION' })
})

t.test('upload: two uploads of one split in two formats leave exactly one layout', async (t) => {
  const up = new InputDatasets(join(root, 'uploads4'))
  await Promise.all([
    up.upload('ok', 'default', 'train', 'csv', Readable.from(['a\n1\n'])),
    up.upload('ok', 'default', 'train', 'jsonl', Readable.from(['{"a":1}\n'])),
  ])
  const files = readdirSync(join(root, 'uploads4/ok/default'))
  t.equal(files.length, 1, files.join(', '))
  await up.resolve('ok', 'default', 'train')
})

t.test('a tenant layer: its uploads shadow the base, uploads never write into the base, lists merge', async (t) => {
  const mine = new InputDatasets(join(root, 'tenant-a'), { base: ds })
  const before = readFileSync(join(root, 'reviews/default/train.csv'), 'utf8')
  t.same((await mine.resolve('reviews', 'default', 'train')).files, [join(root, 'reviews/default/train.csv')], 'the base is read')
  await mine.upload('reviews', 'default', 'train', 'csv', Readable.from(['text\nmine\n']))
  t.same((await mine.resolve('reviews', 'default', 'train')).files, [join(root, 'tenant-a/reviews/default/train.csv')], 'own upload shadows')
  t.equal(readFileSync(join(root, 'reviews/default/train.csv'), 'utf8'), before, 'the base is untouched')
  t.same((await ds.resolve('reviews', 'default', 'train')).files, [join(root, 'reviews/default/train.csv')], 'the base alone still reads its own')
  await mine.upload('only-mine', 'default', 'train', 'csv', Readable.from(['text\nx\n']))
  const listed = await mine.list()
  t.ok(listed.some((e) => e.name === 'only-mine'), 'own split listed')
  t.ok(listed.some((e) => e.name === 'org/reviews'), 'base splits listed')
  t.equal(listed.filter((e) => e.name === 'reviews' && e.config === 'default' && e.split === 'train').length, 1, 'a shadowed split once')
  t.notOk((await ds.list()).some((e) => e.name === 'only-mine'), 'the base does not see uploads')
  t.equal(statSync(join(root, 'tenant-a/only-mine/default/train.csv')).mode & 0o777, 0o600, 'upload 0600')
  t.equal(statSync(join(root, 'tenant-a/only-mine/default')).mode & 0o777, 0o700, 'its folder 0700')
})

t.test('links out of the root are as absent as missing names; errors name no server path', async (t) => {
  const outside = mkdtempSync(join(tmpdir(), 'is-outside-'))
  t.teardown(() => rmSync(outside, { recursive: true, force: true }))
  mkdirSync(join(outside, 'default'), { recursive: true })
  writeFileSync(join(outside, 'default/train.csv'), 'text\nsecret\n')
  const r = mkdtempSync(join(tmpdir(), 'is-links-'))
  t.teardown(() => rmSync(r, { recursive: true, force: true }))
  symlinkSync(outside, join(r, 'escape'))
  mkdirSync(join(r, 'filelink/default'), { recursive: true })
  symlinkSync(join(outside, 'default/train.csv'), join(r, 'filelink/default/train.csv'))
  // A link that stays inside the root is followed.
  mkdirSync(join(r, 'real/default'), { recursive: true })
  writeFileSync(join(r, 'real/default/train.csv'), 'text\nok\n')
  symlinkSync(join(r, 'real'), join(r, 'alias'))
  const d = new InputDatasets(r)
  const missing = (await d.resolve('nothing', 'default', 'train').catch((e: Error) => e.message)) as string
  t.equal(await d.resolve('escape', 'default', 'train').catch((e: Error) => e.message), missing.replace('"nothing"', '"escape"'))
  t.equal(await d.resolve('filelink', 'default', 'train').catch((e: Error) => e.message), missing.replace('"nothing"', '"filelink"'))
  t.same(await d.configs('escape'), [])
  t.same((await d.list()).map((e) => e.name), ['alias', 'real'])
  t.same((await d.resolve('alias', 'default', 'train')).shown, ['alias/default/train.csv'])
  writeFileSync(join(r, 'real/default/broken.csv'), '"a,b\n')
  const err = await d.columns(await d.resolve('real', 'default', 'broken')).catch((e: Error) => e)
  t.ok(err instanceof Error)
  t.notMatch((err as Error).message, r, 'no absolute path in the message')
})

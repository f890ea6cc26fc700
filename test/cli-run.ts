import { existsSync, mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parquetReadObjects } from 'hyparquet'
import t, { type Test } from 'tap'
import { cliProcess } from './helpers/cli.js'
import { startServer } from './helpers/server.js'

const examples = fileURLToPath(new URL('../examples/reviews.csv', import.meta.url))
const dir = mkdtempSync(join(tmpdir(), 'is-run-'))

async function readParquet(path: string): Promise<Record<string, unknown>[]> {
  const buf = readFileSync(path)
  return parquetReadObjects({ file: buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length) as ArrayBuffer })
}

t.test('run: the example CSV through builtin/sentiment on the embedded server into Parquet', async (t) => {
  const out = join(dir, 'reviews.parquet')
  const p = cliProcess(['run', examples, '--model', 'builtin/sentiment', '--column', 'text', '-o', out])
  const { code } = await p.exited
  t.equal(code, 0, p.err())
  t.match(p.out(), /300 rows -> .*reviews\.parquet/)
  t.match(p.out(), /latency p50 [\d.]+ ms, p95 [\d.]+ ms/)
  const rows = await readParquet(out)
  t.equal(rows.length, 300)
  t.same(rows.map((r) => r.input_id), [...Array(300).keys()].map((i) => `r${String(i + 1).padStart(4, '0')}`), 'input order kept')
  t.ok(rows.every((r) => r.label === 'POSITIVE' || r.label === 'NEGATIVE'))
  t.ok(rows.every((r) => typeof r.score === 'number' && r.error === null))
  t.notOk(existsSync(`${out}.partial`))
})

t.test('run: bad flags and inputs give one clear line and exit 2', async (t) => {
  writeFileSync(join(dir, 'notes.txt'), 'text\nhello\n')
  // Inputs that cannot be read as their format says: bad input, exit 2 (docs/cli.md), not "the run failed".
  mkdirSync(join(dir, 'folder.csv'), { recursive: true })
  writeFileSync(join(dir, 'fake.parquet'), 'hello\n')
  writeFileSync(join(dir, 'object.json'), '{"text": "one"}\n')
  writeFileSync(join(dir, 'twice.csv'), 'text,text\na,b\n')
  const cases: [string[], RegExp][] = [
    [['run', examples, '--column', 'nope', '-o', join(dir, 'x.jsonl')], /Input has no column "nope" \(columns: "id", "product", "rating", "text"\)/],
    [['run', examples, '--id-column', 'key', '-o', join(dir, 'x2.jsonl')], /Input has no column "key" \(columns: "id", "product", "rating", "text"\); choose one with --id-column/],
    [['run', examples, '--parameters-column', 'params', '-o', join(dir, 'x3.jsonl')], /Input has no column "params" \(columns: "id", "product", "rating", "text"\); choose one with --parameters-column/],
    [['run', join(dir, 'missing.csv')], /Input file .*missing\.csv does not exist/],
    [['run', examples, '-o', join(dir, 'out.xlsx')], /xlsx/],
    [['run', examples, '--parameters', '{bad'], /--parameters must be a JSON object/],
    [['run', examples, '--resume', '-o', join(dir, 'never.parquet')], /Nothing to resume: checkpoint .* does not exist/],
    [['run', examples, '--endpoint', '127.0.0.1:9'], /--endpoint must be an http: or https: URL such as http:\/\/127\.0\.0\.1:8080, got "127\.0\.0\.1:9"/],
    [['run', join(dir, 'notes.txt')], /Cannot tell the format of input .*notes\.txt from its extension "\.txt": name it .* or pass --input-format/],
    [['run', examples, '-m', 'no/such-model', '-o', join(dir, 'm.jsonl')], /Model no\/such-model does not exist.*\(served here: .*builtin\/sentiment/],
    [['run', join(dir, 'folder.csv'), '-o', join(dir, 'f1.jsonl')], /Cannot read input file ".*folder\.csv": it is a directory \(EISDIR\) \(ERR_INPUT_FILE\)/],
    [['run', join(dir, 'fake.parquet'), '-o', join(dir, 'f2.jsonl')], /Cannot read Parquet file ".*fake\.parquet": not a Parquet file \(ERR_INPUT_FILE\)/],
    [['run', join(dir, 'object.json'), '-o', join(dir, 'f3.jsonl')], /object\.json: the top level is not an array: a \.json input is one JSON array of records; for one record a line, use JSON Lines \(\.jsonl/],
    [['run', join(dir, 'twice.csv'), '-o', join(dir, 'f4.jsonl')], /twice\.csv line 1: the header names column "text" twice \(ERR_INPUT_FILE\)/],
  ]
  // Started together: each is a whole CLI start-up, and they do not depend on each other.
  const runs = cases.map(([args]) => cliProcess(args, { INFERENCE_STREAM_TOKEN: '' }))
  for (let i = 0; i < cases.length; i++) {
    const [args, message] = cases[i]
    const { code } = await runs[i].exited
    t.equal(code, 2, args.join(' '))
    t.match(runs[i].err(), message)
    t.notMatch(runs[i].err(), /\n\s+at /, 'no stack trace')
  }
  // A JSON record may leave its parameters out: --parameters-column is not required of the first one.
  const jsonl = join(dir, 'params.jsonl')
  writeFileSync(jsonl, '{"text":"a"}\n{"text":"b","params":{"delay_ms":1}}\n')
  const ok = cliProcess(['run', jsonl, '-m', 'builtin/echo', '--parameters-column', 'params', '-o', join(dir, 'params-out.jsonl'), '--no-progress'])
  t.equal((await ok.exited).code, 0, ok.err())
})

function writeInput(path: string, n: number): void {
  const lines = ['key,text']
  for (let i = 0; i < n; i++) lines.push(`k${i},"row ${i}, with a comma"`)
  writeFileSync(path, `${lines.join('\n')}\n`)
}

// Kills the run (SIGKILL) once its checkpoint has grown past each size in turn, then lets a last
// run finish. Returns the output rows.
async function killAndResume(t: Test, args: string[], checkpoint: string, killAt: number[]): Promise<number> {
  let kills = 0
  for (const size of killAt) {
    const p = cliProcess(args)
    const deadline = Date.now() + 60_000
    while (Date.now() < deadline) {
      if (existsSync(checkpoint) && statSync(checkpoint).size > size) break
      if (p.child.exitCode !== null) break
      await new Promise((r) => setTimeout(r, 5))
    }
    if (p.child.exitCode === null) {
      p.child.kill('SIGKILL')
      const { signal } = await p.exited
      if (signal === 'SIGKILL') kills++
    }
  }
  const last = cliProcess(args)
  const { code } = await last.exited
  t.equal(code, 0, `final run: ${last.err()}`)
  return kills
}

t.test('SIGKILL at several points, same command again: every row once, in order, billed once (server kept running)', async (t) => {
  const server = await startServer(t, { tokens: ['k'] })
  const input = join(dir, 'kill.csv')
  const out = join(dir, 'kill.parquet')
  const N = 4000
  writeInput(input, N)
  const args = ['run', input, '-o', out, '--model', 'builtin/echo', '--parameters', '{"delay_ms":2}', '--endpoint', server.url, '--token', 'k', '--checkpoint', '--max-in-flight', '128', '--no-progress']
  const kills = await killAndResume(t, args, `${out}.ckpt`, [20_000, 90_000, 160_000])
  t.ok(kills >= 2, `killed ${kills} times mid-run`)
  const rows = await readParquet(out)
  t.equal(rows.length, N)
  t.same(rows.map((r) => r.key), [...Array(N).keys()].map((i) => `k${i}`), 'every row exactly once, in order')
  t.ok(rows.every((r, i) => r.outputs === JSON.stringify(`row ${i}, with a comma`)))
  t.equal(await server.billed('k'), N, 'no row billed twice')
})

t.test('SIGKILL with the embedded server (it dies too): the resumed output is whole and in order', async (t) => {
  const input = join(dir, 'embedded.csv')
  const out = join(dir, 'embedded.jsonl')
  const N = 3000
  writeInput(input, N)
  const args = ['run', input, '-o', out, '--model', 'builtin/echo', '--parameters', '{"delay_ms":2}', '--checkpoint', '--max-in-flight', '128', '--no-progress']
  const kills = await killAndResume(t, args, `${out}.ckpt`, [30_000, 100_000])
  t.ok(kills >= 1, `killed ${kills} times mid-run`)
  const rows = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l))
  t.equal(rows.length, N)
  t.same(rows.map((r) => r.key), [...Array(N).keys()].map((i) => `k${i}`))
  t.notOk(existsSync(`${out}.ckpt`), 'the finished run removed its checkpoint')
  // Kept on request; then another model against it is refused, not mixed.
  const kept = cliProcess(['run', input, '-o', out, '--model', 'builtin/echo', '--checkpoint', '--keep-checkpoint', '--no-progress'])
  t.equal((await kept.exited).code, 0, kept.err())
  t.ok(existsSync(`${out}.ckpt`), '--keep-checkpoint keeps it')
  const p = cliProcess(['run', input, '-o', out, '--model', 'builtin/sentiment', '--checkpoint', '--no-progress'])
  t.equal((await p.exited).code, 2)
  t.match(p.err(), /Checkpoint .* was written for model builtin\/echo, not builtin\/sentiment/)
  // Other flags: named as flags, with the values, not the journal's fingerprint as JSON.
  // One after the other: both take the checkpoint's lock.
  const column = cliProcess(['run', input, '-o', out, '--model', 'builtin/echo', '--column', 'key', '--checkpoint', '--no-progress'])
  t.equal((await column.exited).code, 2)
  t.match(column.err(), /^inference-stream: Checkpoint .*embedded\.jsonl\.ckpt was written for another input: --column "text", not "key"; use another checkpoint path or delete it to start over \(ERR_CHECKPOINT\)\n$/)
  const params = cliProcess(['run', input, '-o', out, '--model', 'builtin/echo', '--parameters', '{"delay_ms":1}', '--id-column', 'key', '--checkpoint', '--no-progress'])
  t.equal((await params.exited).code, 2)
  t.match(params.err(), /was written for another input: --id-column none, not "key"; --parameters none, not \{"delay_ms":1\}; /)
})

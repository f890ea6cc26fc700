import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { cliProcess } from './helpers/cli.js'

const examples = fileURLToPath(new URL('../examples/reviews.csv', import.meta.url))
const dir = mkdtempSync(join(tmpdir(), 'is-malformed-'))

t.test('run: malformed CSV rows are listed with their line and reason (first 5 on stderr, all in <output>.errors.jsonl); the rest runs', async (t) => {
  const input = join(dir, 'malformed.csv')
  const out = join(dir, 'malformed.jsonl')
  // Quoted multi-line texts before and between the bad rows: line numbers are physical lines.
  const rows: string[] = ['id,text,n']
  const bad: { line: number; error: string }[] = []
  let line = 2
  const good = (id: number): void => {
    rows.push(`${id},"text of ${id}\nits second line",${id}`)
    line += 2
  }
  const broken = (text: string, error: string): void => {
    rows.push(text)
    bad.push({ line, error })
    line += 1
  }
  for (let i = 0; i < 4; i++) {
    good(i * 10)
    broken(`${i}a,"closed"and more,1`, 'text after a closing quote: expected "," or a line break, got "a"')
    good(i * 10 + 1)
    broken(`${i}b,x,1,2,3`, 'expected 3 columns, got 5')
  }
  good(99)
  broken('last,"never closed,1', 'unclosed quote: no closing " before the end of the input')
  rows.push('after,plain,2')
  writeFileSync(input, `${rows.join('\n')}\n`)
  writeFileSync(`${out}.errors.jsonl`, 'stale\n')

  const p = cliProcess(['run', input, '-m', 'builtin/echo', '-o', out, '--no-progress'])
  t.equal((await p.exited).code, 0, p.err())
  const written = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l))
  t.same(written.map((r) => r.input_id), ['0', '1', '10', '11', '20', '21', '30', '31', '99', 'after'], 'every good row ran, in order')
  const listed = readFileSync(`${out}.errors.jsonl`, 'utf8').trim().split('\n').map((l) => JSON.parse(l))
  t.same(listed, bad.map((b) => ({ ...b, error_code: 'ERR_BAD_RECORD' })), `all ${bad.length} listed, at the lines where they start`)
  const err = p.err()
  t.match(err, `inference-stream: ${bad.length} malformed input rows skipped (not run, not in the output):\n`)
  for (const b of bad.slice(0, 5)) t.match(err, `\n  line ${b.line}: ${b.error}\n`)
  t.notMatch(err, `line ${bad[5].line}:`, 'only the first five on stderr')
  t.match(err, `\n  … and ${bad.length - 5} more\ninference-stream: all of them are listed in ${out}.errors.jsonl (one JSON line each: line, error, error_code)\n`)
  t.match(p.out(), `malformed input rows skipped: ${bad.length} (listed in ${out}.errors.jsonl)`)

  // A run without malformed rows leaves no list behind (an old one would mislead).
  const clean = cliProcess(['run', examples, '-m', 'builtin/echo', '-o', out, '--no-progress'])
  t.equal((await clean.exited).code, 0, clean.err())
  t.notOk(existsSync(`${out}.errors.jsonl`))
  t.notMatch(clean.err(), /malformed/)
})

t.test('run to Parquet: the writer thread (default) and --no-writer-thread write the same file; malformed rows are listed and skipped either way', async (t) => {
  const input = join(dir, 'threaded.csv')
  // Enough rows for several batches to the writer's thread and two row groups, bad rows among them.
  const rows: string[] = ['id,text,n']
  const bad: number[] = []
  for (let i = 0; i < 12_000; i++) {
    if (i % 2999 === 7) {
      bad.push(rows.length + 1)
      rows.push(`${i},"broken"x,1`)
    } else rows.push(`${i},"text ${i}, ""quoted"" é",${i % 5}`)
  }
  writeFileSync(input, `${rows.join('\n')}\n`)
  const outputs: Buffer[] = []
  for (const flags of [[], ['--no-writer-thread']]) {
    const out = join(dir, `threaded${flags.length}.parquet`)
    const p = cliProcess(['run', input, '-m', 'builtin/echo', '-o', out, '--no-progress', '--id-column', 'id', ...flags])
    t.equal((await p.exited).code, 0, p.err())
    t.match(p.out(), `${12_000 - bad.length} rows -> ${out}`)
    const listed = readFileSync(`${out}.errors.jsonl`, 'utf8').trim().split('\n').map((l) => JSON.parse(l))
    t.same(listed.map((b) => b.line), bad, `${flags.join(' ') || 'writer thread'}: the malformed rows listed by line`)
    outputs.push(readFileSync(out))
  }
  t.ok(outputs[0].length > 0 && outputs[0].equals(outputs[1]), `identical Parquet files (${outputs[0].length} bytes)`)
})

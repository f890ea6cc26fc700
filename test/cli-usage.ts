// Usage errors anywhere in the command line exit 2 (docs/cli.md), with one line naming what was
// wrong; --version prints the package's version.
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { cliProcess } from './helpers/cli.js'

const version = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version

t.test('--version', async (t) => {
  const p = cliProcess(['--version'])
  t.equal((await p.exited).code, 0)
  t.equal(p.out().trim(), version)
})

t.test('usage errors exit 2 with one clear line', async (t) => {
  const cases: [string[], RegExp][] = [
    [['run', '--bogus'], /unknown option '--bogus'/],
    [['run'], /missing required argument 'input'/],
    [['nosuch'], /unknown command 'nosuch'/],
    [['bench'], /required option '-m, --model <id>' not specified/],
    [['bulk', 'nosuch'], /unknown command 'nosuch'/],
    [['serve', '--port', 'x'], /--port must be a non-negative integer, got "x"/],
    // Values the library refuses are named as the flags that set them, not as library options.
    [['serve', '--port', '0', '--max-batch', '0'], /^inference-stream: --max-batch must be an integer >= 1, got 0 \(ERR_INVALID_OPTION\)\n$/],
    [['serve', '--port', '0', '--threads', '0'], /^inference-stream: --threads must be a positive integer, got 0 \(ERR_INVALID_OPTION\)\n$/],
    [['serve', '--port', '0', '--token', 'a b'], /^inference-stream: A token cannot contain spaces \(--token, --token-file, INFERENCE_STREAM_TOKENS\)/],
    [['bench', '-m', 'builtin/echo', '--endpoint', 'http://127.0.0.1:9', '--token', 'a b', '--no-progress'], /^inference-stream: --token must be a non-empty string without spaces \(ERR_INVALID_OPTION\)\n$/],
    [['serve', '--port', '0', '--datasets', '.'], /^inference-stream: --datasets needs --data-dir DIR: bulk jobs keep their jobs, uploads and output datasets there/],
    [['run', fileURLToPath(new URL('../examples/reviews.csv', import.meta.url)), '-o', 'out.json'], /^inference-stream: Cannot write output out\.json: a JSON array is read, not written; name it \.jsonl/],
  ]
  await Promise.all(
    cases.map(async ([args, message]) => {
      const p = cliProcess(args)
      t.equal((await p.exited).code, 2, args.join(' '))
      t.match(p.err(), message, args.join(' '))
      t.notMatch(p.err(), /\n\s+at /, `${args.join(' ')}: no stack trace`)
    }),
  )
})

t.test('--endpoint without --token: fine on a server without tokens; one line saying a token is needed otherwise', async (t) => {
  const { startServer } = await import('./helpers/server.js')
  const { mkdtempSync, writeFileSync: write } = await import('node:fs')
  const { tmpdir } = await import('node:os')
  const { join } = await import('node:path')
  const dir = mkdtempSync(join(tmpdir(), 'is-usage-'))
  const input = join(dir, 'in.csv')
  write(input, 'text\nI love it\n')
  const open = await startServer(t)
  const ok = cliProcess(['run', input, '-m', 'builtin/echo', '-o', join(dir, 'a.jsonl'), '--endpoint', open.url, '--no-progress'], { INFERENCE_STREAM_TOKEN: '' })
  t.equal((await ok.exited).code, 0, ok.err())
  const closed = await startServer(t, { tokens: ['secret'] })
  const refused = cliProcess(['run', input, '-m', 'builtin/echo', '-o', join(dir, 'b.jsonl'), '--endpoint', closed.url, '--no-progress'], { INFERENCE_STREAM_TOKEN: '' })
  t.equal((await refused.exited).code, 2)
  t.match(refused.err(), /this server needs a token: pass --token \(or set INFERENCE_STREAM_TOKEN\)/)
})

t.test('run stops early when the first rows all fail the same way; the summary counts failures by code', async (t) => {
  const { mkdtempSync, writeFileSync: write, existsSync } = await import('node:fs')
  const { tmpdir } = await import('node:os')
  const { join } = await import('node:path')
  const dir = mkdtempSync(join(tmpdir(), 'is-failfast-'))
  const input = join(dir, 'in.csv')
  write(input, `text\n${Array.from({ length: 300 }, (_, i) => `row ${i}`).join('\n')}\n`)
  const args = ['run', input, '-m', 'builtin/echo', '--parameters', '{"delay_ms":"x"}', '--no-progress']
  const stopped = cliProcess([...args, '-o', join(dir, 'a.jsonl'), '--stop-after-failures', '50'])
  t.equal((await stopped.exited).code, 1)
  t.match(stopped.err(), /the first 50 rows all failed with ERR_MODEL_INPUT: parameters\.delay_ms must be .*\n.*stopped early.*--stop-after-failures 0/)
  t.notOk(existsSync(join(dir, 'a.jsonl')) || existsSync(join(dir, 'a.jsonl.partial')), 'no output left behind')
  const all = cliProcess([...args, '-o', join(dir, 'b.jsonl'), '--stop-after-failures', '0'])
  t.equal((await all.exited).code, 3)
  t.match(all.out(), /300 rows -> .*\nfailed: 300 \(ERR_MODEL_INPUT ×300, e\.g\. "parameters\.delay_ms must be/)
  // Some rows fine: never stopped, whatever fails after.
  // (An empty string is an input; a null is ERR_MISSING_INPUT.)
  const mixedInput = join(dir, 'mixed.jsonl')
  write(mixedInput, `{"text":"ok"}\n${Array.from({ length: 120 }, () => '{"text":null}').join('\n')}\n`)
  const mixed = cliProcess(['run', mixedInput, '-m', 'builtin/echo', '-o', join(dir, 'c.jsonl'), '--no-progress', '--stop-after-failures', '50'])
  t.equal((await mixed.exited).code, 3, mixed.err())
})

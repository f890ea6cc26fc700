// Usage errors anywhere in the command line exit 2 (docs/cli.md), with one line naming what was
// wrong; --version prints the package's version.
import { readFileSync } from 'node:fs'
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
    [['serve', '--port', '0', '--datasets', '.'], /--datasets\) needs "dataDir" \(--data-dir\)/],
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

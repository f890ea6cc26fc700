// The shipped examples run against the built package (dist/, built by `npm test` before tap) as a
// user would run them: their output is checked, so the README's commands stay true.
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import t from 'tap'

const run = promisify(execFile)
const root = fileURLToPath(new URL('..', import.meta.url))

async function example(name: string, args: string[] = []): Promise<string> {
  const { stdout } = await run(process.execPath, [`examples/${name}`, ...args], { cwd: root, timeout: 60_000 })
  return stdout
}

t.test('csv-to-parquet', async (t) => {
  t.match(await example('csv-to-parquet.js'), /^300 rows -> .*reviews\.parquet \(0 failed\)/)
})

t.test('async-iterable', async (t) => {
  const out = await example('async-iterable.js')
  t.match(out, /POSITIVE\s+0\.\d+\s+I love this kettle/)
  t.match(out, /NEGATIVE\s+0\.\d+\s+The strap broke/)
  t.match(out, /DATE: 5 June 2026/)
})

t.test('resume', async (t) => {
  const out = await example('resume.js')
  t.match(out, /first pass: aborted after 100 results/)
  const m = /second pass: (\d+) replayed from .*, (\d+) sent, (\d+) resent/.exec(out)
  t.ok(m, out)
  t.equal(Number(m![1]) + Number(m![2]), 300, 'every row replayed or sent once')
  t.ok(Number(m![1]) >= 100)
})

t.test('raw-protocol', async (t) => {
  const out = await example('raw-protocol.js')
  t.match(out, /300 reviews -> /)
  t.match(out, /agreement with star rating/)
})

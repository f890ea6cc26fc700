// readJson must never hold the array: a child process reads a ~50 MB array with a V8 heap capped
// below the file's size (an old generation of 64 MB, a young one of 3 × 1 MB), so a reader that
// kept the text or the parsed array would die of "heap out of memory" (checked: JSON.parse does);
// its RSS growth is measured too.
import { spawnSync } from 'node:child_process'
import { statSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'

// Written by a plain child process, fast, and without growing this process's heap.
const GENERATE = `
const { createWriteStream } = require('node:fs')
const { once } = require('node:events')
const [path, n] = process.argv.slice(1)
;(async () => {
  const out = createWriteStream(path)
  const filler = 'x'.repeat(160)
  out.write('[')
  for (let i = 0; i < Number(n); i++) {
    if (!out.write((i ? ',\\n' : '') + JSON.stringify({ id: i, text: 'review ' + i + ' ' + filler, stars: i % 5 }))) await once(out, 'drain')
  }
  out.end(']')
})()
`
const CHILD = fileURLToPath(new URL('./fixtures/io/read-json-child.ts', import.meta.url))
const MB = 1e6

t.test('readJson reads a ~50 MB array with a 64 MB heap, RSS growing well under the file size', async (t) => {
  const path = join(t.testdir(), 'big.json')
  const n = 250_000
  const gen = spawnSync(process.execPath, ['-e', GENERATE, path, String(n)], { stdio: 'inherit' })
  t.equal(gen.status, 0)
  const size = statSync(path).size
  t.ok(size > 48 * MB, `file is ${(size / MB).toFixed(1)} MB`)

  const run = (mode = 'stream') =>
    spawnSync(process.execPath, [...process.execArgv, '--max-old-space-size=64', '--max-semi-space-size=1', CHILD, path, String(n), mode], { encoding: 'utf8' })
  const child = run()
  t.equal(child.status, 0, child.stderr.slice(-2000))
  const m = JSON.parse(child.stdout) as { count: number; rssBefore: number; rssPeak: number; heapPeak: number }
  t.equal(m.count, n)
  const growth = m.rssPeak - m.rssBefore
  t.ok(growth < size, `RSS grew ${(growth / MB).toFixed(1)} MB reading a ${(size / MB).toFixed(1)} MB array (heap peak ${(m.heapPeak / MB).toFixed(1)} MB)`)
  // The control: the same heap cannot hold the array read whole, so the limit proves the point.
  const naive = run('whole')
  t.not(naive.status, 0, 'JSON.parse of the whole file dies under the same heap limit')
  t.match(naive.stderr, /heap out of memory|Invalid string length/)
})

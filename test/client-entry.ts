// `inference-stream/client` must not load the server's dependencies (prom-client, SQLite, pino):
// scripts that only stream records should not pay for them. Checked on the built package.
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import t from 'tap'

const run = promisify(execFile)
const root = fileURLToPath(new URL('..', import.meta.url))

t.test('the client entry loads no server dependency', async (t) => {
  const script = `
    import { createRequire } from 'node:module'
    const m = await import('inference-stream/client')
    const loaded = Object.keys(createRequire(import.meta.url).cache)
    console.log(JSON.stringify({ exports: Object.keys(m), server: loaded.filter((k) => /prom-client|better-sqlite3|ioredis|pino|isomorphic-git/.test(k)) }))`
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { cwd: root })
  const r = JSON.parse(stdout)
  t.same(r.server, [])
  for (const name of ['InferenceStream', 'infer', 'DatasetBulk', 'readCsv', 'writeParquet', 'inputFromColumn']) t.ok(r.exports.includes(name), name)
})

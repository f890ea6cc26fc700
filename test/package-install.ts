// The package as a library user gets it: `npm pack`, then `npm install` of the tarball into an
// empty project, with its install scripts (no --ignore-scripts). It must install from the registry
// alone, stay small, and run the main job on the embedded server without the optional packages;
// asking for what they bring says what to install.
import { execFile, spawn } from 'node:child_process'
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import t from 'tap'

const run = promisify(execFile)
const repo = fileURLToPath(new URL('..', import.meta.url))
const dir = mkdtempSync(join(tmpdir(), 'is-pack-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

/** Bytes on disk under a folder (files' sizes; links not followed). */
function sizeOf(path: string): number {
  const st = statSync(path, { throwIfNoEntry: false })
  if (!st) return 0
  if (!st.isDirectory()) return st.size
  let total = 0
  for (const name of readdirSync(path)) total += sizeOf(join(path, name))
  return total
}

function node(args: string[], cwd: string): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { cwd, env: { ...process.env, INFERENCE_STREAM_TOKEN: '' }, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    child.on('exit', (code) => resolve({ code, out, err }))
  })
}

const project = join(dir, 'app')
let installed = false

t.test('npm pack + npm install of the tarball: from the registry alone, with install scripts, small', async (t) => {
  // dist/ is built by `npm test` before the tests; packing does not build again.
  const packed = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], { cwd: repo, maxBuffer: 64 * 1024 * 1024 })
  const [{ filename, size }] = JSON.parse(packed.stdout) as { filename: string; size: number }[]
  t.ok(size < 5 * 1024 * 1024, `tarball ${(size / 1024).toFixed(0)} KiB`)
  cpSync(join(repo, 'examples', 'reviews.csv'), join(dir, 'reviews.csv'))
  writeFileSync(join(dir, 'package.json'), '{}')
  const { mkdirSync } = await import('node:fs')
  mkdirSync(project)
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true, type: 'module' }))
  const started = performance.now()
  const install = await run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', join(dir, filename)], { cwd: project, maxBuffer: 64 * 1024 * 1024 }).catch((err: { stderr?: string; message: string }) => {
    t.fail(`npm install failed: ${err.stderr ?? err.message}`)
    return undefined
  })
  if (!install) return
  const seconds = (performance.now() - started) / 1000
  const bytes = sizeOf(join(project, 'node_modules'))
  t.comment(`installed in ${seconds.toFixed(1)} s: node_modules ${(bytes / 1024 / 1024).toFixed(1)} MiB`)
  t.ok(bytes < 60 * 1024 * 1024, `node_modules ${(bytes / 1024 / 1024).toFixed(1)} MiB, under 60 MiB`)
  for (const heavy of ['@huggingface/transformers', 'onnxruntime-node', 'onnxruntime-web', 'sharp', 'better-sqlite3']) {
    t.notOk(existsSync(join(project, 'node_modules', heavy)), `${heavy} not installed by default`)
  }
  installed = true
})

t.test('the installed library: readCsv → InferenceStream → writeParquet on the embedded server, a built-in model', async (t) => {
  if (!installed) return t.fail('the install failed (above)')
  writeFileSync(
    join(project, 'main.js'),
    `import { pipeline } from 'node:stream/promises'
import { createServer, InferenceStream, readCsv, writeParquet, inputFromColumn, readParquet } from 'inference-stream'
const server = createServer()
const url = await server.listen(0)
await pipeline(
  readCsv(${JSON.stringify(join(dir, 'reviews.csv'))}),
  new InferenceStream({ url, model: 'builtin/sentiment', token: 'x', input: inputFromColumn('text') }),
  writeParquet('out.parquet'),
)
let rows = 0
let labelled = 0
for await (const r of readParquet('out.parquet')) { rows++; if (r.label === 'POSITIVE' || r.label === 'NEGATIVE') labelled++ }
await server.close()
console.log(JSON.stringify({ rows, labelled }))
`,
  )
  const r = await node(['main.js'], project)
  t.equal(r.code, 0, r.err)
  t.same(JSON.parse(r.out), { rows: 300, labelled: 300 })
})

t.test('without the optional packages: a Hub model and a data dir say what to install', async (t) => {
  if (!installed) return t.fail('the install failed (above)')
  writeFileSync(
    join(project, 'hub.js'),
    `import { createServer, infer } from 'inference-stream'
const server = createServer()
const url = await server.listen(0)
try {
  for await (const r of infer(['hello'], { url, model: 'org/some-model', token: 'x' })) console.log(JSON.stringify({ outputs: r.outputs, error: r.error && { code: r.error.remoteCode ?? r.error.code, message: r.error.message } }))
} catch (err) {
  console.log(JSON.stringify({ thrown: { code: err.remoteCode ?? err.code, message: err.message } }))
}
const res = await fetch(url + '/models/org/some-model', { method: 'POST', headers: { authorization: 'Bearer x', 'content-type': 'application/json' }, body: '{"inputs":"hello"}' })
console.log(JSON.stringify({ status: res.status, body: await res.json() }))
await server.close()
`,
  )
  const r = await node(['hub.js'], project)
  t.equal(r.code, 0, r.err)
  const [stream, http] = r.out.trim().split('\n').map((l) => JSON.parse(l) as Record<string, { code: string; message: string } & Record<string, unknown>>)
  const fromStream = stream.thrown ?? stream.error
  t.match(fromStream, { code: 'ERR_MISSING_DEPENDENCY', message: /Model org\/some-model .*needs the optional package @huggingface\/transformers .*npm install @huggingface\/transformers@\^4/ })
  t.match(http, { status: 501, body: { code: 'ERR_MISSING_DEPENDENCY', error: /npm install @huggingface\/transformers@\^4/ } })

  const cli = join(project, 'node_modules', 'inference-stream', 'dist', 'cli', 'index.js')
  const ok = await node([cli, 'run', join(dir, 'reviews.csv'), '-o', join(project, 'cli.jsonl'), '--no-progress'], project)
  t.equal(ok.code, 0, `the CLI runs the main job: ${ok.err}`)
  const serve = await node([cli, 'serve', '--port', '0', '--data-dir', join(project, 'data')], project)
  t.equal(serve.code, 2, serve.err)
  t.match(serve.err, /^inference-stream: The SQLite state store needs the optional package better-sqlite3 \(the durable state and bulk jobs \(serve --data-dir\)\), which is not installed: run `npm install better-sqlite3@\^12[^`]*` \(ERR_MISSING_DEPENDENCY\)\n$/)
})

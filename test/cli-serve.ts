import { spawn } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { collectTokens } from '../lib/cli/serve.js'
import { connect } from './helpers/ws-client.js'

const cli = fileURLToPath(new URL('../lib/cli/index.ts', import.meta.url))

// Runs the CLI from source with this process's loader flags (tap's TypeScript import hook).
function run(args: string[], env: NodeJS.ProcessEnv = {}) {
  const child = spawn(process.execPath, [...process.execArgv, cli, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d) => (stdout += d))
  child.stderr.on('data', (d) => (stderr += d))
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  return { child, exited, out: () => stdout, err: () => stderr }
}

t.test('collectTokens merges flags, env and file', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'is-tokens-'))
  const file = join(dir, 'tokens')
  writeFileSync(file, '# comment\nfile-token\n\n  spaced  \n')
  t.same(collectTokens(['flag'], file, { INFERENCE_STREAM_TOKENS: 'env1,env2,flag' }), ['flag', 'env1', 'env2', 'file-token', 'spaced'])
  t.throws(() => collectTokens([], join(dir, 'missing')), { code: 'ERR_INVALID_OPTION', message: /Cannot read --token-file/ })
})

t.test('serve: listens, checks tokens from a file and env, shuts down on SIGTERM', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'is-serve-'))
  const file = join(dir, 'tokens')
  writeFileSync(file, 'from-file\n')
  const p = run(['serve', '--port', '0', '--token-file', file, '--log-level', 'warn'], { INFERENCE_STREAM_TOKENS: 'from-env' })
  t.teardown(() => p.child.kill('SIGKILL'))
  const deadline = Date.now() + 30_000
  while (!/listening on (\S+)/.test(p.out()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
  const base = /listening on (\S+)/.exec(p.out())?.[1]
  t.ok(base, 'printed its address')
  const url = `${base!.replace('http', 'ws')}/bulk/stream/cpu/builtin/echo`
  const bad = await connect(url, { token: 'nope' })
  t.equal((await bad.closed).code, 1008)
  for (const token of ['from-file', 'from-env']) {
    const c = await connect(url, { token })
    c.send({ id: 'x', inputs: token })
    await c.waitFor(() => c.results().has('x'), 'result')
    t.equal(c.results().get('x'), token)
    await c.close()
  }
  p.child.kill('SIGTERM')
  t.equal(await p.exited, 0, 'graceful exit')
})

t.test('bad flags give one clear line and exit 2', async (t) => {
  const p = run(['serve', '--port', 'abc'])
  t.equal(await p.exited, 2)
  t.match(p.err(), /--port must be a non-negative integer, got "abc"/)
  t.notMatch(p.err(), /\n\s+at /, 'no stack trace')
  const q = run(['serve', '--bogus'])
  t.not(await q.exited, 0)
  t.match(q.err(), /unknown option '--bogus'/)
})

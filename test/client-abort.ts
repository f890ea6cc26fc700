import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import t from 'tap'

t.test('abort via signal: AbortError, sending stops, and the process exits by itself', async (t) => {
  const built = fileURLToPath(new URL('../dist/index.js', import.meta.url))
  if (!existsSync(built)) {
    t.fail('dist/ is not built: run `npm run build` first (npm test does)')
    return
  }
  const child = spawn(process.execPath, [fileURLToPath(new URL('./fixtures/abort-child.js', import.meta.url))], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  let out = ''
  child.stdout.on('data', (d) => (out += d))
  const started = Date.now()
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve))
  clearTimeout(timer)
  t.equal(code, 0, `exited by itself after ${Date.now() - started} ms`)
  const r = JSON.parse(out.trim().split('\n').pop() ?? '{}')
  t.match(r, { name: 'AbortError', code: 'ABORT_ERR', cause: 'user gave up', stoppedSending: true })
  t.ok(r.received > 0, `results before the abort: ${r.received}`)
})

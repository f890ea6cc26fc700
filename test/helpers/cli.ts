import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

/**
 * The CLI entry as users run it: the build (`npm test` builds before it runs tap; after editing
 * lib/, run `npm run build` before running one CLI test alone). A CLI started from source under
 * the test loader costs seconds of CPU per start, and the CLI tests start dozens.
 */
export const CLI = fileURLToPath(new URL('../../dist/cli/index.js', import.meta.url))

/** Runs the built CLI as a child process, collecting its output. */
export function cliProcess(args: string[], env: NodeJS.ProcessEnv = {}) {
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d) => (stdout += d))
  child.stderr.on('data', (d) => (stderr += d))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
  return { child, exited, out: () => stdout, err: () => stderr }
}

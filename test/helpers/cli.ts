import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

/** The CLI entry, from source. */
export const CLI = fileURLToPath(new URL('../../lib/cli/index.ts', import.meta.url))

/**
 * Runs the CLI from source as a child process with this process's loader flags (tap's TypeScript
 * import hook), collecting its output.
 */
export function cliProcess(args: string[], env: NodeJS.ProcessEnv = {}) {
  const child = spawn(process.execPath, [...process.execArgv, CLI, ...args], {
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

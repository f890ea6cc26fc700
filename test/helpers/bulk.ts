import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createEchoPipeline } from '../../lib/models/builtin-echo.js'
import type { ModelRegistry, Pipeline } from '../../lib/models/pipeline.js'

export const auth = { authorization: 'Bearer t' }
export const job = { dataset_name: 'reviews', dataset_config: 'default', dataset_split: 'train', dataset_column: 'text' }
const MOODS = ['I love it, works great', 'Terrible, it broke', 'It arrived on Tuesday', 'Best purchase ever', 'Awful customer service']

/** A data folder whose `reviews/default/train.csv` has `rows` rows `id,text`; row i's text ends in ` (i)`. */
export function dataDir(rows: number, name = 'reviews'): string {
  const dir = mkdtempSync(join(tmpdir(), 'is-bulk-'))
  const split = join(dir, 'datasets', name, 'default')
  mkdirSync(split, { recursive: true })
  const lines = ['id,text']
  for (let i = 0; i < rows; i++) lines.push(`r${i},"${MOODS[i % MOODS.length]} (${i})"`)
  writeFileSync(join(split, 'train.csv'), `${lines.join('\n')}\n`)
  return dir
}

/** The text of row `i` of {@link dataDir}'s split. */
export function rowText(i: number): string {
  return `${MOODS[i % MOODS.length]} (${i})`
}

export async function post(base: string, path: string, body: unknown, headers: Record<string, string> = auth): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) })
  return { status: res.status, body: (await res.json()) as Record<string, unknown> }
}

export async function status(base: string, id: string): Promise<Record<string, unknown>> {
  const res = await fetch(`${base}/bulk/status/${id}`, { headers: auth })
  return ((await res.json()) as { status: Record<string, unknown> }).status
}

/** Polls a job's status until its state is one of `states`; returns every status seen. */
export async function waitState(base: string, id: string, states: string[], timeoutMs = 60_000): Promise<Record<string, unknown>[]> {
  const seen: Record<string, unknown>[] = []
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const s = await status(base, id)
    seen.push(s)
    if (states.includes(s.state as string)) return seen
    if (Date.now() > deadline) throw new Error(`job ${id} still ${s.state}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

/**
 * A registry serving `builtin/echo` that records the row index of every input it is called with
 * (from {@link dataDir}'s texts) before running it — the model invocations of a server — and, in
 * `done`, of every input it answered.
 */
export function countingEcho(): { registry: ModelRegistry; ran: number[]; done: number[] } {
  const echo = createEchoPipeline()
  const ran: number[] = []
  const done: number[] = []
  const rowOf = (x: unknown): number => Number(/\((\d+)\)$/.exec(String(x))?.[1] ?? -1)
  const counted: Pipeline = {
    id: echo.id,
    task: echo.task,
    run: async (inputs, parameters, signal) => {
      for (const x of inputs) ran.push(rowOf(x))
      const out = await echo.run(inputs, parameters, signal)
      for (const x of inputs) done.push(rowOf(x))
      return out
    },
  }
  return { registry: { get: (id) => (id === echo.id ? counted : undefined), list: () => [echo.id], close: async () => {} }, ran, done }
}

/**
 * A server from source in a child process of its own (to be killed), `createServer(options)` on
 * port 0; resolves with its url once it listens.
 */
export async function serverProcess(options: Record<string, unknown>): Promise<{ child: ChildProcess; url: string }> {
  const module = fileURLToPath(new URL('../../lib/server/server.js', import.meta.url))
  const code = `
    import { createServer } from ${JSON.stringify(module)}
    const server = createServer(${JSON.stringify(options)})
    console.log('listening on ' + (await server.listen(0)))
  `
  const child = spawn(process.execPath, [...process.execArgv, '--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout!.on('data', (d) => (out += d))
  const deadline = Date.now() + 90_000 // not-stuck bound: TypeScript loaded under the test loader on a loaded machine
  while (!/listening on (\S+)/.test(out)) {
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}`)
    if (Date.now() > deadline) throw new Error('server did not start')
    await new Promise((r) => setTimeout(r, 20))
  }
  return { child, url: /listening on (\S+)/.exec(out)![1] }
}

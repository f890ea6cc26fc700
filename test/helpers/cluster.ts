// A cluster of real processes on one Redis for the test/cluster-*.ts files: front-ends
// (`serve --redis --workers 0`) and worker processes (`worker --redis`) from the built CLI, each
// SIGKILLed at teardown, and the Redis keys of the file deleted after it.
import { spawn, type ChildProcess } from 'node:child_process'
import { Redis } from 'ioredis'
import type { Test } from 'tap'
import { RedisKeys } from '../../lib/server/state/redis-keys.js'
import { CLI } from './cli.js'
import { REDIS_URL, RedisTestSpace } from './redis.js'
import { until } from './until.js'

export const TOKEN = 'cluster-token'

/** Seed of a file's random kill points: CLUSTER_SEED, else a random one (printed, to replay a failure). */
export function clusterSeed(t: Test): number {
  const seed = Number(process.env.CLUSTER_SEED ?? Math.floor(Math.random() * 1e9))
  t.comment(`seed ${seed} (CLUSTER_SEED=${seed} replays the kill points)`)
  return seed
}

/** One process of the cluster. */
export class ClusterProcess {
  /** Stdout and stderr, interleaved. */
  log = ''
  /** Stdout alone (the start line). */
  out = ''
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
  ) {
    child.stdout!.on('data', (d) => {
      this.out += d
      this.log += d
    })
    child.stderr!.on('data', (d) => (this.log += d))
    // 'close': exited, and its output read to the end.
    this.exited = new Promise((resolve) => child.once('close', (code, signal) => resolve({ code, signal })))
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null
  }

  /** SIGKILL, and wait for the exit. */
  async kill(): Promise<void> {
    if (!this.alive) return
    this.child.kill('SIGKILL')
    await this.exited
  }

  signal(sig: NodeJS.Signals): void {
    if (this.alive) this.child.kill(sig)
  }

  /** Waits for a line of stdout matching `re`; rejects if the process exits first. */
  async line(re: RegExp, what: string, timeoutMs = 60_000): Promise<RegExpExecArray> {
    let m: RegExpExecArray | null = null
    await until(() => {
      m = re.exec(this.out)
      if (m) return true
      if (!this.alive) throw new Error(`${this.name} exited before ${what}:\n${this.log.slice(-3000)}`)
      return false
    }, `${this.name}: ${what}`, timeoutMs)
    return m!
  }
}

/** A front-end: `serve --redis --workers 0 --port 0`. */
export class FrontEnd extends ClusterProcess {
  url = ''
  get ws(): string {
    return this.url.replace(/^http/, 'ws')
  }

  /** Items billed in the cluster, from the ledger this front-end reads from Redis (`/metrics`). */
  async billed(): Promise<number> {
    const text = await (await fetch(`${this.url}/metrics`, { signal: AbortSignal.timeout(5000) })).text()
    let n = 0
    for (const m of text.matchAll(/^inference_stream_billed_items_total\{[^}]*\} (\d+)$/gm)) n += Number(m[1])
    return n
  }
}

/** A worker process: `worker --redis --port 0` (its /health tells how many batches it runs). */
export class Worker extends ClusterProcess {
  node = ''
  health = ''

  /** Batches it runs now (/health `busy`); undefined when it does not answer. */
  async busy(): Promise<number | undefined> {
    try {
      const res = await fetch(`${this.health}/health`, { signal: AbortSignal.timeout(1000) })
      return ((await res.json()) as { busy: number }).busy
    } catch {
      return undefined
    }
  }
}

/** Processes on one Redis prefix (a fresh one under the file's RedisTestSpace). */
export class Cluster {
  readonly prefix: string
  readonly processes: ClusterProcess[] = []
  private n = 0
  private closed = false

  constructor(
    readonly t: Test,
    space: RedisTestSpace,
  ) {
    this.prefix = space.prefix()
    t.teardown(() => {
      this.closed = true
      return Promise.all(this.processes.map((p) => p.kill()))
    })
  }

  // The cluster's flags first: `args` may override them (a later flag wins).
  private spawn(command: string, args: string[], env: NodeJS.ProcessEnv): ChildProcess {
    // A process started after the teardown would outlive the test.
    if (this.closed) throw new Error('the cluster was torn down')
    return spawn(process.execPath, [CLI, command, '--redis', REDIS_URL, '--redis-prefix', this.prefix, '--log-level', 'warn', '--log-format', 'json', ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
  }

  /** Starts a front-end and waits for its `listening on` line. */
  async frontEnd(args: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<FrontEnd> {
    const p = new FrontEnd(`front-end ${++this.n}`, this.spawn('serve', ['--workers', '0', '--port', '0', '--token', TOKEN, ...args], env))
    this.processes.push(p)
    p.url = (await p.line(/listening on (http:\/\/\S+)/, 'listening'))[1]
    return p
  }

  /** Starts a worker process (with /health on a free port) and waits for its start line. */
  async worker(args: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<Worker> {
    const p = new Worker(`worker ${++this.n}`, this.spawn('worker', ['--port', '0', ...args], env))
    this.processes.push(p)
    const m = await p.line(/worker (\S+) on \S+, health on (http:\/\/\S+)/, 'the start line')
    p.node = m[1]
    p.health = m[2]
    return p
  }

  /**
   * Leases held in Redis by a worker process (its consumers are `<node>/<n>`) and their items: a
   * process that died keeps them until they expire and are taken back.
   */
  async heldBy(node: string): Promise<{ leases: number; items: number }> {
    const keys = new RedisKeys(this.prefix)
    const c = new Redis(REDIS_URL)
    try {
      let leases = 0
      let items = 0
      for (const id of await c.zrange(keys.key('leases'), '0', '-1')) {
        // The lease record: consumer `c`, segments `s1`… whose headers start `<enqueuedAt>,<deliveries>,<count>,`.
        const record = await c.hgetall(keys.key('lease', id))
        if (!record.c?.startsWith(`${node}/`)) continue
        leases++
        for (const [field, text] of Object.entries(record)) {
          if (/^s\d+$/.test(field)) items += Number(/^\d+,\d+,(\d+),/.exec(text)?.[1] ?? 0)
        }
      }
      return { leases, items }
    } finally {
      c.disconnect()
    }
  }

  /** The logs of every process, for a failure's diagnostics (the tail of each). */
  logs(): string {
    return this.processes.map((p) => `--- ${p.name} (${p.alive ? 'alive' : 'dead'})\n${p.log.slice(-2000)}`).join('\n')
  }
}

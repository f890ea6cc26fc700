#!/usr/bin/env node
// A cluster on one machine: 2 front-ends (`serve --redis URL --workers 0`) and 3 worker processes
// (`worker --redis URL`) on one Redis, under a fresh key prefix, with one tenant secret shared by
// the front-ends. Prints the front-ends' URLs and a `run` command that streams through both, then
// runs until Ctrl-C (SIGINT) or SIGTERM: it stops every process it started (SIGTERM, SIGKILL
// after 40 s), deletes the prefix's keys and the secret file. See README.md here and
// docs/deploy.md.
//
//   node examples/cluster/start.js                       # front-ends on 8081 and 8082, REDIS_URL or redis://127.0.0.1:6379
//   node examples/cluster/start.js --port 0              # front-ends on free ports
//   node examples/cluster/start.js --front-ends 3 --workers 4 --redis redis://10.0.0.5:6379 --token s3cret
//   node examples/cluster/start.js --keep-keys           # leave the prefix's keys in Redis at the end
//
// Each process's log lines (warnings and errors; --log-level to change) come out prefixed with
// its name. Kill one (kill -9 PID: the PIDs are printed) to watch the others carry on.
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

const USAGE = 'usage: node examples/cluster/start.js [--redis URL] [--prefix P] [--front-ends N] [--workers N] [--port N|0] [--token T] [--log-level L] [--keep-keys]'

function fail(message) {
  process.stderr.write(`start.js: ${message}\n${USAGE}\n`)
  process.exit(2)
}

let args
try {
  args = parseArgs({
    options: {
      redis: { type: 'string', default: process.env.REDIS_URL || 'redis://127.0.0.1:6379' },
      prefix: { type: 'string' },
      'front-ends': { type: 'string', default: '2' },
      workers: { type: 'string', default: '3' },
      port: { type: 'string', default: '8081' },
      token: { type: 'string' },
      'log-level': { type: 'string', default: 'warn' },
      'keep-keys': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  }).values
} catch (err) {
  fail(err.message)
}
if (args.help) {
  process.stdout.write(`${USAGE}\n`)
  process.exit(0)
}
const count = (name, min) => {
  const n = Number(args[name])
  if (!Number.isInteger(n) || n < min) fail(`--${name} must be an integer >= ${min}, got ${JSON.stringify(args[name])}`)
  return n
}
const frontEnds = count('front-ends', 1)
const workers = count('workers', 1)
const port = count('port', 0)
if (!/^rediss?:\/\//.test(args.redis)) fail(`--redis must be a redis:// or rediss:// URL, got ${JSON.stringify(args.redis)}`)
if (port > 0 && port + frontEnds - 1 > 65535) fail(`--port ${port} leaves no room for ${frontEnds} front-ends`)
const redisUrl = args.redis
const shownRedis = redisUrl.replace(/\/\/[^@/]*@/, '//') // no password on the screen
// A fresh prefix: this cluster's keys apart from any other deployment on the same Redis.
const prefix = args.prefix ?? `example-cluster:${randomBytes(4).toString('hex')}:`

// The CLI of the package this example runs with: this checkout's build, or the installed package's.
const cli = fileURLToPath(new URL('./cli/index.js', import.meta.resolve('inference-stream')))

// Redis must answer before anything starts (ioredis: the optional package the cluster needs anyway).
let Redis
try {
  ;({ Redis } = await import('ioredis'))
} catch {
  fail('the cluster needs the ioredis package: npm install ioredis@^6')
}
const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1, connectTimeout: 3000, retryStrategy: () => null })
redis.on('error', () => {})
try {
  await redis.connect()
  await redis.ping()
} catch (err) {
  fail(`cannot reach Redis at ${shownRedis} (${err.message}): start one (redis-server) or give --redis URL`)
}

// One tenant secret for every front-end (tenant ids are made with it): a file only this user reads.
const dir = mkdtempSync(join(tmpdir(), 'inference-stream-cluster-'))
const secretFile = join(dir, 'secret.key')
writeFileSync(secretFile, randomBytes(32), { mode: 0o600 })

const children = [] // {name, child, exited}
let stopping = false

/** Starts `inference-stream <args>` as `name`; resolves the first stdout line matching `ready`. */
function start(name, cliArgs, ready) {
  // Its own process group: Ctrl-C reaches this script only, which stops each child once (a second
  // signal would make a server give up its graceful shutdown).
  const child = spawn(process.execPath, [cli, ...cliArgs], { stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  const entry = { name, child, exited: new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal }))) }
  children.push(entry)
  createInterface({ input: child.stderr }).on('line', (line) => process.stderr.write(`[${name}] ${line}\n`))
  const lines = createInterface({ input: child.stdout })
  return new Promise((resolve, reject) => {
    let seen = false
    lines.on('line', (line) => {
      const m = ready.exec(line)
      if (m && !seen) {
        seen = true
        resolve(m)
      } else process.stdout.write(`[${name}] ${line}\n`)
    })
    entry.exited.then(({ code, signal }) => {
      if (!seen) reject(new Error(`${name} exited before it was ready (${signal ?? `exit ${code}`}); its log is above`))
      else if (!stopping) process.stderr.write(`${name} (pid ${child.pid}) exited (${signal ?? `exit ${code}`}); the others go on\n`)
    })
  })
}

async function stop(code) {
  if (stopping) return
  stopping = true
  process.stdout.write('stopping…\n')
  const alive = children.filter((c) => c.child.exitCode === null && c.child.signalCode === null)
  for (const c of alive) c.child.kill('SIGTERM')
  // Workers let running batches finish (up to 30 s): then SIGKILL.
  const timer = setTimeout(() => alive.forEach((c) => c.child.kill('SIGKILL')), 40_000)
  await Promise.all(alive.map((c) => c.exited))
  clearTimeout(timer)
  rmSync(dir, { recursive: true, force: true })
  if (!args['keep-keys']) {
    let deleted = 0
    try {
      let cursor = '0'
      do {
        const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`, 'COUNT', 1000)
        cursor = next
        if (keys.length > 0) deleted += await redis.del(...keys)
      } while (cursor !== '0')
      process.stdout.write(`deleted ${deleted} keys of ${prefix}\n`)
    } catch (err) {
      process.stderr.write(`could not delete the keys of ${prefix}: ${err.message}\n`)
    }
  } else process.stdout.write(`kept the keys of ${prefix}\n`)
  redis.disconnect()
  process.stdout.write('stopped\n')
  process.exit(code)
}
process.on('SIGINT', () => void stop(0))
process.on('SIGTERM', () => void stop(0))

const common = ['--redis', redisUrl, '--redis-prefix', prefix, '--log-level', args['log-level']]

async function main() {
  const urls = []
  for (let i = 0; i < frontEnds; i++) {
    const serveArgs = ['serve', ...common, '--workers', '0', '--port', String(port === 0 ? 0 : port + i), '--tenant-secret-file', secretFile]
    if (args.token) serveArgs.push('--token', args.token)
    const [, url] = await start(`front-end ${i + 1}`, serveArgs, /^listening on (\S+)/)
    urls.push(url)
  }
  const health = []
  for (let i = 0; i < workers; i++) {
    // --lease 20: the batches of a worker killed with -9 go back to the queue after 20 s (default
    // 150: the batch time limit + 30 s). A live worker renews its leases every third of that.
    const [, h] = await start(`worker ${i + 1}`, ['worker', ...common, '--lease', '20', '--port', '0'], /^worker \S+ on \S+, health on (\S+)/)
    health.push(h)
  }
  if (stopping) return
  process.stdout.write(
    `cluster on ${shownRedis}, key prefix ${prefix}\n` +
      urls.map((u, i) => `front-end ${i + 1}: ${u} (pid ${children[i].child.pid})\n`).join('') +
      health.map((h, i) => `worker ${i + 1}: health ${h}/health (pid ${children[frontEnds + i].child.pid})\n`).join('') +
      `try: inference-stream run examples/reviews.csv --model builtin/sentiment ${urls.map((u) => `--endpoint ${u}`).join(' ')}` +
      `${args.token ? ` --token ${args.token}` : ''} -o reviews.jsonl\n` +
      'Ctrl-C stops the cluster\n',
  )
}

main().catch(async (err) => {
  process.stderr.write(`start.js: ${err.message}\n`)
  await stop(1)
})

#!/usr/bin/env node
/*
 * Question
 *   Does one tenant's load make another tenant wait? Tenant B's latency (one `builtin/sentiment`
 *   item at a time over a websocket) alone, while tenant A floods the queue, and while A parks
 *   slow batches — peers measured one after the other against the same server, in the same run.
 *
 * Fixture
 *   `inference-stream serve --token A --token B` (4 workers, defaults) in a child process.
 *     alone    B sends --items (default 200) items, each after the previous answer.
 *     flood    A first queues --flood (default 50 000) `builtin/echo` items with delay_ms 2 in v1
 *              frames of 500 without reading answers; then B as above.
 *     parked   A queues workers+4 `builtin/echo` items with delay_ms 10000 (the cap), each with
 *              other parameters (so each is its own batch), then B as above.
 *   B's latency is from its send to its result.
 *
 * Command
 *   npm run build && node benchmarks/tenant-fairness.js
 *   node benchmarks/tenant-fairness.js --items 100 --flood 20000
 *   Results: benchmarks/results/tenant-fairness.json and .md (the table is printed too).
 *
 * How to read the result
 *   p50/p95/max of B's latency in ms per peer. Fair share means the flood and parked rows stay
 *   within a few batch times of "alone" (a flood's batches of echo at delay 2 ms take milliseconds;
 *   a parked batch holds a worker for 10 s, so B must be served by the worker left free).
 */
import { spawn } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'
import WebSocket from 'ws'
import { CLI, RESULTS_DIR, machineInfo } from './lib/harness.js'

const { values: args } = parseArgs({
  options: { items: { type: 'string', default: '200' }, flood: { type: 'string', default: '50000' }, 'no-write': { type: 'boolean', default: false } },
})
const ITEMS = Number(args.items)
const FLOOD = Number(args.flood)
const WORKERS = 4

async function startServer() {
  const child = spawn(process.execPath, [CLI, 'serve', '--port', '0', '--token', 'A', '--token', 'B', '--workers', String(WORKERS), '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'inherit'] })
  const url = await new Promise((resolve, reject) => {
    let out = ''
    child.stdout.on('data', (d) => {
      out += d
      const m = /listening on (\S+)/.exec(out)
      if (m) resolve(m[1])
    })
    child.on('exit', (code) => reject(new Error(`server exited with ${code}`)))
  })
  return { child, url }
}

function open(url, model, token) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url.replace('http', 'ws')}/bulk/stream/cpu/${model}`, ['inference-stream.v1'])
    ws.on('open', () => {
      ws.send(`Bearer ${token}`)
      resolve(ws)
    })
    ws.on('error', reject)
  })
}

async function tenantB(url) {
  const ws = await open(url, 'builtin/sentiment', 'B')
  const waiting = new Map()
  ws.on('message', (data) => {
    const msg = JSON.parse(data.toString())
    for (const m of Array.isArray(msg) ? msg : [msg]) {
      if (m.type !== 'results') continue
      ws.send(JSON.stringify({ type: 'ack', ids: [m.id] }))
      waiting.get(m.id)?.()
    }
  })
  const lat = []
  for (let i = 0; i < ITEMS; i++) {
    const id = `b-${Date.now()}-${i}`
    const t0 = performance.now()
    await new Promise((resolve) => {
      waiting.set(id, resolve)
      ws.send(JSON.stringify({ id, inputs: i % 2 ? 'I love this, it is great' : 'This is terrible and awful' }))
    })
    waiting.delete(id)
    lat.push(performance.now() - t0)
  }
  ws.close()
  lat.sort((a, b) => a - b)
  const q = (p) => Math.round(lat[Math.min(lat.length - 1, Math.floor((p / 100) * lat.length))] * 10) / 10
  return { p50: q(50), p95: q(95), max: Math.round(lat[lat.length - 1] * 10) / 10 }
}

async function floodA(url) {
  const ws = await open(url, 'builtin/echo', 'A')
  for (let i = 0; i < FLOOD; i += 500) {
    const frame = []
    for (let j = i; j < Math.min(FLOOD, i + 500); j++) frame.push({ id: `a-${j}`, inputs: j, parameters: { delay_ms: 2 } })
    ws.send(JSON.stringify(frame))
  }
  return ws
}

async function parkA(url) {
  const ws = await open(url, 'builtin/echo', 'A')
  const frame = []
  for (let k = 0; k < WORKERS + 4; k++) frame.push({ id: `p-${k}`, inputs: k, parameters: { delay_ms: 10_000, k } })
  ws.send(JSON.stringify(frame))
  await new Promise((r) => setTimeout(r, 200))
  return ws
}

const rows = []
for (const peer of ['alone', 'flood', 'parked']) {
  const { child, url } = await startServer()
  try {
    const a = peer === 'flood' ? await floodA(url) : peer === 'parked' ? await parkA(url) : undefined
    const r = await tenantB(url)
    rows.push({ peer, ...r })
    process.stderr.write(`${peer}: B p50 ${r.p50} ms, p95 ${r.p95} ms, max ${r.max} ms\n`)
    a?.terminate()
  } finally {
    child.kill('SIGKILL')
  }
}
const md = [
  `B's latency (ms), ${ITEMS} sequential builtin/sentiment items; A's flood ${FLOOD} echo items; ${WORKERS} workers.`,
  '',
  '| peer | p50 | p95 | max |',
  '|---|--:|--:|--:|',
  ...rows.map((r) => `| ${r.peer} | ${r.p50} | ${r.p95} | ${r.max} |`),
].join('\n')
process.stdout.write(`${md}\n`)
if (!args['no-write']) {
  mkdirSync(RESULTS_DIR, { recursive: true })
  writeFileSync(path.join(RESULTS_DIR, 'tenant-fairness.json'), `${JSON.stringify({ date: new Date().toISOString(), machine: machineInfo(), items: ITEMS, flood: FLOOD, rows }, null, 2)}\n`)
  writeFileSync(path.join(RESULTS_DIR, 'tenant-fairness.md'), `${md}\n`)
}

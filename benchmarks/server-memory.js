#!/usr/bin/env node
/*
 * Question
 *   Is the server's memory bounded in bytes? Server RSS after a v1 client streams 6000 results of
 *   256 KiB through `builtin/echo` (1.5 GiB) and reads and acks them all, and when a client sends
 *   the same but never reads — with Node's default heap and with `--max-old-space-size=256`, side
 *   by side in one run. (Before the byte budgets: 1.73 GiB and 1.16 GiB.)
 *
 * Fixture
 *   `inference-stream serve --token A` with default budgets (128 MiB retained, 32 MiB queued and
 *   32 MiB undelivered per tenant) in a child process; the client here. Items are
 *   {"id": i, "inputs": "x" × 262144}; the reading client keeps at most 200 unanswered.
 *
 * Command
 *   npm run build && node benchmarks/server-memory.js        (~1 min)
 *
 * How to read the result
 *   RSS (VmRSS) of the server 2 s after the last result, and its peak (VmHWM), in MiB. The budgets
 *   bound the live set; V8 collects lazily, so with the default heap RSS runs above it — a heap
 *   limit turns the budgets into a hard RSS bound. "sent" for the never-reading client is where
 *   the server stopped reading it (its byte budget), not 6000.
 */
import { spawn } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import WebSocket from 'ws'
import { CLI, RESULTS_DIR, machineInfo } from './lib/harness.js'

const N = 6000
const BIG = 'x'.repeat(256 * 1024)

async function measure(mode, heap) {
  const child = spawn(process.execPath, [...(heap ? [`--max-old-space-size=${heap}`] : []), CLI, 'serve', '--port', '0', '--token', 'A', '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'inherit'] })
  const url = await new Promise((resolve) => child.stdout.on('data', (d) => { const m = /listening on (\S+)/.exec(String(d)); if (m) resolve(m[1]) }))
  const mib = (field) => Math.round(Number(new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))[1]) / 1024)
  const ws = new WebSocket(`${url.replace('http', 'ws')}/bulk/stream/cpu/builtin/echo`, ['inference-stream.v1'])
  await new Promise((resolve) => ws.on('open', resolve))
  ws.send('Bearer A')
  let got = 0
  if (mode === 'reads') {
    ws.on('message', (d) => {
      const m = JSON.parse(d)
      for (const x of Array.isArray(m) ? m : [m]) if (x.type === 'results') { got++; ws.send(JSON.stringify({ type: 'ack', ids: [x.id] })) }
    })
  } else ws.pause()
  let sent = 0
  while (sent < N) {
    let waited = 0
    while (ws.bufferedAmount > 8 * 1024 * 1024 && waited < 3000) { await new Promise((r) => setTimeout(r, 5)); waited += 5 }
    if (waited >= 3000) break // the server stopped reading this socket
    ws.send(JSON.stringify({ id: String(sent), inputs: BIG }))
    sent++
    if (mode === 'reads') while (sent - got > 200) await new Promise((r) => setTimeout(r, 5))
  }
  const t0 = Date.now()
  while (mode === 'reads' && got < N && Date.now() - t0 < 60_000) await new Promise((r) => setTimeout(r, 50))
  await new Promise((r) => setTimeout(r, 2000))
  const row = { client: mode, heap: heap ? `--max-old-space-size=${heap}` : 'default', sent, got, rssMiB: mib('VmRSS'), peakMiB: mib('VmHWM') }
  ws.terminate()
  child.kill('SIGKILL')
  return row
}

const rows = []
for (const mode of ['reads', 'never reads']) {
  for (const heap of [undefined, 256]) {
    const r = await measure(mode, heap)
    process.stderr.write(`${JSON.stringify(r)}\n`)
    rows.push(r)
  }
}
const md = [
  '| client | heap | sent | answered | server RSS MiB | peak MiB |',
  '|---|---|--:|--:|--:|--:|',
  ...rows.map((r) => `| ${r.client} | ${r.heap} | ${r.sent} | ${r.got} | ${r.rssMiB} | ${r.peakMiB} |`),
].join('\n')
process.stdout.write(`${md}\n`)
mkdirSync(RESULTS_DIR, { recursive: true })
writeFileSync(path.join(RESULTS_DIR, 'server-memory.json'), `${JSON.stringify({ date: new Date().toISOString(), machine: machineInfo(), rows }, null, 2)}\n`)
writeFileSync(path.join(RESULTS_DIR, 'server-memory.md'), `${md}\n`)

#!/usr/bin/env node
// Streams examples/reviews.csv through builtin/sentiment on the embedded server (in this process,
// no network, no download) over the websocket protocol, and writes one JSON line per review.
//
//   node examples/raw-protocol.js          # after npm install
//   node examples/raw-protocol.js [input.csv] [output.jsonl] [model]
//
// It speaks the protocol directly with `ws` (v1: batched frames and acks); the InferenceStream
// client wraps exactly this.
import { createWriteStream, mkdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseFile } from 'fast-csv'
import WebSocket from 'ws'
import { SUBPROTOCOL_V1, createServer } from 'inference-stream'

const here = dirname(fileURLToPath(import.meta.url))
const input = process.argv[2] ?? join(here, 'reviews.csv')
const output = process.argv[3] ?? join(here, 'output', 'reviews-sentiment.jsonl')
const model = process.argv[4] ?? 'builtin/sentiment'

const rows = []
for await (const row of parseFile(input, { headers: true })) rows.push(row)

const server = createServer()
await server.listen(0)
const started = performance.now()
const ws = new WebSocket(server.streamUrl(model), [SUBPROTOCOL_V1])
await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject))
ws.send('Bearer example')

const results = new Map()
const done = new Promise((resolve, reject) => {
  ws.on('message', (data) => {
    const msgs = [].concat(JSON.parse(data.toString()))
    const ids = []
    for (const m of msgs) {
      if (m.type === 'status' && m.code) reject(new Error(`${m.code}: ${m.message}`))
      if (m.type !== 'results') continue
      results.set(m.id, m.outputs)
      ids.push(m.id)
    }
    if (ids.length) ws.send(JSON.stringify({ type: 'ack', ids }))
    if (results.size === rows.length) resolve()
  })
})
for (let i = 0; i < rows.length; i += 100) {
  ws.send(JSON.stringify(rows.slice(i, i + 100).map((r) => ({ id: r.id, inputs: r.text }))))
}
await done
const seconds = (performance.now() - started) / 1000
ws.close()
await server.close()

mkdirSync(dirname(output), { recursive: true })
const out = createWriteStream(output)
const labels = {}
let agree = 0
let rated = 0
for (const row of rows) {
  const outputs = results.get(row.id)
  const top = outputs.error ? { label: 'ERROR', score: 0 } : outputs[0][0]
  labels[top.label] = (labels[top.label] ?? 0) + 1
  const rating = Number(row.rating)
  if (rating !== 3) {
    rated++
    if ((rating >= 4) === (top.label === 'POSITIVE')) agree++
  }
  out.write(JSON.stringify({ ...row, label: top.label, score: top.score, outputs }) + '\n')
}
await new Promise((resolve) => out.end(resolve))
console.log(`${rows.length} reviews -> ${output}`)
console.log(`labels: ${JSON.stringify(labels)}`)
console.log(`agreement with star rating (1-2 vs 4-5 stars): ${((100 * agree) / rated).toFixed(1)}% of ${rated}`)
console.log(`${(rows.length / seconds).toFixed(0)} rows/s (${seconds.toFixed(2)} s, including model load)`)

#!/usr/bin/env node
// Resumable runs: with `checkpoint`, an interrupted run picks up where it stopped. The first pass
// is aborted after 100 rows (as Ctrl-C or a crash would); the second pass replays those from the
// journal without the network and sends only the rest. The output has every row once, in order.
//
//   node examples/resume.js
import { mkdirSync, rmSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { fileURLToPath } from 'node:url'
import { InferenceStream, createServer, inputFromColumn, readCsv, writeJsonl } from 'inference-stream'

const here = dirname(fileURLToPath(import.meta.url))
const input = join(here, 'reviews.csv')
const output = join(here, 'output', 'reviews-resumed.jsonl')
const checkpoint = join(here, 'output', 'reviews-resumed.ckpt')
mkdirSync(dirname(output), { recursive: true })
rmSync(checkpoint, { force: true })

const server = createServer()
const url = await server.listen(0)

async function pass(stopAfter) {
  const ac = new AbortController()
  const stream = new InferenceStream({ url, model: 'builtin/sentiment', token: 'x', input: inputFromColumn('text'), checkpoint, signal: ac.signal, maxInFlight: 32 })
  let n = 0
  const count = new Transform({
    objectMode: true,
    transform(r, _e, cb) {
      if (++n === stopAfter) ac.abort()
      cb(null, r)
    },
  })
  try {
    await pipeline(readCsv(input), stream, count, writeJsonl(output))
  } catch (err) {
    if (err.code !== 'ABORT_ERR') throw err
  }
  return stream.stats
}

const first = await pass(100)
console.log(`first pass: aborted after ${first.received} results`)
const second = await pass()
console.log(`second pass: ${second.replayed} replayed from ${checkpoint}, ${second.sent} sent, ${second.resent} resent`)
await server.close()

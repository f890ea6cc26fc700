#!/usr/bin/env node
// The main job in code: a CSV through a model into Parquet, on the embedded server (in this
// process, built-in model, no download). One pipeline() line does the work.
//
//   node examples/csv-to-parquet.js [input.csv] [output.parquet] [model]
import { mkdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { fileURLToPath } from 'node:url'
import { InferenceStream, createServer, inputFromColumn, readCsv, writeParquet } from 'inference-stream'

const here = dirname(fileURLToPath(import.meta.url))
const input = process.argv[2] ?? join(here, 'reviews.csv')
const output = process.argv[3] ?? join(here, 'output', 'reviews.parquet')
const model = process.argv[4] ?? 'builtin/sentiment'
mkdirSync(dirname(output), { recursive: true })

const server = createServer({ tokens: ['example-token'] })
const url = await server.listen(0)

const stream = new InferenceStream({ url, model, token: 'example-token', input: inputFromColumn('text') })
await pipeline(readCsv(input), stream, writeParquet(output))

console.log(`${stream.stats.received} rows -> ${output} (${stream.stats.failed} failed)`)
await server.close()

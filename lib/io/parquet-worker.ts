/**
 * Worker-thread entry of `writeParquet(…, {thread: true})`: encodes and compresses the rows of
 * cells the writer sends ({@link CellBatch}es) and sends the file's bytes back for the writer to
 * write, so the file itself (atomic rename, errors naming the path, a stream target) stays the
 * writer's. Messages are handled one at a time, in order.
 */
import { parentPort } from 'node:worker_threads'
import { chunkSink, ParquetEncoder, type CellBatch, type ParquetEncoderPlan } from './parquet-encoder.js'

/** Writer → worker. */
export type ToParquetWorker = { type: 'open'; plan: ParquetEncoderPlan } | { type: 'rows'; batch: CellBatch } | { type: 'close' }
/** Worker → writer: bytes of the file in order, `opened`, one `ack` per `rows` once encoded, `closed` after the footer. */
export type FromParquetWorker = { type: 'data'; chunk: Uint8Array } | { type: 'opened' } | { type: 'ack' } | { type: 'closed' } | { type: 'error'; message: string; stack?: string }

const port = parentPort!
const send = (m: FromParquetWorker): void => port.postMessage(m)
let plan: ParquetEncoderPlan
let encoder: ParquetEncoder
let failed = false
let queue = Promise.resolve()

async function handle(m: ToParquetWorker): Promise<void> {
  if (m.type === 'open') {
    plan = m.plan
    // The chunk is cloned by postMessage: parquetjs-lite may still hold the Buffer it wrote.
    encoder = new ParquetEncoder(plan, chunkSink((chunk) => send({ type: 'data', chunk }), () => {}))
    await encoder.open()
    send({ type: 'opened' })
  } else if (m.type === 'rows') {
    await encoder.addBatch(m.batch)
    send({ type: 'ack' })
  } else {
    await encoder.close()
    send({ type: 'closed' })
  }
}

port.on('message', (m: ToParquetWorker) => {
  queue = queue.then(async () => {
    if (failed) return
    try {
      await handle(m)
    } catch (err) {
      failed = true
      const e = err instanceof Error ? err : new Error(String(err))
      send({ type: 'error', message: e.message, stack: e.stack })
    }
  })
})

import { mkdtempSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import t from 'tap'
import { CheckpointJournal } from '../lib/client/checkpoint-journal.js'
import { InferenceStream, type InferenceResult } from '../lib/client/inference-stream.js'
import { createServer } from '../lib/server/server.js'
import { startServer } from './helpers/server.js'

const dir = mkdtempSync(join(tmpdir(), 'is-ckpt-'))
let n = 0
const fresh = (): string => join(dir, `c${n++}.ckpt`)

// Runs `records` through a stream with a checkpoint; `stopAfter` results, destroys it as a crash would.
async function run(
  url: string,
  path: string,
  records: number[],
  opts: { stopAfter?: number; token?: string; parameters?: Record<string, unknown>; model?: string; maxInFlight?: number } = {},
): Promise<{ out: number[]; stream: InferenceStream<number>; writtenAtFirst: number }> {
  const stream = new InferenceStream<number>({
    url,
    model: opts.model ?? 'builtin/echo',
    token: opts.token ?? 'ckpt',
    checkpoint: { path, commitIntervalMs: 5 },
    parameters: opts.parameters ?? { delay_ms: 3 },
    input: (r) => ({ inputs: r }),
    maxInFlight: opts.maxInFlight ?? 64,
  })
  const out: number[] = []
  // Records the stream had taken in when its first result came out.
  let writtenAtFirst = 0
  const crash = new Error('simulated crash')
  try {
    await pipeline(
      Readable.from(records),
      stream,
      new Writable({
        objectMode: true,
        write(r: InferenceResult, _e, cb) {
          if (out.length === 0) writtenAtFirst = stream.stats.written
          out.push(r.outputs as number)
          if (opts.stopAfter !== undefined && out.length >= opts.stopAfter) return cb(crash)
          cb()
        },
      }),
    )
  } catch (err) {
    if (err !== crash) throw err
  }
  return { out, stream, writtenAtFirst }
}

const duplicates = async (server: ReturnType<typeof createServer>): Promise<number> =>
  (await server.metrics.duplicates.get()).values.reduce((a, v) => a + v.value, 0)

t.test('resume against a server that kept running: replay, no resend, every row once, bill = rows', async (t) => {
  const server = await startServer(t, { maxBatch: 8 })
  const path = fresh()
  const N = 1500
  const records = [...Array(N).keys()]
  const first = await run(server.url, path, records, { stopAfter: 400 })
  t.equal(first.out.length, 400)
  await new Promise((r) => setTimeout(r, 100))
  const second = await run(server.url, path, records)
  t.same(second.out, records, 'the whole output again, in order, each row once')
  t.ok(second.stream.stats.replayed >= 400, `replayed ${second.stream.stats.replayed} from the journal`)
  // Ids journaled (write-ahead) but never sent before the crash are unknown to the server: those,
  // and only those, are sent again.
  t.ok(second.stream.stats.resent <= 64, `resent ${second.stream.stats.resent}, at most the window`)
  t.equal(await server.billed('ckpt'), N, 'billed once per row')
  t.equal(await duplicates(server), 0, 'no id reached the server twice')
  // A third run over a finished checkpoint touches nothing.
  const third = await run(server.url, path, records)
  t.same(third.out, records)
  t.equal(third.stream.stats.replayed, N)
  t.equal(third.stream.stats.sent, 0)
  t.equal(await server.billed('ckpt'), N)
})

t.test('a resumed run with one record in flight reads its replays at once, outside the network window', async (t) => {
  const server = await startServer(t, { maxBatch: 8 })
  const path = fresh()
  const N = 600
  const records = [...Array(N).keys()]
  await run(server.url, path, records, { stopAfter: 300 })
  await new Promise((r) => setTimeout(r, 100))
  const { out, stream, writtenAtFirst } = await run(server.url, path, records, { maxInFlight: 1 })
  t.same(out, records, 'every row once, in order')
  t.ok(stream.stats.replayed >= 300, `replayed ${stream.stats.replayed}`)
  // Before the fix each replay waited for the one before it (a window of one record).
  t.ok(writtenAtFirst > 1, `${writtenAtFirst} records taken in before the first result came out`)
  t.ok(stream.peakInFlight <= 1, `at most one record on the network (saw ${stream.peakInFlight})`)
  t.equal(await server.billed('ckpt'), N, 'billed once per row')
})

t.test('resume against a fresh server (the embedded one died): exactly the unknown ids are resent', async (t) => {
  const path = fresh()
  const N = 800
  const records = [...Array(N).keys()]
  const a = createServer({ maxBatch: 8 })
  await a.listen(0)
  await run(a.url, path, records, { stopAfter: 200 })
  await a.close()
  // The stopped stream lets go of the checkpoint's lock as it finishes closing.
  const { existsSync } = await import('node:fs')
  for (const deadline = Date.now() + 10_000; existsSync(`${path}.lock`) && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 10))
  const j = await CheckpointJournal.open(path, { model: '/bulk/stream/cpu/builtin/echo', parameters: '{"delay_ms":3}' })
  const unanswered = j.unansweredCount
  await j.close()
  const b = await startServer(t, { maxBatch: 8 })
  const second = await run(b.url, path, records)
  t.same(second.out, records, 'whole output, in order')
  const st = second.stream.stats
  t.ok(st.replayed >= 200)
  t.equal(st.replayed + st.sent, N, 'every row replayed or sent once')
  t.equal(st.resent, unanswered, `resent exactly the ${unanswered} ids journaled as sent without a result`)
  t.equal(await b.billed('ckpt'), N - st.replayed, 'the new server ran each row it did not have once')
  t.equal(await duplicates(b), 0)
})

t.test('a checkpoint from another model, parameters or input is refused', async (t) => {
  const server = await startServer(t)
  const path = fresh()
  await run(server.url, path, [1, 2, 3])
  await t.rejects(run(server.url, path, [1, 2, 3], { model: 'builtin/sentiment' }), { code: 'ERR_CHECKPOINT', message: /was written for model/ })
  await t.rejects(run(server.url, path, [1, 2, 3], { parameters: { delay_ms: 4 } }), { code: 'ERR_CHECKPOINT', message: /parameters/ })
  await t.rejects(run(server.url, path, [7, 8, 9]), { code: 'ERR_CHECKPOINT', message: /from another input/ })
})

t.test('the journal stays about the size of the results', async (t) => {
  const server = await startServer(t, { maxBatch: 64 })
  const path = fresh()
  const N = 10_000
  const { out } = await run(server.url, path, [...Array(N).keys()], { parameters: {} })
  t.equal(out.length, N)
  const size = statSync(path).size
  // A result line is about {"r":"<runId>-12345","h":"<12>","o":12345}: ~50 bytes.
  t.ok(size < N * 70, `journal ${size} bytes for ${N} results`)
})

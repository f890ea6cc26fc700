// Length-aware batching end to end: a real server on port 0 and a real client (InferenceStream),
// with a model that records the batches it is given. The queue's rules are in test/memory-queue.ts,
// the backends' properties (first in line in every lease, results to their own items) in the state
// contract (test/helpers/state-contract.ts); here: the server option, the CLI flag, and that a
// client gets each result back on its own item while batches are formed by length.
import t, { type Test } from 'tap'
import { infer } from '../lib/client/infer.js'
import type { Pipeline } from '../lib/models/pipeline.js'
import { createModelRegistry } from '../lib/models/registry.js'
import { resolveServerOptions } from '../lib/server/options.js'
import type { Batching } from '../lib/server/queue/length-batching.js'
import { createServer } from '../lib/server/server.js'
import { MemoryStateBackend } from '../lib/server/state/memory-backend.js'
import { createWorker } from '../lib/server/worker.js'
import { cliProcess } from './helpers/cli.js'
import { prng } from './helpers/prng.js'

/**
 * A model that answers each input with its own text and length, and records each batch's input
 * lengths. Its first call waits for `gate` (so the rest of the items are queued before any other
 * batch is formed).
 */
function recordingModel(gate: Promise<void>): { pipeline: Pipeline; batches: number[][] } {
  const batches: number[][] = []
  let first = true
  const pipeline: Pipeline = {
    id: 'test/recorder',
    task: 'echo',
    async run(inputs) {
      batches.push(inputs.map((s) => (s as string).length))
      if (first) {
        first = false
        await gate
      }
      return inputs.map((s) => ({ text: s, length: (s as string).length }))
    },
  }
  return { pipeline, batches }
}

async function runThrough(t: Test, batching: Batching | undefined, texts: string[]) {
  let open!: () => void
  const gate = new Promise<void>((r) => (open = r))
  const { pipeline, batches } = recordingModel(gate)
  const server = createServer({ registry: createModelRegistry({ models: { 'test/recorder': pipeline } }), workers: 1, maxBatch: 8, ...(batching ? { batching } : {}) })
  const url = await server.listen(0)
  t.teardown(() => server.close())
  const results: Array<{ record: string; outputs: unknown; error?: unknown }> = []
  const reading = (async () => {
    for await (const r of infer(texts, { url, model: 'test/recorder', token: 'x', maxInFlight: texts.length })) results.push(r as (typeof results)[number])
  })()
  // The first batch runs (held by the gate) while the client sends the rest: wait until they are queued.
  for (let i = 0; i < 500 && (await server.state.stats()).queued < texts.length - batches.flat().length; i++) await new Promise((r) => setTimeout(r, 10))
  open()
  await reading
  return { results, batches }
}

// Mixed lengths in random order: many short texts, a long tail (as model-efficiency's texts).
function mixedTexts(seed: number, n: number): string[] {
  const rnd = prng(seed)
  return Array.from({ length: n }, (_, i) => `t${i} ${'w'.repeat(Math.floor(Math.exp(rnd() * Math.log(600))))}`)
}

/** Padding of batches: slots padded to each batch's longest over the real lengths. */
const padding = (batches: number[][]): number => {
  let real = 0
  let padded = 0
  for (const b of batches) {
    const max = Math.max(...b)
    for (const n of b) {
      real += n
      padded += max - n
    }
  }
  return padded / real
}

t.test('length-aware batching (the default): each result reaches its own item, in order, and batches are formed by length', async (t) => {
  const texts = mixedTexts(17, 96)
  const { results, batches } = await runThrough(t, undefined, texts)
  t.equal(results.length, texts.length, 'every item answered once')
  results.forEach((r, i) => {
    if (r.record !== texts[i] || JSON.stringify(r.outputs) !== JSON.stringify({ text: texts[i], length: texts[i].length }) || r.error) {
      t.fail(`item ${i}: ${JSON.stringify(r).slice(0, 200)}`)
    }
  })
  t.equal(batches.flat().length, texts.length, 'each item ran once')
  // Batches after the first (which took what had arrived) were chosen from the whole queue.
  const fifo = await runThrough(t, 'fifo', texts)
  t.same(fifo.results.map((r) => r.outputs), results.map((r) => r.outputs), 'fifo: the same results')
  const lengthPad = padding(batches.slice(1))
  const fifoPad = padding(fifo.batches.slice(1))
  t.ok(lengthPad * 4 < fifoPad, `length-aware batches pad far less: ${(lengthPad * 100).toFixed(0)}% vs FIFO ${(fifoPad * 100).toFixed(0)}% of the real lengths`)
})

t.test('the option is checked; a worker accepts it on any backend', async (t) => {
  t.equal(resolveServerOptions({}).batching, 'length', 'default length')
  t.equal(resolveServerOptions({ batching: 'fifo' }).batching, 'fifo')
  t.throws(() => resolveServerOptions({ batching: 'sorted' as Batching }), { name: 'InvalidOptionError', code: 'ERR_INVALID_OPTION', message: 'Option "batching" must be one of "length", "fifo", got "sorted"' })
  const state = new MemoryStateBackend({ maxRetained: 10, retentionMs: 1000 })
  t.teardown(() => state.close())
  t.throws(() => createWorker({ state, registry: createModelRegistry({ transformers: false }), batching: 'nope' as Batching }), { code: 'ERR_INVALID_OPTION' })
  const worker = createWorker({ state, registry: createModelRegistry({ transformers: false }), batching: 'fifo', workers: 1 })
  await worker.close()
  t.pass('fifo accepted')
})

t.test('CLI: --batching takes length or fifo', async (t) => {
  const bad = cliProcess(['serve', '--port', '0', '--batching', 'sorted'])
  const { code } = await bad.exited
  t.equal(code, 2, 'a wrong value is a usage error')
  t.match(bad.err(), /--batching.*sorted.*length, fifo/s)
  for (const cmd of ['serve', 'run', 'worker']) {
    const help = cliProcess([cmd, '--help'])
    await help.exited
    t.match(help.out(), /--batching <how>[^]*choices:\s+"length",\s+"fifo",\s+default:\s+"length"/, `${cmd} --help`)
  }
  const srv = cliProcess(['serve', '--port', '0', '--batching', 'fifo', '--log-level', 'warn'])
  t.teardown(() => srv.child.kill('SIGKILL'))
  for (let i = 0; i < 200 && !/listening on/.test(srv.out()); i++) await new Promise((r) => setTimeout(r, 50))
  const url = /listening on (\S+)/.exec(srv.out())?.[1]
  t.ok(url, 'serve --batching fifo starts')
  const res = await fetch(`${url}/models/builtin/echo`, { method: 'POST', body: JSON.stringify({ inputs: 'hi' }), headers: { authorization: 'Bearer x' } })
  t.same(await res.json(), 'hi')
})

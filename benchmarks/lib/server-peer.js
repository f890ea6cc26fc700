// A server peer's measured run, shared by the benchmarks that put a model behind our server
// (model-efficiency.js, length-batching.js): the model loaded before the clock, the client in a
// child process, the server's CPU, bill and batches read around it.
import os from 'node:os'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { ROOT, addServerStats, checkBill, metricSum, procStats } from './harness.js'

const REALISTIC_JS = pathToFileURL(path.join(ROOT, 'test', 'fixtures', 'realistic-model.js')).href
/** Where generated models are kept between runs. */
export const BENCH_DIR = path.join(os.tmpdir(), 'inference-stream-bench')

/**
 * The MiniLM-shaped classifier of test/fixtures/realistic-model.js (`quick`: its small shape) under
 * id `id` (default REALISTIC_MODEL_ID), written into BENCH_DIR once and kept while its options are
 * the same; says so on stderr. Resolves {modelsDir, model, generated} (generated: its shape, bytes).
 */
export async function generatedModel(quick, id) {
  const { makeRealisticModel, MINILM_SHAPE, SMALL_SHAPE, REALISTIC_MODEL_ID } = await import(REALISTIC_JS)
  const modelsDir = path.join(BENCH_DIR, quick ? 'models-small' : 'models')
  const model = id ?? REALISTIC_MODEL_ID
  const generated = await makeRealisticModel(modelsDir, { ...(quick ? SMALL_SHAPE : MINILM_SHAPE), id: model })
  process.stderr.write(`model ${model}: ${(generated.bytes / 1e6).toFixed(1)} MB, ${generated.reused ? 'kept from an earlier run' : `generated in ${(generated.ms / 1000).toFixed(1)} s`} (${modelsDir})\n`)
  return { modelsDir, model, generated }
}

/**
 * Against a running `server` ({child, base} of startServer): loads `model` with one
 * `wait_for_model` request of `warmInputs` (billed before the clock), then runs `client()` — a
 * runChild that sends `items` items and resolves their result — and adds to that result the
 * server's CPU and peak RSS over the run (addServerStats), the bill check (it must grow by exactly
 * `items`) and, from /metrics, `modelCalls`, `meanBatch` and `callSec` (seconds inside model calls).
 */
export async function measureServerPeer(server, { model, token, warmInputs, items, client, label = 'server' }) {
  const warm = await fetch(`${server.base}/models/${model}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ inputs: warmInputs, options: { wait_for_model: true, use_cache: false } }),
    signal: AbortSignal.timeout(300_000),
  })
  if (!warm.ok) throw new Error(`warm-up answered ${warm.status} ${(await warm.text()).slice(0, 300)}`)
  await warm.json()
  const m0 = await (await fetch(`${server.base}/metrics`)).text()
  const s0 = procStats(server.child.pid)
  const result = await client()
  addServerStats(result, s0, procStats(server.child.pid))
  await checkBill(result, server.base, metricSum(m0, 'inference_stream_billed_items_total') + items, label)
  const m1 = await (await fetch(`${server.base}/metrics`)).text()
  const delta = (name) => metricSum(m1, name) - metricSum(m0, name)
  result.modelCalls = delta('inference_stream_batch_size_count')
  result.meanBatch = result.modelCalls > 0 ? delta('inference_stream_batch_size_sum') / result.modelCalls : null
  result.callSec = delta('inference_stream_batch_seconds_sum')
  return result
}

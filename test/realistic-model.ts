// The compute-realistic generated model (test/fixtures/realistic-model.js), in a small size: it
// loads offline through transformers.js and through our registry, classifies, and padding (the
// same text batched with a longer one) does not change its scores.
import t from 'tap'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { env, pipeline } from '@huggingface/transformers'
import { createModelRegistry } from '../lib/models/registry.js'
import { REALISTIC_LABELS, REALISTIC_MODEL_ID, SMALL_SHAPE, generatedWords, makeRealisticModel, realisticVocab } from './fixtures/realistic-model.js'

const root = await mkdtemp(path.join(os.tmpdir(), 'realistic-model-'))
t.teardown(() => rm(root, { recursive: true, force: true }))
const modelsDir = path.join(root, 'models')
const made = await makeRealisticModel(modelsDir, SMALL_SHAPE)

type Scores = Array<{ label: string; score: number }>
const words = generatedWords(SMALL_SHAPE.words, SMALL_SHAPE.seed)
/** A text of n words from the model's vocabulary, different for each start. */
const text = (n: number, start: number): string => Array.from({ length: n }, (_, i) => words[(start + i * 7) % words.length]).join(' ')
const short = ['hello world', 'the food was great', text(12, 3)]
const long = text(200, 11)

t.test('writes the Hub layout with every weight, deterministically', async (t) => {
  t.equal(made.id, REALISTIC_MODEL_ID)
  t.equal(made.reused, false)
  const { hidden: H, layers: L, ffn: F, positions: P } = SMALL_SHAPE
  const V = realisticVocab(SMALL_SHAPE.words, SMALL_SHAPE.seed).length
  // embeddings + LayerNorm, per layer Q K V O + 2 LayerNorms + FFN, pooler, classifier: all float32.
  const params = (V + P + 2) * H + 2 * H + L * (4 * (H * H + H) + 2 * H + H * F + F + F * H + H + 2 * H) + H * H + H + H * 2 + 2
  t.ok(made.bytes >= params * 4 && made.bytes < params * 4 + 64 * 1024, `${made.bytes} bytes for ${params} weights`)
  const config = JSON.parse(await readFile(path.join(made.path, 'config.json'), 'utf8')) as Record<string, unknown>
  t.match(config, { model_type: 'bert', hidden_size: H, num_hidden_layers: L, vocab_size: V, id2label: { 0: 'NEGATIVE', 1: 'POSITIVE' } })
  const tokenizer = JSON.parse(await readFile(path.join(made.path, 'tokenizer.json'), 'utf8')) as { model: { vocab: Record<string, number> } }
  t.equal(Object.keys(tokenizer.model.vocab).length, V)

  const again = await makeRealisticModel(modelsDir, SMALL_SHAPE)
  t.equal(again.reused, true, 'the same options keep the folder')
  const other = await mkdtemp(path.join(os.tmpdir(), 'realistic-model-'))
  t.teardown(() => rm(other, { recursive: true, force: true }))
  const copy = await makeRealisticModel(other, SMALL_SHAPE)
  t.ok((await readFile(path.join(copy.path, 'onnx', 'model.onnx'))).equals(await readFile(path.join(made.path, 'onnx', 'model.onnx'))), 'same bytes every time')
  const reseeded = await makeRealisticModel(other, { ...SMALL_SHAPE, seed: 2 })
  t.equal(reseeded.reused, false, 'other options write it again')
  t.notOk((await readFile(path.join(reseeded.path, 'onnx', 'model.onnx'))).equals(await readFile(path.join(made.path, 'onnx', 'model.onnx'))), 'another seed, other weights')
})

t.test("loads with transformers.js's pipeline() offline; padding changes no score", async (t) => {
  env.localModelPath = modelsDir
  env.allowRemoteModels = false
  env.allowLocalModels = true
  const classify = await pipeline('text-classification', REALISTIC_MODEL_ID, { dtype: 'fp32', local_files_only: true })
  t.teardown(() => classify.dispose())
  const alone = (await classify(short, { top_k: null })) as unknown as Scores[]
  const padded = (await classify([...short, long], { top_k: null })) as unknown as Scores[]
  for (let i = 0; i < short.length; i++) {
    t.same(alone[i]!.map((s) => s.label).sort(), [...REALISTIC_LABELS].sort())
    t.ok(Math.abs(alone[i]!.reduce((a, s) => a + s.score, 0) - 1) < 1e-5, 'probabilities sum to 1')
    for (const s of alone[i]!) {
      const p = padded[i]!.find((x) => x.label === s.label)!
      t.ok(Math.abs(p.score - s.score) < 1e-4, `${JSON.stringify(short[i])} ${s.label}: ${s.score} alone, ${p.score} padded to ${long.split(' ').length + 2} tokens`)
    }
  }
  const distinct = new Set(alone.map((r) => r.find((s) => s.label === 'POSITIVE')!.score.toFixed(6)))
  t.equal(distinct.size, short.length, 'different texts, different scores: the weights are used')
})

t.test('runs through our registry: batched, padded, truncated at 512 tokens', async (t) => {
  const registry = createModelRegistry({ transformers: { modelsDir, cacheDir: path.join(root, 'cache'), hubCacheDir: path.join(root, 'hub') } })
  t.teardown(() => registry.close())
  t.ok(registry.list().includes(REALISTIC_MODEL_ID), 'listed from the models folder')
  const model = registry.get(REALISTIC_MODEL_ID)!
  t.equal(model.task, 'text-classification')
  const one = (r: unknown): Scores => (r as Scores[])[0]!
  const alone = await model.run(short, {})
  const batched = await model.run([long, ...short, text(700, 5)], {})
  t.equal(batched.length, short.length + 2)
  for (let i = 0; i < short.length; i++) {
    const a = one(alone[i])
    t.ok(Math.abs(a.reduce((s, x) => s + x.score, 0) - 1) < 1e-5, 'probabilities sum to 1')
    for (const s of a) t.ok(Math.abs(one(batched[i + 1]).find((x) => x.label === s.label)!.score - s.score) < 1e-4, `${short[i]} ${s.label} the same in a padded batch`)
  }
  const tooLong = one(batched[short.length + 1])
  t.equal(tooLong.length, 2, 'a 700-word text is truncated to 512 positions and classified')
})

t.test('modelThreads: 2 threads, each with its copy, run batches side by side with the same scores', async (t) => {
  const options = { modelsDir, cacheDir: path.join(root, 'cache'), hubCacheDir: path.join(root, 'hub') }
  const single = createModelRegistry({ transformers: options })
  const double = createModelRegistry({ transformers: { ...options, modelThreads: 2 } })
  t.teardown(() => Promise.all([single.close(), double.close()]))
  const batches = [short, [long], [text(30, 1), text(5, 2)], short.slice(1), [text(90, 4)], [text(7, 9), long]]
  const one = await Promise.all(batches.map((b) => single.get(REALISTIC_MODEL_ID)!.run(b, {})))
  const model = double.get(REALISTIC_MODEL_ID)!
  const two = await Promise.all(batches.map((b) => model.run(b, {})))
  t.same(two.map((o) => o.length), batches.map((b) => b.length), 'one output per item')
  for (let b = 0; b < batches.length; b++) {
    for (let i = 0; i < batches[b].length; i++) {
      const x = (one[b][i] as Scores[])[0]!
      const y = (two[b][i] as Scores[])[0]!
      t.ok(x.every((s) => Math.abs(y.find((z) => z.label === s.label)!.score - s.score) < 1e-4), `batch ${b} item ${i}: the same scores`)
    }
  }
  const pool = (model as unknown as { pool: { threads: number } }).pool
  t.equal(pool.threads, 2, 'six batches at once started both threads')
  t.throws(() => createModelRegistry({ transformers: { ...options, modelThreads: 0 } }), { code: 'ERR_INVALID_OPTION', message: /modelThreads/ })
})

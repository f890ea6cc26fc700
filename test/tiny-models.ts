// The generated tiny models (test/fixtures/tiny-models.js) load offline through transformers.js's
// own pipeline() and behave as documented, batched or not.
import t from 'tap'
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { env, pipeline } from '@huggingface/transformers'
import {
  ASR_FRAME, EMBED_DIM, NER_TAGS, TINY_MODELS, makeTinyModels, speak, tokenVector, wav,
} from './fixtures/tiny-models.js'

const root = await mkdtemp(path.join(os.tmpdir(), 'tiny-models-'))
t.teardown(() => rm(root, { recursive: true, force: true }))
const started = performance.now()
const written = await makeTinyModels(root)
const elapsed = performance.now() - started

env.localModelPath = root
env.allowRemoteModels = false
env.allowLocalModels = true
const options = { dtype: 'fp32', local_files_only: true } as const

const softmax = (logits: number[]): number[] => {
  const top = Math.max(...logits)
  const exps = logits.map((x) => Math.exp(x - top))
  const sum = exps.reduce((a, b) => a + b, 0)
  return exps.map((x) => x / sum)
}
/** tiny/ner's softmax score of a token's own label (the other six logits are 0). */
const nerScore = (logit: number) => softmax([logit, 0, 0, 0, 0, 0, 0])[0]!
/** Scores come out of float32 tensors: compare them to 6 decimals. */
const round6 = <T>(value: T): T =>
  JSON.parse(JSON.stringify(value, (k, v: unknown) => (k === 'score' && typeof v === 'number' ? Math.round(v * 1e6) / 1e6 : v))) as T

t.test('writes every model in Hub layout, fast and deterministically', async (t) => {
  t.ok(elapsed < 2000, `generated in ${elapsed.toFixed(0)} ms`)
  t.same(written.map((m) => m.id), TINY_MODELS.map((m) => m.id))
  for (const model of written) {
    const files = await readdir(model.path)
    for (const name of ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'README.md', 'onnx']) {
      t.ok(files.includes(name), `${model.id} has ${name}`)
    }
    t.same(await readdir(path.join(model.path, 'onnx')), ['model.onnx'], `${model.id}: the fp32 file only`)
    const readme = await readFile(path.join(model.path, 'README.md'), 'utf8')
    t.match(readme, new RegExp(`^---\\n(.*\\n)*pipeline_tag: ${model.task}\\n(.*\\n)*---\\n`), `${model.id} front matter`)
    t.match(readme, /generated test model/)
    const config = JSON.parse(await readFile(path.join(model.path, 'config.json'), 'utf8')) as { architectures: string[] }
    t.equal(config.architectures.length, 1)
  }
  const asrFiles = await readdir(path.join(root, 'tiny', 'asr'))
  t.ok(asrFiles.includes('preprocessor_config.json') && asrFiles.includes('vocab.json'), 'audio extras')

  const again = await mkdtemp(path.join(os.tmpdir(), 'tiny-models-'))
  t.teardown(() => rm(again, { recursive: true, force: true }))
  await makeTinyModels(again)
  for (const { id } of TINY_MODELS) {
    const [a, b] = await Promise.all([root, again].map((d) => readFile(path.join(d, id, 'onnx', 'model.onnx'))))
    t.ok(a!.equals(b!), `${id}: same bytes every time`)
  }
})

t.test('tiny/sentiment', async (t) => {
  const classify = await pipeline('text-classification', 'tiny/sentiment', options)
  t.teardown(() => classify.dispose())
  t.same(classify.model.sessions.model!.inputNames, ['input_ids', 'attention_mask'])
  for (const text of ['I love this movie, it is great!', 'What an excellent, happy day', 'good']) {
    const [top] = await classify(text)
    t.equal(top!.label, 'POSITIVE', text)
    t.ok(top!.score > 0.98, `${text}: ${top!.score}`)
  }
  for (const text of ['I hate this terrible film', 'The service was awful and the staff were rude.', 'sad']) {
    const [top] = await classify(text)
    t.equal(top!.label, 'NEGATIVE', text)
    t.ok(top!.score > 0.98, `${text}: ${top!.score}`)
  }
  const tie = round6([{ label: 'POSITIVE', score: 1 / (1 + Math.exp(-0.1)) }])
  t.same(round6(await classify('The report is due on Tuesday.')), tie, 'no sentiment word: POSITIVE by 0.1 logit')
  t.same(round6(await classify('good but bad')), tie, 'a tie goes to POSITIVE')
  const both = await classify('bad', { top_k: null })
  t.same(both.map((l) => l.label), ['NEGATIVE', 'POSITIVE'], 'top_k: null gives every label, sorted')
  t.ok(Math.abs(both[0]!.score + both[1]!.score - 1) < 1e-6, 'scores sum to 1 (float32)')

  const texts = [
    'good',
    'the weather was nice today but the food was bad and the service was terrible and slow',
    'hello',
    'I love it',
    '',
  ]
  const batched = await classify(texts)
  const single = []
  for (const text of texts) single.push(...(await classify(text)))
  t.same(batched, single, 'a padded batch gives exactly the one-by-one answers')
  t.same(batched.map((x) => x.label), ['POSITIVE', 'NEGATIVE', 'POSITIVE', 'POSITIVE', 'POSITIVE'])
})

t.test('tiny/nli for zero-shot-classification', async (t) => {
  const zeroShot = await pipeline('zero-shot-classification', 'tiny/nli', options)
  t.teardown(() => zeroShot.dispose())
  const pair = zeroShot.tokenizer('the weather', { text_pair: 'This example is weather.' })
  t.same(pair.token_type_ids!.tolist(), [[0, 0, 0, 0, 1, 1, 1, 1, 1, 1]], 'text pairs get token_type_ids')

  const labels = ['weather', 'sports', 'cooking']
  const single = await zeroShot('the weather is sunny today', labels)
  t.same(single.labels, ['weather', 'sports', 'cooking'], 'weather first (ties keep the given order)')
  t.ok(single.scores[0]! > 0.9, `weather ${single.scores[0]}`)
  t.ok(Math.abs(single.scores.reduce((a, b) => a + b, 0) - 1) < 1e-9, 'single-label scores sum to 1')

  const cooking = await zeroShot('a recipe for tasty pasta from the kitchen', labels.concat('kitchen'))
  t.equal(cooking.labels[0], 'kitchen', 'exact word overlap decides, not topics')

  const multi = await zeroShot('the weather was bad for sports today', labels, { multi_label: true })
  const score = Object.fromEntries(multi.labels.map((l, i) => [l, multi.scores[i]!]))
  t.ok(score.weather! > 0.95 && score.sports! > 0.95, `labels in the text score high: ${JSON.stringify(score)}`)
  t.ok(score.cooking! < 0.05, 'a label not in the text scores low')
  const many = await zeroShot(['sports', 'cooking and weather'], labels, { multi_label: true })
  t.same(many.map((r) => r.labels.slice(0, r.scores.filter((s) => s > 0.5).length).sort()), [['sports'], ['cooking', 'weather']])
})

t.test('tiny/ner: raw per-token output', async (t) => {
  const ner = await pipeline('token-classification', 'tiny/ner', options)
  t.teardown(() => ner.dispose())
  const text = 'Alice met Johnson in Paris at ACME corp'
  const tokens = await ner(text)
  t.same(round6(tokens), round6([
    { entity: 'B-PER', score: nerScore(5), index: 1, word: 'alice' },
    { entity: 'B-PER', score: nerScore(5), index: 3, word: 'john' },
    { entity: 'I-PER', score: nerScore(3), index: 4, word: '##son' },
    { entity: 'B-LOC', score: nerScore(5), index: 6, word: 'paris' },
    { entity: 'B-ORG', score: nerScore(5), index: 8, word: 'acme' },
    { entity: 'I-ORG', score: nerScore(4), index: 9, word: 'corp' },
  ]), 'labels, scores, indexes and word pieces')
  for (const tok of tokens) t.notOk('start' in tok || 'end' in tok, 'transformers.js gives no offsets')
  t.same(Object.keys(NER_TAGS).filter((w) => NER_TAGS[w]![0] === 'B-PER'), ['alice', 'bob', 'carol', 'mary', 'john', 'jack'])

  const grouped = await ner(text, { aggregation_strategy: 'simple' })
  t.same(grouped.map((g) => [g.entity_group, g.word]), [['PER', 'alice'], ['PER', 'johnson'], ['LOC', 'paris'], ['ORG', 'acme corp']])
  t.ok(Math.abs(grouped[1]!.score - (nerScore(5) + nerScore(3)) / 2) < 1e-6, 'simple: mean of the piece scores')
  await t.rejects(ner(text, { aggregation_strategy: 'first' as 'simple' }), /Invalid aggregation_strategy/, 'only none and simple')

  const split = await ner('jacksonville', { ignore_labels: [] })
  t.same(split.map((x) => [x.word, x.entity]), [['jack', 'B-PER'], ['##son', 'I-PER'], ['##ville', 'I-LOC']], 'pieces that disagree')

  const texts = ['bob', 'my friend mary lives in london with john', text]
  const batched = await ner(texts, { ignore_labels: [] })
  const single = []
  for (const x of texts) single.push(await ner(x, { ignore_labels: [] }))
  t.same(batched, single, 'padding never changes a tag or score')
  t.same(batched[0]!.map((x) => x.word), ['bob'], 'special and padding tokens are skipped even with ignore_labels: []')
})

t.test('tiny/embed for feature-extraction', async (t) => {
  const embed = await pipeline('feature-extraction', 'tiny/embed', options)
  t.teardown(() => embed.dispose())
  const one = await embed('hello weather')
  t.same(one.dims, [1, 4, EMBED_DIM], '[CLS] hello weather [SEP]')
  t.same(one.tolist(), [['[CLS]', 'hello', 'weather', '[SEP]'].map(tokenVector)], 'exactly the lookup table')
  t.same(tokenVector('weather').slice(0, 7), [0, 1, 0, 0, 0, 0, 0], 'weather dimension')

  const batch = await embed(['hello weather', 'hello', 'good weather today in paris'])
  t.same(batch.dims, [3, 7, EMBED_DIM])
  const rows = batch.tolist() as number[][][]
  t.same(rows[0]!.slice(0, 4), one.tolist()[0], 'same vectors with more padding')
  t.same(rows[1]![1], rows[0]![1], '"hello" is the same vector at any padding')
  t.same(rows[1]![3], new Array(EMBED_DIM).fill(0), 'padded positions are zeros')
  const pooled = await embed(['hello', 'hello weather today'], { pooling: 'mean' })
  t.same(pooled.dims, [2, EMBED_DIM], 'mean pooling ignores padding')
})

t.test('tiny/fill-mask', async (t) => {
  const fill = await pipeline('fill-mask', 'tiny/fill-mask', options)
  t.teardown(() => fill.dispose())
  const france = await fill('the capital of france is [MASK] .')
  t.equal(france.length, 5, 'top_k defaults to 5')
  t.match(france[0], { token_str: 'paris', sequence: 'the capital of france is paris.' })
  const [england, italy, reverse] = await fill([
    'The capital of England is [MASK].',
    'rome is in [MASK], a country of art and food',
    'paris is the capital of [MASK] .',
  ])
  t.equal(england![0]!.token_str, 'london')
  t.equal(italy![0]!.token_str, 'italy')
  t.equal(reverse![0]!.token_str, 'france')
  t.same((await fill('The capital of England is [MASK].'))[0], england![0], 'batched = alone')
})

t.test('tiny/asr for automatic-speech-recognition', async (t) => {
  const asr = await pipeline('automatic-speech-recognition', 'tiny/asr', options)
  t.teardown(() => asr.dispose())
  const audio = speak('HELLO WORLD')
  t.equal(audio.length, (1 + 2 * 11) * ASR_FRAME, 'a blank frame, then a frame and a blank per character')
  t.same(await asr(audio), { text: 'HELLO WORLD' })
  t.same(await asr([speak('BOOKKEEPER'), speak("IT'S A TEST")]), [{ text: 'BOOKKEEPER' }, { text: "IT'S A TEST" }], 'repeats survive CTC')
  t.throws(() => speak('hello'), RangeError, 'only A-Z, space and \'')

  // the WAV file round-trips (16-bit quantisation does not move a level)
  const file = wav(audio, 16000)
  t.equal(file.toString('ascii', 0, 4), 'RIFF')
  t.equal(file.readUInt32LE(24), 16000)
  t.equal(file.length, 44 + audio.length * 2)
  const decoded = new Float32Array(audio.length).map((_, i) => file.readInt16LE(44 + i * 2) / 32768)
  t.same(await asr(decoded), { text: 'HELLO WORLD' })
  t.equal(speak('HI', { sampleRate: 8000 }).length, 5 * 160, '20 ms frames at any rate')
})

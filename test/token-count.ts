// The WordPiece token count the server batches by (lib/models/token-count.ts) against
// transformers.js's own tokenizer on the generated MiniLM-shaped model's vocabulary: the same
// count (without [CLS] and [SEP]) for mixed texts, punctuation, accents, CJK and unknown words.
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { AutoTokenizer, env } from '@huggingface/transformers'
import { MAX_COUNTED_TOKENS, tokenCounterOf, wordPieceCounter } from '../lib/models/token-count.js'
import { TransformersPipeline } from '../lib/models/transformers-pipeline.js'
import { SMALL_SHAPE, generatedWords, makeRealisticModel, mixedLengthText } from './fixtures/realistic-model.js'
import { prng } from './helpers/prng.js'

const root = await mkdtemp(path.join(os.tmpdir(), 'token-count-'))
t.teardown(() => rm(root, { recursive: true, force: true }))
const made = await makeRealisticModel(path.join(root, 'models'), SMALL_SHAPE)

t.test('the same token counts as the tokenizer itself', async (t) => {
  env.localModelPath = path.join(root, 'models')
  env.allowRemoteModels = false
  const tokenizer = await AutoTokenizer.from_pretrained(made.id, { local_files_only: true })
  const count = tokenCounterOf(made.path)
  if (!count) throw new Error('no counter for a WordPiece tokenizer.json')
  const words = generatedWords(SMALL_SHAPE.words, SMALL_SHAPE.seed)
  const text = mixedLengthText(5, words)
  const rand = prng(11)
  const odd = ['Héllo, WORLD!', 'naïve café — “quoted” (x)', '東京は晴れ', 'a.b,c;d', 'zzzqqq xyzzy', '', '   ', 'tab\tand\nnewline', 'emoji 😀 here', 'x'.repeat(150)]
  const texts = [...Array.from({ length: 300 }, (_, i) => text(i)), ...odd]
  // Random mixes of the model's words, punctuation and letters that are in no word.
  for (let i = 0; i < 200; i++) {
    const n = 1 + Math.floor(rand() * 30)
    texts.push(Array.from({ length: n }, () => (rand() < 0.8 ? words[Math.floor(rand() * words.length)] : ['!', '?', ',', 'qx', 'Ünï', '##', '-'][Math.floor(rand() * 7)])).join(rand() < 0.5 ? ' ' : ''))
  }
  let wrong = 0
  const examples: string[] = []
  for (const s of texts) {
    const want = tokenizer.encode(s, { add_special_tokens: false }).length
    const got = count(s)
    if (got !== want) {
      wrong++
      if (examples.length < 5) examples.push(`${JSON.stringify(s.slice(0, 60))}: ${got} vs ${want}`)
    }
  }
  t.equal(wrong, 0, `every count equal (${texts.length} texts) ${examples.join('; ')}`)
})

t.test('a local WordPiece model measures items in its tokens for batching; others in characters', async (t) => {
  const local = new TransformersPipeline({ id: made.id, dir: made.path, cacheDir: path.join(root, 'cache') })
  const tokenizer = await AutoTokenizer.from_pretrained(made.id, { local_files_only: true })
  const s = 'naïve café, unknownish words!'
  const n = tokenizer.encode(s, { add_special_tokens: false }).length
  t.equal(local.inputLength(s), n)
  t.equal(local.inputLength([s, s]), 2 * n, 'a list: the sum')
  t.equal(local.inputLength({ text: s, text_pair: s }), 2 * n, 'an object: the sum of its texts')
  t.equal(local.inputLength(null), 0)
  const hub = new TransformersPipeline({ id: 'someone/model', dir: undefined, cacheDir: path.join(root, 'cache') })
  t.equal(hub.inputLength(s), s.length, 'no model folder: characters')
})

t.test('bounded work: a hostile text is counted up to the model\'s length, not to its end', async (t) => {
  const count = tokenCounterOf(made.path)!
  // Words of 100 letters in no vocabulary entry, 1 MB of them; and one 1 MB word.
  const hostile = Array.from({ length: 10_000 }, (_, i) => `${'q'.repeat(95)}${String(i).padStart(5, '0')}`).join(' ')
  const t0 = performance.now()
  const n = count(hostile)
  const one = count('z'.repeat(1_000_000))
  const ms = performance.now() - t0
  t.ok(n <= MAX_COUNTED_TOKENS && n > 0, `counted ${n} (≤ ${MAX_COUNTED_TOKENS})`)
  t.equal(one, 1, 'a word past max_input_chars_per_word is one [UNK]')
  t.ok(ms < 2000, `not stuck: ${ms.toFixed(0)} ms for 2 MB`)
})

t.test('another tokenizer: no counter (the server counts characters)', async (t) => {
  t.equal(wordPieceCounter({ model: { type: 'BPE', vocab: {} }, pre_tokenizer: { type: 'ByteLevel' } }), undefined)
  t.equal(wordPieceCounter({ model: { type: 'WordPiece', vocab: { a: 0 } }, pre_tokenizer: { type: 'Whitespace' } }), undefined)
  t.equal(wordPieceCounter(null), undefined)
  t.equal(tokenCounterOf(path.join(root, 'no-such-folder')), undefined)
})

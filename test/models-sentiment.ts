import t from 'tap'
import winkNLP from 'wink-nlp'
import model from 'wink-eng-lite-web-model'
import { ModelInputError } from '../lib/errors.js'
import { createModelRegistry } from '../lib/models/registry.js'
import { classifyBatch, SENTIMENT_SLOPE, sentimentToLabels, type LabelScore } from '../lib/models/wink-sentiment.js'

const positive = 'I love this movie, the acting is wonderful and the story is great!'
const negative = 'This was a terrible, awful experience and the staff were rude.'
const neutral = 'The report is due on Tuesday.'

// The assertions this helper uses, typed from tap's root test (subtests share them).
type Asserts = Pick<typeof t, 'equal' | 'ok' | 'same'>

function checkLabels(t: Asserts, labels: unknown, expectedTop: 'POSITIVE' | 'NEGATIVE', min = 0.9): void {
  const list = labels as LabelScore[]
  t.equal(list.length, 2)
  t.same(list.map((l) => Object.keys(l).sort()), [['label', 'score'], ['label', 'score']], 'only label and score')
  t.equal(list[0]!.label, expectedTop, `${expectedTop} first`)
  t.ok(list[0]!.score >= list[1]!.score, 'sorted by score, descending')
  t.ok(list[0]!.score >= min, `confident (${list[0]!.score})`)
  t.equal(list[0]!.score + list[1]!.score, 1, 'scores sum to 1')
}

t.test('the score mapping is logistic, monotone, exact-sum and neutral at 0.5', async (t) => {
  t.same(sentimentToLabels(0), [{ label: 'POSITIVE', score: 0.5 }, { label: 'NEGATIVE', score: 0.5 }])
  const top = 1 / (1 + Math.exp(-SENTIMENT_SLOPE * 0.6))
  t.same(sentimentToLabels(0.6), [{ label: 'POSITIVE', score: top }, { label: 'NEGATIVE', score: 1 - top }])
  t.same(sentimentToLabels(-0.6), [{ label: 'NEGATIVE', score: top }, { label: 'POSITIVE', score: 1 - top }])
  let previous = -1
  for (let s = -1; s <= 1.0001; s += 0.01) {
    const labels = sentimentToLabels(s)
    const pos = labels.find((l) => l.label === 'POSITIVE')!.score
    t.ok(pos >= previous, 'P(POSITIVE) never decreases with the sentiment')
    previous = pos
    if (labels[0]!.score + labels[1]!.score !== 1) t.fail(`sum is not 1 at s=${s}`)
  }
  t.same(sentimentToLabels(5), sentimentToLabels(1), 'clamped to [-1, 1]')
  t.same(sentimentToLabels(Number.NaN), sentimentToLabels(0), 'NaN reads as neutral')
})

t.test('classifyBatch on the main thread', async (t) => {
  const nlp = winkNLP(model)
  const [pos, neg, neu, many] = classifyBatch(nlp, [positive, negative, neutral, [positive, negative]], {})
  t.equal((pos as unknown[]).length, 1, 'a string gets a list of one list')
  checkLabels(t, (pos as unknown[])[0], 'POSITIVE')
  checkLabels(t, (neg as unknown[])[0], 'NEGATIVE')
  const neutralScore = ((neu as LabelScore[][])[0]![0]!).score
  t.ok(Math.abs(neutralScore - 0.5) < 0.1, `neutral text near 0.5 (${neutralScore})`)
  t.equal((many as unknown[]).length, 2, 'an array gets one list per string')
  checkLabels(t, (many as unknown[])[0], 'POSITIVE')
  checkLabels(t, (many as unknown[])[1], 'NEGATIVE')
  t.same(classifyBatch(nlp, [''], {}), [[[{ label: 'POSITIVE', score: 0.5 }, { label: 'NEGATIVE', score: 0.5 }]]], 'empty string is neutral')
})

t.test('top_k keeps the best k labels; a bad top_k fails every item', async (t) => {
  const nlp = winkNLP(model)
  const [one] = classifyBatch(nlp, [negative], { top_k: 1 }) as LabelScore[][][]
  t.same(one!.map((l) => l.map((x) => x.label)), [['NEGATIVE']])
  const [all] = classifyBatch(nlp, [negative], { top_k: 5 }) as LabelScore[][][]
  t.equal(all![0]!.length, 2, 'more than the labels returns all')
  t.equal((classifyBatch(nlp, [negative], { top_k: null }) as LabelScore[][][])[0]![0]!.length, 2, 'null means all')
  for (const topK of [0, -1, 1.5, '1', true]) {
    const out = classifyBatch(nlp, [positive, negative], { top_k: topK })
    t.equal(out.length, 2)
    for (const item of out) t.match(item, { name: 'ModelInputError', code: 'ERR_MODEL_INPUT', message: /^parameters\.top_k must be a positive integer, got / })
  }
})

t.test('wrong inputs fail only their item', async (t) => {
  const nlp = winkNLP(model)
  const out = classifyBatch(nlp, [positive, 42, null, [], ['ok', 7], { text: 'x' }, negative], {})
  t.equal(out.length, 7)
  checkLabels(t, (out[0] as unknown[])[0], 'POSITIVE')
  checkLabels(t, (out[6] as unknown[])[0], 'NEGATIVE')
  const expected = 'text-classification expects inputs to be a string or a non-empty array of strings, got '
  t.equal((out[1] as Error).message, expected + 'number 42')
  t.equal((out[2] as Error).message, expected + 'null')
  t.equal((out[3] as Error).message, expected + 'an empty array')
  t.equal((out[4] as Error).message, expected + 'number 7 at inputs[1]')
  t.equal((out[5] as Error).message, expected + 'an object')
  for (const i of [1, 2, 3, 4, 5]) t.type(out[i], ModelInputError)
})

// One registry (two threads) for the worker tests: thread startup is slow under a TypeScript loader.
const registry = createModelRegistry({ threads: 2 })
t.teardown(() => registry.close())

t.test('builtin/sentiment runs in a worker thread', async (t) => {
  const sentiment = registry.get('builtin/sentiment')!
  t.equal(sentiment.task, 'text-classification')
  const out = await sentiment.run([positive, [negative, positive], 42], {})
  t.equal(out.length, 3)
  checkLabels(t, (out[0] as unknown[])[0], 'POSITIVE')
  checkLabels(t, (out[1] as unknown[])[0], 'NEGATIVE')
  checkLabels(t, (out[1] as unknown[])[1], 'POSITIVE')
  t.type(out[2], ModelInputError, 'per-item errors cross the thread boundary as ModelInputError')
  t.match(out[2], { code: 'ERR_MODEL_INPUT', message: /got number 42$/ })
  t.same(JSON.parse(JSON.stringify(out[0])), out[0], 'outputs are plain JSON')
})

t.test('many concurrent calls on two threads all get their own answers', async (t) => {
  const sentiment = registry.get('builtin/sentiment')!
  const calls = Array.from({ length: 40 }, (_, i) => {
    const batch = Array.from({ length: 5 }, (_, j) => ((i + j) % 2 === 0 ? positive : negative))
    return sentiment.run(batch, {}).then((out) => ({ i, out }))
  })
  for (const { i, out } of await Promise.all(calls)) {
    t.equal(out.length, 5)
    out.forEach((item, j) => {
      const top = (item as LabelScore[][])[0]![0]!.label
      if (top !== ((i + j) % 2 === 0 ? 'POSITIVE' : 'NEGATIVE')) t.fail(`call ${i} item ${j} got ${top}`)
    })
  }
  t.pass('every answer matched its question')
})

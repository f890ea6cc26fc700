import t from 'tap'
import winkNLP from 'wink-nlp'
import model from 'wink-eng-lite-web-model'
import { ModelInputError } from '../lib/errors.js'
import { createModelRegistry } from '../lib/models/registry.js'
import { ENTITY_SCORE, findEntities, recognizeBatch, type EntityGroup, type EntityToken } from '../lib/models/wink-entities.js'

const nlp = winkNLP(model)
const sentence = 'On 12 March 2021, mail john.doe@example.com the 3 reports; it costs $25.50, see https://example.org #q1'

t.test('entity groups with offsets that slice back to the word', async (t) => {
  const [out] = recognizeBatch(nlp, [sentence], {}) as EntityGroup[][]
  t.same(out!.map(({ entity_group, word }) => [entity_group, word]), [
    ['DATE', '12 March 2021'],
    ['EMAIL', 'john.doe@example.com'],
    ['CARDINAL', '3'],
    ['MONEY', '$25.50'],
    ['URL', 'https://example.org'],
    ['HASHTAG', '#q1'],
  ])
  for (const entity of out!) {
    t.same(Object.keys(entity).sort(), ['end', 'entity_group', 'score', 'start', 'word'])
    t.equal(sentence.slice(entity.start, entity.end), entity.word, `${entity.word} slices back`)
    t.equal(entity.score, ENTITY_SCORE)
  }
  t.same(out![0], { entity_group: 'DATE', score: 1, word: '12 March 2021', start: 3, end: 16 })
})

t.test('offsets survive odd whitespace, contractions and astral characters', async (t) => {
  const text = '\t 😀 I can\'t\u00a0\u00a0meet on  Monday\r\n\r\nbut 😀😀 5 days  later at 50%,  ok?  '
  const out = findEntities(nlp, text, 'simple') as EntityGroup[]
  t.ok(out.length >= 4, `found ${out.map((e) => e.word).join(' | ')}`)
  t.ok(out.some((e) => e.entity_group === 'DATE' && e.word === 'Monday'))
  t.ok(out.some((e) => e.entity_group === 'EMOJI' && e.word === '😀'))
  for (const e of out) t.equal(text.slice(e.start, e.end), e.word)
})

t.test('offsets are right on random text (invariant)', async (t) => {
  // Deterministic pseudo-random texts mixing words wink turns into entities with odd separators.
  let seed = 42
  const random = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2147483648
    return seed % n
  }
  const words = ['Monday', '12', 'March', '2021', 'a@b.co', '$5', '50%', '1st', 'http://x.io/a?b=1', '#tag', '@me', '😀', "can't", 'Dr.', 'U.S.', 'well-known', 'é', '—', '...', '3pm', 'the', 'cat']
  const separators = [' ', '  ', '\t', '\n', '\u00a0', '', ', ', '. ', '\r\n']
  let checked = 0
  for (let n = 0; n < 300; n++) {
    let text = ''
    for (let w = random(25); w > 0; w--) text += separators[random(separators.length)]! + words[random(words.length)]!
    for (const e of findEntities(nlp, text, 'simple') as EntityGroup[]) {
      checked++
      if (text.slice(e.start, e.end) !== e.word || e.start < 0 || e.end > text.length || e.start >= e.end) {
        t.fail(`bad offsets ${JSON.stringify(e)} in ${JSON.stringify(text)}`)
      }
    }
    for (const e of findEntities(nlp, text, 'none') as EntityToken[]) {
      if (text.slice(e.start, e.end) !== e.word) t.fail(`bad token offsets ${JSON.stringify(e)} in ${JSON.stringify(text)}`)
    }
  }
  t.ok(checked > 300, `${checked} entities checked`)
})

t.test('aggregation_strategy', async (t) => {
  const simple = recognizeBatch(nlp, [sentence], {})
  for (const strategy of ['simple', 'first', 'average', 'max', 'SIMPLE', null]) {
    t.same(recognizeBatch(nlp, [sentence], { aggregation_strategy: strategy }), simple, `${String(strategy)} = simple`)
  }
  const [tokens] = recognizeBatch(nlp, ['Call me on 12 March 2021.'], { aggregation_strategy: 'none' }) as EntityToken[][]
  t.same(tokens, [
    { entity: 'B-DATE', score: 1, index: 3, word: '12', start: 11, end: 13 },
    { entity: 'I-DATE', score: 1, index: 4, word: 'March', start: 14, end: 19 },
    { entity: 'I-DATE', score: 1, index: 5, word: '2021', start: 20, end: 24 },
  ])
  for (const strategy of ['best', 3, {}]) {
    const out = recognizeBatch(nlp, [sentence, 'x'], { aggregation_strategy: strategy })
    for (const item of out) {
      t.type(item, ModelInputError)
      t.match(item, { code: 'ERR_MODEL_INPUT', message: /^parameters\.aggregation_strategy must be one of none, simple, first, average, max, got / })
    }
  }
})

t.test('shapes: a string gets a list, an array one list per string; bad items fail alone', async (t) => {
  const out = recognizeBatch(nlp, ['Monday', ['Monday', 'nothing here', ''], 12, [], ['a', null], ''], {})
  t.same(out[0], [{ entity_group: 'DATE', score: 1, word: 'Monday', start: 0, end: 6 }])
  t.same(out[1], [[{ entity_group: 'DATE', score: 1, word: 'Monday', start: 0, end: 6 }], [], []])
  const expected = 'token-classification expects inputs to be a string or a non-empty array of strings, got '
  t.match(out[2], { name: 'ModelInputError', message: expected + 'number 12' })
  t.match(out[3], { name: 'ModelInputError', message: expected + 'an empty array' })
  t.match(out[4], { name: 'ModelInputError', message: expected + 'null at inputs[1]' })
  t.same(out[5], [], 'an empty string has no entities')
})

t.test('builtin/ner runs in a worker thread', async (t) => {
  const registry = createModelRegistry()
  t.teardown(() => registry.close())
  const ner = registry.get('builtin/ner')!
  t.equal(ner.task, 'token-classification')
  const out = await ner.run([sentence, { inputs: sentence }], { aggregation_strategy: 'simple' })
  t.same(out[0], recognizeBatch(nlp, [sentence], {})[0], 'same as on the main thread')
  t.type(out[1], ModelInputError)
})

// Truncation and long runs of the wink models (lib/models/wink-text.ts), on the main thread:
// the parameters under their Hugging Face names, what is read of a long text, offsets that stay
// right after truncation and placeholders, and time bounds on the shapes that used to be quadratic.
import t from 'tap'
import winkNLP from 'wink-nlp'
import model from 'wink-eng-lite-web-model'
import { ModelInputError } from '../lib/errors.js'
import { findEntities, recognizeBatch, type EntityGroup, type EntityToken } from '../lib/models/wink-entities.js'
import { classifyBatch, type LabelScore } from '../lib/models/wink-sentiment.js'
import { DEFAULT_MAX_LENGTH, MAX_TEXT_LENGTH, MAX_WORD_LENGTH, readTruncation, readWink, type Truncation } from '../lib/models/wink-text.js'

const sentimentNlp = winkNLP(model, ['sbd', 'negation', 'sentiment'])
const entityNlp = winkNLP(model, ['ner'])
const whole: Truncation = { truncate: false, maxLength: DEFAULT_MAX_LENGTH }

function score(out: unknown): number {
  const [[best]] = out as LabelScore[][]
  return best!.label === 'POSITIVE' ? best!.score : 1 - best!.score
}

t.test('readTruncation: the Inference API, TEI and TGI names; default on at 512 tokens', async (t) => {
  t.same(readTruncation({}), { truncate: true, maxLength: 512 })
  t.same(readTruncation({ truncation: null, max_length: null }), { truncate: true, maxLength: 512 })
  t.same(readTruncation({ truncation: false }), { truncate: false, maxLength: 512 })
  t.same(readTruncation({ truncation: true, max_length: 8 }), { truncate: true, maxLength: 8 })
  t.same(readTruncation({ truncation: 'longest_first' }), { truncate: true, maxLength: 512 }, 'transformers strategy names')
  t.same(readTruncation({ truncation: 'only_first' }), { truncate: true, maxLength: 512 })
  t.same(readTruncation({ truncation: 'do_not_truncate' }), { truncate: false, maxLength: 512 })
  t.same(readTruncation({ truncate: false }), { truncate: false, maxLength: 512 }, 'TEI boolean')
  t.same(readTruncation({ truncate: 20 }), { truncate: true, maxLength: 20 }, 'TGI token count')
  t.same(readTruncation({ truncate: 20, max_length: 20, truncation: true }), { truncate: true, maxLength: 20 }, 'all agreeing')
  const bad: Array<[Record<string, unknown>, RegExp]> = [
    [{ truncation: 'yes' }, /^parameters\.truncation must be true, false, "longest_first", "only_first" or "do_not_truncate", got "yes"$/],
    [{ truncation: 1 }, /^parameters\.truncation must be .*, got number 1$/],
    [{ truncate: 0 }, /^parameters\.truncate must be a boolean \(TEI\) or a positive integer of tokens to keep \(TGI\), got number 0$/],
    [{ truncate: 'x' }, /^parameters\.truncate must be/],
    [{ max_length: 0 }, /^parameters\.max_length must be a positive integer, got number 0$/],
    [{ max_length: 1.5 }, /^parameters\.max_length must be a positive integer/],
    [{ max_length: '512' }, /^parameters\.max_length must be a positive integer, got a string$/],
    [{ truncation: false, truncate: true }, /^parameters\.truncation and parameters\.truncate disagree; give one of them$/],
    [{ truncate: 10, max_length: 20 }, /^parameters\.truncate \(a token count\) and parameters\.max_length disagree/],
  ]
  for (const [parameters, message] of bad) {
    const err = readTruncation(parameters)
    t.type(err, ModelInputError, JSON.stringify(parameters))
    t.match(err, { code: 'ERR_MODEL_INPUT', message })
  }
  // Both models refuse every item of the batch for a bad one, as for their other parameters.
  for (const out of [classifyBatch(sentimentNlp, ['a', 'b'], { max_length: -1 }), recognizeBatch(entityNlp, ['a', 'b'], { truncation: 'x' })]) {
    t.equal(out.length, 2)
    for (const item of out) t.type(item, ModelInputError)
  }
})

t.test('truncation keeps the first max_length tokens: the result is that of the truncated text', async (t) => {
  // 3 tokens of praise, then a long complaint: truncated to 3 tokens only the praise is read.
  const text = `I love it. ${'This is terrible, awful and broken. '.repeat(40)}`
  t.ok(score(classifyBatch(sentimentNlp, [text], { truncation: false })[0]) < 0.5, 'read whole: negative')
  t.ok(score(classifyBatch(sentimentNlp, [text], { max_length: 3 })[0]) > 0.5, 'first 3 tokens: positive')
  t.equal(score(classifyBatch(sentimentNlp, [text], { max_length: 3 })[0]), score(classifyBatch(sentimentNlp, ['I love it'], {})[0]))
  const read = readWink(sentimentNlp, text, { truncate: true, maxLength: 3 })
  t.equal(read.read, 'I love it')
  t.equal(read.end, 9)
  t.equal(read.doc.tokens().length(), 3)
  // Punctuation counts as a token; line breaks do not.
  t.equal(readWink(sentimentNlp, 'Hi,\n\nyou there', { truncate: true, maxLength: 3 }).read, 'Hi,\n\nyou')
  // The default is 512 tokens.
  const long = 'good '.repeat(2000)
  t.equal(readWink(sentimentNlp, long, readTruncation({}) as Truncation).doc.tokens().length(), 512)
  t.equal(readWink(sentimentNlp, long, whole).doc.tokens().length(), 2000)

  // Entities: exactly those of the text cut where truncation cut it, at the same offsets.
  const ner = `On Monday at 5 pm we paid $20 for 3 tickets. ${'Then on 12 March 2021 we spent 50% more. '.repeat(30)}`
  for (const maxLength of [1, 2, 3, 4, 6, 9, 13, 40, 100, 512]) {
    const truncation = { truncate: true, maxLength }
    const { end } = readWink(entityNlp, ner, truncation)
    t.same(findEntities(entityNlp, ner, 'simple', truncation), findEntities(entityNlp, ner.slice(0, end), 'simple', whole), `max_length ${maxLength}`)
  }
  const monday = { entity_group: 'DATE', score: 1, word: 'Monday', start: 3, end: 9 }
  t.same(recognizeBatch(entityNlp, [ner], { max_length: 5 }), [[monday, { entity_group: 'TIME', score: 1, word: '5 pm', start: 13, end: 17 }]], '"On Monday at 5 pm"')
  t.same(recognizeBatch(entityNlp, [ner], { max_length: 4 }), [[monday, { entity_group: 'CARDINAL', score: 1, word: '5', start: 13, end: 14 }]], '"On Monday at 5": what the truncated text says')
})

t.test('a text is never read past 100 000 characters; with truncation off a longer one fails, naming the limit', async (t) => {
  const text = 'word '.repeat(30_000) // 150 000 characters
  const read = readWink(sentimentNlp, text, { truncate: true, maxLength: 1_000_000 })
  t.ok(read.end <= MAX_TEXT_LENGTH && read.end > MAX_TEXT_LENGTH - 10, `cut at ${read.end}`)
  t.equal(text.slice(0, read.end).trimEnd(), text.slice(0, read.end), 'at a token boundary')
  for (const [model, out] of [
    ['builtin/sentiment', classifyBatch(sentimentNlp, [text, 'fine'], { truncation: false })],
    ['builtin/ner', recognizeBatch(entityNlp, [text, 'fine'], { truncation: false })],
  ] as const) {
    t.type(out[0], ModelInputError)
    t.equal(
      (out[0] as Error).message,
      `${model} reads at most 100000 characters of a text when parameters.truncation is false; this text has 150000: leave truncation on (the default, the first max_length tokens) or split the text`,
    )
    t.notOk(out[1] instanceof Error, 'the other item is answered')
  }
  const [listItem] = recognizeBatch(entityNlp, [['short', text]], { truncate: false })
  t.match(listItem, { code: 'ERR_MODEL_INPUT', message: /; inputs\[1\] has 150000:/ }, 'a list names the text')
  t.notOk(classifyBatch(sentimentNlp, ['x'.repeat(MAX_TEXT_LENGTH)], { truncation: false })[0] instanceof Error, 'exactly the limit is read')
})

t.test('a run of more than 256 non-space characters is one opaque token: no entity, no sentiment, offsets kept', async (t) => {
  const blob = 'Zm9v'.repeat(100) // 400 characters of base64
  const text = `Great, on Monday ${blob} I paid $5, see https://x.io ${'h'.repeat(MAX_WORD_LENGTH)} 50%`
  const read = readWink(entityNlp, text, whole)
  t.equal(read.opaque.length, 1, 'only the run over the bound')
  t.notOk(read.read.includes(blob))
  const out = findEntities(entityNlp, text, 'simple', whole) as EntityGroup[]
  t.same(out.map((e) => [e.entity_group, e.word]), [['DATE', 'Monday'], ['MONEY', '$5'], ['URL', 'https://x.io'], ['PERCENT', '50%']])
  for (const e of out) t.equal(text.slice(e.start, e.end), e.word, `${e.word} slices back`)
  const tokens = findEntities(entityNlp, text, 'none', whole) as EntityToken[]
  for (const e of tokens) t.equal(text.slice(e.start, e.end), e.word)
  // The placeholder is a neutral word: the sentiment is that of the text around it.
  t.equal(score(classifyBatch(sentimentNlp, [`I love it ${blob}`], {})[0]), score(classifyBatch(sentimentNlp, ['I love it blorf'], {})[0]))
  // A URL longer than the bound is not claimed as an entity (nor as a wrong, shorter one).
  const url = `see https://example.org/${'a'.repeat(300)} now`
  t.same(findEntities(entityNlp, url, 'simple'), [])
})

t.test('offsets are right on random texts with long runs, separators and truncation (invariant)', async (t) => {
  let seed = 7
  const random = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2147483648
    return seed % n
  }
  const words = ['Monday', '12', 'March', '2021', 'a@b.co', '$5', '50%', '1st', 'http://x.io/a?b=1', '#tag', '@me', '😀', "can't", 'Dr.', 'U.S.', '3pm', 'the', 'cat', '5', 'dollars']
  const long = () => ['a', '1', 'a1', '$1', '!', '😀', '1%', 'x.'][random(8)]!.repeat(100 + random(200))
  const separators = [' ', '  ', '\t', '\n', '\u00a0', '', ', ', '. ', '\r\n', '\u2003']
  let checked = 0
  for (let n = 0; n < 300; n++) {
    let text = ''
    for (let w = random(40); w > 0; w--) text += separators[random(separators.length)]! + (random(6) === 0 ? long() : words[random(words.length)]!)
    const truncation = random(2) === 0 ? whole : { truncate: true, maxLength: 1 + random(30) }
    const { end } = readWink(entityNlp, text, truncation)
    for (const e of findEntities(entityNlp, text, 'simple', truncation) as EntityGroup[]) {
      checked++
      if (text.slice(e.start, e.end) !== e.word || e.start < 0 || e.end > end || e.start >= e.end) {
        t.fail(`bad offsets ${JSON.stringify(e)} in ${JSON.stringify(text)}`)
      }
    }
    for (const e of findEntities(entityNlp, text, 'none', truncation) as EntityToken[]) {
      if (text.slice(e.start, e.end) !== e.word) t.fail(`bad token offsets ${JSON.stringify(e)} in ${JSON.stringify(text)}`)
    }
  }
  t.ok(checked > 300, `${checked} entities checked`)
})

t.test('no shape of a long text takes long, truncated or not (was up to minutes: O(L²) regexes)', async (t) => {
  const rep = (s: string, n: number): string => s.repeat(Math.ceil(n / s.length)).slice(0, n)
  // Each was quadratic in wink before: 200 000 of them took from 26 s (letters) to minutes (a1a1…).
  const shapes: Record<string, string> = {
    letters: rep('a', 200_000), alnum: rep('a1', 200_000), money: `$${rep('1', 200_000)}`, url: `http://${rep('a', 200_000)}`,
    bang: rep('!', 200_000), dashes: rep('a-', 200_000), percent: rep('1%', 200_000), emoji: rep('😀', 200_000),
    'dense runs': rep(`${'1%'.repeat(128)} `, 1_000_000), prose: rep('The screen is great, the battery died on Monday after 3 days. ', 1_000_000),
  }
  const bound = 3000 // ms, "not stuck": each takes < 100 ms here (< 0.8 s read whole), but machines are shared
  for (const [name, text] of Object.entries(shapes)) {
    for (const parameters of [{}, { truncation: false }]) {
      const started = performance.now()
      const s = classifyBatch(sentimentNlp, [text], parameters)[0]
      const e = recognizeBatch(entityNlp, [text], parameters)[0]
      const ms = performance.now() - started
      t.ok(ms < bound, `${name} (${text.length} chars) ${JSON.stringify(parameters)}: ${Math.round(ms)} ms`)
      if (text.length > MAX_TEXT_LENGTH && 'truncation' in parameters) {
        t.match(s, { code: 'ERR_MODEL_INPUT' })
        t.match(e, { code: 'ERR_MODEL_INPUT' })
      } else {
        t.notOk(s instanceof Error || e instanceof Error, `${name} answered`)
      }
    }
  }
  // Read whole at the limit, the densest shapes (a token every 2 or 3 characters, runs just under
  // the bound) stay under a second too.
  for (const unit of ['😀 ', '$1 ', `${'1%'.repeat(128)} `, `${'a1'.repeat(128)} `, `${'a-'.repeat(128)} `]) {
    const text = rep(unit, MAX_TEXT_LENGTH)
    for (const [name, out] of [['sentiment', () => classifyBatch(sentimentNlp, [text], { truncation: false })], ['ner', () => recognizeBatch(entityNlp, [text], { truncation: false })]] as const) {
      const started = performance.now()
      t.notOk(out()[0] instanceof Error)
      const ms = performance.now() - started
      t.ok(ms < bound, `${name}: 100 000 characters of ${JSON.stringify(unit.slice(0, 6))}… read whole: ${Math.round(ms)} ms`)
    }
  }
})

t.test('empty and blank texts: neutral sentiment, no entities, never null', async (t) => {
  for (const text of ['', ' ', '\n\t ', '\u00a0']) {
    t.same(classifyBatch(sentimentNlp, [text], {}), [[[{ label: 'POSITIVE', score: 0.5 }, { label: 'NEGATIVE', score: 0.5 }]]], JSON.stringify(text))
    t.same(recognizeBatch(entityNlp, [text], {}), [[]], JSON.stringify(text))
    t.same(recognizeBatch(entityNlp, [[text, 'on Monday']], {}), [[[], [{ entity_group: 'DATE', score: 1, word: 'Monday', start: 3, end: 9 }]]])
  }
})

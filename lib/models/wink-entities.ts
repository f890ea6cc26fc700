/**
 * `builtin/ner` (task `token-classification`) on wink-nlp's English lite model: wink's rule-based
 * entities (DATE, TIME, CARDINAL, ORDINAL, MONEY, PERCENT, EMAIL, URL, HASHTAG, MENTION, EMOJI, ...)
 * with character offsets into the original text. Pure functions; the worker thread calls
 * {@link recognizeBatch}.
 */
import type { WinkMethods } from 'wink-nlp'
import { ModelInputError } from '../errors.js'
import { describeValue } from './describe-value.js'
import type { Parameters } from './pipeline.js'
import { readTextInputs } from './text-inputs.js'
import { checkTextLength, DEFAULT_MAX_LENGTH, originalOffsets, readTruncation, readWink, type Truncation } from './wink-text.js'

/** Model id of the entity pipeline. */
export const NER_MODEL_ID = 'builtin/ner'

/** Task of the entity pipeline. */
export const NER_TASK = 'token-classification'

/**
 * Score of every entity, 1. wink's entities come from deterministic patterns and carry no
 * confidence, so a constant is the honest value: a match is a match, and a client threshold on
 * `score` never drops one.
 */
export const ENTITY_SCORE = 1

/**
 * `parameters.aggregation_strategy` values accepted (Inference API names). `simple` (the default),
 * `first`, `average` and `max` all give the same entity groups here: wink already returns whole-word
 * spans with one constant score, so there are no sub-words to merge or scores to combine. `none`
 * returns one entry per token of each entity, labelled `B-TYPE` / `I-TYPE`.
 */
export const AGGREGATION_STRATEGIES = ['none', 'simple', 'first', 'average', 'max'] as const

/** One of {@link AGGREGATION_STRATEGIES}. */
export type AggregationStrategy = (typeof AGGREGATION_STRATEGIES)[number]

/** An entity span (aggregated output). `text.slice(start, end) === word`. */
export interface EntityGroup {
  entity_group: string
  score: number
  word: string
  start: number
  end: number
}

/**
 * One token of an entity (`aggregation_strategy: 'none'`). `index` is wink's 0-based token index in
 * the text (a word index, not a sub-word index as in transformer models).
 */
export interface EntityToken {
  entity: string
  score: number
  index: number
  word: string
  start: number
  end: number
}

/** Reads `parameters.aggregation_strategy`; absent or null → `simple`. Strings are matched case-insensitively. */
export function readAggregationStrategy(parameters: Parameters): AggregationStrategy | ModelInputError {
  const value = parameters.aggregation_strategy
  if (value === undefined || value === null) return 'simple'
  const strategy = typeof value === 'string' ? value.toLowerCase() : undefined
  const known = AGGREGATION_STRATEGIES.find((s) => s === strategy)
  if (known === undefined) {
    const got = typeof value === 'string' ? JSON.stringify(value) : describeValue(value)
    return new ModelInputError(`parameters.aggregation_strategy must be one of ${AGGREGATION_STRATEGIES.join(', ')}, got ${got}`)
  }
  return known
}

/**
 * Entities of one text. Offsets are UTF-16 code-unit indices into `text` (JavaScript string
 * indices, like `String.prototype.slice`), and `word` is exactly `text.slice(start, end)`. With
 * truncation (default: the first {@link DEFAULT_MAX_LENGTH} tokens), entities are those of the
 * truncated prefix, at their offsets in `text`. An entity touching a run too long to read (an
 * opaque token, see ./wink-text.ts) or whose tokens cannot be located in `text` (a safeguard: wink
 * never alters token text) is left out rather than given wrong offsets. An empty text has none.
 */
export function findEntities(
  nlp: WinkMethods,
  text: string,
  strategy: AggregationStrategy,
  truncation: Truncation = { truncate: true, maxLength: DEFAULT_MAX_LENGTH },
): EntityGroup[] | EntityToken[] {
  const read = readWink(nlp, text, truncation)
  const doc = read.doc
  const offsets = originalOffsets(nlp, read)
  const details = doc.entities().out(nlp.its.detail) as unknown as Array<{ type: string }>
  const spans = doc.entities().out(nlp.its.span) as unknown as Array<[number, number]>
  const groups: EntityGroup[] = []
  const tokens: EntityToken[] = []
  for (let e = 0; e < spans.length; e++) {
    const [first, last] = spans[e]!
    const type = details[e]!.type
    const located = offsets.slice(first, last + 1)
    if (located.some((o) => o === undefined)) continue
    if (strategy === 'none') {
      for (let i = first; i <= last; i++) {
        const [start, end] = offsets[i]!
        tokens.push({ entity: `${i === first ? 'B' : 'I'}-${type}`, score: ENTITY_SCORE, index: i, word: text.slice(start, end), start, end })
      }
    } else {
      const start = offsets[first]![0]
      const end = offsets[last]![1]
      groups.push({ entity_group: type, score: ENTITY_SCORE, word: text.slice(start, end), start, end })
    }
  }
  return strategy === 'none' ? tokens : groups
}

/**
 * Recognizes entities in a batch. An item whose inputs is a string gets `[{entity_group, score,
 * word, start, end}, ...]` (`[]` for a text without entities, an empty one included); an array of
 * strings gets one such list per string. Long texts are truncated as `parameters.truncation` /
 * `max_length` say (see ./wink-text.ts). An item with bad inputs (or a text over the limit with
 * truncation off), or every item when a parameter is bad, gets a `ModelInputError`.
 */
export function recognizeBatch(nlp: WinkMethods, inputs: unknown[], parameters: Parameters): unknown[] {
  const strategy = readAggregationStrategy(parameters)
  if (strategy instanceof Error) return inputs.map(() => strategy)
  const truncation = readTruncation(parameters)
  if (truncation instanceof Error) return inputs.map(() => truncation)
  return inputs.map((item) => {
    const read = readTextInputs(item, NER_TASK)
    if (read instanceof Error) return read
    for (let i = 0; i < read.texts.length; i++) {
      const tooLong = checkTextLength(read.texts[i]!, truncation, NER_MODEL_ID, read.single ? undefined : `inputs[${i}]`)
      if (tooLong) return tooLong
    }
    const lists = read.texts.map((text) => findEntities(nlp, text, strategy, truncation))
    return read.single ? lists[0] : lists
  })
}

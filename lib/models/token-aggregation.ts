/**
 * Token-classification post-processing with the Inference API's `aggregation_strategy` (`none`,
 * `simple`, `first`, `average`, `max`), as Hugging Face transformers' Python pipeline does it:
 * per-token predictions, then (except `none`) sub-word tokens merged into words and adjacent
 * B-/I- tags of one entity merged into groups. transformers.js only knows `none` and `simple`
 * and gives no character offsets; this module works from the scores and from offsets that
 * {@link alignTokens} recovers by finding each token's text in the input.
 */

/** The strategies the Inference API accepts. */
export const AGGREGATION_STRATEGIES = ['none', 'simple', 'first', 'average', 'max'] as const
/** One of {@link AGGREGATION_STRATEGIES}. */
export type AggregationStrategy = (typeof AGGREGATION_STRATEGIES)[number]

/** One token of one input, before aggregation. */
export interface TokenPrediction {
  /** Position in the tokenized input (special tokens included), as the API's `index`. */
  index: number
  /** Token id, to decode groups of tokens back into text. */
  id: number
  /** Probabilities of every label (softmax of the logits). */
  scores: Float32Array | number[]
  /** Character offsets in the input, or null where the token's text was not found in it. */
  start: number | null
  end: number | null
  /** Whether the token continues the previous token's word (no space before it). */
  subword: boolean
}

/** Output of `aggregation_strategy: none`. */
export interface TokenEntity {
  entity: string
  score: number
  index: number
  word: string
  start: number | null
  end: number | null
}

/** Output of every other strategy. */
export interface EntityGroup {
  entity_group: string
  score: number
  word: string
  start: number | null
  end: number | null
}

/** What the post-processing needs of the model: label names and a decoder. */
export interface AggregationContext {
  labels: readonly string[]
  /** Text of a run of token ids, as the tokenizer decodes it (sub-words joined). */
  decode(ids: number[]): string
  /** Labels left out of the output; the API's default is `["O"]`. */
  ignoreLabels: readonly string[]
}

function argmax(values: ArrayLike<number>): number {
  let best = 0
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i
  return best
}

/**
 * The entities of one input. `tokens` are its non-special tokens in order. `none` gives one entry
 * per token whose label is not ignored; `simple` groups tokens; `first`/`average`/`max` first make
 * words of sub-word tokens (the word's label from its first token, from the mean of its tokens'
 * scores, or from its most confident token) and then group words.
 */
export function aggregateTokens(tokens: readonly TokenPrediction[], strategy: AggregationStrategy, ctx: AggregationContext): TokenEntity[] | EntityGroup[] {
  const ignored = new Set(ctx.ignoreLabels)
  if (strategy === 'none') {
    const out: TokenEntity[] = []
    for (const t of tokens) {
      const k = argmax(t.scores)
      const entity = ctx.labels[k] ?? `LABEL_${k}`
      if (ignored.has(entity)) continue
      out.push({ entity, score: t.scores[k], index: t.index, word: ctx.decode([t.id]), start: t.start, end: t.end })
    }
    return out
  }
  const units = strategy === 'simple' ? tokens.map((t) => tokenUnit(t, ctx)) : words(tokens, strategy, ctx)
  return groupUnits(units, ctx).filter((g) => !ignored.has(g.entity_group))
}

/** A token or a word with its label: what {@link groupUnits} merges. */
interface Unit {
  entity: string
  score: number
  ids: number[]
  start: number | null
  end: number | null
}

function tokenUnit(t: TokenPrediction, ctx: AggregationContext): Unit {
  const k = argmax(t.scores)
  return { entity: ctx.labels[k] ?? `LABEL_${k}`, score: t.scores[k], ids: [t.id], start: t.start, end: t.end }
}

function words(tokens: readonly TokenPrediction[], strategy: 'first' | 'average' | 'max', ctx: AggregationContext): Unit[] {
  const out: Unit[] = []
  let i = 0
  while (i < tokens.length) {
    let j = i + 1
    while (j < tokens.length && tokens[j].subword) j++
    const word = tokens.slice(i, j)
    let k: number
    let score: number
    if (strategy === 'first') {
      k = argmax(word[0].scores)
      score = word[0].scores[k]
    } else if (strategy === 'max') {
      let best = word[0]
      for (const t of word) if (Math.max(...t.scores) > Math.max(...best.scores)) best = t
      k = argmax(best.scores)
      score = best.scores[k]
    } else {
      const mean = new Float64Array(word[0].scores.length)
      for (const t of word) for (let c = 0; c < mean.length; c++) mean[c] += t.scores[c] / word.length
      k = argmax(mean)
      score = mean[k]
    }
    out.push({ entity: ctx.labels[k] ?? `LABEL_${k}`, score, ids: word.map((t) => t.id), start: word[0].start, end: word[word.length - 1].end })
    i = j
  }
  return out
}

/** `B-PER` → [B, PER]; `I-PER` → [I, PER]; anything else (`O`, `PER`) → [I, itself]. */
function tagOf(entity: string): [string, string] {
  if (entity.startsWith('B-')) return ['B', entity.slice(2)]
  if (entity.startsWith('I-')) return ['I', entity.slice(2)]
  return ['I', entity]
}

function groupUnits(units: readonly Unit[], ctx: AggregationContext): EntityGroup[] {
  const groups: EntityGroup[] = []
  let run: Unit[] = []
  const close = (): void => {
    if (run.length === 0) return
    const ids = run.flatMap((u) => u.ids)
    groups.push({
      entity_group: tagOf(run[0].entity)[1],
      score: run.reduce((s, u) => s + u.score, 0) / run.length,
      word: ctx.decode(ids),
      start: run[0].start,
      end: run[run.length - 1].end,
    })
    run = []
  }
  for (const u of units) {
    if (run.length > 0) {
      const [bi, tag] = tagOf(u.entity)
      const [, lastTag] = tagOf(run[run.length - 1].entity)
      if (tag !== lastTag || bi === 'B') close()
    }
    run.push(u)
  }
  close()
  return groups
}

/**
 * Character offsets of each token's text in `text`, found left to right, ignoring case and
 * accents (uncased tokenizers lowercase and strip them). `pieces` are the tokens' texts without
 * sub-word markers (`##`, `Ġ`, `▁`). A piece not found from the current position (a normalizer
 * that changed the text more) gets null offsets, and the search goes on after it.
 */
export function alignTokens(text: string, pieces: readonly string[]): Array<{ start: number | null; end: number | null; subword: boolean }> {
  const folded = fold(text)
  // Folding keeps one char per char of the input (see fold), so offsets carry over.
  let cursor = 0
  return pieces.map((piece) => {
    const p = fold(piece.trim())
    if (p.length === 0) return { start: null, end: null, subword: false }
    const at = folded.indexOf(p, cursor)
    if (at === -1) return { start: null, end: null, subword: false }
    cursor = at + p.length
    // As transformers' Python pipeline decides it: a token right after a non-space character continues a word.
    const subword = at > 0 && !/\s/.test(text[at - 1])
    return { start: at, end: at + p.length, subword }
  })
}

/** Lowercases and strips combining accents one UTF-16 unit at a time, keeping the length. */
function fold(s: string): string {
  let out = ''
  for (const ch of s) {
    const base = ch.normalize('NFD').replace(/[\u0300-\u036f]/g, '').toLowerCase()
    // Keep a 1:1 length mapping: characters whose folded form changes length stay as they are.
    out += base.length === ch.length ? base : ch
  }
  return out
}

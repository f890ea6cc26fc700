/**
 * What the wink models (`builtin/sentiment`, `builtin/ner`) read of a text: truncation
 * (`parameters.truncation` / `truncate` / `max_length`, as the Inference API, TEI and TGI name them)
 * and the bound on a run of characters without a space, which keeps every text fast.
 *
 * Why the bound: wink's tokenizer and the English model's features run unanchored regexes with
 * unbounded repeats over each run of non-space characters (`/[a-z].*\.$/i` of the model's
 * `isAbbrev` feature on a run of letters, the e-mail, URL and number patterns of the tokenizer on
 * other shapes). Each is O(L²) in the run's length L: one 200 000-character word took 30 s, a
 * 20 000-character `a1a1…` 3 s, `$111…` 5 s. Bounded to {@link MAX_WORD_LENGTH} characters, a run
 * costs what ordinary words cost (≤ 9 µs a character whatever its shape, 1.2 µs in prose).
 */
import type { Document, WinkMethods } from 'wink-nlp'
import { ModelInputError } from '../errors.js'
import { describeValue } from './describe-value.js'
import type { Parameters } from './pipeline.js'

/**
 * Longest run of non-space characters the wink models read as it is, 256. A longer run (a hash,
 * base64, a minified line, a 300-character URL) is read as one opaque token: a neutral placeholder
 * word that is never part of an entity and carries no sentiment. Measured: 100 000 characters of
 * 256-character runs of the worst shapes take 0.3 s; of 1024-character runs 1.6 s; of 2048, 4.7 s.
 */
export const MAX_WORD_LENGTH = 256

/**
 * Most characters of one text the wink models read, 100 000. With truncation (the default) a
 * longer text is cut at a token boundary within them; with `truncation: false` it fails with
 * `ERR_MODEL_INPUT` naming this limit. Wink reads prose at about 1 µs a character, the densest
 * shapes (one emoji after another) at about 7 µs: at most about 0.7 s for one text.
 */
export const MAX_TEXT_LENGTH = 100_000

/** Tokens kept by default when truncating, 512: the `model_max_length` of BERT-style models. */
export const DEFAULT_MAX_LENGTH = 512

/** The truncation of a request. */
export interface Truncation {
  /** Cut long texts (true, the default) or refuse those over {@link MAX_TEXT_LENGTH} characters (false). */
  truncate: boolean
  /** Tokens kept when `truncate`. */
  maxLength: number
}

// transformers' TruncationStrategy values that mean "cut" or "do not cut" for a single text.
const CUT_STRATEGIES = ['longest_first', 'only_first']
const KEEP_STRATEGIES = ['do_not_truncate']

/**
 * Reads the truncation parameters, under the names the Hugging Face stack uses:
 * - `truncation` (Inference API / transformers pipelines): `true` or `false`, or a transformers
 *   strategy name (`longest_first`, `only_first` = true; `do_not_truncate` = false);
 * - `truncate` (TEI: a boolean; TGI: a positive integer, the tokens to keep);
 * - `max_length` (transformers tokenizers): tokens kept when truncating, a positive integer.
 * Default: truncate to {@link DEFAULT_MAX_LENGTH} tokens. `truncation` and `truncate` may both be
 * given only when they agree; so may a TGI `truncate` count and `max_length`.
 */
export function readTruncation(parameters: Parameters): Truncation | ModelInputError {
  let truncate: boolean | undefined
  let count: number | undefined
  const truncation = parameters.truncation
  if (truncation !== undefined && truncation !== null) {
    if (typeof truncation === 'boolean') truncate = truncation
    else if (typeof truncation === 'string' && CUT_STRATEGIES.includes(truncation)) truncate = true
    else if (typeof truncation === 'string' && KEEP_STRATEGIES.includes(truncation)) truncate = false
    else {
      const got = typeof truncation === 'string' ? JSON.stringify(truncation) : describeValue(truncation)
      return new ModelInputError(`parameters.truncation must be true, false, "longest_first", "only_first" or "do_not_truncate", got ${got}`)
    }
  }
  const tei = parameters.truncate
  if (tei !== undefined && tei !== null) {
    let own: boolean
    if (typeof tei === 'boolean') own = tei
    else if (isPositiveInteger(tei)) {
      own = true
      count = tei
    } else {
      return new ModelInputError(`parameters.truncate must be a boolean (TEI) or a positive integer of tokens to keep (TGI), got ${describeValue(tei)}`)
    }
    if (truncate !== undefined && truncate !== own) {
      return new ModelInputError('parameters.truncation and parameters.truncate disagree; give one of them')
    }
    truncate = own
  }
  const maxLength = parameters.max_length
  if (maxLength !== undefined && maxLength !== null) {
    if (!isPositiveInteger(maxLength)) return new ModelInputError(`parameters.max_length must be a positive integer, got ${describeValue(maxLength)}`)
    if (count !== undefined && count !== maxLength) {
      return new ModelInputError('parameters.truncate (a token count) and parameters.max_length disagree; give one of them')
    }
    count = maxLength
  }
  return { truncate: truncate ?? true, maxLength: count ?? DEFAULT_MAX_LENGTH }
}

/**
 * The error of a text that the model will not read whole: over {@link MAX_TEXT_LENGTH} characters
 * with `truncate` false. `where` names the text within its item (`inputs[2]`) when it is one of a list.
 */
export function checkTextLength(text: string, truncation: Truncation, modelId: string, where?: string): ModelInputError | undefined {
  if (truncation.truncate || text.length <= MAX_TEXT_LENGTH) return undefined
  return new ModelInputError(
    `${modelId} reads at most ${MAX_TEXT_LENGTH} characters of a text when parameters.truncation is false; ` +
      `${where ?? 'this text'} has ${text.length}: leave truncation on (the default, the first max_length tokens) or split the text`,
  )
}

/**
 * Wink's separators between raw tokens: its tokenizer's splitter
 * `[ \u00a0\u2002-\u2005\u2009\u200a\u202f\u205f]+|[\n\r\t]+`. Anything else (including other Unicode
 * spaces) is part of a run.
 */
function isSeparator(c: number): boolean {
  return c === 32 || c === 10 || c === 13 || c === 9 || c === 0xa0 || (c >= 0x2002 && c <= 0x2005) ||
    c === 0x2009 || c === 0x200a || c === 0x202f || c === 0x205f
}

/** Wink's tokens of line breaks and tabs (its `tabCRLF` tokens), which do not count as tokens here. */
function isBreakToken(value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i)
    if (c !== 10 && c !== 13 && c !== 9) return false
  }
  return value.length > 0
}

/**
 * The word wink reads in place of an over-long run: an unknown lower-case word, which wink gives
 * no sentiment, no entity and no sentence break (checked against its patterns: dates, times,
 * money, ordinals and negation around it are found as around any unknown word).
 */
export const OPAQUE_WORD = 'zzzzzz'

/** An over-long run of the text, read as {@link OPAQUE_WORD}. */
interface Opaque {
  /** [start, end) in the original text. */
  start: number
  end: number
  /** Where the placeholder starts in the text wink read. */
  readStart: number
}

/** A text as wink read it, and the way back to the original's offsets. */
export interface WinkText {
  /** wink's document of {@link WinkText.read}. */
  doc: Document
  /** The text wink read: a prefix of the original (truncation) with over-long runs replaced. */
  read: string
  /** How many characters of the original the read text stands for (its length when not truncated). */
  end: number
  /** The over-long runs replaced, in order. */
  opaque: Opaque[]
}

/** A prefix of a text made ready for wink: what it reads, and which runs it reads as placeholders. */
interface Prefix {
  read: string
  opaque: Opaque[]
  /** Original characters it stands for. */
  end: number
  /** It stopped at `chars` characters with more runs to come (a larger budget would read more). */
  short: boolean
}

/**
 * The prefix of `text` of at most `runs` runs of non-space characters, ending at most `chars`
 * characters in (always at a run's end), every run over {@link MAX_WORD_LENGTH} replaced by the
 * placeholder. Linear in the prefix (plus the run that crosses `chars`).
 */
function prefixOf(text: string, runs: number, chars: number): Prefix {
  const opaque: Opaque[] = []
  const parts: string[] = []
  let copied = 0 // original characters copied or replaced so far
  let readLength = 0
  let end = text.length
  let short = false
  let count = 0
  let lastEnd = 0 // end of the last run taken
  let i = 0
  while (i < text.length) {
    if (isSeparator(text.charCodeAt(i))) {
      i++
      continue
    }
    const start = i
    while (i < text.length && !isSeparator(text.charCodeAt(i))) i++
    if (i > chars) {
      end = lastEnd
      short = true
      break
    }
    lastEnd = i
    if (i - start > MAX_WORD_LENGTH) {
      parts.push(text.slice(copied, start))
      readLength += start - copied
      opaque.push({ start, end: i, readStart: readLength })
      parts.push(OPAQUE_WORD)
      readLength += OPAQUE_WORD.length
      copied = i
    }
    if (++count === runs) {
      end = i
      break
    }
  }
  parts.push(text.slice(copied, end))
  return { read: parts.join(''), opaque, end, short }
}

/**
 * Reads `text` with wink: at most `maxLength` tokens (punctuation counts, line breaks do not) and
 * {@link MAX_TEXT_LENGTH} characters when truncating (the cut is always at a token boundary), every
 * run of more than {@link MAX_WORD_LENGTH} non-space characters as one opaque token. What is read
 * costs about twice its own length at most, however long the text: a text over the limit with
 * truncation off must be refused before (see {@link checkTextLength}).
 */
export function readWink(nlp: WinkMethods, text: string, truncation: Truncation): WinkText {
  if (!truncation.truncate) {
    const p = prefixOf(text, Infinity, Infinity)
    return { doc: nlp.readDoc(p.read), read: p.read, end: p.end, opaque: p.opaque }
  }
  const limit = truncation.maxLength
  // Each run gives at least one token, so `limit` runs hold at least `limit` tokens; but a run may
  // hold many ("1%1%1%…"), so read a budget of characters first (prose is about 4 per token) and
  // grow it only while it is too short to hold `limit` tokens.
  let budget = Math.min(MAX_TEXT_LENGTH, Math.max(1024, limit * 8))
  for (;;) {
    const p = prefixOf(text, limit, budget)
    const doc = nlp.readDoc(p.read)
    const values = doc.tokens().out() as string[]
    let counted = 0
    let k = 0
    for (; k < values.length; k++) if (!isBreakToken(values[k]!) && ++counted > limit) break
    if (k < values.length) {
      // More than `limit` tokens: cut at the end of the last kept one and read that prefix again,
      // so the result is exactly that of the truncated text.
      const offsets = locateTokens(nlp, doc, p.read)
      let readEnd = 0
      for (let j = k - 1; j >= 0; j--) {
        const o = offsets[j]
        if (o !== undefined && !isBreakToken(values[j]!)) {
          readEnd = o[1]
          break
        }
      }
      const read = p.read.slice(0, readEnd)
      const opaque = p.opaque.filter((o) => o.readStart < readEnd)
      return { doc: nlp.readDoc(read), read, end: toOriginal(opaque, readEnd), opaque }
    }
    if (!p.short || budget >= MAX_TEXT_LENGTH) return { doc, read: p.read, end: p.end, opaque: p.opaque }
    budget = Math.min(MAX_TEXT_LENGTH, budget * 4)
  }
}

/** The original offset of offset `at` of the read text (past any placeholder before it). */
function toOriginal(opaque: readonly Opaque[], at: number): number {
  let shift = 0
  for (const o of opaque) {
    if (o.readStart >= at) break
    shift += o.end - o.start - OPAQUE_WORD.length
  }
  return at + shift
}

/**
 * [start, end) of every token of `doc` in `read`, the text it was read from. wink keeps each
 * token's text and the spaces before it, so offsets are a running sum; where the count disagrees
 * (non-breaking spaces, over 65 535 spaces), the token is looked for past the separators at the
 * cursor. `undefined`: not found (an offset is never guessed). Linear in the text.
 */
export function locateTokens(nlp: WinkMethods, doc: Document, read: string): Array<[number, number] | undefined> {
  const values = doc.tokens().out() as string[]
  const spaces = doc.tokens().out(nlp.its.precedingSpaces) as string[]
  const offsets: Array<[number, number] | undefined> = []
  let cursor = 0
  for (let i = 0; i < values.length; i++) {
    const value = values[i]!
    let start = cursor + (spaces[i]?.length ?? 0)
    if (!read.startsWith(value, start)) {
      start = cursor
      while (start < read.length && !read.startsWith(value, start) && isSeparator(read.charCodeAt(start))) start++
      if (!read.startsWith(value, start)) {
        offsets.push(undefined)
        continue
      }
    }
    offsets.push([start, start + value.length])
    cursor = start + value.length
  }
  return offsets
}

/**
 * Offsets of every token of a {@link WinkText} in the original text, or `undefined` for a token
 * that is not there as read: an opaque placeholder, or one that could not be located.
 */
export function originalOffsets(nlp: WinkMethods, w: WinkText): Array<[number, number] | undefined> {
  const located = locateTokens(nlp, w.doc, w.read)
  let o = 0
  let shift = 0
  return located.map((span) => {
    if (span === undefined) return undefined
    const [start, end] = span
    // Placeholders wholly before this token shift it by their length difference.
    while (o < w.opaque.length && w.opaque[o]!.readStart + OPAQUE_WORD.length <= start) {
      const p = w.opaque[o]!
      shift += p.end - p.start - OPAQUE_WORD.length
      o++
    }
    // A token overlapping a placeholder is (part of) it: not in the original as read.
    if (o < w.opaque.length && w.opaque[o]!.readStart < end) return undefined
    return [start + shift, end + shift]
  })
}

function isPositiveInteger(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 1
}

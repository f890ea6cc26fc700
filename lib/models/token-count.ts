/**
 * Token counts for length-aware batching, on the server's main thread, without loading
 * transformers.js there: a WordPiece count (BERT, MiniLM, DistilBERT… `tokenizer.json` with a
 * `WordPiece` model, `BertNormalizer` and `BertPreTokenizer`) read from the model's own vocabulary.
 * Characters order texts only roughly as tokens do (batches of 32 sorted by characters padded 10% of
 * the real tokens on benchmarks/model-efficiency.js's texts, sorted by tokens 2%). A hint, not the
 * tokenizer: special tokens and added tokens are not applied, and the work is bounded as the model
 * bounds its input: a text is counted up to {@link MAX_COUNTED_TOKENS} tokens or its first
 * {@link MAX_COUNTED_CHARS} characters (past that it is truncated by the model anyway), and a
 * piece is looked up no longer than the vocabulary's longest, so an item costs at most a few
 * thousand lookups whatever a client sends.
 */
import { readFileSync } from 'node:fs'

/** Counts the tokens of one text. */
export type TokenCounter = (text: string) => number

interface TokenizerJson {
  normalizer?: { type?: string; lowercase?: boolean; strip_accents?: boolean | null; handle_chinese_chars?: boolean } | null
  pre_tokenizer?: { type?: string } | null
  model?: { type?: string; vocab?: Record<string, number>; continuing_subword_prefix?: string; max_input_chars_per_word?: number }
}

// BERT's punctuation: Unicode punctuation and the ASCII symbols between the letters and digits.
const PUNCT = /[\p{P}!-/:-@[-`{-~]/u
// CJK ideographs get a token each (BertNormalizer's handle_chinese_chars).
const CJK = /[\u4E00-\u9FFF\u3400-\u4DBF\u{20000}-\u{2A6DF}\u{2A700}-\u{2B73F}\u{2B740}-\u{2B81F}\u{2B820}-\u{2CEAF}\uF900-\uFAFF\u{2F800}-\u{2FA1F}]/u
const SPLIT = /\s+/u
const ACCENTS = /\p{Mn}/gu

/** Tokens past which a text is not counted further (BERT-like models truncate at 512). */
export const MAX_COUNTED_TOKENS = 512
/** Characters of a text that are counted at most. */
export const MAX_COUNTED_CHARS = 4096
// Distinct words whose counts are kept.
const CACHE_WORDS = 20_000

/**
 * A counter for a `tokenizer.json` whose model is WordPiece with BERT's normalizer and
 * pre-tokenizer; undefined for any other tokenizer (the caller then counts characters).
 */
export function wordPieceCounter(json: unknown): TokenCounter | undefined {
  const t = json as TokenizerJson
  const model = t?.model
  if (model?.type !== 'WordPiece' || !model.vocab || typeof model.vocab !== 'object') return undefined
  if (t.pre_tokenizer?.type !== 'BertPreTokenizer') return undefined
  const norm = t.normalizer
  if (norm && norm.type !== 'BertNormalizer') return undefined
  const lowercase = norm?.lowercase ?? false
  const stripAccents = norm?.strip_accents ?? lowercase
  const vocab = new Set(Object.keys(model.vocab))
  const prefix = model.continuing_subword_prefix ?? '##'
  const maxChars = model.max_input_chars_per_word ?? 100
  // No piece is longer than the longest vocabulary entry: the greedy match starts there.
  let longest = 1
  for (const k of vocab) if (k.length > longest) longest = k.length
  // Pieces of one word: greedy longest match first, as WordPiece does; a word with a part that is
  // in no piece is one [UNK].
  const pieces = (word: string): number => {
    if (word.length > maxChars) return 1
    let n = 0
    let start = 0
    while (start < word.length) {
      const piecePrefix = start > 0 ? prefix.length : 0
      let end = Math.min(word.length, start + longest - piecePrefix)
      let found = false
      while (end > start) {
        const sub = start > 0 ? prefix + word.slice(start, end) : word.slice(start, end)
        if (vocab.has(sub)) {
          found = true
          break
        }
        end--
      }
      if (!found) return 1
      n++
      start = end
    }
    return n
  }
  const cache = new Map<string, number>()
  const wordTokens = (word: string): number => {
    let n = cache.get(word)
    if (n === undefined) {
      n = pieces(word)
      if (cache.size < CACHE_WORDS) cache.set(word, n)
    }
    return n
  }
  return (text: string): number => {
    let s = text.length > MAX_COUNTED_CHARS ? text.slice(0, MAX_COUNTED_CHARS) : text
    s = lowercase ? s.toLowerCase() : s
    if (stripAccents) s = s.normalize('NFD').replace(ACCENTS, '')
    let n = 0
    for (const chunk of s.split(SPLIT)) {
      if (chunk === '') continue
      // Punctuation and CJK characters split a chunk and count as words of their own.
      let word = ''
      for (const ch of chunk) {
        if (PUNCT.test(ch) || CJK.test(ch)) {
          if (word !== '') n += wordTokens(word)
          word = ''
          n++
        } else word += ch
      }
      if (word !== '') n += wordTokens(word)
      if (n >= MAX_COUNTED_TOKENS) return MAX_COUNTED_TOKENS
    }
    return n
  }
}

/** The counter of the model folder `dir` (its `tokenizer.json`), or undefined when it has none that {@link wordPieceCounter} reads. */
export function tokenCounterOf(dir: string): TokenCounter | undefined {
  try {
    return wordPieceCounter(JSON.parse(readFileSync(`${dir}/tokenizer.json`, 'utf8')))
  } catch {
    return undefined
  }
}

/**
 * The Inference API tasks on a loaded transformers.js model: one tokenizer call and one model call
 * for a whole batch (all texts of all items, padded together), then each item's outputs in the
 * API's shapes. transformers.js's own pipelines are used for loading, and for speech (which they
 * run one recording at a time); the text tasks are done here because the API needs what those
 * pipelines leave out: every label's score, `function_to_apply`, offsets and the five
 * `aggregation_strategy` values, zero-shot pairs of a batch in one model call, padding trimmed
 * from feature-extraction.
 */
import { ModelInputError } from '../errors.js'
import { describeValue } from './describe-value.js'
import type { Parameters } from './pipeline.js'
import { readTextInputs } from './text-inputs.js'
import {
  AGGREGATION_STRATEGIES,
  aggregateTokens,
  alignTokens,
  type AggregationStrategy,
  type TokenPrediction,
} from './token-aggregation.js'

/** The part of a transformers.js `Tensor` used here. */
export interface TensorLike {
  data: ArrayLike<number> | ArrayLike<bigint>
  dims: number[]
}

/** The part of a transformers.js tokenizer used here. */
export interface TokenizerLike {
  (texts: string[], options: { padding: boolean; truncation: boolean; text_pair?: string[] }): Record<string, TensorLike>
  decode(ids: number[], options?: { skip_special_tokens?: boolean }): string
  mask_token?: string | null
  mask_token_id?: number | null
  all_special_ids?: number[]
  model?: { tokens_to_ids?: Map<string, number> }
}

/** The part of a transformers.js model used here. */
export interface ModelLike {
  (inputs: Record<string, TensorLike>): Promise<Record<string, TensorLike | undefined>>
  config: { id2label?: Record<string, string>; label2id?: Record<string, number>; problem_type?: string; num_labels?: number }
}

/** A loaded text model. */
export interface TextModel {
  tokenizer: TokenizerLike
  model: ModelLike
  /** Pooling of a sentence-transformers folder (`1_Pooling`), for feature-extraction; `none` otherwise. */
  pooling?: 'none' | 'mean' | 'cls'
  normalize?: boolean
}

/** Texts per model call: bounds the padded batch's memory for items that carry many texts. */
export const MAX_SEQUENCES_PER_CALL = 128

type ItemResult = unknown | Error

const num = (v: number | bigint): number => (typeof v === 'bigint' ? Number(v) : v)

function labelsOf(model: ModelLike, width: number): string[] {
  const id2label = model.config.id2label ?? {}
  return Array.from({ length: width }, (_, i) => id2label[i] ?? id2label[String(i)] ?? `LABEL_${i}`)
}

function softmax(row: ArrayLike<number>, start: number, width: number): Float32Array {
  let max = -Infinity
  for (let i = 0; i < width; i++) max = Math.max(max, row[start + i])
  const out = new Float32Array(width)
  let sum = 0
  for (let i = 0; i < width; i++) sum += out[i] = Math.exp(row[start + i] - max)
  for (let i = 0; i < width; i++) out[i] /= sum
  return out
}

/**
 * Runs `texts` through the tokenizer and model in chunks of {@link MAX_SEQUENCES_PER_CALL},
 * calling `each` with every chunk's encodings and outputs and the chunk's first index.
 */
async function forChunks(
  m: TextModel,
  texts: string[],
  pairs: string[] | undefined,
  each: (enc: Record<string, TensorLike>, out: Record<string, TensorLike | undefined>, offset: number) => void,
): Promise<void> {
  for (let offset = 0; offset < texts.length; offset += MAX_SEQUENCES_PER_CALL) {
    const chunk = texts.slice(offset, offset + MAX_SEQUENCES_PER_CALL)
    const options: { padding: boolean; truncation: boolean; text_pair?: string[] } = { padding: true, truncation: true }
    if (pairs) options.text_pair = pairs.slice(offset, offset + MAX_SEQUENCES_PER_CALL)
    const enc = m.tokenizer(chunk, options)
    each(enc, await m.model(enc), offset)
  }
}

/** The model's `logits` output; a model without one fails the batch, naming what is missing. */
function logitsOf(out: Record<string, TensorLike | undefined>): TensorLike {
  if (!out.logits) throw new Error('the model has no "logits" output')
  return out.logits
}

/**
 * Reads every item's texts; returns them flattened with each item's span, and the items' errors
 * (an item with bad inputs fails alone).
 */
function flattenTexts(
  inputs: unknown[],
  task: string,
  check?: (text: string) => Error | undefined,
): { texts: string[]; spans: Array<{ from: number; to: number; single: boolean } | Error> } {
  const texts: string[] = []
  const spans = inputs.map((input) => {
    const read = readTextInputs(input, task)
    if (read instanceof Error) return read
    for (const text of read.texts) {
      const bad = check?.(text)
      if (bad) return bad
    }
    const from = texts.length
    texts.push(...read.texts)
    return { from, to: texts.length, single: read.single }
  })
  return { texts, spans }
}

function positiveInt(parameters: Parameters, name: string): number | undefined | ModelInputError {
  const v = parameters[name]
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) return new ModelInputError(`parameters.${name} must be a positive integer, got ${describeValue(v)}`)
  return v
}

function oneOf<T extends string>(parameters: Parameters, name: string, allowed: readonly T[]): T | undefined | ModelInputError {
  const v = parameters[name]
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
    return new ModelInputError(`parameters.${name} must be one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}, got ${typeof v === 'string' ? JSON.stringify(v) : describeValue(v)}`)
  }
  return v as T
}

function bool(parameters: Parameters, name: string): boolean | undefined | ModelInputError {
  const v = parameters[name]
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'boolean') return new ModelInputError(`parameters.${name} must be a boolean, got ${describeValue(v)}`)
  return v
}

/**
 * text-classification: each string gets every label (or `top_k`) with its score, best first,
 * `[[{label, score}, ...]]` per item as the Inference API. `function_to_apply` `softmax`,
 * `sigmoid` or `none`; default sigmoid for `multi_label_classification` or one-label models,
 * else softmax.
 */
export async function textClassification(m: TextModel, inputs: unknown[], parameters: Parameters): Promise<ItemResult[]> {
  const topK = positiveInt(parameters, 'top_k')
  const fn = oneOf(parameters, 'function_to_apply', ['softmax', 'sigmoid', 'none'] as const)
  for (const e of [topK, fn]) if (e instanceof Error) return inputs.map(() => e)
  const { texts, spans } = flattenTexts(inputs, 'text-classification')
  const perText: Array<Array<{ label: string; score: number }>> = []
  await forChunks(m, texts, undefined, (_enc, out) => {
    const logits = logitsOf(out)
    const [n, width] = logits.dims
    const labels = labelsOf(m.model, width)
    const apply = (fn as string | undefined) ?? (m.model.config.problem_type === 'multi_label_classification' || width === 1 ? 'sigmoid' : 'softmax')
    const data = logits.data as ArrayLike<number>
    for (let i = 0; i < n; i++) {
      let scores: ArrayLike<number>
      if (apply === 'softmax') scores = softmax(data, i * width, width)
      else {
        const row = Array.from({ length: width }, (_, k) => data[i * width + k])
        scores = apply === 'sigmoid' ? row.map((x) => 1 / (1 + Math.exp(-x))) : row
      }
      const ranked = labels.map((label, k) => ({ label, score: scores[k] })).sort((a, b) => b.score - a.score)
      perText.push(ranked.slice(0, (topK as number | undefined) ?? width))
    }
  })
  return spans.map((s) => (s instanceof Error ? s : perText.slice(s.from, s.to)))
}

/** Candidate labels: a list of strings, or one string of comma-separated labels (as the API). */
function readCandidateLabels(v: unknown): string[] | ModelInputError {
  const labels = typeof v === 'string' ? v.split(',').map((l) => l.trim()).filter((l) => l.length > 0) : v
  if (!Array.isArray(labels) || labels.length === 0 || labels.some((l) => typeof l !== 'string' || l.length === 0)) {
    return new ModelInputError('zero-shot-classification needs parameters.candidate_labels: a non-empty list of non-empty strings, or a comma-separated string')
  }
  return labels as string[]
}

/**
 * zero-shot-classification with an NLI model: every (text, `hypothesis_template` filled with a
 * label) pair of the batch in one model call. Scores are a softmax of the entailment logits over
 * the labels, or with `multi_label` (or a single label) each label's entailment against
 * contradiction. Output per text `{sequence, labels, scores}`, labels by score descending; an
 * item of one string gets the object, an item of a list gets a list.
 */
export async function zeroShotClassification(m: TextModel, inputs: unknown[], parameters: Parameters): Promise<ItemResult[]> {
  const labels = readCandidateLabels(parameters.candidate_labels)
  if (labels instanceof Error) return inputs.map(() => labels)
  const multi = bool(parameters, 'multi_label')
  if (multi instanceof Error) return inputs.map(() => multi)
  const template = parameters.hypothesis_template ?? 'This example is {}.'
  if (typeof template !== 'string' || !template.includes('{}')) {
    const e = new ModelInputError(`parameters.hypothesis_template must be a string containing "{}" where the label goes, got ${typeof template === 'string' ? JSON.stringify(template) : describeValue(template)}`)
    return inputs.map(() => e)
  }
  const label2id = m.model.config.label2id ?? Object.fromEntries(Object.entries(m.model.config.id2label ?? {}).map(([k, v]) => [v, Number(k)]))
  const idOf = (prefix: string): number | undefined => Object.entries(label2id).find(([l]) => l.toLowerCase().startsWith(prefix))?.[1]
  const entail = idOf('entail')
  if (entail === undefined) {
    const e = new ModelInputError(`This model has no entailment label (labels: ${Object.keys(label2id).join(', ') || 'none'}): zero-shot-classification needs an NLI model`)
    return inputs.map(() => e)
  }
  const contra = idOf('contra') ?? (entail === 0 ? Object.keys(label2id).length - 1 : 0)
  const { texts, spans } = flattenTexts(inputs, 'zero-shot-classification')
  const hypotheses = labels.map((l) => template.replaceAll('{}', l))
  const premises = texts.flatMap((t) => labels.map(() => t))
  const pairs = texts.flatMap(() => hypotheses)
  const entailLogit = new Float32Array(premises.length)
  const contraLogit = new Float32Array(premises.length)
  await forChunks(m, premises, pairs, (_enc, out, offset) => {
    const logits = logitsOf(out)
    const [n, width] = logits.dims
    const data = logits.data as ArrayLike<number>
    for (let i = 0; i < n; i++) {
      entailLogit[offset + i] = data[i * width + entail]
      contraLogit[offset + i] = data[i * width + contra]
    }
  })
  const perText = texts.map((sequence, t) => {
    const base = t * labels.length
    let scores: number[]
    if (multi === true || labels.length === 1) {
      scores = labels.map((_, k) => 1 / (1 + Math.exp(contraLogit[base + k] - entailLogit[base + k])))
    } else {
      scores = Array.from(softmax(entailLogit, base, labels.length))
    }
    const order = labels.map((_, k) => k).sort((a, b) => scores[b] - scores[a])
    return { sequence, labels: order.map((k) => labels[k]), scores: order.map((k) => scores[k]) }
  })
  return spans.map((s) => (s instanceof Error ? s : s.single ? perText[s.from] : perText.slice(s.from, s.to)))
}

/** Token texts without sub-word markers, for {@link alignTokens}. */
function pieceText(tokenizer: TokenizerLike, id: number): { text: string; continues: boolean } {
  const raw = tokenizer.decode([id], { skip_special_tokens: true })
  if (raw.startsWith('##')) return { text: raw.slice(2), continues: true }
  return { text: raw.replace(/^[\u0120\u2581]/, ''), continues: false }
}

/**
 * token-classification: `aggregation_strategy` `none`, `simple` (default, as the API), `first`,
 * `average` or `max`; `ignore_labels` (default `["O"]`). Output per string: `[{entity_group,
 * score, word, start, end}]` (or `{entity, score, index, word, start, end}` for `none`), a list of
 * such lists for an item of several strings.
 */
export async function tokenClassification(m: TextModel, inputs: unknown[], parameters: Parameters): Promise<ItemResult[]> {
  const strategy = oneOf(parameters, 'aggregation_strategy', AGGREGATION_STRATEGIES)
  if (strategy instanceof Error) return inputs.map(() => strategy)
  const ignore = parameters.ignore_labels ?? ['O']
  if (!Array.isArray(ignore) || ignore.some((l) => typeof l !== 'string')) {
    const e = new ModelInputError(`parameters.ignore_labels must be a list of label names, got ${describeValue(ignore)}`)
    return inputs.map(() => e)
  }
  const { texts, spans } = flattenTexts(inputs, 'token-classification')
  const special = new Set(m.tokenizer.all_special_ids ?? [])
  const perText: unknown[] = []
  await forChunks(m, texts, undefined, (enc, out, offset) => {
    const logits = logitsOf(out)
    const [n, seq, width] = logits.dims
    const labels = labelsOf(m.model, width)
    const ids = enc.input_ids.data
    const mask = enc.attention_mask?.data
    const data = logits.data as ArrayLike<number>
    for (let i = 0; i < n; i++) {
      const tokens: TokenPrediction[] = []
      const pieces: Array<{ text: string; continues: boolean }> = []
      for (let j = 0; j < seq; j++) {
        const id = num(ids[i * seq + j])
        if ((mask && num(mask[i * seq + j]) === 0) || special.has(id)) continue
        pieces.push(pieceText(m.tokenizer, id))
        tokens.push({ index: j, id, scores: softmax(data, (i * seq + j) * width, width), start: null, end: null, subword: false })
      }
      const aligned = alignTokens(texts[offset + i], pieces.map((p) => p.text))
      tokens.forEach((t, k) => {
        t.start = aligned[k].start
        t.end = aligned[k].end
        t.subword = pieces[k].continues || aligned[k].subword
      })
      perText.push(
        aggregateTokens(tokens, (strategy as AggregationStrategy | undefined) ?? 'simple', {
          labels,
          ignoreLabels: ignore as string[],
          decode: (group) => m.tokenizer.decode(group, { skip_special_tokens: true }),
        }),
      )
    }
  })
  return spans.map((s) => (s instanceof Error ? s : s.single ? perText[s.from] : perText.slice(s.from, s.to)))
}

/**
 * feature-extraction: the last hidden state, without the padding the batch added. With `pooling`
 * `none` (default, unless the folder is a sentence-transformers model with a pooling config) a
 * string gives `[1][tokens][dim]` as transformers' Python pipeline; with `mean` or `cls` a string
 * gives `[dim]`. `normalize: true` scales each vector to unit length. An item of several strings
 * gets a list of those.
 */
export async function featureExtraction(m: TextModel, inputs: unknown[], parameters: Parameters): Promise<ItemResult[]> {
  const pooling = oneOf(parameters, 'pooling', ['none', 'mean', 'cls'] as const)
  const normalize = bool(parameters, 'normalize')
  for (const e of [pooling, normalize]) if (e instanceof Error) return inputs.map(() => e)
  const pool = (pooling as string | undefined) ?? m.pooling ?? 'none'
  const unit = (normalize as boolean | undefined) ?? m.normalize ?? false
  const { texts, spans } = flattenTexts(inputs, 'feature-extraction')
  const perText: unknown[] = []
  await forChunks(m, texts, undefined, (enc, out) => {
    const hidden = out.last_hidden_state ?? out.token_embeddings ?? out.logits
    if (!hidden || hidden.dims.length !== 3) throw new Error('the model has no [batch, tokens, dim] output (last_hidden_state)')
    const [n, seq, dim] = hidden.dims
    const data = hidden.data as ArrayLike<number>
    const mask = enc.attention_mask?.data
    for (let i = 0; i < n; i++) {
      const rows: number[][] = []
      for (let j = 0; j < seq; j++) {
        if (mask && num(mask[i * seq + j]) === 0) continue
        const at = (i * seq + j) * dim
        rows.push(Array.from({ length: dim }, (_, d) => data[at + d]))
      }
      let vectors: number[][]
      if (pool === 'cls') vectors = [rows[0] ?? new Array<number>(dim).fill(0)]
      else if (pool === 'mean') vectors = [Array.from({ length: dim }, (_, d) => rows.reduce((s, r) => s + r[d], 0) / Math.max(1, rows.length))]
      else vectors = rows
      if (unit) vectors = vectors.map(unitLength)
      perText.push(pool === 'none' ? [vectors] : vectors[0])
    }
  })
  return spans.map((s) => (s instanceof Error ? s : s.single ? perText[s.from] : perText.slice(s.from, s.to)))
}

function unitLength(v: number[]): number[] {
  const norm = Math.sqrt(v.reduce((s, x) => s + x * x, 0))
  return norm === 0 ? v : v.map((x) => x / norm)
}

/**
 * fill-mask: each string must hold the tokenizer's mask token; it gets the `top_k` (default 5)
 * best tokens for it, `[{sequence, score, token, token_str}]`; with `targets` (a word or list of
 * words) only those are scored. A string with several masks gets one such list per mask. A string
 * without a mask fails alone with the API's message.
 */
export async function fillMask(m: TextModel, inputs: unknown[], parameters: Parameters): Promise<ItemResult[]> {
  const topK = positiveInt(parameters, 'top_k')
  if (topK instanceof Error) return inputs.map(() => topK)
  const maskToken = m.tokenizer.mask_token ?? '[MASK]'
  const maskId = m.tokenizer.mask_token_id
  if (maskId === undefined || maskId === null) {
    const e = new ModelInputError('This model\'s tokenizer has no mask token: it cannot do fill-mask')
    return inputs.map(() => e)
  }
  let targets: number[] | undefined
  if (parameters.targets !== undefined && parameters.targets !== null) {
    const words = typeof parameters.targets === 'string' ? [parameters.targets] : parameters.targets
    if (!Array.isArray(words) || words.length === 0 || words.some((w) => typeof w !== 'string')) {
      const e = new ModelInputError(`parameters.targets must be a word or a non-empty list of words, got ${describeValue(parameters.targets)}`)
      return inputs.map(() => e)
    }
    const vocab = m.tokenizer.model?.tokens_to_ids
    targets = []
    for (const w of words as string[]) {
      const id = vocab?.get(w) ?? vocab?.get(w.toLowerCase())
      if (id === undefined) {
        const e = new ModelInputError(`parameters.targets: ${JSON.stringify(w)} is not one token of this model's vocabulary`)
        return inputs.map(() => e)
      }
      targets.push(id)
    }
  }
  // Items whose strings lack the mask fail alone, before anything runs.
  const noMask = new ModelInputError(`No mask_token (${maskToken}) found on the input`)
  const { texts, spans } = flattenTexts(inputs, 'fill-mask', (text) => (text.includes(maskToken) ? undefined : noMask))
  const k = (topK as number | undefined) ?? 5
  const perText: unknown[] = []
  await forChunks(m, texts, undefined, (enc, out) => {
    const logits = logitsOf(out)
    const [n, seq, vocabSize] = logits.dims
    const ids = enc.input_ids.data
    const mask = enc.attention_mask?.data
    const data = logits.data as ArrayLike<number>
    for (let i = 0; i < n; i++) {
      // The text's own tokens (padding left out) and where its masks are, in both.
      const row: number[] = []
      const masks: Array<{ at: number; pos: number }> = []
      for (let j = 0; j < seq; j++) {
        if (mask && num(mask[i * seq + j]) === 0) continue
        const id = num(ids[i * seq + j])
        if (id === maskId) masks.push({ at: row.length, pos: j })
        row.push(id)
      }
      const perMask = masks.map(({ at, pos }) => {
        const probs = softmax(data, (i * seq + pos) * vocabSize, vocabSize)
        return bestOf(probs, k, targets).map((token) => {
          const filled = row.slice()
          filled[at] = token
          return {
            sequence: m.tokenizer.decode(filled, { skip_special_tokens: true }),
            score: probs[token],
            token,
            token_str: m.tokenizer.decode([token]),
          }
        })
      })
      perText.push(perMask.length === 1 ? perMask[0] : perMask)
    }
  })
  return spans.map((s) => (s instanceof Error ? s : s.single ? perText[s.from] : perText.slice(s.from, s.to)))
}

/**
 * The `k` indices of the highest `scores` (among `candidates` when given), best first: one pass
 * keeping a sorted list of k, not a sort of the whole vocabulary for every mask.
 */
function bestOf(scores: ArrayLike<number>, k: number, candidates?: readonly number[]): number[] {
  const best: number[] = []
  const consider = (i: number): void => {
    if (best.length === k && scores[i] <= scores[best[k - 1]]) return
    let at = best.length
    while (at > 0 && scores[best[at - 1]] < scores[i]) at--
    best.splice(at, 0, i)
    if (best.length > k) best.pop()
  }
  if (candidates) for (const i of candidates) consider(i)
  else for (let i = 0; i < scores.length; i++) consider(i)
  return best
}

/**
 * `builtin/sentiment` (task `text-classification`) on wink-nlp's English lite model. Pure functions
 * of a loaded wink instance; the worker thread calls {@link classifyBatch}.
 */
import type { WinkMethods } from 'wink-nlp'
import { ModelInputError } from '../errors.js'
import { describeValue } from './describe-value.js'
import type { Parameters } from './pipeline.js'
import { readTextInputs } from './text-inputs.js'
import { checkTextLength, readTruncation, readWink, type Truncation } from './wink-text.js'

/** Model id of the sentiment pipeline. */
export const SENTIMENT_MODEL_ID = 'builtin/sentiment'

/** Task of the sentiment pipeline. */
export const SENTIMENT_TASK = 'text-classification'

/**
 * Slope of the logistic that maps wink's sentiment s ∈ [-1, 1] to P(POSITIVE) = 1 / (1 + e^(-5 s)).
 * 5 makes wink's typical clear-cut scores (|s| ≈ 0.6) come out ≈ 0.95, and s = ±1 ≈ 0.993: as
 * decisive as a fine-tuned classifier on obvious text, while s = 0 (neutral) stays exactly 0.5.
 */
export const SENTIMENT_SLOPE = 5

/** One label and its score, as the Inference API returns for text-classification. */
export interface LabelScore {
  label: string
  score: number
}

/**
 * Maps a wink sentiment in [-1, 1] to `[POSITIVE, NEGATIVE]` scores, best first. Monotone in `s`;
 * the two scores sum to exactly 1 (the larger one is computed, the smaller is 1 minus it, which is
 * exact in floating point since the larger is ≥ 0.5). Ties (s = 0) list POSITIVE first.
 */
export function sentimentToLabels(sentiment: number): LabelScore[] {
  const s = Number.isFinite(sentiment) ? Math.max(-1, Math.min(1, sentiment)) : 0
  const top = 1 / (1 + Math.exp(-SENTIMENT_SLOPE * Math.abs(s)))
  return s >= 0
    ? [{ label: 'POSITIVE', score: top }, { label: 'NEGATIVE', score: 1 - top }]
    : [{ label: 'NEGATIVE', score: top }, { label: 'POSITIVE', score: 1 - top }]
}

/**
 * Reads `parameters.top_k` with the Inference API's meaning: how many labels to return per text,
 * best first. Absent or null → all labels (2). A positive integer above 2 returns both.
 */
export function readTopK(parameters: Parameters): number | ModelInputError {
  const topK = parameters.top_k
  if (topK === undefined || topK === null) return Infinity
  if (typeof topK !== 'number' || !Number.isInteger(topK) || topK < 1) {
    return new ModelInputError(`parameters.top_k must be a positive integer, got ${describeValue(topK)}`)
  }
  return topK
}

/**
 * Classifies a batch. Each item's inputs is a string or an array of strings; its output is
 * `[[{label, score}, ...]]`, one inner list per string, labels by score descending. An empty or
 * blank string is a text like any other: it has no sentiment words, so it is neutral (0.5 / 0.5).
 * Long texts are truncated as `parameters.truncation` / `max_length` say (see ./wink-text.ts).
 * An item with bad inputs (or a text over the limit with truncation off), or every item when a
 * parameter is bad, gets a `ModelInputError` instead.
 */
export function classifyBatch(nlp: WinkMethods, inputs: unknown[], parameters: Parameters): unknown[] {
  const topK = readTopK(parameters)
  if (topK instanceof Error) return inputs.map(() => topK)
  const truncation = readTruncation(parameters)
  if (truncation instanceof Error) return inputs.map(() => truncation)
  return inputs.map((item) => {
    const read = readTextInputs(item, SENTIMENT_TASK)
    if (read instanceof Error) return read
    for (let i = 0; i < read.texts.length; i++) {
      const tooLong = checkTextLength(read.texts[i]!, truncation, SENTIMENT_MODEL_ID, read.single ? undefined : `inputs[${i}]`)
      if (tooLong) return tooLong
    }
    // The Inference API answers a single string with a list of one list, so `single` does not matter here.
    return read.texts.map((text) => sentimentToLabels(sentimentOf(nlp, text, truncation)).slice(0, topK))
  })
}

/** wink's document-level sentiment of `text` (as truncated), in [-1, 1]. */
function sentimentOf(nlp: WinkMethods, text: string, truncation: Truncation): number {
  const value = readWink(nlp, text, truncation).doc.out(nlp.its.sentiment)
  return typeof value === 'number' ? value : Number(value)
}

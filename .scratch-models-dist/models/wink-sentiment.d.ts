/**
 * `builtin/sentiment` (task `text-classification`) on wink-nlp's English lite model. Pure functions
 * of a loaded wink instance; the worker thread calls {@link classifyBatch}.
 */
import type { WinkMethods } from 'wink-nlp';
import { ModelInputError } from '../errors.js';
import type { Parameters } from './pipeline.js';
/** Model id of the sentiment pipeline. */
export declare const SENTIMENT_MODEL_ID = "builtin/sentiment";
/** Task of the sentiment pipeline. */
export declare const SENTIMENT_TASK = "text-classification";
/**
 * Slope of the logistic that maps wink's sentiment s ∈ [-1, 1] to P(POSITIVE) = 1 / (1 + e^(-5 s)).
 * 5 makes wink's typical clear-cut scores (|s| ≈ 0.6) come out ≈ 0.95, and s = ±1 ≈ 0.993: as
 * decisive as a fine-tuned classifier on obvious text, while s = 0 (neutral) stays exactly 0.5.
 */
export declare const SENTIMENT_SLOPE = 5;
/** One label and its score, as the Inference API returns for text-classification. */
export interface LabelScore {
    label: string;
    score: number;
}
/**
 * Maps a wink sentiment in [-1, 1] to `[POSITIVE, NEGATIVE]` scores, best first. Monotone in `s`;
 * the two scores sum to exactly 1 (the larger one is computed, the smaller is 1 minus it, which is
 * exact in floating point since the larger is ≥ 0.5). Ties (s = 0) list POSITIVE first.
 */
export declare function sentimentToLabels(sentiment: number): LabelScore[];
/**
 * Reads `parameters.top_k` with the Inference API's meaning: how many labels to return per text,
 * best first. Absent or null → all labels (2). A positive integer above 2 returns both.
 */
export declare function readTopK(parameters: Parameters): number | ModelInputError;
/**
 * Classifies a batch. Each item's inputs is a string or an array of strings; its output is
 * `[[{label, score}, ...]]`, one inner list per string, labels by score descending. An item with
 * bad inputs, or every item when `parameters.top_k` is bad, gets a `ModelInputError` instead.
 */
export declare function classifyBatch(nlp: WinkMethods, inputs: unknown[], parameters: Parameters): unknown[];

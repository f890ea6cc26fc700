/**
 * `builtin/ner` (task `token-classification`) on wink-nlp's English lite model: wink's rule-based
 * entities (DATE, TIME, CARDINAL, ORDINAL, MONEY, PERCENT, EMAIL, URL, HASHTAG, MENTION, EMOJI, ...)
 * with character offsets into the original text. Pure functions; the worker thread calls
 * {@link recognizeBatch}.
 */
import type { WinkMethods } from 'wink-nlp';
import { ModelInputError } from '../errors.js';
import type { Parameters } from './pipeline.js';
/** Model id of the entity pipeline. */
export declare const NER_MODEL_ID = "builtin/ner";
/** Task of the entity pipeline. */
export declare const NER_TASK = "token-classification";
/**
 * Score of every entity, 1. wink's entities come from deterministic patterns and carry no
 * confidence, so a constant is the honest value: a match is a match, and a client threshold on
 * `score` never drops one.
 */
export declare const ENTITY_SCORE = 1;
/**
 * `parameters.aggregation_strategy` values accepted (Inference API names). `simple` (the default),
 * `first`, `average` and `max` all give the same entity groups here: wink already returns whole-word
 * spans with one constant score, so there are no sub-words to merge or scores to combine. `none`
 * returns one entry per token of each entity, labelled `B-TYPE` / `I-TYPE`.
 */
export declare const AGGREGATION_STRATEGIES: readonly ["none", "simple", "first", "average", "max"];
/** One of {@link AGGREGATION_STRATEGIES}. */
export type AggregationStrategy = (typeof AGGREGATION_STRATEGIES)[number];
/** An entity span (aggregated output). `text.slice(start, end) === word`. */
export interface EntityGroup {
    entity_group: string;
    score: number;
    word: string;
    start: number;
    end: number;
}
/**
 * One token of an entity (`aggregation_strategy: 'none'`). `index` is wink's 0-based token index in
 * the text (a word index, not a sub-word index as in transformer models).
 */
export interface EntityToken {
    entity: string;
    score: number;
    index: number;
    word: string;
    start: number;
    end: number;
}
/** Reads `parameters.aggregation_strategy`; absent or null → `simple`. Strings are matched case-insensitively. */
export declare function readAggregationStrategy(parameters: Parameters): AggregationStrategy | ModelInputError;
/**
 * Entities of one text. Offsets are UTF-16 code-unit indices into `text` (JavaScript string
 * indices, like `String.prototype.slice`), and `word` is exactly `text.slice(start, end)`. An entity
 * whose tokens cannot be located in `text` (wink never alters token text, so this is a safeguard)
 * is left out rather than given wrong offsets.
 */
export declare function findEntities(nlp: WinkMethods, text: string, strategy: AggregationStrategy): EntityGroup[] | EntityToken[];
/**
 * Recognizes entities in a batch. An item whose inputs is a string gets `[{entity_group, score,
 * word, start, end}, ...]`; an array of strings gets one such list per string. An item with bad
 * inputs, or every item when `parameters.aggregation_strategy` is bad, gets a `ModelInputError`.
 */
export declare function recognizeBatch(nlp: WinkMethods, inputs: unknown[], parameters: Parameters): unknown[];

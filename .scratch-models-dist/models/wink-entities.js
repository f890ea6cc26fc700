import { ModelInputError } from '../errors.js';
import { describeValue } from './describe-value.js';
import { readTextInputs } from './text-inputs.js';
/** Model id of the entity pipeline. */
export const NER_MODEL_ID = 'builtin/ner';
/** Task of the entity pipeline. */
export const NER_TASK = 'token-classification';
/**
 * Score of every entity, 1. wink's entities come from deterministic patterns and carry no
 * confidence, so a constant is the honest value: a match is a match, and a client threshold on
 * `score` never drops one.
 */
export const ENTITY_SCORE = 1;
/**
 * `parameters.aggregation_strategy` values accepted (Inference API names). `simple` (the default),
 * `first`, `average` and `max` all give the same entity groups here: wink already returns whole-word
 * spans with one constant score, so there are no sub-words to merge or scores to combine. `none`
 * returns one entry per token of each entity, labelled `B-TYPE` / `I-TYPE`.
 */
export const AGGREGATION_STRATEGIES = ['none', 'simple', 'first', 'average', 'max'];
/** Reads `parameters.aggregation_strategy`; absent or null → `simple`. Strings are matched case-insensitively. */
export function readAggregationStrategy(parameters) {
    const value = parameters.aggregation_strategy;
    if (value === undefined || value === null)
        return 'simple';
    const strategy = typeof value === 'string' ? value.toLowerCase() : undefined;
    const known = AGGREGATION_STRATEGIES.find((s) => s === strategy);
    if (known === undefined) {
        const got = typeof value === 'string' ? JSON.stringify(value) : describeValue(value);
        return new ModelInputError(`parameters.aggregation_strategy must be one of ${AGGREGATION_STRATEGIES.join(', ')}, got ${got}`);
    }
    return known;
}
/**
 * Entities of one text. Offsets are UTF-16 code-unit indices into `text` (JavaScript string
 * indices, like `String.prototype.slice`), and `word` is exactly `text.slice(start, end)`. An entity
 * whose tokens cannot be located in `text` (wink never alters token text, so this is a safeguard)
 * is left out rather than given wrong offsets.
 */
export function findEntities(nlp, text, strategy) {
    const doc = nlp.readDoc(text);
    const offsets = tokenOffsets(nlp, doc, text);
    const details = doc.entities().out(nlp.its.detail);
    const spans = doc.entities().out(nlp.its.span);
    const groups = [];
    const tokens = [];
    for (let e = 0; e < spans.length; e++) {
        const [first, last] = spans[e];
        const type = details[e].type;
        const located = offsets.slice(first, last + 1);
        if (located.some((o) => o === undefined))
            continue;
        if (strategy === 'none') {
            for (let i = first; i <= last; i++) {
                const [start, end] = offsets[i];
                tokens.push({ entity: `${i === first ? 'B' : 'I'}-${type}`, score: ENTITY_SCORE, index: i, word: text.slice(start, end), start, end });
            }
        }
        else {
            const start = offsets[first][0];
            const end = offsets[last][1];
            groups.push({ entity_group: type, score: ENTITY_SCORE, word: text.slice(start, end), start, end });
        }
    }
    return strategy === 'none' ? tokens : groups;
}
/**
 * Recognizes entities in a batch. An item whose inputs is a string gets `[{entity_group, score,
 * word, start, end}, ...]`; an array of strings gets one such list per string. An item with bad
 * inputs, or every item when `parameters.aggregation_strategy` is bad, gets a `ModelInputError`.
 */
export function recognizeBatch(nlp, inputs, parameters) {
    const strategy = readAggregationStrategy(parameters);
    if (strategy instanceof Error)
        return inputs.map(() => strategy);
    return inputs.map((item) => {
        const read = readTextInputs(item, NER_TASK);
        if (read instanceof Error)
            return read;
        const lists = read.texts.map((text) => findEntities(nlp, text, strategy));
        return read.single ? lists[0] : lists;
    });
}
/**
 * [start, end) of every token in `text`. wink keeps each token's text and the whitespace before it,
 * so offsets are a running sum; where the whitespace count disagrees (unusual spaces), the token is
 * searched from the cursor instead, so an offset is never guessed. `undefined` = not found.
 */
function tokenOffsets(nlp, doc, text) {
    const values = doc.tokens().out();
    const spaces = doc.tokens().out(nlp.its.precedingSpaces);
    const offsets = [];
    let cursor = 0;
    for (let i = 0; i < values.length; i++) {
        const value = values[i];
        let start = cursor + (spaces[i]?.length ?? 0);
        if (!text.startsWith(value, start))
            start = text.indexOf(value, cursor);
        if (start === -1) {
            offsets.push(undefined);
            continue;
        }
        offsets.push([start, start + value.length]);
        cursor = start + value.length;
    }
    return offsets;
}
//# sourceMappingURL=wink-entities.js.map
/**
 * Validation of text `inputs` shared by the text pipelines: an item's inputs is one string or a
 * non-empty array of strings, as in the Inference API.
 */
import { ModelInputError } from '../errors.js';
import { describeValue as describe } from './describe-value.js';
/**
 * Reads one item's `inputs` as texts. Returns a `ModelInputError` naming the expected type, task and
 * what was received when `inputs` is not a string or a non-empty array of strings. An empty string
 * is accepted (it has no sentiment and no entities), like the Inference API.
 */
export function readTextInputs(inputs, task) {
    if (typeof inputs === 'string')
        return { texts: [inputs], single: true };
    if (Array.isArray(inputs)) {
        if (inputs.length === 0) {
            return new ModelInputError(`${task} expects inputs to be a string or a non-empty array of strings, got an empty array`);
        }
        const bad = inputs.findIndex((text) => typeof text !== 'string');
        if (bad !== -1) {
            return new ModelInputError(`${task} expects inputs to be a string or a non-empty array of strings, got ${describe(inputs[bad])} at inputs[${bad}]`);
        }
        return { texts: inputs, single: false };
    }
    return new ModelInputError(`${task} expects inputs to be a string or a non-empty array of strings, got ${describe(inputs)}`);
}
//# sourceMappingURL=text-inputs.js.map
/**
 * Validation of text `inputs` shared by the text pipelines: an item's inputs is one string or a
 * non-empty array of strings, as in the Inference API.
 */
import { ModelInputError } from '../errors.js';
/** An item's texts, and whether the item sent a single string (which changes some output shapes). */
export interface TextInputs {
    texts: string[];
    single: boolean;
}
/**
 * Reads one item's `inputs` as texts. Returns a `ModelInputError` naming the expected type, task and
 * what was received when `inputs` is not a string or a non-empty array of strings. An empty string
 * is accepted (it has no sentiment and no entities), like the Inference API.
 */
export declare function readTextInputs(inputs: unknown, task: string): TextInputs | ModelInputError;

/** Short descriptions of received values for error messages. */
/**
 * Describes a JSON value's kind for an error message: `null`, `an array`, `an object`, `a string`,
 * `number 42`, `boolean true`, `undefined`. Never echoes a string's or object's content, which may be
 * large or private.
 */
export declare function describeValue(value: unknown): string;

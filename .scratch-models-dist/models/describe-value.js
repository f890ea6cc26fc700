/** Short descriptions of received values for error messages. */
/**
 * Describes a JSON value's kind for an error message: `null`, `an array`, `an object`, `a string`,
 * `number 42`, `boolean true`, `undefined`. Never echoes a string's or object's content, which may be
 * large or private.
 */
export function describeValue(value) {
    if (value === null)
        return 'null';
    if (value === undefined)
        return 'undefined';
    if (Array.isArray(value))
        return 'an array';
    if (typeof value === 'object')
        return 'an object';
    if (typeof value === 'string')
        return 'a string';
    if (typeof value === 'number' || typeof value === 'boolean')
        return `${typeof value} ${String(value)}`;
    return typeof value;
}
//# sourceMappingURL=describe-value.js.map
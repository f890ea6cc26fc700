/**
 * Wire messages of the websocket stream (docs/protocol.md): types, parsing with validation, and
 * serialization. Pure functions, no I/O, so they are tested directly and shared by server and client.
 */
import { configure } from 'safe-stable-stringify';
import { AuthenticationError, InferenceStreamError, InvalidJsonError, InvalidPayloadError, LimitExceededError, } from './errors.js';
/** Websocket subprotocol that turns on the v1 extensions (acks, resume, several messages per frame). */
export const SUBPROTOCOL_V1 = 'inference-stream.v1';
/** Longest accepted item id, in characters. */
export const MAX_ID_LENGTH = 256;
/** Decodes a text or binary websocket message to a string (the original clients send bytes). */
export function frameText(data) {
    if (typeof data === 'string')
        return data;
    if (Array.isArray(data))
        return Buffer.concat(data).toString('utf8');
    if (data instanceof ArrayBuffer)
        return Buffer.from(data).toString('utf8');
    return data.toString('utf8');
}
/**
 * Parses the first frame, `Bearer <token>`.
 * @throws {AuthenticationError} when the frame is not of that form.
 */
export function parseBearer(text) {
    const m = /^Bearer[ \t]+(\S+)\s*$/.exec(text);
    if (!m) {
        const shown = text.length > 40 ? `${text.slice(0, 40)}…` : text;
        throw new AuthenticationError(`First frame must be "Bearer <token>", got ${JSON.stringify(shown)}`);
    }
    return m[1];
}
function isPlainObject(v) {
    return typeof v === 'object' && v !== null && !Array.isArray(v);
}
function parseIds(msg, type) {
    const ids = msg.ids;
    if (!Array.isArray(ids) || !ids.every((x) => typeof x === 'string')) {
        return { kind: 'error', error: new InvalidPayloadError(`"${type}" message needs "ids": an array of strings`) };
    }
    return type === 'ack' ? { kind: 'ack', ids } : { kind: 'resume', ids };
}
function parseMessage(msg, v1, limits, checkSize) {
    if (!isPlainObject(msg)) {
        return { kind: 'error', error: new InvalidPayloadError('Payload must be a JSON object with "inputs"') };
    }
    const type = msg.type;
    if (type === 'ack' || type === 'resume') {
        if (!v1) {
            return {
                kind: 'error',
                error: new InvalidPayloadError(`"${type}" messages need websocket subprotocol ${SUBPROTOCOL_V1}`),
            };
        }
        return parseIds(msg, type);
    }
    let id;
    if (msg.id !== undefined && msg.id !== null) {
        if (typeof msg.id !== 'string' || msg.id.length === 0 || msg.id.length > MAX_ID_LENGTH) {
            return {
                kind: 'error',
                error: new InvalidPayloadError(`"id" must be a non-empty string of at most ${MAX_ID_LENGTH} characters`),
            };
        }
        id = msg.id;
    }
    if (msg.inputs === undefined || msg.inputs === null) {
        return { kind: 'error', id, error: new InvalidPayloadError('Payload is missing "inputs"') };
    }
    const parameters = msg.parameters;
    if (parameters !== undefined && parameters !== null && !isPlainObject(parameters)) {
        return { kind: 'error', id, error: new InvalidPayloadError('"parameters" must be a JSON object') };
    }
    const options = msg.options;
    if (options !== undefined && options !== null && !isPlainObject(options)) {
        return { kind: 'error', id, error: new InvalidPayloadError('"options" must be a JSON object') };
    }
    // Only re-measure inputs when the frame alone could hold an oversized one: the common small
    // frame is never serialized twice.
    if (checkSize) {
        const bytes = Buffer.byteLength(JSON.stringify(msg.inputs));
        if (bytes > limits.maxInputsBytes) {
            return {
                kind: 'error',
                id,
                error: new LimitExceededError(`"inputs" is ${bytes} bytes, over the limit of ${limits.maxInputsBytes}`),
            };
        }
    }
    const payload = { id, inputs: msg.inputs };
    if (parameters)
        payload.parameters = parameters;
    if (options)
        payload.options = options;
    return { kind: 'payload', payload };
}
/**
 * Parses one client frame (after the Bearer frame). Never throws: every problem becomes an
 * `error` entry so one bad message never ends the stream. A v1 frame may hold a JSON array of
 * messages; a legacy frame holds exactly one payload.
 */
export function parseClientFrame(text, v1, limits) {
    let value;
    try {
        value = JSON.parse(text);
    }
    catch (err) {
        return [{ kind: 'error', error: new InvalidJsonError(`Frame is not valid JSON: ${err.message}`) }];
    }
    const checkSize = Buffer.byteLength(text) > limits.maxInputsBytes;
    if (!Array.isArray(value))
        return [parseMessage(value, v1, limits, checkSize)];
    if (!v1) {
        return [
            {
                kind: 'error',
                error: new InvalidPayloadError(`Several payloads in one frame need websocket subprotocol ${SUBPROTOCOL_V1}`),
            },
        ];
    }
    if (value.length > limits.maxItemsPerFrame) {
        const error = new LimitExceededError(`Frame holds ${value.length} messages, over the limit of ${limits.maxItemsPerFrame}`);
        // Answer every recoverable id so the client does not wait for them forever.
        const entries = [];
        for (const m of value) {
            if (isPlainObject(m) && typeof m.id === 'string')
                entries.push({ kind: 'error', id: m.id, error });
        }
        return entries.length > 0 ? entries : [{ kind: 'error', error }];
    }
    return value.map((m) => parseMessage(m, v1, limits, checkSize));
}
const stable = configure({ deterministic: true });
/** A stable key of a parameters object (sorted keys) so equal parameters batch together. */
export function parametersKey(parameters) {
    if (!parameters)
        return '';
    for (const _ in parameters)
        return stable(parameters) ?? '';
    return '';
}
/** A `results` message. */
export function resultMessage(id, outputs) {
    return { type: 'results', id, outputs };
}
/** A `status` message that reports an error, with the error's code. */
export function errorStatus(err) {
    if (err instanceof InferenceStreamError)
        return { type: 'status', message: err.message, code: err.code };
    return { type: 'status', message: err.error, code: err.code };
}
//# sourceMappingURL=protocol.js.map
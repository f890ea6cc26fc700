/**
 * Error classes of inference-stream. Every error has a stable `code` (listed in docs/errors.md)
 * and a `name` equal to its class name; tests and callers match on `code`, never on text.
 */
/** Base class of every error this library throws or emits. */
export class InferenceStreamError extends Error {
    /** Stable machine-readable code, e.g. `ERR_INVALID_OPTION`. */
    code;
    constructor(message, code = 'ERR_INFERENCE_STREAM', options) {
        super(message, options);
        this.name = 'InferenceStreamError';
        this.code = code;
    }
}
/** An option passed to a constructor or function is missing or of the wrong kind. */
export class InvalidOptionError extends InferenceStreamError {
    constructor(message) {
        super(message, 'ERR_INVALID_OPTION');
        this.name = 'InvalidOptionError';
    }
}
/** A websocket frame or HTTP body is not valid JSON. */
export class InvalidJsonError extends InferenceStreamError {
    constructor(message) {
        super(message, 'ERR_INVALID_JSON');
        this.name = 'InvalidJsonError';
    }
}
/** A payload is valid JSON but not a valid message: missing `inputs`, wrong field types, unknown `type`. */
export class InvalidPayloadError extends InferenceStreamError {
    constructor(message) {
        super(message, 'ERR_INVALID_PAYLOAD');
        this.name = 'InvalidPayloadError';
    }
}
/** A frame, a payload's `inputs` or a frame's item count is over the server's limit. */
export class LimitExceededError extends InferenceStreamError {
    constructor(message) {
        super(message, 'ERR_LIMIT_EXCEEDED');
        this.name = 'LimitExceededError';
    }
}
/** The first frame was not `Bearer <token>`, or the token is not accepted. */
export class AuthenticationError extends InferenceStreamError {
    constructor(message) {
        super(message, 'ERR_AUTHENTICATION');
        this.name = 'AuthenticationError';
    }
}
/** The requested model id is not served here. */
export class UnknownModelError extends InferenceStreamError {
    constructor(message) {
        super(message, 'ERR_UNKNOWN_MODEL');
        this.name = 'UnknownModelError';
    }
}
/** A model rejected an item's inputs or parameters (wrong type for its task, bad parameter). */
export class ModelInputError extends InferenceStreamError {
    constructor(message) {
        super(message, 'ERR_MODEL_INPUT');
        this.name = 'ModelInputError';
    }
}
/** A model failed while running a batch (a crash of the model, not of one item's inputs). */
export class ModelError extends InferenceStreamError {
    constructor(message, options) {
        super(message, 'ERR_MODEL', options);
        this.name = 'ModelError';
    }
}
/** A bounded queue (e.g. a worker pool's task queue) is full; the caller may retry later. */
export class OverloadedError extends InferenceStreamError {
    constructor(message) {
        super(message, 'ERR_OVERLOADED');
        this.name = 'OverloadedError';
    }
}
/** The server is shutting down and no longer accepts work. */
export class ShuttingDownError extends InferenceStreamError {
    constructor(message = 'Server is shutting down') {
        super(message, 'ERR_SHUTTING_DOWN');
        this.name = 'ShuttingDownError';
    }
}
/** Turns any thrown value into the wire error body `{"error", "code"}`. */
export function toWireError(err) {
    if (err instanceof InferenceStreamError)
        return { error: err.message, code: err.code };
    if (err instanceof Error)
        return { error: err.message, code: 'ERR_MODEL' };
    return { error: String(err), code: 'ERR_MODEL' };
}
//# sourceMappingURL=errors.js.map
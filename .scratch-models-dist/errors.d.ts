/**
 * Error classes of inference-stream. Every error has a stable `code` (listed in docs/errors.md)
 * and a `name` equal to its class name; tests and callers match on `code`, never on text.
 */
/** Base class of every error this library throws or emits. */
export declare class InferenceStreamError extends Error {
    /** Stable machine-readable code, e.g. `ERR_INVALID_OPTION`. */
    readonly code: string;
    constructor(message: string, code?: string, options?: {
        cause?: unknown;
    });
}
/** An option passed to a constructor or function is missing or of the wrong kind. */
export declare class InvalidOptionError extends InferenceStreamError {
    constructor(message: string);
}
/** A websocket frame or HTTP body is not valid JSON. */
export declare class InvalidJsonError extends InferenceStreamError {
    constructor(message: string);
}
/** A payload is valid JSON but not a valid message: missing `inputs`, wrong field types, unknown `type`. */
export declare class InvalidPayloadError extends InferenceStreamError {
    constructor(message: string);
}
/** A frame, a payload's `inputs` or a frame's item count is over the server's limit. */
export declare class LimitExceededError extends InferenceStreamError {
    constructor(message: string);
}
/** The first frame was not `Bearer <token>`, or the token is not accepted. */
export declare class AuthenticationError extends InferenceStreamError {
    constructor(message: string);
}
/** The requested model id is not served here. */
export declare class UnknownModelError extends InferenceStreamError {
    constructor(message: string);
}
/** A model rejected an item's inputs or parameters (wrong type for its task, bad parameter). */
export declare class ModelInputError extends InferenceStreamError {
    constructor(message: string);
}
/** A model failed while running a batch (a crash of the model, not of one item's inputs). */
export declare class ModelError extends InferenceStreamError {
    constructor(message: string, options?: {
        cause?: unknown;
    });
}
/** A bounded queue (e.g. a worker pool's task queue) is full; the caller may retry later. */
export declare class OverloadedError extends InferenceStreamError {
    constructor(message: string);
}
/** The server is shutting down and no longer accepts work. */
export declare class ShuttingDownError extends InferenceStreamError {
    constructor(message?: string);
}
/** Body of an error as it travels on the wire: the classic API's `{"error": ...}` plus our `code`. */
export interface WireError {
    error: string;
    code?: string;
}
/** Turns any thrown value into the wire error body `{"error", "code"}`. */
export declare function toWireError(err: unknown): WireError;

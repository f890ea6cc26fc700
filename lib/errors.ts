/**
 * Error classes of inference-stream. Every error has a stable `code` (listed in docs/errors.md)
 * and a `name` equal to its class name; tests and callers match on `code`, never on text.
 */

/** Base class of every error this library throws or emits. */
export class InferenceStreamError extends Error {
  /** Stable machine-readable code, e.g. `ERR_INVALID_OPTION`. */
  readonly code: string
  constructor(message: string, code = 'ERR_INFERENCE_STREAM', options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'InferenceStreamError'
    this.code = code
  }
}

/** An option passed to a constructor or function is missing or of the wrong kind. */
export class InvalidOptionError extends InferenceStreamError {
  constructor(message: string) {
    super(message, 'ERR_INVALID_OPTION')
    this.name = 'InvalidOptionError'
  }
}

/** A websocket frame or HTTP body is not valid JSON. */
export class InvalidJsonError extends InferenceStreamError {
  constructor(message: string) {
    super(message, 'ERR_INVALID_JSON')
    this.name = 'InvalidJsonError'
  }
}

/** A payload is valid JSON but not a valid message: wrong field types, unknown `type` (no `inputs` at all is a `MissingInputError`). */
export class InvalidPayloadError extends InferenceStreamError {
  constructor(message: string) {
    super(message, 'ERR_INVALID_PAYLOAD')
    this.name = 'InvalidPayloadError'
  }
}

/** A frame, a payload's `inputs` or a frame's item count is over the server's limit. */
export class LimitExceededError extends InferenceStreamError {
  constructor(message: string) {
    super(message, 'ERR_LIMIT_EXCEEDED')
    this.name = 'LimitExceededError'
  }
}

/** The first frame was not `Bearer <token>`, or the token is not accepted. */
export class AuthenticationError extends InferenceStreamError {
  constructor(message: string) {
    super(message, 'ERR_AUTHENTICATION')
    this.name = 'AuthenticationError'
  }
}

/** The requested model id is not served here. */
export class UnknownModelError extends InferenceStreamError {
  constructor(message: string) {
    super(message, 'ERR_UNKNOWN_MODEL')
    this.name = 'UnknownModelError'
  }
}

/** A model rejected an item's inputs or parameters (wrong type for its task, bad parameter). */
export class ModelInputError extends InferenceStreamError {
  constructor(message: string) {
    super(message, 'ERR_MODEL_INPUT')
    this.name = 'ModelInputError'
  }
}

/** A model failed while running a batch (a crash of the model, not of one item's inputs). */
export class ModelError extends InferenceStreamError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'ERR_MODEL', options)
    this.name = 'ModelError'
  }
}

/** The model is loading and the request did not ask to wait (`options.wait_for_model`). HTTP 503 with `estimated_time`. */
export class ModelLoadingError extends InferenceStreamError {
  /** Seconds until the model is expected to be ready. */
  readonly estimatedTime: number
  constructor(message: string, estimatedTime: number) {
    super(message, 'ERR_MODEL_LOADING')
    this.name = 'ModelLoadingError'
    this.estimatedTime = estimatedTime
  }
}

/** The model cannot be loaded: missing or broken files, a task this server cannot run. HTTP 500. */
export class ModelLoadError extends InferenceStreamError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'ERR_MODEL_LOAD', options)
    this.name = 'ModelLoadError'
  }
}

/** `gpu` compute was asked for and this machine cannot run the model on a GPU. */
export class DeviceUnavailableError extends InferenceStreamError {
  constructor(message: string) {
    super(message, 'ERR_DEVICE_UNAVAILABLE')
    this.name = 'DeviceUnavailableError'
  }
}

/** A bounded queue (e.g. a worker pool's task queue) is full; the caller may retry later. */
export class OverloadedError extends InferenceStreamError {
  constructor(message: string) {
    super(message, 'ERR_OVERLOADED')
    this.name = 'OverloadedError'
  }
}

/** The server is shutting down and no longer accepts work. */
export class ShuttingDownError extends InferenceStreamError {
  constructor(message = 'Server is shutting down') {
    super(message, 'ERR_SHUTTING_DOWN')
    this.name = 'ShuttingDownError'
  }
}

/** The operation was aborted through an `AbortSignal`. Code `ABORT_ERR`, as Node's own AbortError. */
export class AbortError extends InferenceStreamError {
  constructor(message = 'The operation was aborted', options?: { cause?: unknown }) {
    super(message, 'ABORT_ERR', options)
    this.name = 'AbortError'
  }
}

/** The connection to the server was lost and could not be re-established within the reconnect budget. */
export class ConnectionLostError extends InferenceStreamError {
  /** Items sent and not answered when the client gave up. */
  readonly unanswered: number
  constructor(message: string, unanswered = 0, options?: { cause?: unknown }) {
    super(message, 'ERR_CONNECTION_LOST', options)
    this.name = 'ConnectionLostError'
    this.unanswered = unanswered
  }
}

/** One item failed on the server; `remoteCode` is the code the server gave (e.g. `ERR_MODEL_INPUT`). */
export class InferenceItemError extends InferenceStreamError {
  /** The item's id. */
  readonly id: string
  /** The server's error code for the item, when it sent one. */
  readonly remoteCode: string | undefined
  constructor(message: string, id = '', remoteCode?: string) {
    super(message, 'ERR_ITEM_FAILED')
    this.name = 'InferenceItemError'
    this.id = id
    this.remoteCode = remoteCode
  }
}

/** The server sent something the client cannot use (not JSON, unknown message type). */
export class ProtocolError extends InferenceStreamError {
  constructor(message: string) {
    super(message, 'ERR_PROTOCOL')
    this.name = 'ProtocolError'
  }
}

/** A checkpoint file cannot be used: written for another model, parameters or input, or damaged. */
export class CheckpointError extends InferenceStreamError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'ERR_CHECKPOINT', options)
    this.name = 'CheckpointError'
  }
}

/** An input file cannot be read: missing, a directory, unreadable, or not what its format says. */
export class InputFileError extends InferenceStreamError {
  /** The file, when the input is a file. */
  readonly path: string | undefined
  constructor(message: string, path?: string, options?: { cause?: unknown }) {
    super(message, 'ERR_INPUT_FILE', options)
    this.name = 'InputFileError'
    this.path = path
  }
}

/** An output file cannot be created or written (missing folder, no permission, disk full). */
export class OutputFileError extends InferenceStreamError {
  /** The file, when the output is a file. */
  readonly path: string | undefined
  constructor(message: string, path?: string, options?: { cause?: unknown }) {
    super(message, 'ERR_OUTPUT_FILE', options)
    this.name = 'OutputFileError'
    this.path = path
  }
}

/** One record of an input is malformed (a broken CSV row, a JSONL line that is not JSON); the message names its line. */
export class BadRecordError extends InferenceStreamError {
  /** 1-based line of the input where the bad record starts. */
  readonly line: number | undefined
  /** The input file, when the input is a file. */
  readonly path: string | undefined
  /** What is wrong, without where (`unclosed quote: …`, `expected 3 columns, got 5`); default: the message. */
  readonly reason: string
  constructor(message: string, details: { line?: number; path?: string; reason?: string; cause?: unknown } = {}) {
    super(message, 'ERR_BAD_RECORD', { cause: details.cause })
    this.name = 'BadRecordError'
    this.line = details.line
    this.path = details.path
    this.reason = details.reason ?? message
  }
}

/** A file's format cannot be told from its extension, or `format` names one that is not supported. */
export class UnknownFormatError extends InferenceStreamError {
  constructor(message: string) {
    super(message, 'ERR_UNKNOWN_FORMAT')
    this.name = 'UnknownFormatError'
  }
}

/**
 * An item has no input: a payload without `inputs` or with `inputs: null`, a record without a value
 * in the column chosen as the model's input. That item fails alone. An empty string is an input.
 */
export class MissingInputError extends InferenceStreamError {
  /** The input column. */
  readonly column: string | undefined
  constructor(message: string, column?: string) {
    super(message, 'ERR_MISSING_INPUT')
    this.name = 'MissingInputError'
    this.column = column
  }
}

/** A value does not fit the type its output column was given (inferred from the first rows, or by `schema`). */
export class SchemaMismatchError extends InferenceStreamError {
  /** The column. */
  readonly column: string | undefined
  constructor(message: string, column?: string) {
    super(message, 'ERR_SCHEMA_MISMATCH')
    this.name = 'SchemaMismatchError'
    this.column = column
  }
}

/** A name given for an output dataset is not valid (segments of `[A-Za-z0-9._-]`, see docs/protocol.md "Output datasets"). */
export class InvalidDatasetNameError extends InferenceStreamError {
  constructor(message: string) {
    super(message, 'ERR_INVALID_DATASET_NAME')
    this.name = 'InvalidDatasetNameError'
  }
}

/** A file path inside a dataset (a committed file, a `replace` prefix, a requested file) is not valid: empty, absolute, with `.`, `..` or `.git` segments. */
export class InvalidDatasetPathError extends InferenceStreamError {
  constructor(message: string) {
    super(message, 'ERR_INVALID_DATASET_PATH')
    this.name = 'InvalidDatasetPathError'
  }
}

/**
 * No dataset of that name exists: an output dataset, or an input dataset of the server's datasets
 * folder, one of its configs or one of their splits (the message names what is missing and lists
 * what there is).
 */
export class DatasetNotFoundError extends InferenceStreamError {
  constructor(message: string) {
    super(message, 'ERR_DATASET_NOT_FOUND')
    this.name = 'DatasetNotFoundError'
  }
}

/** A revision of an output dataset is neither a branch, a tag nor a commit sha of it. */
export class RevisionNotFoundError extends InferenceStreamError {
  constructor(message: string) {
    super(message, 'ERR_REVISION_NOT_FOUND')
    this.name = 'RevisionNotFoundError'
  }
}

/** An output dataset has no such file at the requested revision. */
export class EntryNotFoundError extends InferenceStreamError {
  constructor(message: string) {
    super(message, 'ERR_ENTRY_NOT_FOUND')
    this.name = 'EntryNotFoundError'
  }
}

/** A `Range` request asks for bytes a file does not have (it starts at or past the file's end). */
export class RangeNotSatisfiableError extends InferenceStreamError {
  constructor(message: string) {
    super(message, 'ERR_RANGE_NOT_SATISFIABLE')
    this.name = 'RangeNotSatisfiableError'
  }
}

/** A commit into an output dataset cannot be made: a source file is missing or changed while copied, a path is given twice, or is both a file and a folder. */
export class DatasetCommitError extends InferenceStreamError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'ERR_DATASET_COMMIT', options)
    this.name = 'DatasetCommitError'
  }
}

/** A split of an input dataset has files of more than one format, or both a single file and shards. */
export class DatasetLayoutError extends InferenceStreamError {
  constructor(message: string) {
    super(message, 'ERR_DATASET_LAYOUT')
    this.name = 'DatasetLayoutError'
  }
}

/** No bulk job of that id exists. */
export class JobNotFoundError extends InferenceStreamError {
  constructor(message: string) {
    super(message, 'ERR_JOB_NOT_FOUND')
    this.name = 'JobNotFoundError'
  }
}

/**
 * A bulk route (`/bulk/run`, `/bulk/status`, `/bulk/jobs`, uploads) on a server that runs no bulk
 * jobs: one started without `dataDir` (`serve` without `--data-dir`). HTTP 501, not a 404: the
 * route exists, this server is not set up for it.
 */
export class BulkDisabledError extends InferenceStreamError {
  constructor(message: string) {
    super(message, 'ERR_BULK_DISABLED')
    this.name = 'BulkDisabledError'
  }
}

/** The job store's database cannot be used: not a SQLite file, written by a newer version, unwritable. */
export class JobStoreError extends InferenceStreamError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'ERR_JOB_STORE', options)
    this.name = 'JobStoreError'
  }
}

/**
 * The state store's SQLite file (`SqliteStateBackend`, `serve --data-dir`) cannot be opened or used:
 * not a SQLite database, another application's file, written by a newer schema version, its folder
 * cannot be created; or the Redis keys under a prefix (`RedisStateBackend.checkLayout`) have
 * another version's layout.
 */
export class StateStoreError extends InferenceStreamError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'ERR_STATE_STORE', options)
    this.name = 'StateStoreError'
  }
}

/**
 * An HTTP request of a client (`BulkClient`, `DatasetBulk`) failed: the server answered with an
 * error status, or could not be reached (`status` undefined). The message carries the server's
 * `error` text; `remoteCode` is its `code` (e.g. `ERR_INVALID_PAYLOAD`, `ERR_JOB_NOT_FOUND`).
 */
export class HttpError extends InferenceStreamError {
  /** HTTP status of the answer; undefined when no answer came (connection refused, reset, DNS). */
  readonly status: number | undefined
  /** The server's error code, when its body had one. */
  readonly remoteCode: string | undefined
  /** Request method and URL, e.g. `POST http://127.0.0.1:8080/bulk/run/cpu/builtin/sentiment`. */
  readonly request: string | undefined
  constructor(message: string, details: { status?: number; remoteCode?: string; request?: string; cause?: unknown } = {}) {
    super(message, 'ERR_HTTP', details.cause === undefined ? undefined : { cause: details.cause })
    this.name = 'HttpError'
    this.status = details.status
    this.remoteCode = details.remoteCode
    this.request = details.request
  }
}

/** What a bulk job error knows of its job. */
export interface BulkJobErrorDetails {
  /** The job id. */
  jobId?: string
  /** The job's own `error` text, as its status reports it. */
  jobError?: string | null
  /** The job's last status (`GET /bulk/status/{jobid}`'s `status` object). */
  jobStatus?: Record<string, unknown>
}

/** A bulk job ended in state `failed`; `jobError` is the job's error as the server recorded it. */
export class BulkJobFailedError extends InferenceStreamError {
  readonly jobId: string | undefined
  readonly jobError: string | null | undefined
  readonly jobStatus: Record<string, unknown> | undefined
  constructor(message: string, details: BulkJobErrorDetails = {}) {
    super(message, 'ERR_JOB_FAILED')
    this.name = 'BulkJobFailedError'
    this.jobId = details.jobId
    this.jobError = details.jobError
    this.jobStatus = details.jobStatus
  }
}

/** A bulk job ended in state `cancelled` (`POST /bulk/cancel/{jobid}`), so it has no outputs to read. */
export class BulkJobCancelledError extends InferenceStreamError {
  readonly jobId: string | undefined
  readonly jobError: string | null | undefined
  readonly jobStatus: Record<string, unknown> | undefined
  constructor(message: string, details: BulkJobErrorDetails = {}) {
    super(message, 'ERR_JOB_CANCELLED')
    this.name = 'BulkJobCancelledError'
    this.jobId = details.jobId
    this.jobError = details.jobError
    this.jobStatus = details.jobStatus
  }
}

/** A bulk job cannot do what was asked in its state (e.g. cancel a job that already ended). HTTP 409. */
export class JobStateError extends InferenceStreamError {
  constructor(message: string) {
    super(message, 'ERR_JOB_STATE')
    this.name = 'JobStateError'
  }
}

/**
 * An item reuses an id its owner already sent with other `inputs` or `parameters` (the
 * idempotency-key rule): the item is not run and not billed, and never gets the other item's result.
 */
export class IdConflictError extends InferenceStreamError {
  constructor(message: string) {
    super(message, 'ERR_ID_CONFLICT')
    this.name = 'IdConflictError'
  }
}

/** A batch ran past the server's `batchTimeoutMs`: its items fail with this, the worker is freed. */
export class BatchTimeoutError extends InferenceStreamError {
  constructor(message: string) {
    super(message, 'ERR_BATCH_TIMEOUT')
    this.name = 'BatchTimeoutError'
  }
}

/**
 * An item was leased to workers the server's delivery limit of times and never finished (each
 * worker died or hung on it): it fails with this instead of running again forever.
 */
export class DeliveryLimitError extends InferenceStreamError {
  constructor(message: string) {
    super(message, 'ERR_DELIVERY_LIMIT')
    this.name = 'DeliveryLimitError'
  }
}

/** A checkpoint file is in use by another run (its lock is held by a live process). */
export class CheckpointLockedError extends InferenceStreamError {
  constructor(message: string) {
    super(message, 'ERR_CHECKPOINT_LOCKED')
    this.name = 'CheckpointLockedError'
  }
}

/** Body of an error as it travels on the wire: the classic API's `{"error": ...}` plus our `code`. */
export interface WireError {
  error: string
  code?: string
}

/** Turns any thrown value into the wire error body `{"error", "code"}`. */
export function toWireError(err: unknown): WireError {
  if (err instanceof InferenceStreamError) return { error: err.message, code: err.code }
  if (err instanceof Error) return { error: err.message, code: 'ERR_MODEL' }
  return { error: String(err), code: 'ERR_MODEL' }
}

/**
 * A feature needs an optional package that is not installed (`@huggingface/transformers` for Hub
 * models, `better-sqlite3` for bulk jobs). The message names the package and the command that
 * adds it.
 */
export class MissingDependencyError extends InferenceStreamError {
  /** The npm package to install. */
  readonly packageName: string
  constructor(message: string, packageName: string, options?: { cause?: unknown }) {
    super(message, 'ERR_MISSING_DEPENDENCY', options)
    this.name = 'MissingDependencyError'
    this.packageName = packageName
  }
}

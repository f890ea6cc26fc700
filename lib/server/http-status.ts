/**
 * The HTTP status of every error code the server answers with, on every route (classic inference,
 * bulk jobs, uploads, output datasets): one table, so one failure never has two statuses.
 * docs/errors.md lists the same statuses.
 */
const STATUS: Readonly<Record<string, number>> = {
  ERR_INVALID_JSON: 400,
  ERR_INVALID_PAYLOAD: 400,
  ERR_INVALID_DATASET_NAME: 400,
  ERR_INVALID_DATASET_PATH: 400,
  ERR_INVALID_OPTION: 400,
  ERR_MISSING_INPUT: 400,
  ERR_MODEL_INPUT: 400,
  ERR_DEVICE_UNAVAILABLE: 400,
  ERR_UNKNOWN_FORMAT: 400,
  ERR_BAD_RECORD: 400,
  ERR_SCHEMA_MISMATCH: 400,
  ERR_AUTHENTICATION: 401,
  ERR_UNKNOWN_MODEL: 404,
  ERR_DATASET_NOT_FOUND: 404,
  ERR_REVISION_NOT_FOUND: 404,
  ERR_ENTRY_NOT_FOUND: 404,
  ERR_JOB_NOT_FOUND: 404,
  ERR_JOB_STATE: 409,
  // Too large, whatever was: a body, one item's inputs, an upload.
  ERR_LIMIT_EXCEEDED: 413,
  ERR_RANGE_NOT_SATISFIABLE: 416,
  ERR_ID_CONFLICT: 422,
  // The server lacks an optional package the request needs (a Hub model without transformers.js).
  ERR_MISSING_DEPENDENCY: 501,
  // A bulk route on a server started without a data folder: the route exists, this server runs no jobs.
  ERR_BULK_DISABLED: 501,
  ERR_OVERLOADED: 503,
  ERR_SHUTTING_DOWN: 503,
  ERR_MODEL_LOADING: 503,
  ERR_BATCH_TIMEOUT: 504,
}

/** The HTTP status of an error code (500 for a code not in the table: a failure of the server). */
export function httpStatusOf(code: string | undefined): number {
  return (code !== undefined && STATUS[code]) || 500
}

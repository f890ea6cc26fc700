import { InputFileError, InferenceStreamError, OutputFileError } from '../errors.js'

// Plain words for the errno codes a user meets with files; the code itself stays in the message.
const REASONS: Record<string, string> = {
  ENOENT: 'no such file or directory',
  EISDIR: 'it is a directory',
  ENOTDIR: 'a part of the path is not a directory',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  ENOSPC: 'no space left on the device',
  EMFILE: 'too many open files',
  EROFS: 'read-only file system',
}

function reasonOf(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | null)?.code
  if (typeof code === 'string' && REASONS[code]) return `${REASONS[code]} (${code})`
  if (err instanceof Error) return err.message
  return String(err)
}

/**
 * Wraps a failure to open or read an input file as `InputFileError` naming the path. Errors of this
 * library (a `BadRecordError` in strict mode, an `InputFileError` already) pass through unchanged.
 */
export function inputFileError(path: string | undefined, err: unknown, what = 'read input file'): Error {
  if (err instanceof InferenceStreamError) return err
  if (path === undefined) return err instanceof Error ? err : new InputFileError(String(err))
  return new InputFileError(`Cannot ${what} ${JSON.stringify(path)}: ${reasonOf(err)}`, path, { cause: err })
}

/** Wraps a failure to create, write or rename an output file as `OutputFileError` naming the path. */
export function outputFileError(path: string | undefined, err: unknown, what = 'write output file'): Error {
  if (err instanceof InferenceStreamError) return err
  if (path === undefined) return err instanceof Error ? err : new OutputFileError(String(err))
  return new OutputFileError(`Cannot ${what} ${JSON.stringify(path)}: ${reasonOf(err)}`, path, { cause: err })
}

import { InvalidOptionError } from '../errors.js'

// Small checks shared by the readers and writers: each names the option and what it expects
// (DESIGN section 7), so a wrong option never surfaces later as an odd stream error.

/** Throws unless `options` is undefined or a plain object. */
export function checkOptionsObject(options: unknown, what: string): void {
  if (options !== undefined && (typeof options !== 'object' || options === null || Array.isArray(options))) {
    throw new InvalidOptionError(`${what} options must be an object`)
  }
}

/** Throws unless `value` is one of `allowed`. */
export function checkOneOf(name: string, value: unknown, allowed: readonly unknown[]): void {
  if (!allowed.includes(value)) {
    throw new InvalidOptionError(`Option "${name}" must be ${allowed.map((a) => JSON.stringify(a)).join(' or ')}, got ${JSON.stringify(value)}`)
  }
}

/** Throws unless `value` is an integer >= `min`. */
export function checkInteger(name: string, value: unknown, min: number): void {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
    throw new InvalidOptionError(`Option "${name}" must be an integer >= ${min}, got ${JSON.stringify(value)}`)
  }
}

/** Throws unless `value` is undefined or a non-empty array of distinct non-empty strings. */
export function checkColumns(name: string, value: unknown): void {
  if (value === undefined) return
  if (!Array.isArray(value) || value.length === 0 || value.some((c) => typeof c !== 'string' || c === '') || new Set(value).size !== value.length) {
    throw new InvalidOptionError(`Option "${name}" must be a non-empty array of distinct column names, got ${JSON.stringify(value)}`)
  }
}

/** Throws unless `value` is a single character (a CSV delimiter, quote or escape). */
export function checkChar(name: string, value: unknown): void {
  if (typeof value !== 'string' || value.length !== 1 || value === '\n' || value === '\r') {
    throw new InvalidOptionError(`Option "${name}" must be one character other than a line break, got ${JSON.stringify(value)}`)
  }
}

/** Throws unless `value` is a boolean. */
export function checkBoolean(name: string, value: unknown): void {
  if (typeof value !== 'boolean') throw new InvalidOptionError(`Option "${name}" must be a boolean, got ${JSON.stringify(value)}`)
}

/** True for `{}`-like objects (not arrays, not null, not class instances such as Buffer or Date). */
export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null) return false
  const proto = Object.getPrototypeOf(value)
  return proto === Object.prototype || proto === null
}

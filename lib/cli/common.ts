// Option parsers shared by the CLI commands: each failure is one clear line (InvalidOptionError).
import { InvalidOptionError } from '../errors.js'

/** Parses a non-negative integer flag. */
export function intFlag(name: string, min = 0) {
  return (value: string): number => {
    const n = Number(value)
    if (!Number.isInteger(n) || n < min) throw new InvalidOptionError(`--${name} must be an integer >= ${min}, got "${value}"`)
    return n
  }
}

/** Parses a JSON object flag (`--parameters '{"top_k": 2}'`). */
export function jsonObjectFlag(name: string) {
  return (value: string): Record<string, unknown> => {
    let v: unknown
    try {
      v = JSON.parse(value)
    } catch (err) {
      throw new InvalidOptionError(`--${name} must be a JSON object: ${(err as Error).message}`)
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new InvalidOptionError(`--${name} must be a JSON object, got ${value}`)
    return v as Record<string, unknown>
  }
}

/** Parses a comma-separated list of positive integers (`--in-flight 1,8,64`). */
export function intListFlag(name: string) {
  return (value: string): number[] => {
    const list = value.split(',').map((x) => Number(x.trim()))
    if (list.length === 0 || !list.every((n) => Number.isInteger(n) && n >= 1)) {
      throw new InvalidOptionError(`--${name} must be a comma-separated list of integers >= 1, got "${value}"`)
    }
    return list
  }
}

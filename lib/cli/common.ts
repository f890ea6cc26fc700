// Option parsers shared by the CLI commands: each failure is one clear line (InvalidOptionError).
import { Option } from 'commander'
import { InvalidOptionError } from '../errors.js'
import { BATCHINGS } from '../server/queue/length-batching.js'
import { SERVER_DEFAULTS } from '../server/options.js'

/** `--batching length|fifo` of `serve`, `run` and `worker` (the server option `batching`). */
export function batchingOption(prefix = ''): Option {
  return new Option('--batching <how>', `${prefix}how a worker picks a batch: length (items of similar length, less padding for transformer models; the oldest always in) or fifo (in order); with --redis always fifo`)
    .choices([...BATCHINGS])
    .default(SERVER_DEFAULTS.batching)
}

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

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, kb: 1024, kib: 1024, m: 1024 ** 2, mb: 1024 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3, gib: 1024 ** 3 }

/** Parses a byte size flag: `1048576`, `512k`, `64MiB`, `1g` (binary units). */
export function bytesFlag(name: string) {
  return (value: string): number => {
    const m = /^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$/.exec(value)
    const unit = m ? SIZE_UNITS[m[2].toLowerCase()] : undefined
    const n = m && unit !== undefined ? Math.floor(Number(m[1]) * unit) : NaN
    if (!Number.isSafeInteger(n) || n < 1) throw new InvalidOptionError(`--${name} must be a size such as 1048576, 512k, 64MiB or 1g, got "${value}"`)
    return n
  }
}

/** Parses a duration flag in seconds (`--batch-timeout 120`, `1.5`) into ms. */
export function secondsFlag(name: string) {
  return (value: string): number => {
    const s = Number(value)
    if (!Number.isFinite(s) || s <= 0) throw new InvalidOptionError(`--${name} must be a number of seconds > 0, got "${value}"`)
    return Math.max(1, Math.round(s * 1000))
  }
}

/** Parses `--endpoint`: the server's http(s) base URL, named in the message when it is not one. */
export function endpointFlag(value: string): string {
  let url: URL | undefined
  try {
    url = new URL(value)
  } catch {
    url = undefined
  }
  if (!url || !/^https?:$/.test(url.protocol)) {
    throw new InvalidOptionError(`--endpoint must be an http: or https: URL such as http://127.0.0.1:8080, got "${value}"`)
  }
  return value
}

/**
 * Parses a repeatable `--endpoint`: each one checked as {@link endpointFlag}, collected in the order
 * given (several: the command fails over between them). A URL given twice is one usage error.
 */
export function endpointsFlag(value: string, previous: string[] | undefined): string[] {
  const url = endpointFlag(value)
  const list = previous ?? []
  if (list.includes(url)) throw new InvalidOptionError(`--endpoint ${url} is given twice`)
  return [...list, url]
}

/** The help text of a repeatable `--endpoint`. */
export const ENDPOINTS_HELP = 'repeat to fail over between front-ends of one deployment (sharing their state): the first that answers is used, a lost one is replaced by the next'

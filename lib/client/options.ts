import { randomUUID } from 'node:crypto'
import type { ClientOptions } from 'ws'
import { InvalidOptionError, InvalidPayloadError, MissingInputError } from '../errors.js'
import { RECONNECT_DEFAULTS, type ReconnectOptions, type ResolvedReconnect } from './backoff.js'

/** What a record becomes on the wire (the `id` is added by the stream). */
export interface RecordPayload {
  inputs: unknown
  parameters?: Record<string, unknown>
}

/** Options of {@link InferenceStream}. */
export interface InferenceStreamOptions<R = unknown> {
  /**
   * Where to connect: the full stream URL (`ws://host:port/bulk/stream/cpu/org/model`), or a base URL
   * (`http://host:port`, `ws://…`) together with `model` (and `compute`). Required.
   *
   * Several URLs (`[a, b]`: front-ends of one deployment, sharing their state) make the stream fail
   * over: the first connection tries them in order and fails only when none answers; after a cut it
   * reconnects to the next one (round robin; `reconnect` counts attempts across the list) and resumes
   * there with the v1 resume query. All of them must name the same compute and model.
   */
  url: string | readonly string[]
  /** Model id, when `url` is a base URL. */
  model?: string
  /** `cpu` or `gpu`, when `url` is a base URL. Default `cpu`. */
  compute?: 'cpu' | 'gpu'
  /** Bearer token. Required (any string on an open loopback server). */
  token: string
  /**
   * Record → payload. Default: a string record is the inputs (`''` too); an object with `inputs` is
   * the payload (`inputs`, `parameters`). A throw fails that record only; so does a payload whose
   * `inputs` is absent or null (`MissingInputError`, `ERR_MISSING_INPUT`).
   */
  input?: (record: R) => RecordPayload
  /** Parameters added to every payload (a payload's own `parameters` win per key). Default none. */
  parameters?: Record<string, unknown>
  /**
   * Record → item id, unique in the run. Default: `${runId}-${seq}` (seq counts records from 0),
   * deterministic for a given `runId` so a re-run can resume.
   */
  id?: (record: R, seq: number) => string
  /** Prefix of default ids. Default: a random id per stream. */
  runId?: string
  /** Most records written and not yet read out (sent and unanswered, or waiting for order). Default 1024. */
  maxInFlight?: number
  /** Emit results in input order (true, default) or as they arrive (false, no head-of-line blocking). */
  ordered?: boolean
  /**
   * A failed item: `'record'` (default) emits the result with `error` set and goes on; `'skip'`
   * drops it (counted in `failed`); `'emit'` destroys the stream with the item's error.
   */
  onError?: 'record' | 'skip' | 'emit'
  /** Reconnect policy after a cut, or `false` to fail at the first cut. Default: 10 attempts, 100 ms → 5 s. */
  reconnect?: ReconnectOptions | false
  /** Aborts the stream: stops sending and destroys it with an `AbortError`. */
  signal?: AbortSignal
  /** `'v1'` (default): batched frames, acks, resume. `'legacy'`: exactly the original protocol. */
  protocol?: 'v1' | 'legacy'
  /** Keep the record on each result (`result.record`). Default true. */
  includeRecord?: boolean
  /** Most messages per v1 frame. Default 512 (the server's announced limit wins when lower). */
  maxItemsPerFrame?: number
  /** Passed to the `ws` client (headers, agent, handshakeTimeout...). */
  wsOptions?: ClientOptions
  /**
   * Checkpoint journal path (or options) for resumable runs: ids sent and results received are
   * journaled; re-running over the same input replays journaled results without the network and
   * resends only what the server does not know. Default none.
   */
  checkpoint?: string | CheckpointOptions
}

/** Checkpoint settings of {@link InferenceStreamOptions.checkpoint}. */
export interface CheckpointOptions {
  /** Journal file path. */
  path: string
  /** Extra identity of the run (e.g. input file and column); a resume with other values is refused. */
  fingerprint?: Record<string, unknown>
  /** How a refused resume names each `fingerprint` key (e.g. the CLI's flag for it). Default: the key. */
  fingerprintNames?: Record<string, string>
  /** Group-commit interval in ms. Default 5. */
  commitIntervalMs?: number
  /**
   * Hold `<path>.lock` while the stream runs, so a second run on the same checkpoint fails at once
   * (`CheckpointLockedError`). Default true; false when the caller already holds it.
   */
  lock?: boolean
}

/** Options after defaults and checks. */
export interface ResolvedStreamOptions<R> {
  /** Stream URLs, in the order given (one or more; the same compute and model path). */
  streamUrls: string[]
  token: string
  input: (record: R) => RecordPayload
  parameters: Record<string, unknown> | undefined
  id: (record: R, seq: number) => string
  maxInFlight: number
  ordered: boolean
  onError: 'record' | 'skip' | 'emit'
  reconnect: ResolvedReconnect | false
  signal: AbortSignal | undefined
  v1: boolean
  includeRecord: boolean
  maxItemsPerFrame: number
  wsOptions: ClientOptions | undefined
  checkpoint: CheckpointOptions | undefined
  /** The `runId` option as given (undefined: random, or the checkpoint's). */
  runId: string | undefined
  /** Whether the caller gave an `id` function. */
  customId: boolean
}

/** The default record → payload mapping (see {@link InferenceStreamOptions.input}). */
export function defaultInput(record: unknown): RecordPayload {
  // A string is the inputs, '' included (the model answers as for empty text); no value is missing.
  if (typeof record === 'string') return { inputs: record }
  if (record === undefined || record === null) throw new MissingInputError(`Record has no input (${String(record)})`)
  if (typeof record === 'object' && record !== null && 'inputs' in record) {
    const r = record as { inputs: unknown; parameters?: Record<string, unknown> }
    return r.parameters === undefined ? { inputs: r.inputs } : { inputs: r.inputs, parameters: r.parameters }
  }
  throw new InvalidPayloadError('Record is neither a string nor an object with "inputs"; pass the `input` option to map records to payloads')
}

/**
 * The websocket URL of a stream: a full `/bulk/stream/...` URL as is, else base URL + compute + model.
 * `http(s)` becomes `ws(s)`.
 */
export function streamUrlOf(url: string, model?: string, compute: 'cpu' | 'gpu' = 'cpu'): string {
  let u: URL
  try {
    u = new URL(url)
  } catch {
    throw new InvalidOptionError(`Option "url" must be an absolute URL, got ${JSON.stringify(url)}`)
  }
  if (u.protocol === 'http:') u.protocol = 'ws:'
  else if (u.protocol === 'https:') u.protocol = 'wss:'
  else if (u.protocol !== 'ws:' && u.protocol !== 'wss:') {
    throw new InvalidOptionError(`Option "url" must be ws:, wss:, http: or https:, got ${u.protocol}`)
  }
  if (u.pathname.includes('/bulk/stream/')) return u.toString()
  if (!model) throw new InvalidOptionError('Option "model" is required when "url" is a base URL without /bulk/stream/')
  if (compute !== 'cpu' && compute !== 'gpu') throw new InvalidOptionError(`Option "compute" must be "cpu" or "gpu", got ${JSON.stringify(compute)}`)
  u.pathname = `${u.pathname.replace(/\/+$/, '')}/bulk/stream/${compute}/${model}`
  return u.toString()
}

/**
 * The part of a stream URL that names what is run, `/bulk/stream/{compute}/{model}`: the same on every
 * endpoint of a deployment, whatever its host or path prefix (what a checkpoint is checked against).
 */
export function streamPathOf(streamUrl: string): string {
  const path = new URL(streamUrl).pathname
  const at = path.indexOf('/bulk/stream/')
  return at < 0 ? path : path.slice(at)
}

/**
 * The stream URLs of option `url`: one string, or a non-empty list of them (failover), each through
 * {@link streamUrlOf}; every one must name the same `/bulk/stream/{compute}/{model}`.
 */
export function streamUrlsOf(url: unknown, model?: string, compute: 'cpu' | 'gpu' = 'cpu'): string[] {
  const list = typeof url === 'string' ? [url] : Array.isArray(url) ? (url as unknown[]) : undefined
  if (!list) throw new InvalidOptionError('Option "url" is required: the stream URL, or a base URL with "model" (or a list of them, to fail over)')
  if (list.length === 0) throw new InvalidOptionError('Option "url" must name at least one server, got an empty list')
  const urls = list.map((u, i) => {
    if (typeof u !== 'string') throw new InvalidOptionError(`Option "url"${list.length > 1 || typeof url !== 'string' ? `[${i}]` : ''} must be a URL string, got ${JSON.stringify(u)}`)
    return streamUrlOf(u, model, compute)
  })
  const path = streamPathOf(urls[0])
  for (const u of urls) {
    if (streamPathOf(u) !== path) throw new InvalidOptionError(`Option "url": every URL must stream the same compute and model, got ${path} and ${streamPathOf(u)}`)
  }
  if (new Set(urls).size !== urls.length) throw new InvalidOptionError(`Option "url" lists a URL twice: ${JSON.stringify(list)}`)
  return urls
}

function fn(o: Record<string, unknown>, name: string): void {
  if (o[name] !== undefined && typeof o[name] !== 'function') {
    throw new InvalidOptionError(`Option "${name}" must be a function, got ${typeof o[name]}`)
  }
}

/** Applies defaults and checks every option, naming the one that is wrong. */
export function resolveStreamOptions<R>(options: InferenceStreamOptions<R>): ResolvedStreamOptions<R> {
  if (typeof options !== 'object' || options === null) throw new InvalidOptionError('InferenceStream options must be an object')
  const o = { maxInFlight: 1024, ordered: true, onError: 'record', protocol: 'v1', includeRecord: true, maxItemsPerFrame: 512, compute: 'cpu', ...options } as Required<InferenceStreamOptions<R>> & Record<string, unknown>
  const streamUrls = streamUrlsOf(o.url, o.model, o.compute)
  if (typeof o.token !== 'string' || !/^\S+$/.test(o.token)) throw new InvalidOptionError('Option "token" must be a non-empty string without spaces')
  for (const name of ['input', 'id']) fn(o, name)
  for (const name of ['maxInFlight', 'maxItemsPerFrame'] as const) {
    const v = o[name]
    if (!Number.isInteger(v) || v < 1) throw new InvalidOptionError(`Option "${name}" must be an integer >= 1, got ${JSON.stringify(v)}`)
  }
  if (typeof o.ordered !== 'boolean') throw new InvalidOptionError(`Option "ordered" must be a boolean, got ${JSON.stringify(o.ordered)}`)
  if (!['record', 'skip', 'emit'].includes(o.onError)) throw new InvalidOptionError(`Option "onError" must be 'record', 'skip' or 'emit', got ${JSON.stringify(o.onError)}`)
  if (o.protocol !== 'v1' && o.protocol !== 'legacy') throw new InvalidOptionError(`Option "protocol" must be 'v1' or 'legacy', got ${JSON.stringify(o.protocol)}`)
  if (o.parameters !== undefined && (typeof o.parameters !== 'object' || o.parameters === null || Array.isArray(o.parameters))) {
    throw new InvalidOptionError('Option "parameters" must be an object')
  }
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) throw new InvalidOptionError('Option "signal" must be an AbortSignal')
  let reconnect: ResolvedReconnect | false = false
  if (o.reconnect !== false) {
    reconnect = { ...RECONNECT_DEFAULTS, ...(o.reconnect ?? {}) }
    for (const [k, v] of Object.entries(reconnect)) {
      if (typeof v !== 'number' || !Number.isFinite(v) || v < (k === 'factor' ? 1 : 0)) {
        throw new InvalidOptionError(`Option "reconnect.${k}" must be a number >= ${k === 'factor' ? 1 : 0}, got ${JSON.stringify(v)}`)
      }
    }
  }
  if (o.runId !== undefined && (typeof o.runId !== 'string' || o.runId.length === 0)) throw new InvalidOptionError('Option "runId" must be a non-empty string')
  const runId = o.runId ?? randomUUID().slice(0, 8)
  let checkpoint: CheckpointOptions | undefined
  if (o.checkpoint !== undefined) {
    checkpoint = typeof o.checkpoint === 'string' ? { path: o.checkpoint } : o.checkpoint
    if (typeof checkpoint !== 'object' || checkpoint === null || typeof checkpoint.path !== 'string' || checkpoint.path.length === 0) {
      throw new InvalidOptionError('Option "checkpoint" must be a file path or { path, fingerprint?, commitIntervalMs? }')
    }
  }
  return {
    streamUrls,
    token: o.token,
    input: (o.input as (r: R) => RecordPayload) ?? (defaultInput as (r: R) => RecordPayload),
    parameters: o.parameters as Record<string, unknown> | undefined,
    id: (o.id as (r: R, seq: number) => string) ?? ((_r: R, seq: number) => `${runId}-${seq}`),
    maxInFlight: o.maxInFlight,
    ordered: o.ordered,
    onError: o.onError,
    reconnect,
    signal: o.signal,
    v1: o.protocol === 'v1',
    includeRecord: o.includeRecord,
    maxItemsPerFrame: o.maxItemsPerFrame,
    wsOptions: o.wsOptions,
    checkpoint,
    runId: options.runId,
    customId: o.id !== undefined,
  }
}

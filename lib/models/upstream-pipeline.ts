/**
 * A model served by an upstream HF-compatible HTTP endpoint: Hugging Face Inference Endpoints,
 * TGI / TEI (`POST url` with `{inputs, parameters}`), or another inference-stream server at
 * `http://host:port/models/{id}`. One POST per item, bounded concurrency, retries on 503/429.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import pLimit, { type LimitFunction } from 'p-limit'
import { backoffDelay, type ResolvedReconnect } from '../client/backoff.js'
import { InvalidOptionError, ModelError, ModelInputError, ShuttingDownError } from '../errors.js'
import type { Parameters, Pipeline, RunOptions } from './pipeline.js'

/** Options of {@link UpstreamPipeline}. */
export interface UpstreamPipelineOptions {
  /** Model id served here (the registry key), e.g. `remote/sentiment`. Required. */
  id: string
  /** The upstream endpoint, `http:` or `https:`; each item is POSTed to it as is. Required. */
  url: string
  /** Bearer token sent as `Authorization: Bearer <token>`. Default none. */
  token?: string
  /** Inference API task name reported as `Pipeline.task`. Default `'unknown'`. */
  task?: string
  /** Requests in flight at once, across every batch of this pipeline. Default 8. */
  concurrency?: number
  /** Retries of one item after a retryable failure (503, 429, 502, 504, network, timeout). Default 5. */
  maxRetries?: number
  /** First backoff delay, in ms; it doubles per retry, with jitter. Default 200. */
  retryBaseMs?: number
  /** Largest backoff delay, in ms. Default 10000. */
  maxRetryDelayMs?: number
  /**
   * Longest wait the upstream may ask for, in seconds: a 503's `estimated_time` or a `Retry-After`
   * above it is waited for this long only. Default 60.
   */
  maxWaitSeconds?: number
  /** Timeout of one request (until its whole body is read), in ms; a timeout is retried. Default 120000. */
  timeoutMs?: number
  /** Extra request headers. Default none. */
  headers?: Record<string, string>
}

/** Defaults of {@link UpstreamPipelineOptions}. */
export const UPSTREAM_DEFAULTS = {
  task: 'unknown',
  concurrency: 8,
  maxRetries: 5,
  retryBaseMs: 200,
  maxRetryDelayMs: 10_000,
  maxWaitSeconds: 60,
  timeoutMs: 120_000,
} as const

// Node's timers fire after 1 ms beyond this; no delay or timeout may exceed it.
const MAX_TIMER_MS = 2 ** 31 - 1
// How much of a non-JSON error body goes into an item's error message.
const MAX_ERROR_TEXT = 300

/** What one request came to. */
type Attempt =
  | { ok: true; value: unknown }
  | {
      ok: false
      error: Error
      /** Not retryable when undefined; `'backoff'` for the exponential backoff; else the wait asked, in ms. */
      retry?: 'backoff' | number
      /** A 503 with `estimated_time`: the model is loading, so retries ask the upstream to wait for it. */
      loading?: boolean
    }

/**
 * Serves a model id by forwarding to an upstream HTTP endpoint. `run` sends one
 * `POST url` per item with body `{inputs, parameters?, options?}` (`parameters` omitted when
 * empty), at most `concurrency` at once through one `p-limit` shared by every batch, and returns
 * one entry per item in order: the parsed JSON body of a 2xx answer, or an `Error` for that item
 * alone — `ModelInputError` for an upstream 400, 413 or 422, `ModelError` otherwise — whose
 * message names the URL, the status and the upstream's `error` text.
 *
 * Retries (at most `maxRetries` per item): a 503 with `estimated_time` waits that long (capped by
 * `maxWaitSeconds`) and retries with `options.wait_for_model: true`, as Hugging Face's clients do;
 * a 503 or 429 with `Retry-After` (seconds or HTTP date) waits that long (same cap); a 503 or 429
 * without either, a 502, a 504, a network error or a timeout backs off exponentially with jitter.
 * Other statuses are final.
 *
 * Each item's final entry is reported through `options.onItem` as soon as it is known. Aborting
 * `signal` stops requests and waits at once, and `run` rejects with `signal.reason`: the server then
 * finishes the items already reported (the upstream answered them, and billed them) and hands the
 * others back. `close()` stops running batches the same way (they reject with `ShuttingDownError`).
 * Requests use the global `fetch`, whose connections are kept alive.
 */
export class UpstreamPipeline implements Pipeline {
  readonly id: string
  readonly task: string
  /** The upstream endpoint. */
  readonly url: string
  readonly #opts: Required<Omit<UpstreamPipelineOptions, 'token' | 'headers'>>
  readonly #headers: Record<string, string>
  readonly #backoff: ResolvedReconnect
  readonly #limit: LimitFunction
  // Shown in error messages: no query string, which may carry secrets.
  readonly #shownUrl: string
  readonly #runs = new Set<AbortController>()
  readonly #settled = new Set<Promise<unknown>>()
  #closed = false

  constructor(options: UpstreamPipelineOptions) {
    if (typeof options !== 'object' || options === null) throw new InvalidOptionError('UpstreamPipeline options must be an object')
    // An option given as `undefined` takes its default (callers pass `task: tasks[id]` and the like).
    const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as UpstreamPipelineOptions
    const o = { ...UPSTREAM_DEFAULTS, ...given }
    if (typeof o.id !== 'string' || !/^\S+$/.test(o.id)) {
      throw new InvalidOptionError(`Option "id" must be a non-empty model id without spaces, got ${show(o.id)}`)
    }
    const url = checkUrl(o.url, 'Option "url"')
    if (typeof o.task !== 'string' || o.task === '') throw new InvalidOptionError(`Option "task" must be a non-empty string, got ${show(o.task)}`)
    integer(o, 'concurrency', 1, 1_000_000)
    integer(o, 'maxRetries', 0, 1_000)
    integer(o, 'retryBaseMs', 0, MAX_TIMER_MS)
    integer(o, 'maxRetryDelayMs', 0, MAX_TIMER_MS)
    integer(o, 'timeoutMs', 1, MAX_TIMER_MS)
    if (typeof o.maxWaitSeconds !== 'number' || !(o.maxWaitSeconds >= 0 && o.maxWaitSeconds <= 86_400)) {
      throw new InvalidOptionError(`Option "maxWaitSeconds" must be a number of seconds between 0 and 86400, got ${show(o.maxWaitSeconds)}`)
    }
    if (o.token !== undefined && (typeof o.token !== 'string' || !/^[\x21-\x7e]+$/.test(o.token))) {
      throw new InvalidOptionError('Option "token" must be a non-empty string of printable ASCII without spaces')
    }
    const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json' }
    if (o.headers !== undefined) {
      if (typeof o.headers !== 'object' || o.headers === null || Array.isArray(o.headers)) {
        throw new InvalidOptionError('Option "headers" must be an object of header names to string values')
      }
      for (const [name, value] of Object.entries(o.headers)) {
        if (typeof value !== 'string') throw new InvalidOptionError(`Option "headers" must have string values; ${JSON.stringify(name)} is ${show(value)}`)
        headers[name.toLowerCase()] = value
      }
    }
    if (o.token !== undefined) headers.authorization = `Bearer ${o.token}`
    try {
      // Checked once here, so a bad header is an option error rather than a failure of every request.
      new Headers(headers)
    } catch (err) {
      throw new InvalidOptionError(`Option "headers" is not valid: ${(err as Error).message}`)
    }

    this.id = o.id
    this.task = o.task
    this.url = url.href
    this.#shownUrl = `${url.origin}${url.pathname}`
    this.#opts = o
    this.#headers = headers
    this.#backoff = { maxAttempts: o.maxRetries, minDelayMs: o.retryBaseMs, maxDelayMs: o.maxRetryDelayMs, factor: 2 }
    this.#limit = pLimit(o.concurrency)
  }

  /** Requests in flight now (at most `concurrency`). */
  get inFlight(): number {
    return this.#limit.activeCount
  }

  async run(inputs: unknown[], parameters: Parameters, signal?: AbortSignal, options?: RunOptions): Promise<unknown[]> {
    if (this.#closed) throw new ShuttingDownError(`Upstream pipeline ${this.id} is closed`)
    signal?.throwIfAborted()
    if (inputs.length === 0) return []
    // One controller per batch: aborted by the caller's signal or by close().
    const ac = new AbortController()
    const onAbort = (): void => ac.abort(signal?.reason)
    signal?.addEventListener('abort', onAbort, { once: true })
    this.#runs.add(ac)
    let stopAbortWait = (): void => {}
    // Items still queued in p-limit (behind other batches) would only notice the abort when their
    // turn comes; this makes the batch reject at once.
    const aborted = new Promise<never>((_, reject) => {
      const fail = (): void => reject(ac.signal.reason)
      ac.signal.addEventListener('abort', fail, { once: true })
      stopAbortWait = () => ac.signal.removeEventListener('abort', fail)
    })
    const onItem = options?.onItem
    const all = Promise.all(
      inputs.map((input, i) =>
        this.#limit(async () => {
          const output = await this.#item(input, parameters, ac.signal)
          // Final (an answer or a final failure): the caller may finish it even if the batch is aborted later.
          onItem?.(i, output)
          return output
        }),
      ),
    )
    const settled = all.then(noop, noop)
    this.#settled.add(settled)
    try {
      return await Promise.race([all, aborted])
    } finally {
      stopAbortWait()
      signal?.removeEventListener('abort', onAbort)
      this.#runs.delete(ac)
      void settled.then(() => this.#settled.delete(settled))
    }
  }

  /** Stops pending requests and retry waits (running batches reject with `ShuttingDownError`); later runs reject. */
  async close(): Promise<void> {
    this.#closed = true
    const reason = new ShuttingDownError(`Upstream pipeline ${this.id} is closed`)
    for (const ac of this.#runs) ac.abort(reason)
    // Resolves once no request of this pipeline is left running.
    await Promise.all(this.#settled)
  }

  /** One item: requests and waits until an answer, a final failure or an abort. */
  async #item(input: unknown, parameters: Parameters, signal: AbortSignal): Promise<unknown> {
    signal.throwIfAborted()
    let body: string
    try {
      body = JSON.stringify(Object.keys(parameters).length === 0 ? { inputs: input } : { inputs: input, parameters })
    } catch (err) {
      return new ModelInputError(`Inputs cannot be sent to upstream ${this.#shownUrl}: ${(err as Error).message}`)
    }
    let loading = false
    for (let attempt = 1; ; attempt++) {
      const outcome = await this.#request(loading ? withWaitForModel(body) : body, signal)
      if (outcome.ok) return outcome.value
      if (outcome.retry === undefined || attempt > this.#opts.maxRetries) {
        if (attempt > 1) outcome.error.message += ` (after ${attempt} attempts)`
        return outcome.error
      }
      if (outcome.loading) loading = true
      const delay = outcome.retry === 'backoff' ? backoffDelay(attempt, this.#backoff) : outcome.retry
      await abortableSleep(delay, signal)
    }
  }

  /** One POST, its body read within `timeoutMs`. Rejects only when `signal` aborts. */
  async #request(body: string, signal: AbortSignal): Promise<Attempt> {
    const ac = new AbortController()
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      ac.abort()
    }, this.#opts.timeoutMs)
    const onAbort = (): void => ac.abort(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
    let status: number
    let text: string
    let retryAfter: string | null
    try {
      const res = await fetch(this.url, { method: 'POST', headers: this.#headers, body, signal: ac.signal })
      status = res.status
      retryAfter = res.headers.get('retry-after')
      text = await res.text()
    } catch (err) {
      if (signal.aborted) throw signal.reason
      const why = timedOut ? `did not answer within ${this.#opts.timeoutMs} ms` : `could not be reached: ${describeFetchError(err)}`
      return { ok: false, error: new ModelError(`Upstream ${this.#shownUrl} ${why}`, { cause: err }), retry: 'backoff' }
    } finally {
      clearTimeout(timer)
      signal.removeEventListener('abort', onAbort)
    }

    let json: unknown
    let isJson = true
    try {
      json = JSON.parse(text)
    } catch {
      isJson = false
    }
    if (status >= 200 && status < 300) {
      if (isJson) return { ok: true, value: json }
      return { ok: false, error: new ModelError(`Upstream ${this.#shownUrl} answered ${status} with a body that is not JSON: ${clip(text)}`) }
    }

    const message = `Upstream ${this.#shownUrl} answered ${status}: ${errorText(isJson ? json : undefined, text)}`
    const error = status === 400 || status === 413 || status === 422 ? new ModelInputError(message) : new ModelError(message)
    const maxWaitMs = this.#opts.maxWaitSeconds * 1000
    if (status === 503) {
      const estimated = isJson && isObject(json) ? json.estimated_time : undefined
      if (typeof estimated === 'number' && Number.isFinite(estimated) && estimated >= 0) {
        return { ok: false, error, retry: Math.min(estimated * 1000, maxWaitMs), loading: true }
      }
    }
    if (status === 503 || status === 429) {
      const asked = parseRetryAfter(retryAfter)
      return { ok: false, error, retry: asked === undefined ? 'backoff' : Math.min(asked, maxWaitMs) }
    }
    if (status === 502 || status === 504) return { ok: false, error, retry: 'backoff' }
    return { ok: false, error }
  }
}

/**
 * The wait a `Retry-After` header asks for, in ms: delay-seconds (`"120"`, fractions accepted) or
 * an HTTP date (`"Wed, 21 Oct 2015 07:28:00 GMT"`, 0 when past). `undefined` when absent or not
 * understood.
 */
export function parseRetryAfter(value: string | null | undefined, now = Date.now()): number | undefined {
  if (value === null || value === undefined) return undefined
  const v = value.trim()
  if (/^\d+(\.\d+)?$/.test(v)) return Number(v) * 1000
  // An HTTP date names its weekday and month; this keeps Date.parse from reading "-1" as a year.
  if (!/[a-z]/i.test(v)) return undefined
  const at = Date.parse(v)
  return Number.isNaN(at) ? undefined : Math.max(0, at - now)
}

/** An upstream of the CLI: `--upstream ID=URL`. */
export interface UpstreamSpec {
  /** Model id served here. */
  id: string
  /** Upstream endpoint (http or https). */
  url: string
}

/**
 * Parses `ID=URL` (split at the first `=`, so the URL may have a query), e.g.
 * `remote/sentiment=https://xyz.endpoints.huggingface.cloud`. Throws `InvalidOptionError` saying
 * what is wrong.
 */
export function parseUpstreamSpec(spec: string): UpstreamSpec {
  const example = 'e.g. remote/sentiment=http://127.0.0.1:8080/models/builtin/sentiment'
  if (typeof spec !== 'string') throw new InvalidOptionError(`Upstream must be "ID=URL" (${example}), got ${show(spec)}`)
  const eq = spec.indexOf('=')
  if (eq < 0) throw new InvalidOptionError(`Upstream must be "ID=URL" (${example}), got ${JSON.stringify(spec)}: no "="`)
  const id = spec.slice(0, eq).trim()
  const url = spec.slice(eq + 1).trim()
  if (id === '' || /\s/.test(id)) {
    throw new InvalidOptionError(`Upstream ${JSON.stringify(spec)} must start with a model id without spaces before "=" (${example})`)
  }
  return { id, url: checkUrl(url, `Upstream ${JSON.stringify(spec)}: the URL after "="`).href }
}

function checkUrl(value: unknown, what: string): URL {
  if (typeof value !== 'string' || value === '') throw new InvalidOptionError(`${what} must be an http or https URL, got ${show(value)}`)
  let url: URL
  try {
    url = new URL(value)
  } catch {
    throw new InvalidOptionError(`${what} must be an http or https URL, got ${JSON.stringify(value)}`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new InvalidOptionError(`${what} must be an http or https URL, got ${JSON.stringify(value)} (${url.protocol})`)
  }
  // fetch refuses URLs with credentials; the token belongs in the `token` option.
  if (url.username !== '' || url.password !== '') {
    throw new InvalidOptionError(`${what} must not contain credentials; pass the token as the "token" option`)
  }
  return url
}

function integer(o: Record<string, unknown>, name: string, min: number, max: number): void {
  const v = o[name]
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new InvalidOptionError(`Option "${name}" must be an integer between ${min} and ${max}, got ${show(v)}`)
  }
}

function show(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v)
  if (typeof v === 'number' || typeof v === 'boolean' || v === null || v === undefined) return String(v)
  return Array.isArray(v) ? 'an array' : typeof v
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/** The upstream's `error` text (HF: a string, or a list of strings for validation errors), else its body, clipped. */
function errorText(json: unknown, text: string): string {
  const e = isObject(json) ? json.error : undefined
  if (typeof e === 'string') return e
  if (Array.isArray(e) && e.length > 0) return e.map(String).join('; ')
  return text.trim() === '' ? '(empty body)' : clip(text)
}

function clip(text: string): string {
  const t = text.trim()
  return t.length > MAX_ERROR_TEXT ? `${t.slice(0, MAX_ERROR_TEXT)}…` : t
}

/** fetch's own message is "fetch failed"; the reason (ECONNREFUSED, a TLS error...) is its cause. */
function describeFetchError(err: unknown): string {
  const e = err as { message?: string; cause?: { message?: string; code?: string } }
  const cause = e?.cause?.message ?? e?.cause?.code
  return cause ? `${e.message}: ${cause}` : String(e?.message ?? err)
}

/** The same request body, asking the upstream to hold the request until its model has loaded. */
function withWaitForModel(body: string): string {
  const v = JSON.parse(body) as Record<string, unknown>
  return JSON.stringify({ ...v, options: { wait_for_model: true } })
}

async function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  try {
    await sleep(ms, undefined, { signal })
  } catch (err) {
    // The caller's own reason, not Node's AbortError wrapper.
    if (signal.aborted) throw signal.reason
    throw err
  }
}

function noop(): void {}

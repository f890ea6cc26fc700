/**
 * A model served by an upstream HF-compatible HTTP endpoint: Hugging Face Inference Endpoints,
 * TGI / TEI (`POST url` with `{inputs, parameters}`), or another inference-stream server at
 * `http://host:port/models/{id}`. One POST per pulled batch (`inputs: [..]`) where the task's API
 * takes a list, else one per item; bounded concurrency, retries on 503/429.
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
  /**
   * Batched requests: the items of a pulled batch go upstream as one POST with `inputs: [..]` (and
   * the batch's `parameters`), split into requests of at most this many items (`true`:
   * {@link UPSTREAM_BATCH_ITEMS}) and at most `maxBatchBytes`; `false` (or 1) sends one POST per
   * item. Only for a task of {@link UPSTREAM_BATCH_TASKS}; default on for those, off otherwise.
   */
  batch?: boolean | number
  /** Largest body of a batched request, in bytes; an item over it alone is sent alone. Default 1 MiB. */
  maxBatchBytes?: number
}

/** Items per batched request when `batch` is `true` or not given: TEI's `max_client_batch_size`. */
export const UPSTREAM_BATCH_ITEMS = 32

/**
 * The tasks whose API takes `inputs: [..]` and answers one output per input, in order, and how an
 * item's own output (what a request with that input alone answers) comes from the list's entry:
 * `'wrapped'` — a list of that one entry (text-classification answers one text `[[labels]]`);
 * `'entry'` — the entry itself. `strings` — only items whose inputs is one string go in a list (an
 * item that is a list of texts already means a batch), and each entry of the answer must be a list
 * (these tasks' outputs are); `echo` takes any JSON. Tasks not here —
 * zero-shot-classification, question-answering, sentence-similarity, text-generation, audio, an
 * unknown task — are never batched: their `inputs` is an object or bytes, or a list means
 * something else there.
 */
export const UPSTREAM_BATCH_TASKS: Readonly<Record<string, { output: 'wrapped' | 'entry'; inputs: 'strings' | 'any' }>> = {
  'text-classification': { output: 'wrapped', inputs: 'strings' },
  'sentiment-analysis': { output: 'wrapped', inputs: 'strings' },
  'token-classification': { output: 'entry', inputs: 'strings' },
  ner: { output: 'entry', inputs: 'strings' },
  'feature-extraction': { output: 'entry', inputs: 'strings' },
  embeddings: { output: 'entry', inputs: 'strings' },
  'fill-mask': { output: 'entry', inputs: 'strings' },
  echo: { output: 'entry', inputs: 'any' },
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
  maxBatchBytes: 1024 * 1024,
} as const

// Node's timers fire after 1 ms beyond this; no delay or timeout may exceed it.
const MAX_TIMER_MS = 2 ** 31 - 1
// Statuses that say the inputs were refused: an item's ModelInputError; a list is sent again item by item.
const INPUT_STATUSES: ReadonlySet<number> = new Set([400, 413, 422])
// How much of a non-JSON error body goes into an item's error message.
const MAX_ERROR_TEXT = 300

/** What one request came to. */
type Attempt =
  | { ok: true; value: unknown }
  | {
      ok: false
      error: Error
      /** The upstream's status, when it answered. */
      status?: number
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
 * Batched (`batch`, on by default for {@link UPSTREAM_BATCH_TASKS}): the batch's items go as
 * `inputs: [..]` in requests of at most `batch` items and `maxBatchBytes`, each taking one slot of
 * `concurrency`; item k's output is the answer's entry k (wrapped for text-classification). An
 * answer that is not a list of one entry per item (each a list, for a text task), or a 400, 413
 * or 422 (which may be about one input), sends that request's items again one per request, so
 * each gets its own output or error. Retryable failures retry the whole request as below; other final failures are each
 * item's error. Items a list cannot carry (a list of texts for a text task; one alone) go alone.
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
  /** Most items per request: 1 when requests are not batched. */
  readonly batchItems: number
  readonly #opts: Required<Omit<UpstreamPipelineOptions, 'token' | 'headers' | 'batch'>>
  readonly #batchTask: (typeof UPSTREAM_BATCH_TASKS)[string] | undefined
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
    integer(o, 'maxBatchBytes', 1, 2 ** 31 - 1)
    const batchTask = Object.hasOwn(UPSTREAM_BATCH_TASKS, o.task) ? UPSTREAM_BATCH_TASKS[o.task] : undefined
    let batchItems: number
    if (o.batch === undefined) batchItems = batchTask === undefined ? 1 : UPSTREAM_BATCH_ITEMS
    else if (o.batch === false) batchItems = 1
    else {
      if (o.batch !== true) integer(o, 'batch', 1, 1_000_000)
      if (batchTask === undefined) {
        throw new InvalidOptionError(
          `Option "batch" needs a task whose API takes a list of inputs and answers one output per input (${Object.keys(UPSTREAM_BATCH_TASKS).join(', ')}); task is ${JSON.stringify(o.task)}`,
        )
      }
      batchItems = o.batch === true ? UPSTREAM_BATCH_ITEMS : o.batch
    }
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
    this.batchItems = batchItems
    this.#batchTask = batchTask
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
    const outputs = new Array<unknown>(inputs.length)
    const done = (i: number, output: unknown): void => {
      outputs[i] = output
      // Final (an answer or a final failure): the caller may finish it even if the batch is aborted later.
      onItem?.(i, output)
    }
    const { lists, alone } = this.#plan(inputs, parameters)
    const all = Promise.all([
      ...lists.map((list) => this.#list(list, inputs, parameters, ac.signal, done)),
      ...alone.map((i) => this.#alone(i, inputs[i], parameters, ac.signal, done)),
    ]).then(() => outputs)
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

  /**
   * Which items go together in one request, in order: lists of at most `batchItems` items whose
   * body stays within `maxBatchBytes`, and the items that go alone (a list of one is sent alone,
   * as its own request body).
   */
  #plan(inputs: unknown[], parameters: Parameters): { lists: Array<{ items: number[]; body: string }>; alone: number[] } {
    const lists: Array<{ items: number[]; body: string }> = []
    const alone: number[] = []
    const task = this.#batchTask
    if (task === undefined || this.batchItems < 2 || inputs.length < 2) return { lists, alone: inputs.map((_, i) => i) }
    let tail: string
    try {
      tail = Object.keys(parameters).length === 0 ? '}' : `,"parameters":${JSON.stringify(parameters)}}`
    } catch {
      // Parameters that cannot be sent: each item alone, where that is its own error.
      return { lists, alone: inputs.map((_, i) => i) }
    }
    const head = '{"inputs":['
    // Bytes of a list's body besides its entries and their commas.
    const frame = head.length + 1 + Buffer.byteLength(tail)
    let items: number[] = []
    let parts: string[] = []
    let bytes = 0
    const close = (): void => {
      if (items.length === 1) alone.push(items[0])
      else if (items.length > 1) lists.push({ items, body: `${head}${parts.join(',')}]${tail}` })
      items = []
      parts = []
    }
    for (let i = 0; i < inputs.length; i++) {
      const input = inputs[i]
      let json: string | undefined
      if (task.inputs === 'any' || typeof input === 'string') {
        try {
          json = JSON.stringify(input)
        } catch {
          // Not serializable: sent alone, where it becomes the item's own error.
        }
      }
      const size = json === undefined ? 0 : Buffer.byteLength(json) + 1
      if (json === undefined || frame + size > this.#opts.maxBatchBytes) {
        alone.push(i)
        continue
      }
      if (items.length === this.batchItems || frame + bytes + size > this.#opts.maxBatchBytes) close()
      if (items.length === 0) bytes = 0
      items.push(i)
      parts.push(json)
      bytes += size
    }
    close()
    return { lists, alone }
  }

  /** One item in a request of its own, within the concurrency bound. */
  async #alone(i: number, input: unknown, parameters: Parameters, signal: AbortSignal, done: (i: number, output: unknown) => void): Promise<void> {
    const output = await this.#limit(() => this.#item(input, parameters, signal))
    done(i, output)
  }

  /**
   * Items in one request with `inputs: [..]`; sent again one per request when the answer is not
   * one entry per item or is an error that may be about one input.
   */
  async #list(
    list: { items: number[]; body: string },
    inputs: unknown[],
    parameters: Parameters,
    signal: AbortSignal,
    done: (i: number, output: unknown) => void,
  ): Promise<void> {
    const outcome = await this.#limit(() => this.#send(list.body, signal))
    const n = list.items.length
    const task = this.#batchTask
    // A text task's outputs are lists (labels, entities, vectors, candidates): an entry that is not
    // one means the upstream read the list otherwise (TEI's /predict reads two texts as a pair).
    const fits = (v: unknown): v is unknown[] => Array.isArray(v) && v.length === n && (task?.inputs === 'any' || v.every(Array.isArray))
    if (outcome.ok && fits(outcome.value)) {
      const value = outcome.value
      const wrapped = task?.output === 'wrapped'
      list.items.forEach((i, k) => done(i, wrapped ? [value[k]] : value[k]))
      return
    }
    // A 2xx of another shape (or not JSON), or an error that may be about one input: item by item.
    const perItem = outcome.ok || (outcome.status !== undefined && (outcome.status < 300 || INPUT_STATUSES.has(outcome.status)))
    if (!perItem) {
      // Final for the whole request (401, 404, 500, retries spent...): as it would be for each alone.
      for (const i of list.items) done(i, outcome.error)
      return
    }
    // The slot of the list is free again: the items take slots of their own.
    await Promise.all(list.items.map((i) => this.#alone(i, inputs[i], parameters, signal, done)))
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
    const outcome = await this.#send(body, signal)
    return outcome.ok ? outcome.value : outcome.error
  }

  /** One request body, retried as retryable failures allow: its answer, or its final failure. */
  async #send(body: string, signal: AbortSignal): Promise<Attempt> {
    signal.throwIfAborted()
    let loading = false
    for (let attempt = 1; ; attempt++) {
      const outcome = await this.#request(loading ? withWaitForModel(body) : body, signal)
      if (outcome.ok) return outcome
      if (outcome.retry === undefined || attempt > this.#opts.maxRetries) {
        if (attempt > 1) outcome.error.message += ` (after ${attempt} attempts)`
        return outcome
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
      return { ok: false, status, error: new ModelError(`Upstream ${this.#shownUrl} answered ${status} with a body that is not JSON: ${clip(text)}`) }
    }

    const message = `Upstream ${this.#shownUrl} answered ${status}: ${errorText(isJson ? json : undefined, text)}`
    const error = INPUT_STATUSES.has(status) ? new ModelInputError(message) : new ModelError(message)
    const maxWaitMs = this.#opts.maxWaitSeconds * 1000
    if (status === 503) {
      const estimated = isJson && isObject(json) ? json.estimated_time : undefined
      if (typeof estimated === 'number' && Number.isFinite(estimated) && estimated >= 0) {
        return { ok: false, status, error, retry: Math.min(estimated * 1000, maxWaitMs), loading: true }
      }
    }
    if (status === 503 || status === 429) {
      const asked = parseRetryAfter(retryAfter)
      return { ok: false, status, error, retry: asked === undefined ? 'backoff' : Math.min(asked, maxWaitMs) }
    }
    if (status === 502 || status === 504) return { ok: false, status, error, retry: 'backoff' }
    return { ok: false, status, error }
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

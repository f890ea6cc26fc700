import { createReadStream, createWriteStream, promises as fsp } from 'node:fs'
import { basename, extname } from 'node:path'
import { Readable, Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import type { ReadableStream as WebReadableStream } from 'node:stream/web'
import { AbortError, HttpError, InputFileError, InvalidOptionError, UnknownFormatError } from '../errors.js'

/** The states of a bulk job; `queued` and `running` are active, the others final. */
export type BulkJobState = 'queued' | 'running' | 'completed' | 'failed' | 'cancelled'

/** A job's status, the `status` object of `GET /bulk/status/{jobid}` (docs/bulk.md). */
export interface BulkJobStatus {
  /** 1 while queued or running, else 0 (as the original API). */
  active: 0 | 1
  /** When the job started running (or was created, while queued): epoch seconds. */
  start_time: number
  state: BulkJobState
  jobid: string
  /** The output dataset. */
  bulk_name: string
  model: string
  dataset: { name: string; config: string; split: string; column: string }
  /** Source columns copied into the outputs (servers before the option: absent). */
  keep_columns?: string[]
  /** Rows of the source split; null until known (a JSON array split has no cheap count). */
  total: number | null
  /** Rows done so far (failed ones included). */
  processed: number
  /** Rows whose outputs are an error. */
  failed: number
  /** When the job ended: epoch seconds; null while active. */
  end_time: number | null
  /** Why the job failed or was cancelled; null otherwise. */
  error: string | null
  /** The output dataset's commit of a completed job; null before. */
  revision: string | null
}

/** What starts a bulk job (`POST /bulk/run/{compute}/{model}`). */
export interface BulkJobRequest {
  /** Model id, e.g. `builtin/sentiment`. */
  model: string
  /** `cpu` or `gpu`. Default `cpu`. */
  compute?: 'cpu' | 'gpu'
  /** Source dataset in the server's datasets folder, e.g. `reviews` or `org/reviews`. */
  dataset_name: string
  /** Its config, e.g. `default`. */
  dataset_config: string
  /** Its split, e.g. `train`. */
  dataset_split: string
  /** The column whose values are the model's inputs. */
  dataset_column: string
  /** Parameters for every row. Default none. */
  parameters?: Record<string, unknown>
  /**
   * Other source columns copied into the outputs, or `'*'` for all of them. Default none. A column
   * the dataset lacks, or two that would be written under one name, are refused (400).
   */
  keep_columns?: string[] | '*'
  /** Output dataset. Default: the server's name per (dataset, config, split, column, model). */
  bulk_name?: string
}

/** A file of an output dataset at a revision (`siblings` of the Hub-style info). */
export interface BulkDatasetFile {
  rfilename: string
  size: number
  blobId?: string
}

/** Hub-style info of an output dataset at a revision (`GET /api/datasets/{name}/revision/{rev}`). */
export interface BulkDatasetInfo {
  id: string
  /** The commit the revision resolved to. */
  sha: string
  lastModified?: string
  siblings: BulkDatasetFile[]
}

/** Options of {@link BulkClient}. */
export interface BulkClientOptions {
  /**
   * Server base URL, `http(s)://host:port` (a `ws(s)://` URL is taken as its http form). Required.
   * Several (front-ends of one deployment sharing their jobs, state and `--data-dir`) fail over:
   * see {@link BulkClient} for which requests go to the next one.
   */
  url: string | readonly string[]
  /** Bearer token. Default none: only a server without tokens (loopback clients) accepts that. */
  token?: string
}

/** Per-call options. */
export interface CallOptions {
  signal?: AbortSignal
}

/** Options of {@link BulkClient.wait}. */
export interface WaitOptions extends CallOptions {
  /** First delay between polls, in ms; each poll waits 1.5 × longer, up to `maxPollIntervalMs`. Default 250. */
  pollIntervalMs?: number
  /** Longest delay between polls, in ms. Default 5000. */
  maxPollIntervalMs?: number
  /** Failed polls in a row tolerated (no answer, 429, 502, 503, 504: a restarting server) before giving up. Default 10. */
  retries?: number
  /** Called with every status polled, the final one included. */
  onStatus?: (status: BulkJobStatus) => void
}

/** Extensions the server takes as a dataset upload (docs/bulk.md, "Uploads"). */
export const UPLOAD_EXTENSIONS: readonly string[] = ['csv', 'tsv', 'jsonl', 'ndjson', 'json', 'parquet']

/** Defaults of {@link WaitOptions}. */
export const WAIT_DEFAULTS = { pollIntervalMs: 250, maxPollIntervalMs: 5000, retries: 10 } as const

/** True for an answer worth asking again: none at all, or 429 / 502 / 503 / 504. */
export function isTransient(err: unknown): boolean {
  if (!(err instanceof HttpError)) return false
  if (causeCode(err) === 'ERR_BAD_PORT') return false // fetch never connects there: asking again cannot help
  return err.status === undefined || err.status === 429 || err.status === 502 || err.status === 503 || err.status === 504
}

// Connection errors raised before a connection existed: the request surely reached no server.
const NOT_SENT = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'UND_ERR_CONNECT_TIMEOUT', 'ERR_BAD_PORT'])

/** Which failures of a request may be sent to the next endpoint. */
type Failover = 'idempotent' | 'unsent'

/** The code of a fetch failure's cause (`ECONNREFUSED`, …), when it has one. */
function causeCode(err: unknown): string | undefined {
  let e = err as { code?: unknown; cause?: unknown } | undefined
  for (let depth = 0; e && depth < 4; depth++) {
    if (typeof e.code === 'string' && e.code !== 'ERR_HTTP') return e.code
    e = e.cause as typeof e
  }
  return undefined
}

/**
 * Whether a failed request may go to the next endpoint: an idempotent one (GET, cancel, upload)
 * when no answer came or the answer was 502 / 503 / 504; a job start only when it surely reached
 * no server (connection refused, unknown host, no route), or our server refused it before acting
 * (503 `ERR_SHUTTING_DOWN`): a second POST that reached one would start a second job.
 */
function canFailOver(err: unknown, policy: Failover): boolean {
  if (!(err instanceof HttpError)) return false
  if (policy === 'unsent') return (err.status === undefined && NOT_SENT.has(causeCode(err) ?? '')) || (err.status === 503 && err.remoteCode === 'ERR_SHUTTING_DOWN')
  return err.status === undefined || err.status === 502 || err.status === 503 || err.status === 504
}

/** True when a job is in a final state. */
export function isFinal(state: BulkJobState): boolean {
  return state === 'completed' || state === 'failed' || state === 'cancelled'
}

/** The http(s) base URL of `url`, without a trailing slash; throws `InvalidOptionError` naming `option`. */
export function baseUrlOf(url: unknown, option = 'url'): string {
  let u: URL
  try {
    u = new URL(String(url))
  } catch {
    throw new InvalidOptionError(`Option "${option}" must be an absolute http(s) URL, got ${JSON.stringify(url)}`)
  }
  if (typeof url !== 'string') throw new InvalidOptionError(`Option "${option}" must be an absolute http(s) URL, got ${JSON.stringify(url)}`)
  if (u.protocol === 'ws:') u.protocol = 'http:'
  else if (u.protocol === 'wss:') u.protocol = 'https:'
  else if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new InvalidOptionError(`Option "${option}" must be an http: or https: URL, got ${u.protocol}`)
  }
  u.search = ''
  u.hash = ''
  return u.toString().replace(/\/+$/, '')
}

/** Each `/`-separated segment URL-encoded (dataset names, model ids, file paths). */
function segments(path: string): string {
  return path.split('/').map(encodeURIComponent).join('/')
}

function abortError(signal: AbortSignal): AbortError {
  return new AbortError(undefined, { cause: signal.reason })
}

/**
 * A small HTTP client of the bulk routes and the Hub-style output dataset API of an
 * inference-stream server (started with `--data-dir`). Every failure is an `HttpError` with the
 * server's message, `status` and `remoteCode`; an aborted call rejects with `AbortError`.
 *
 * Given several URLs (front-ends sharing one deployment's jobs and data folder) a request that
 * fails goes to the next one, each tried once per call, starting with the one that answered last:
 * - `status`, `jobs`, `info`, `download`, `cancel` and `upload` (idempotent: reading, cancelling,
 *   replacing a split) on no answer or 502 / 503 / 504. A download cut mid-body goes on on the
 *   next server at the byte it reached when that server honours `Range`, else starts over
 *   (the file is rewritten from its first byte). A cancel whose retry answers 409 because the first
 *   server had cancelled the job before dying returns the job's (cancelled) status.
 * - `start` (a POST that creates a job) only when the request surely reached no server (connection
 *   refused, unknown host, no route to it) or our server refused it before acting (503
 *   `ERR_SHUTTING_DOWN`): any other failure may have started the job, and a second POST would
 *   start a second one. That error is thrown; look with `jobs()` before starting again.
 * When every URL fails, the last failure is thrown, naming the others.
 *
 * @example
 * const client = new BulkClient({ url: 'http://127.0.0.1:8080', token })
 * const { jobid } = await client.start({ model: 'builtin/sentiment', dataset_name: 'reviews',
 *   dataset_config: 'default', dataset_split: 'train', dataset_column: 'text' })
 * const final = await client.wait(jobid, { onStatus: (s) => console.log(s.processed, s.total) })
 */
export class BulkClient {
  /** Every base URL, in the order given (one unless it fails over). */
  readonly urls: readonly string[]
  private readonly token: string | undefined
  // Index in urls of the endpoint that answered last: the next request starts there.
  private current = 0

  constructor(options: BulkClientOptions) {
    if (typeof options !== 'object' || options === null) throw new InvalidOptionError('BulkClient options must be an object')
    this.urls = baseUrlsOf(options.url)
    if (options.token !== undefined && (typeof options.token !== 'string' || !/^\S+$/.test(options.token))) {
      throw new InvalidOptionError('Option "token" must be a non-empty string without spaces')
    }
    this.token = options.token
  }

  /** The base URL in use: the one that answered last (at first, the first one). */
  get url(): string {
    return this.urls[this.current]
  }

  /** Starts a job: `{jobid, bulk_name}`. Never retried (a second POST would be a second job). */
  async start(job: BulkJobRequest, o: CallOptions = {}): Promise<{ jobid: string; bulk_name: string }> {
    checkJobRequest(job)
    const { model, compute = 'cpu', ...body } = job
    let res: { jobid: string; bulk_name: string }
    try {
      res = await this.json<{ jobid: string; bulk_name: string }>('POST', `/bulk/run/${compute}/${segments(model)}`, o, 'unsent', () => body)
    } catch (err) {
      // No answer, or a gateway's 5xx, after the request may have reached a server: say so, as a
      // second start could be a second job.
      // (A 501 is an answer that nothing was done: a server that runs no bulk jobs.)
      if (err instanceof HttpError && (err.status === undefined || (err.status >= 500 && err.status !== 501)) && !canFailOver(err, 'unsent')) {
        throw new HttpError(`${err.message}; the job may have been started all the same: look with jobs() (\`inference-stream bulk jobs\`) before starting it again`, { status: err.status, remoteCode: err.remoteCode, request: err.request, cause: err })
      }
      throw err
    }
    if (typeof res?.jobid !== 'string' || typeof res.bulk_name !== 'string') {
      throw new HttpError(`The server answered POST /bulk/run without {jobid, bulk_name}: ${JSON.stringify(res).slice(0, 200)}`, { status: 200 })
    }
    return res
  }

  /** The status of a job (`ERR_HTTP` 404 with remoteCode `ERR_JOB_NOT_FOUND` for an unknown id). */
  async status(jobId: string, o: CallOptions = {}): Promise<BulkJobStatus> {
    checkJobId(jobId)
    return statusOf(await this.json<{ status: BulkJobStatus }>('GET', `/bulk/status/${encodeURIComponent(jobId)}`, o, 'idempotent'))
  }

  /** Cancels a queued or running job; its status after. A finished job answers 409 (`ERR_HTTP`, remoteCode `ERR_JOB_STATE`). */
  async cancel(jobId: string, o: CallOptions = {}): Promise<BulkJobStatus> {
    checkJobId(jobId)
    let failedOver = false
    try {
      return statusOf(await this.json<{ status: BulkJobStatus }>('POST', `/bulk/cancel/${encodeURIComponent(jobId)}`, o, 'idempotent', undefined, undefined, () => (failedOver = true)))
    } catch (err) {
      // The first server may have cancelled the job and died before answering: then the job is
      // cancelled, which is what was asked.
      if (failedOver && err instanceof HttpError && err.status === 409) {
        const s = await this.status(jobId, o)
        if (s.state === 'cancelled') return s
      }
      throw err
    }
  }

  /** Every job of this token, as statuses. */
  async jobs(o: CallOptions = {}): Promise<BulkJobStatus[]> {
    const res = await this.json<{ jobs: BulkJobStatus[] }>('GET', '/bulk/jobs', o, 'idempotent')
    return Array.isArray(res?.jobs) ? res.jobs : []
  }

  /**
   * Polls a job until it is final (completed, failed or cancelled) and returns that status. The
   * delay between polls grows from `pollIntervalMs` by 1.5× up to `maxPollIntervalMs`; failed polls
   * that look transient (see {@link isTransient}) are retried up to `retries` times in a row.
   * Does not throw for a failed or cancelled job: look at `state`.
   */
  async wait(jobId: string, o: WaitOptions = {}): Promise<BulkJobStatus> {
    const w = resolveWait(o)
    let delay = w.pollIntervalMs
    let failures = 0
    for (;;) {
      let status: BulkJobStatus | undefined
      try {
        status = await this.status(jobId, o)
        failures = 0
      } catch (err) {
        if (!isTransient(err) || ++failures > w.retries) throw err
      }
      if (status) {
        o.onStatus?.(status)
        if (isFinal(status.state)) return status
      }
      await this.pause(delay, o.signal)
      delay = Math.min(w.maxPollIntervalMs, Math.round(delay * 1.5))
    }
  }

  /**
   * Sends a local CSV / TSV / JSONL / JSON / Parquet file as split `split` of config `config` of
   * input dataset `name` (`PUT /bulk/datasets/{name}/{config}/{split}.{ext}`), streamed; the
   * format is the file's extension. Replaces the whole split.
   */
  async upload(localFile: string, name: string, config: string, split: string, o: CallOptions = {}): Promise<{ dataset: string; config: string; split: string; bytes: number }> {
    for (const [option, v] of Object.entries({ name, config, split })) {
      if (typeof v !== 'string' || v.length === 0) throw new InvalidOptionError(`upload(): "${option}" must be a non-empty string, got ${JSON.stringify(v)}`)
    }
    const ext = extname(localFile).slice(1).toLowerCase()
    if (!UPLOAD_EXTENSIONS.includes(ext)) {
      throw new UnknownFormatError(`Cannot upload ${JSON.stringify(basename(localFile))}: the server takes .${UPLOAD_EXTENSIONS.join(', .')} files`)
    }
    let size: number
    try {
      const st = await fsp.stat(localFile)
      if (!st.isFile()) throw new InputFileError(`Cannot upload ${localFile}: not a file`, localFile)
      size = st.size
    } catch (err) {
      if (err instanceof InputFileError) throw err
      throw new InputFileError(`Cannot upload ${localFile}: ${(err as Error).message}`, localFile, { cause: err })
    }
    const path = `/bulk/datasets/${segments(name)}/${encodeURIComponent(config)}/${encodeURIComponent(split)}.${ext}`
    // A PUT replaces the whole split: sent again to the next server (the file read afresh), it
    // leaves the same split as one that succeeded at once.
    const bodies: Readable[] = []
    const body = (): Readable => {
      const b = createReadStream(localFile)
      bodies.push(b)
      return b
    }
    try {
      await this.json('PUT', path, o, 'idempotent', body, { 'content-type': 'application/octet-stream', 'content-length': String(size) })
    } finally {
      for (const b of bodies) b.destroy()
    }
    return { dataset: name, config, split, bytes: size }
  }

  /** Hub-style info of output dataset `name` at `revision` (branch, tag or sha; default `main`). */
  async info(name: string, revision = 'main', o: CallOptions = {}): Promise<BulkDatasetInfo> {
    const res = await this.json<BulkDatasetInfo>('GET', `/api/datasets/${segments(name)}/revision/${encodeURIComponent(revision)}`, o, 'idempotent')
    if (typeof res?.sha !== 'string' || !Array.isArray(res.siblings)) {
      throw new HttpError(`The server's info of dataset ${name} has no sha and siblings: ${JSON.stringify(res).slice(0, 200)}`, { status: 200 })
    }
    return res
  }

  /**
   * Streams file `path` of output dataset `name` at `revision` into local file `dest` (never held
   * in memory). Returns the bytes written; when `size` is given, a shorter or longer body fails.
   * With several URLs, a download that fails (no answer, 502–504, or cut mid-body) goes on on the
   * next server: from the byte reached when it answers a `Range` request with 206, else from the start.
   */
  async download(name: string, revision: string, path: string, dest: string, o: CallOptions & { size?: number } = {}): Promise<number> {
    const route = `/datasets/${segments(name)}/resolve/${encodeURIComponent(revision)}/${segments(path)}`
    const what = `${path} (dataset ${name} at ${revision})`
    const n = this.urls.length
    const failures: string[] = []
    // Bytes of `dest` already written by an attempt that was cut: where the next one may resume.
    let have = 0
    for (let i = 0; ; i++) {
      const index = (this.current + i) % n
      let res: Response
      try {
        res = await this.requestAt(index, 'GET', route, o, undefined, have > 0 ? { range: `bytes=${have}-` } : {})
      } catch (err) {
        if (i + 1 >= n || !canFailOver(err, 'idempotent')) throw withOthers(err, failures)
        failures.push(`${this.urls[index]} (${(err as Error).message})`)
        continue
      }
      if (!res.body) throw new HttpError(`GET ${path} of dataset ${name}: the answer has no body`, { status: res.status })
      // Appended only to a 206 that starts where the file ends; a 200 is the whole file.
      const append = have > 0 && res.status === 206 && rangeStart(res.headers.get('content-range')) === have
      if (res.status === 206 && !append) {
        await res.body.cancel().catch(() => {})
        throw withOthers(new HttpError(`Download of ${what}: ${this.urls[index]} answered a part (${res.headers.get('content-range') ?? 'no Content-Range'}) that does not start at byte ${have}`, { status: 206 }), failures)
      }
      const start = append ? have : 0
      let bytes = start
      const count = new Transform({
        transform(chunk: Buffer, _e, cb) {
          bytes += chunk.length
          cb(null, chunk)
        },
      })
      try {
        await pipeline(Readable.fromWeb(res.body as unknown as WebReadableStream<Uint8Array>), count, createWriteStream(dest, { flags: append ? 'a' : 'w' }), { signal: o.signal })
      } catch (err) {
        if (o.signal?.aborted) throw abortError(o.signal)
        // The local file failed (a full disk, no permission): no other server helps.
        const local = typeof (err as NodeJS.ErrnoException).syscall === 'string'
        const failure = new HttpError(`Download of ${what} failed: ${(err as Error).message}`, { cause: err, status: res.status, request: `GET ${this.urls[index]}${route}` })
        if (local || i + 1 >= n) throw withOthers(failure, failures)
        failures.push(`${this.urls[index]} (cut after ${bytes} bytes: ${(err as Error).message})`)
        have = await fsp.stat(dest).then((st) => st.size, () => 0)
        continue
      }
      this.current = index
      if (o.size !== undefined && bytes !== o.size) {
        throw new HttpError(`Download of ${what} got ${bytes} bytes, expected ${o.size}`, { status: res.status })
      }
      return bytes
    }
  }

  // One JSON request, failed over per `policy`; `body` makes the body of each attempt.
  private async json<T>(method: string, path: string, o: CallOptions, policy: Failover, body?: () => unknown, headers?: Record<string, string>, onFailover?: () => void): Promise<T> {
    const res = await this.request(method, path, o, policy, body, headers, onFailover)
    const text = await res.text()
    try {
      return JSON.parse(text) as T
    } catch {
      throw new HttpError(`${method} ${path}: the server answered ${res.status} with a body that is not JSON: ${text.slice(0, 120)}`, { status: res.status, request: `${method} ${this.url}${path}` })
    }
  }

  /**
   * One request, on the endpoint that answered last and, when it fails in a way `policy` allows, on
   * each next one (once each); the endpoint that answers becomes the current one.
   */
  private async request(method: string, path: string, o: CallOptions, policy: Failover, body?: () => unknown, headers: Record<string, string> = {}, onFailover?: () => void): Promise<Response> {
    const n = this.urls.length
    const failures: string[] = []
    for (let i = 0; ; i++) {
      const index = (this.current + i) % n
      try {
        const res = await this.requestAt(index, method, path, o, body?.(), headers)
        this.current = index
        return res
      } catch (err) {
        // An answer (a 4xx) says the server is up: asked first next time, as one that succeeded.
        if (err instanceof HttpError && err.status !== undefined && !canFailOver(err, 'idempotent')) this.current = index
        if (i + 1 >= n || o.signal?.aborted || !canFailOver(err, policy)) throw withOthers(err, failures)
        failures.push(`${this.urls[index]} (${(err as Error).message})`)
        onFailover?.()
      }
    }
  }

  /** One request to endpoint `index`; an error status becomes an `HttpError` with the server's message and code. */
  private async requestAt(index: number, method: string, path: string, o: CallOptions, body?: unknown, headers: Record<string, string> = {}): Promise<Response> {
    if (o.signal?.aborted) throw abortError(o.signal)
    const base = this.urls[index]
    const url = `${base}${path}`
    const request = `${method} ${url}`
    const h: Record<string, string> = { accept: 'application/json', ...headers }
    if (this.token !== undefined) h.authorization = `Bearer ${this.token}`
    let init: RequestInit & { duplex?: 'half' } = { method, headers: h, signal: o.signal }
    if (body instanceof Readable) init = { ...init, body: body as unknown as RequestInit["body"], duplex: 'half' }
    else if (body !== undefined) {
      h['content-type'] = 'application/json'
      init.body = JSON.stringify(body)
    }
    let res: Response
    try {
      res = await fetch(url, init)
    } catch (err) {
      if (o.signal?.aborted) throw abortError(o.signal)
      const cause = (err as { cause?: { code?: string; message?: string } }).cause
      if (cause?.message === 'bad port') {
        // fetch refuses some ports outright (the Fetch standard's "bad ports": 9, 21, 6000, …)
        // without connecting: nothing was sent, and retrying cannot help.
        const port = new URL(url).port
        const refused = Object.assign(new Error(`fetch refuses port ${port}`), { code: 'ERR_BAD_PORT', cause: err })
        throw new HttpError(
          `Cannot reach ${base} (${request}): port ${port} is one that fetch never connects to (a "bad port" of the Fetch standard), so nothing was sent; serve on another port`,
          { request, cause: refused },
        )
      }
      const why = cause?.code ?? cause?.message ?? (err as Error).message
      throw new HttpError(`Cannot reach ${base} (${request}): ${why}`, { request, cause: err })
    }
    if (res.ok) return res
    const text = await res.text().catch(() => '')
    let message: string | undefined
    let remoteCode: string | undefined
    try {
      const b = JSON.parse(text) as { error?: unknown; code?: unknown }
      if (typeof b.error === 'string') message = b.error
      if (typeof b.code === 'string') remoteCode = b.code
    } catch {
      // Not JSON (a proxy's page): its first words say more than nothing.
    }
    message ??= text.trim().slice(0, 200) || res.statusText
    let hint = ''
    // A server without --data-dir has no bulk routes: its generic 404 has no code.
    if (res.status === 404 && remoteCode === undefined && path.startsWith('/bulk/')) {
      hint = '; the server runs no bulk jobs: start it with `inference-stream serve --data-dir DIR`'
    } else if (res.status === 404 && remoteCode === undefined && (path.startsWith('/api/datasets/') || path.startsWith('/datasets/'))) {
      hint = '; the server serves no output datasets: start it with `inference-stream serve --data-dir DIR`'
    } else if (res.status === 401 && this.token === undefined) {
      hint = '; no token was sent (option "token"; in the CLI --token or INFERENCE_STREAM_TOKEN)'
    }
    throw new HttpError(`${message}${hint} (${method} ${path}: HTTP ${res.status}${remoteCode ? `, ${remoteCode}` : ''})`, { status: res.status, remoteCode, request })
  }
  private async pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
    try {
      await sleep(ms, undefined, { signal })
    } catch (err) {
      if (signal?.aborted) throw abortError(signal)
      throw err
    }
  }
}

// The first byte of a `Content-Range: bytes START-END/SIZE` answer.
function rangeStart(header: string | null): number | undefined {
  const m = header ? /^bytes (\d+)-/.exec(header) : null
  return m ? Number(m[1]) : undefined
}

// The last failure of a request tried on several endpoints, naming the ones tried before it.
function withOthers(err: unknown, failures: string[]): unknown {
  if (failures.length === 0 || !(err instanceof HttpError)) return err
  return new HttpError(`${err.message}; tried before: ${failures.join('; ')}`, { status: err.status, remoteCode: err.remoteCode, request: err.request, cause: err })
}

/**
 * The base URLs of option `url`: one, or a non-empty list of distinct ones (failover), each
 * through {@link baseUrlOf}.
 */
export function baseUrlsOf(url: unknown, option = 'url'): string[] {
  if (!Array.isArray(url)) return [baseUrlOf(url, option)]
  if (url.length === 0) throw new InvalidOptionError(`Option "${option}" must name at least one server, got an empty list`)
  const urls = url.map((u, i) => baseUrlOf(u, `${option}[${i}]`))
  if (new Set(urls).size !== urls.length) throw new InvalidOptionError(`Option "${option}" lists a server twice: ${JSON.stringify(url)}`)
  return urls
}

function statusOf(res: { status: BulkJobStatus }): BulkJobStatus {
  if (typeof res?.status !== 'object' || res.status === null || typeof res.status.state !== 'string') {
    throw new HttpError(`The server's job status has no state: ${JSON.stringify(res).slice(0, 200)}`, { status: 200 })
  }
  return res.status
}

function checkJobId(jobId: unknown): void {
  if (typeof jobId !== 'string' || !/^[A-Za-z0-9_-]+$/.test(jobId)) {
    throw new InvalidOptionError(`A job id is letters, digits, "_" and "-", got ${JSON.stringify(jobId)}`)
  }
}

/** Checks a {@link BulkJobRequest}, naming the field that is wrong (as `job.<field>`). */
export function checkJobRequest(job: unknown, prefix = 'job.'): asserts job is BulkJobRequest {
  if (typeof job !== 'object' || job === null || Array.isArray(job)) throw new InvalidOptionError(`Option "${prefix.replace(/\.$/, '')}" must be an object`)
  const j = job as Record<string, unknown>
  for (const f of ['model', 'dataset_name', 'dataset_config', 'dataset_split', 'dataset_column']) {
    if (typeof j[f] !== 'string' || (j[f] as string).length === 0) throw new InvalidOptionError(`Option "${prefix}${f}" is required: a non-empty string, got ${JSON.stringify(j[f])}`)
  }
  if (j.compute !== undefined && j.compute !== 'cpu' && j.compute !== 'gpu') throw new InvalidOptionError(`Option "${prefix}compute" must be "cpu" or "gpu", got ${JSON.stringify(j.compute)}`)
  if (j.parameters !== undefined && (typeof j.parameters !== 'object' || j.parameters === null || Array.isArray(j.parameters))) {
    throw new InvalidOptionError(`Option "${prefix}parameters" must be an object`)
  }
  if (j.keep_columns !== undefined && j.keep_columns !== '*' && !(Array.isArray(j.keep_columns) && j.keep_columns.every((c) => typeof c === 'string' && c !== ''))) {
    throw new InvalidOptionError(`Option "${prefix}keep_columns" must be an array of column names or "*", got ${JSON.stringify(j.keep_columns)}`)
  }
  if (j.bulk_name !== undefined && (typeof j.bulk_name !== 'string' || j.bulk_name.length === 0)) throw new InvalidOptionError(`Option "${prefix}bulk_name" must be a non-empty string`)
}

/** {@link WaitOptions} with defaults, checked. */
export function resolveWait(o: Pick<WaitOptions, 'pollIntervalMs' | 'maxPollIntervalMs' | 'retries'>): { pollIntervalMs: number; maxPollIntervalMs: number; retries: number } {
  const w = { ...WAIT_DEFAULTS, ...stripUndefined(o) }
  for (const k of ['pollIntervalMs', 'maxPollIntervalMs', 'retries'] as const) {
    const v = w[k]
    if (typeof v !== 'number' || !Number.isInteger(v) || v < (k === 'pollIntervalMs' ? 1 : 0)) {
      throw new InvalidOptionError(`Option "${k}" must be an integer >= ${k === 'pollIntervalMs' ? 1 : 0}, got ${JSON.stringify(v)}`)
    }
  }
  if (w.maxPollIntervalMs < w.pollIntervalMs) throw new InvalidOptionError(`Option "maxPollIntervalMs" (${w.maxPollIntervalMs}) must be >= "pollIntervalMs" (${w.pollIntervalMs})`)
  return w
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>
}

/**
 * The classic HTTP inference endpoint, `POST /models/{model_id}` (docs/protocol.md, "HTTP API").
 * A request is one item in the same work queue and batch workers as the websocket streams, so
 * requests batch with each other and with stream items of the same model and parameters; its
 * result comes back through the hub as a `direct` item, to this request only.
 */
import { createHash, randomUUID } from 'node:crypto'
import type http from 'node:http'
import {
  AuthenticationError,
  IdConflictError,
  InferenceStreamError,
  InvalidPayloadError,
  LimitExceededError,
  ModelError,
  ModelLoadError,
  ModelLoadingError,
  OverloadedError,
  ShuttingDownError,
  toWireError,
  type WireError,
} from '../errors.js'
import { resolvePipeline, type ModelRegistry } from '../models/pipeline.js'
import { parametersKey, parseBearer, parseInferenceBody, payloadFingerprint, stableStringify, type Payload } from '../protocol.js'
import type { ServerMetrics } from './metrics.js'
import type { ResolvedServerOptions } from './options.js'
import { groupKey, type WorkItem } from './queue/work-queue.js'
import { tenantOf, readBody, sendBody, sendJson, type BodyRead } from './http-util.js'
import { ResultCache } from './result-cache.js'
import { httpOwnerKey } from './store/result-store.js'
import { httpStatusOf } from './http-status.js'
import type { ResultInfo, StreamHub } from './stream-hub.js'
import type { Tenant, Tenants } from './tenants.js'

const MODELS_PATH = /^\/models\/(.+)$/

// The classic route has no compute in its path; its items batch with `/bulk/stream/cpu/...` ones.
const COMPUTE = 'cpu'


export { httpStatusOf }

/**
 * Characters of the strings in `inputs` (at any depth; object keys not counted), in Unicode code
 * points: the `x-compute-characters` header. Iterative, so deep inputs cannot overflow the stack.
 */
export function countCharacters(inputs: unknown): number {
  let n = 0
  const stack: unknown[] = [inputs]
  while (stack.length > 0) {
    const v = stack.pop()
    if (typeof v === 'string') n += v.length - (v.match(SURROGATE_PAIRS)?.length ?? 0)
    else if (Array.isArray(v)) for (const x of v) stack.push(x)
    else if (typeof v === 'object' && v !== null) for (const x of Object.values(v)) stack.push(x)
  }
  return n
}
const SURROGATE_PAIRS = /[\uD800-\uDBFF][\uDC00-\uDFFF]/g

/** What {@link HttpInference} needs of its server. */
export interface HttpInferenceContext {
  options: ResolvedServerOptions
  hub: StreamHub
  registry: ModelRegistry
  metrics: ServerMetrics
  /** The server's tenants and their tokens. */
  tenants: Tenants
}


/**
 * `POST /models/{model_id}`: authenticates, reads the body with a hard cap, validates it as a
 * stream payload is validated, answers from the result cache when allowed, else queues one item
 * and answers with its outputs when a worker has run it.
 */
export class HttpInference {
  /** The result cache (`options.use_cache`). */
  readonly cache: ResultCache

  constructor(private readonly c: HttpInferenceContext) {
    this.cache = new ResultCache({ maxEntries: c.options.httpCacheSize, maxBytes: c.options.httpCacheMaxBytes })
  }

  /** Handles a request on `/models/...` and returns true; returns false for any other path. */
  handle(req: http.IncomingMessage, res: http.ServerResponse, path: string): boolean {
    const m = MODELS_PATH.exec(path)
    if (!m) return false
    this.serve(req, res, path, m[1]).catch((err: unknown) => {
      this.c.options.logger?.error({ err }, 'HTTP inference request failed')
      if (!res.headersSent) sendJson(res, 500, toWireError(err))
      else res.destroy()
    })
    return true
  }

  private async serve(req: http.IncomingMessage, res: http.ServerResponse, path: string, rawModel: string): Promise<void> {
    const { options, hub, registry } = this.c
    if (req.method !== 'POST') {
      res.setHeader('allow', 'POST')
      return sendJson(res, 405, { error: `Method ${req.method} is not allowed on ${path}: use POST` })
    }
    let model: string
    try {
      model = decodeURIComponent(rawModel)
    } catch {
      return this.reject(res, new InvalidPayloadError('Model id is not valid URL encoding'))
    }
    const tenant = this.authenticate(req)
    if (tenant instanceof AuthenticationError) {
      res.setHeader('www-authenticate', 'Bearer')
      return this.reject(res, tenant)
    }
    if (hub.closing) return this.reject(res, new ShuttingDownError())
    const pipeline = resolvePipeline(registry, model, COMPUTE)
    if (pipeline instanceof Error) return this.reject(res, pipeline)

    const max = options.maxFrameBytes
    const declared = Number(req.headers['content-length'])
    const body: BodyRead = declared > max ? 'too-large' : await readBody(req, max)
    if (body === 'aborted') return
    if (body === 'too-large') {
      // The rest of the body is not read: close the connection once the answer is out.
      res.setHeader('connection', 'close')
      return this.reject(res, new LimitExceededError(`Body is over the limit of ${max} bytes`))
    }
    let payload: Payload
    try {
      payload = isRawBody(req, body) ? rawAudioPayload(body, model, pipeline.task, options) : parseInferenceBody(body.toString('utf8'), options)
    } catch (err) {
      return this.reject(res, err as InferenceStreamError)
    }

    // An `Idempotency-Key` makes the request an item with a client id: retried with the same body it
    // gets the stored result (not run, not billed); with another body, ERR_ID_CONFLICT.
    const key = idempotencyKeyOf(req)
    if (key instanceof InferenceStreamError) return this.reject(res, key)
    // `options.use_cache` in the body wins; the original API also took an `x-use-cache` header.
    // A keyed request is deduplicated by its key, not by the cache.
    const useCache = key === undefined && ((payload.options?.use_cache as boolean | undefined) ?? req.headers['x-use-cache'] !== 'false')
    const paramsKey = parametersKey(payload.parameters)
    const characters = countCharacters(payload.inputs)
    const cacheKey = this.cache.enabled ? cacheKeyOf(tenant.id, model, paramsKey, payload.inputs) : undefined
    if (useCache && cacheKey !== undefined) {
      const hit = this.cache.get(cacheKey)
      this.c.metrics.httpCache.inc({ result: hit ? 'hit' : 'miss' })
      // A hit runs no model, so it is not billed.
      if (hit) return sendBody(res, 200, hit, computeHeaders('cache', 0, characters))
    }

    // A model that is not loaded answers 503 with `estimated_time` and starts loading, as the
    // classic API; `wait_for_model: true` queues the request, which then waits for the load.
    const load = pipeline.loadState?.()
    if (load !== undefined && load.state !== 'ready' && payload.options?.wait_for_model !== true) {
      if (load.state === 'failed') {
        // Tried again on this request; answered now with the last failure.
        pipeline.load?.().catch(() => {})
        return this.reject(res, load.error instanceof InferenceStreamError ? load.error : new ModelLoadError(String(load.error?.message)))
      }
      pipeline.load?.().catch(() => {})
      const estimated = pipeline.loadState?.().estimatedTime ?? load.estimatedTime ?? 20
      return this.reject(res, new ModelLoadingError(`Model ${model} is currently loading`, estimated))
    }

    // Gone while its body was read or checked: nothing to run it for.
    if (req.socket.destroyed) return
    const owner = httpOwnerKey(tenant.id, model)
    const counts = await hub.state.counts(owner)
    if (counts.queued + counts.processing >= options.maxQueuedPerToken) return this.overloaded(res, `Too many requests of this token are waiting for ${model}; retry later`)
    // The client went away before its answer: drop the waiter; the item may still run, and its
    // result is then forgotten.
    const onClose = (): void => cancel()
    // The body's length stands for the inputs' size (no second serialization); the backend refuses
    // the item when the tenant's queued inputs would go over their byte budget.
    const cancel = hub.submitDirect(
      {
        tenant: tenant.id,
        owner,
        id: key ?? randomUUID(),
        retain: key !== undefined,
        model,
        compute: COMPUTE,
        inputs: payload.inputs,
        parameters: payload.parameters,
        group: groupKey(model, COMPUTE, payload.parameters),
        bytes: body.length,
        fingerprint: key === undefined ? undefined : payloadFingerprint(payload.inputs, payload.parameters),
      },
      (outputs, info) => {
        res.off('close', onClose)
        this.answer(res, model, outputs, info, characters, cacheKey)
      },
      {
        maxQueuedBytes: options.maxQueuedBytesPerTenant,
        onRefused: (outcome) => {
          res.off('close', onClose)
          if (outcome.status === 'overloaded') {
            return this.overloaded(res, `This tenant's queued inputs are over their budget of ${options.maxQueuedBytesPerTenant} bytes; retry later`)
          }
          if (outcome.status === 'conflict') {
            return this.reject(res, new IdConflictError(`Idempotency-Key ${JSON.stringify(key)} was already used with other inputs or parameters; use a new key for another request`), 422)
          }
          if (outcome.status === 'pending') {
            res.setHeader('retry-after', '1')
            return this.reject(res, new IdConflictError(`A request with Idempotency-Key ${JSON.stringify(key)} is still running; retry later to get its result`), 409)
          }
          // Replayed from the store: no model ran, nothing billed.
          const status = replayStatus(outcome.outputs)
          sendBody(res, status, Buffer.from(outcome.outputs), { 'idempotent-replayed': 'true' })
        },
      },
    )
    res.once('close', onClose)
  }

  private answer(
    res: http.ServerResponse,
    model: string,
    outputs: string,
    info: ResultInfo,
    characters: number,
    cacheKey: string | undefined,
  ): void {
    if (res.writableEnded || res.destroyed) return
    const headers = info.computeSeconds > 0 ? computeHeaders(COMPUTE, info.computeSeconds, characters) : {}
    if (info.failed) {
      const body = JSON.parse(outputs) as WireError
      return sendJson(res, httpStatusOf(body.code), body, headers)
    }
    const body = Buffer.from(outputs)
    // Stored also when the request did not use the cache: its result is the freshest there is.
    if (cacheKey !== undefined) this.cache.set(cacheKey, body)
    sendBody(res, 200, body, headers)
  }

  /** The tenant a request is billed to, or why it is refused. */
  private authenticate(req: http.IncomingMessage): Tenant | AuthenticationError {
    return tenantOf(req, this.c.tenants)
  }

  private overloaded(res: http.ServerResponse, message: string): void {
    res.setHeader('retry-after', '1')
    this.reject(res, new OverloadedError(message))
  }

  private reject(res: http.ServerResponse, err: InferenceStreamError, status = httpStatusOf(err.code)): void {
    this.c.metrics.rejected.inc({ code: err.code })
    // The classic API's loading answer: `{"error", "estimated_time"}`.
    const body = err instanceof ModelLoadingError ? { ...toWireError(err), estimated_time: err.estimatedTime } : toWireError(err)
    sendJson(res, status, body)
  }
}

/** Tasks whose `inputs` may come as a raw binary body (the file's bytes), as the Inference API took them. */
export const AUDIO_TASKS: ReadonlySet<string> = new Set(['automatic-speech-recognition', 'audio-classification'])

/**
 * Whether a body is raw file bytes rather than JSON: its content type is `audio/*` or
 * `application/octet-stream`, or it has no JSON content type and does not start (after
 * whitespace) with `{` — what the official clients send for audio (no content type, or the
 * Blob's).
 */
export function isRawBody(req: http.IncomingMessage, body: Buffer): boolean {
  const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase()
  if (type.startsWith('audio/') || type === 'application/octet-stream') return true
  if (type === 'application/json' || type.endsWith('+json')) return false
  let i = 0
  while (i < body.length && (body[i] === 0x20 || body[i] === 0x09 || body[i] === 0x0a || body[i] === 0x0d)) i++
  return i < body.length && body[i] !== 0x7b
}

/**
 * The payload of a raw body: `inputs` is its bytes in base64 (what a JSON body would carry), under
 * the same `maxInputsBytes` as that JSON string; refused for a model whose task is known and is
 * not an audio task.
 */
function rawAudioPayload(body: Buffer, model: string, task: string, limits: Pick<ResolvedServerOptions, 'maxInputsBytes'>): Payload {
  if (task !== 'unknown' && !AUDIO_TASKS.has(task)) {
    throw new InvalidPayloadError(`A raw binary body is the inputs of an audio task; model ${model} is ${task}: send JSON {"inputs": ...}`)
  }
  const asJson = Math.ceil(body.length / 3) * 4 + 2 // the base64 string's JSON bytes
  if (asJson > limits.maxInputsBytes) {
    throw new LimitExceededError(`Audio body is ${body.length} bytes (${asJson} as base64 "inputs"), over the limit of ${limits.maxInputsBytes}`)
  }
  return { inputs: body.toString('base64') }
}

/**
 * Key of a result in the cache: tenant, model, stable parameters and inputs (objects compared with
 * sorted keys), hashed so a key costs 44 bytes whatever the inputs. Per tenant: a hit across
 * tenants would tell one tenant (by its speed and `x-compute-type: cache`) what another sent.
 * `undefined` when the inputs cannot be serialized (nested too deeply): such a request is not cached.
 */
function cacheKeyOf(tenant: string, model: string, paramsKey: string, inputs: unknown): string | undefined {
  let text: string
  try {
    text = stableStringify(inputs)
  } catch {
    return undefined
  }
  return createHash('sha256').update(tenant).update('\n').update(model).update('\n').update(paramsKey).update('\n').update(text).digest('base64')
}

/**
 * The `Idempotency-Key` header: undefined when absent, the key (1 to 256 visible ASCII
 * characters, as an item id), or why it is refused.
 */
function idempotencyKeyOf(req: http.IncomingMessage): string | undefined | InferenceStreamError {
  const v = req.headers['idempotency-key']
  if (v === undefined) return undefined
  const key = Array.isArray(v) ? v[0] : v
  if (!/^[\x21-\x7e]{1,256}$/.test(key)) return new InvalidPayloadError('Header Idempotency-Key must be 1 to 256 visible ASCII characters')
  return key
}

// The status a stored result is replayed with: its error's, when it is an `{"error","code"}` body.
function replayStatus(json: string): number {
  if (!json.startsWith('{"error":')) return 200
  try {
    const body = JSON.parse(json) as { error?: unknown; code?: unknown }
    return typeof body.error === 'string' && typeof body.code === 'string' && body.code.startsWith('ERR_') ? httpStatusOf(body.code) : 200
  } catch {
    return 200
  }
}

/** `x-compute-*` headers as the original API sent them. */
function computeHeaders(type: string, seconds: number, characters: number): Record<string, string> {
  return {
    'x-compute-type': type,
    'x-compute-time': String(Number(seconds.toFixed(6))),
    'x-compute-characters': String(characters),
  }
}


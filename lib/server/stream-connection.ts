import { randomUUID } from 'node:crypto'
import type { WebSocket } from 'ws'
import {
  AuthenticationError,
  InferenceStreamError,
  LimitExceededError,
  ModelError,
  ShuttingDownError,
  toWireError,
} from '../errors.js'
import {
  errorStatus,
  frameText,
  parseBearer,
  parseClientFrame,
  resultMessage,
  type ServerMessage,
  type StatusMessage,
} from '../protocol.js'
import type { Compute, Pipeline } from '../models/pipeline.js'
import type { StreamHub } from './stream-hub.js'
import { groupKey, type WorkItem } from './queue/work-queue.js'
import { ownerKey } from './store/result-store.js'
import type { Tenant } from './tenants.js'

// A stream's socket is not handed more results while this much is still unsent (slow reader):
// they stay undelivered in the store and count against the token's flow-control bound.
const SEND_HIGH_WATER = 4 * 1024 * 1024

let nextConnectionId = 1

type Outgoing = ServerMessage | StatusMessage

/**
 * JSON of one message or an array frame. Outputs JSON.stringify cannot write (nested too deeply
 * for its recursion; echo returns such inputs as they came) must not throw out of a send — in a
 * v1 flush that is a timer callback, and the process would end — so such a result becomes an
 * `ERR_MODEL` error result. The fallback only runs when the fast path threw.
 */
function serialize(msg: Outgoing | Outgoing[]): string {
  try {
    return JSON.stringify(msg)
  } catch {
    return Array.isArray(msg) ? `[${msg.map(serializeOne).join(',')}]` : serializeOne(msg)
  }
}

function serializeOne(msg: Outgoing): string {
  try {
    return JSON.stringify(msg)
  } catch (err) {
    if (msg.type !== 'results') throw err
    return JSON.stringify(resultMessage(msg.id, toWireError(new ModelError('Outputs cannot be serialized as JSON'))))
  }
}

/**
 * One websocket of `/bulk/stream/{compute}/{model}`: authenticates the first frame, turns payload
 * frames into queued work, and writes results (batched into array frames on v1).
 */
export class StreamConnection {
  readonly id = nextConnectionId++
  /** The tenant, once authenticated. */
  tenant: Tenant | undefined
  /** Tenant and model this stream's ids and results belong to; set once authenticated. */
  owner: string | undefined
  /** The model's pipeline, once authenticated (for loading status). */
  private pipeline: Pipeline | undefined
  /** v1 results written and not yet acked; handed back to the store if the socket closes. */
  readonly unacked = new Set<string>()
  private outbox: ServerMessage[] = []
  // Legacy: ids of store results in the outbox, handed back if they cannot be written.
  private legacyTracked: string[] = []
  private flushScheduled = false
  private closed = false
  private readonly authTimer: NodeJS.Timeout

  constructor(
    readonly ws: WebSocket,
    private readonly hub: StreamHub,
    readonly model: string,
    readonly compute: Compute,
    readonly v1: boolean,
  ) {
    this.authTimer = setTimeout(() => {
      this.reject(new AuthenticationError('No "Bearer <token>" frame received in time'))
    }, hub.options.authTimeoutMs)
    ws.on('message', (data, isBinary) => this.onMessage(data as Buffer | Buffer[], isBinary))
    ws.on('close', () => this.onClose())
    ws.on('error', (err) => hub.logger?.debug({ err, conn: this.id }, 'stream socket error'))
  }

  get isOpen(): boolean {
    return !this.closed && this.ws.readyState === 1
  }

  /** Whether this stream should be handed more results now. */
  canTake(): boolean {
    return (
      this.isOpen &&
      this.owner !== undefined &&
      this.ws.bufferedAmount < SEND_HIGH_WATER &&
      this.unacked.size < this.hub.options.maxQueuedPerToken
    )
  }

  private reject(err: InferenceStreamError): void {
    clearTimeout(this.authTimer)
    if (!this.isOpen) return
    this.hub.metrics.rejected.inc({ code: err.code })
    this.ws.send(JSON.stringify(errorStatus(err)))
    this.ws.close(1008, err.message.slice(0, 120))
    this.closed = true
  }

  private onMessage(data: Buffer | Buffer[], _isBinary: boolean): void {
    if (this.closed) return
    const text = frameText(data)
    if (this.tenant === undefined) {
      this.authenticate(text)
      return
    }
    const bytes = Buffer.isBuffer(data) ? data.length : Buffer.byteLength(text)
    if (bytes > this.hub.options.maxFrameBytes) {
      const err = new LimitExceededError(`Frame is ${bytes} bytes, over the limit of ${this.hub.options.maxFrameBytes}; it was skipped`)
      this.hub.metrics.rejected.inc({ code: err.code })
      this.send(errorStatus(err))
      return
    }
    this.handleFrame(text)
  }

  private authenticate(text: string): void {
    clearTimeout(this.authTimer)
    let token: string
    try {
      token = parseBearer(text)
    } catch (err) {
      this.reject(err as InferenceStreamError)
      return
    }
    const tenant = this.hub.authenticate(token)
    if (!tenant) {
      this.reject(new AuthenticationError('Invalid token'))
      return
    }
    const pipeline = this.hub.pipelineFor(this.model, this.compute)
    if (pipeline instanceof Error) {
      this.reject(pipeline)
      return
    }
    this.tenant = tenant
    this.pipeline = pipeline
    this.owner = ownerKey(tenant.id, this.model)
    const c = this.hub.store.counts(this.owner)
    const o = this.hub.options
    this.send({
      type: 'status',
      message: `Connected to ${this.model} (${this.compute})`,
      queued: c.queued,
      processing: c.processing,
      done: c.done,
      limits: { maxFrameBytes: o.maxFrameBytes, maxItemsPerFrame: o.maxItemsPerFrame, maxInputsBytes: o.maxInputsBytes },
    })
    this.hub.register(this)
    this.watchLoading(pipeline)
  }

  /**
   * A model that is not loaded yet starts loading now (so items sent next wait less), and this
   * stream is told: a `loading` status with `estimated_time` at once and every status interval
   * (see the server's status timer), then one when it is ready, or why it failed to load.
   */
  private watchLoading(pipeline: Pipeline): void {
    const state = pipeline.loadState?.()
    if (state === undefined || state.state === 'ready' || pipeline.load === undefined) return
    this.send(this.loadingStatus() ?? { type: 'status', message: `Loading model ${this.model}` })
    const started = performance.now()
    pipeline.load().then(
      () => {
        if (this.isOpen) this.send({ type: 'status', message: `Model ${this.model} is loaded`, loading: false, load_seconds: Math.round(performance.now() - started) / 1000 })
      },
      (err: unknown) => {
        if (this.isOpen) this.send(errorStatus(err instanceof InferenceStreamError ? err : new ModelError(String((err as Error)?.message ?? err))))
      },
    )
  }

  /** The status message of this stream's model while it loads, or undefined when it does not. */
  loadingStatus(): StatusMessage | undefined {
    const state = this.pipeline?.loadState?.()
    if (state === undefined || (state.state !== 'loading' && state.state !== 'unloaded')) return undefined
    return { type: 'status', message: `Model ${this.model} is currently loading`, loading: true, estimated_time: state.estimatedTime ?? 20 }
  }

  private handleFrame(text: string): void {
    const tenant = (this.tenant as Tenant).id
    const owner = this.owner as string
    const { store, metrics, options } = this.hub
    const entries = parseClientFrame(text, this.v1, options)
    const items: WorkItem[] = []
    const now = Date.now()
    for (const e of entries) {
      switch (e.kind) {
        case 'payload': {
          const id = e.payload.id ?? randomUUID()
          if (this.hub.closing) {
            this.sendResult(id, toWireError(new ShuttingDownError()), false)
            break
          }
          const state = store.admit(owner, id)
          if (state === 'new') {
            const parameters = e.payload.parameters
            items.push({
              tenant,
              owner,
              id,
              model: this.model,
              compute: this.compute,
              inputs: e.payload.inputs,
              parameters,
              group: groupKey(this.model, this.compute, parameters),
              enqueuedAt: now,
              origin: this.id,
            })
          } else {
            metrics.duplicates.inc({ state })
            // A finished duplicate gets its stored result again; a pending one gets its result when it is done.
            if (state === 'done') this.sendResult(id, store.lookup(owner, id).outputs, false)
          }
          break
        }
        case 'ack':
          for (const id of e.ids) this.unacked.delete(id)
          this.hub.flush(owner)
          break
        case 'resume': {
          const unknown: string[] = []
          for (const id of e.ids) {
            const found = store.lookup(owner, id)
            if (found.state === 'unknown') unknown.push(id)
            // The client asks because it lacks the result (it may have ignored an early copy):
            // send it again even when this stream already has it unacked.
            else if (found.state === 'done') {
              this.hub.store.claim(owner, id)
              this.sendResult(id, found.outputs, true)
            }
          }
          this.send({ type: 'resume', unknown })
          break
        }
        case 'error':
          metrics.rejected.inc({ code: e.error.code })
          if (e.id !== undefined) this.sendResult(e.id, toWireError(e.error), false)
          else this.send(errorStatus(e.error))
          break
      }
    }
    if (items.length > 0) this.hub.enqueue(this, items)
  }

  /**
   * Writes a result. `tracked`: the result is the store's, so on v1 it stays unacked until the
   * client acks, and on legacy it goes back to the store if the socket closes before it is written.
   */
  sendResult(id: string, outputs: unknown, tracked: boolean): void {
    if (!this.isOpen) {
      if (tracked) this.hub.store.returnUndelivered(this.owner as string, [id])
      return
    }
    if (tracked) {
      if (this.v1) this.unacked.add(id)
      else this.legacyTracked.push(id)
    }
    this.send(resultMessage(id, outputs))
  }

  /**
   * Sends a message. Messages of one event-loop turn are written together: on v1 as one array
   * frame, on legacy as one frame each but in one corked socket write with one callback, so a
   * batch of results costs one system call rather than one per result.
   */
  send(msg: ServerMessage | StatusMessage): void {
    if (!this.isOpen) return
    this.outbox.push(msg)
    if (!this.flushScheduled) {
      this.flushScheduled = true
      setImmediate(() => this.flushOutbox())
    }
  }

  private flushOutbox(): void {
    this.flushScheduled = false
    const out = this.outbox
    this.outbox = []
    const tracked = this.legacyTracked
    this.legacyTracked = []
    if (out.length === 0) return
    if (!this.isOpen) {
      if (tracked.length > 0) this.hub.store.returnUndelivered(this.owner as string, tracked)
      return
    }
    const done = (err?: Error): void => {
      // A failed legacy write: the socket is gone; those results wait for the next stream (the
      // client ignores any it had already received).
      if (err && tracked.length > 0) this.hub.store.returnUndelivered(this.owner as string, tracked)
      else this.hub.onDrain(this)
    }
    if (this.v1) {
      const max = this.hub.options.maxItemsPerFrame
      for (let i = 0; i < out.length; i += max) {
        const chunk = out.length === 1 ? out[0] : out.slice(i, i + max)
        this.ws.send(serialize(chunk), i + max >= out.length ? done : undefined)
      }
      return
    }
    // ws exposes no cork; its socket is a net.Socket, corked here for the burst.
    const socket = (this.ws as unknown as { _socket?: { cork(): void; uncork(): void } })._socket
    socket?.cork()
    for (let i = 0; i < out.length; i++) this.ws.send(serialize(out[i]), i === out.length - 1 ? done : undefined)
    socket?.uncork()
  }

  /** Stops reading the socket (flow control). */
  pause(): void {
    if (this.isOpen && !this.ws.isPaused) this.ws.pause()
  }

  /** Resumes reading the socket. */
  resume(): void {
    if (this.isOpen && this.ws.isPaused) this.ws.resume()
  }

  /** Ends the stream from the server side. */
  close(code: number, reason: string): void {
    if (this.isOpen) this.ws.close(code, reason)
  }

  private onClose(): void {
    clearTimeout(this.authTimer)
    this.closed = true
    this.outbox = []
    if (this.legacyTracked.length > 0) this.hub.store.returnUndelivered(this.owner as string, this.legacyTracked)
    this.legacyTracked = []
    if (this.owner !== undefined) this.hub.unregister(this)
  }
}

import { randomUUID } from 'node:crypto'
import type { WebSocket } from 'ws'
import {
  AuthenticationError,
  IdConflictError,
  InferenceStreamError,
  LimitExceededError,
  ModelError,
  OverloadedError,
  ShuttingDownError,
  toWireError,
} from '../errors.js'
import {
  errorStatus,
  frameText,
  parseBearer,
  parseClientFrame,
  payloadFingerprint,
  type ServerMessage,
  type StatusMessage,
} from '../protocol.js'
import type { Compute, Pipeline } from '../models/pipeline.js'
import type { StreamHub } from './stream-hub.js'
import { groupKey } from './queue/work-queue.js'
import type { SubmitItem } from './state/state-backend.js'
import { ownerKey } from './store/result-store.js'
import type { Tenant } from './tenants.js'

// A stream's socket is not handed more results while this much is still unsent (slow reader):
// they stay undelivered in the store and count against the token's flow-control bound.
const SEND_HIGH_WATER = 4 * 1024 * 1024

let nextConnectionId = 1

// Frames read and not yet handled, per stream, before its socket stops being read.
const INBOX_FRAMES = 64
// Bytes of frames handled as one group (one submit) at most, beyond the first frame.
const GROUP_BYTES = 64 * 1024

/**
 * JSON text of a result's outputs. Outputs JSON.stringify cannot write (nested too deeply for its
 * recursion; echo returns such inputs as they came) must not throw out of a send — in a v1 flush
 * that is a timer callback, and the process would end — so such a result becomes an `ERR_MODEL`
 * error result. Results are serialized once, here: the store keeps this text and sockets get it
 * as it is.
 */
export function outputsJson(outputs: unknown): string {
  try {
    return JSON.stringify(outputs) ?? 'null'
  } catch {
    return JSON.stringify(toWireError(new ModelError('Outputs cannot be serialized as JSON')))
  }
}

/** The text of a `results` message around outputs already serialized. */
function resultText(id: string, outputs: string): string {
  return `{"type":"results","id":${JSON.stringify(id)},"outputs":${outputs}}`
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
  private outbox: string[] = []
  // Legacy: ids of store results in the outbox, handed back if they cannot be written.
  private legacyTracked: string[] = []
  private flushScheduled = false
  private closed = false
  private readonly authTimer: NodeJS.Timeout
  // Frames not handled yet, in arrival order. The frames of one socket read are handled together
  // (one submit to the state backend for all their payloads, as they batch in the workers).
  private inbox: Array<{ text: string; bytes: number }> = []
  private inboxBytes = 0
  private draining = false
  private flowPaused = false

  constructor(
    readonly ws: WebSocket,
    private readonly hub: StreamHub,
    readonly model: string,
    readonly compute: Compute,
    readonly v1: boolean,
    /**
     * The connection's socket, as the upgrade handed it to ws (ws exposes no cork: bursts of
     * legacy frames are corked on it) and for the client's address in logs.
     */
    private readonly socket?: import('node:net').Socket,
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
      // No byte cap on unacked results: a paused socket would then never read the acks that
      // release them. Their memory is the store's, bounded by the retained budget.
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
    const bytes = Buffer.isBuffer(data) ? data.length : Buffer.byteLength(text)
    this.inbox.push({ text, bytes })
    this.inboxBytes += bytes
    // Frames wait here while earlier ones are handled: past a bound the socket is not read.
    if (this.inbox.length >= INBOX_FRAMES || this.inboxBytes >= this.hub.options.maxFrameBytes) this.applyPause()
    if (!this.draining) {
      this.draining = true
      setImmediate(() => void this.drain())
    }
  }

  // Handles what the inbox holds, then what came meanwhile, one group at a time.
  private async drain(): Promise<void> {
    try {
      while (this.inbox.length > 0 && !this.closed && !this.flowPaused) {
        // A group of frames (their payloads are one submit), small enough that flow control,
        // checked after each group, stops a tenant within about one group of its bounds.
        let n = 0
        let groupBytes = 0
        while (n < this.inbox.length && n < INBOX_FRAMES && groupBytes < GROUP_BYTES) groupBytes += this.inbox[n++].bytes
        const frames = this.inbox.splice(0, n)
        this.inboxBytes -= groupBytes
        this.applyPause()
        try {
          await this.handleFrames(frames)
          if (this.owner !== undefined) await this.hub.checkFlowNow(this.owner)
        } catch (err) {
          this.hub.logger?.error({ err, conn: this.id }, 'stream frame failed')
          this.send(errorStatus(err instanceof InferenceStreamError ? err : new ModelError(String((err as Error)?.message ?? err))))
        }
      }
    } finally {
      this.draining = false
    }
  }

  private async authenticate(text: string): Promise<void> {
    clearTimeout(this.authTimer)
    let token: string
    try {
      token = parseBearer(text)
    } catch (err) {
      this.reject(err as InferenceStreamError)
      return
    }
    const tenant = this.hub.authenticate(token, this.socket?.remoteAddress, `stream ${this.compute}/${this.model}`)
    if (!tenant) {
      this.reject(new AuthenticationError('Invalid token'))
      return
    }
    if (this.hub.streamCount(tenant.id) >= this.hub.options.maxStreamsPerTenant) {
      this.reject(new OverloadedError(`This tenant already has ${this.hub.options.maxStreamsPerTenant} open streams (the limit); close one or reuse a stream`))
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
    const c = await this.hub.state.counts(this.owner)
    if (!this.isOpen) return
    const o = this.hub.options
    this.send({
      type: 'status',
      message: `Connected to ${this.model} (${this.compute})`,
      queued: c.queued,
      processing: c.processing,
      done: c.done,
      limits: { maxFrameBytes: o.maxFrameBytes, maxItemsPerFrame: o.maxItemsPerFrame, maxInputsBytes: o.maxInputsBytes },
      // The task tells a client what an output means where its shape does not (`[]`: no entities).
      ...taskOf(pipeline),
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
        if (this.isOpen) this.send({ type: 'status', message: `Model ${this.model} is loaded`, loading: false, load_seconds: Math.round(performance.now() - started) / 1000, ...taskOf(pipeline) })
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

  private async handleFrames(frames: Array<{ text: string; bytes: number }>): Promise<void> {
    let batch: SubmitItem[] = []
    const metrics = this.hub.metrics
    // Consecutive payloads are submitted together (one backend transition), before any ack or resume after them.
    const submit = async (): Promise<void> => {
      if (batch.length === 0) return
      const items = batch
      batch = []
      let outcomes
      try {
        outcomes = await this.hub.submitStream(this, items)
      } catch (err) {
        // The backend refused (closing): answer each item so nothing waits forever.
        const body = toWireError(err)
        for (const item of items) this.sendResult(item.id, body, false)
        return
      }
      for (let i = 0; i < items.length; i++) {
        const outcome = outcomes[i]
        const id = items[i].id
        if (outcome.status === 'queued') continue
        if (outcome.status === 'conflict') {
          // The idempotency-key rule: never the other item's result, and this one is not run.
          const err = new IdConflictError(`Id ${JSON.stringify(id)} was already used with other inputs or parameters; this item was not run (ids must be unique per model)`)
          metrics.duplicates.inc({ state: 'conflict' })
          metrics.rejected.inc({ code: err.code })
          this.sendResult(id, toWireError(err), false)
        } else if (outcome.status === 'done' || outcome.status === 'pending') {
          metrics.duplicates.inc({ state: outcome.status })
          // A finished duplicate gets its stored result again; a pending one gets its result when it is done.
          if (outcome.status === 'done') this.sendResultJson(id, outcome.outputs, false)
        }
      }
    }
    for (const frame of frames) {
      if (this.closed) return
      if (this.tenant === undefined) {
        await submit()
        await this.authenticate(frame.text)
        continue
      }
      if (frame.bytes > this.hub.options.maxFrameBytes) {
        const err = new LimitExceededError(`Frame is ${frame.bytes} bytes, over the limit of ${this.hub.options.maxFrameBytes}; it was skipped`)
        this.hub.metrics.rejected.inc({ code: err.code })
        this.send(errorStatus(err))
        continue
      }
      const tenant = (this.tenant as Tenant).id
      const owner = this.owner as string
      const { state, metrics, options } = this.hub
      const entries = parseClientFrame(frame.text, this.v1, options)
      // Inputs are measured by their share of the frame: no second serialization on the hot path.
      let payloads = 0
      for (const e of entries) if (e.kind === 'payload') payloads++
      const bytes = payloads > 0 ? Math.ceil(frame.bytes / payloads) : 0
    for (const e of entries) {
      switch (e.kind) {
        case 'payload': {
          const id = e.payload.id ?? randomUUID()
          if (this.hub.closing) {
            this.sendResult(id, toWireError(new ShuttingDownError()), false)
            break
          }
          const parameters = e.payload.parameters
          // Only a client's id can be reused; a server-generated one needs no fingerprint.
          let fingerprint: string | undefined
          if (e.payload.id !== undefined) {
            try {
              fingerprint = payloadFingerprint(e.payload.inputs, parameters)
            } catch {
              // Inputs nested too deeply to serialize: unchecked (the model's answer says why).
            }
          }
          batch.push({
            tenant,
            owner,
            id,
            model: this.model,
            compute: this.compute,
            inputs: e.payload.inputs,
            parameters,
            group: groupKey(this.model, this.compute, parameters),
            fingerprint,
            bytes,
            route: { node: this.hub.node },
          })
          break
        }
        case 'ack':
          await submit()
          for (const id of e.ids) this.unacked.delete(id)
          await state.acknowledge(owner, e.ids)
          this.hub.flush(owner)
          break
        case 'resume': {
          await submit()
          const unknown: string[] = []
          const found = await state.lookup(owner, e.ids)
          for (let i = 0; i < e.ids.length; i++) {
            const id = e.ids[i]
            if (found[i].state === 'unknown') unknown.push(id)
            // The client asks because it lacks the result (it may have ignored an early copy):
            // send it again even when this stream already has it unacked.
            else if (found[i].state === 'done') {
              await state.claim(owner, id)
              this.sendResultJson(id, found[i].outputs ?? 'null', true)
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
    }
    await submit()
  }

  /** Writes a result that is not the store's (an error body, a refused item): serialized here. */
  sendResult(id: string, outputs: unknown, tracked: boolean): void {
    this.sendResultJson(id, outputsJson(outputs), tracked)
  }

  /**
   * Writes a result whose outputs are JSON text already. `tracked`: the result is the store's, so
   * on v1 it stays unacked until the client acks, and on legacy it goes back to the store if the
   * socket closes before it is written (and is acknowledged to the store once written).
   */
  sendResultJson(id: string, outputs: string, tracked: boolean): void {
    if (!this.isOpen) {
      if (tracked) this.hub.returnUndelivered(this.owner as string, [id])
      return
    }
    if (tracked) {
      if (this.v1) this.unacked.add(id)
      else this.legacyTracked.push(id)
    }
    this.push(resultText(id, outputs))
  }

  /**
   * Sends a message. Messages of one event-loop turn are written together: on v1 as one array
   * frame, on legacy as one frame each but in one corked socket write with one callback, so a
   * batch of results costs one system call rather than one per result.
   */
  send(msg: ServerMessage | StatusMessage): void {
    if (!this.isOpen) return
    this.push(JSON.stringify(msg))
  }

  private push(text: string): void {
    this.outbox.push(text)
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
      if (tracked.length > 0) this.hub.returnUndelivered(this.owner as string, tracked)
      return
    }
    const done = (err?: Error): void => {
      // A failed legacy write: the socket is gone; those results wait for the next stream (the
      // client ignores any it had already received). A written one is delivered (legacy has no acks).
      if (tracked.length > 0) {
        if (err) this.hub.returnUndelivered(this.owner as string, tracked)
        else this.hub.state.acknowledge(this.owner as string, tracked).catch((e: unknown) => this.hub.logger?.error({ err: e }, 'acknowledging results failed'))
      }
      if (!err) this.hub.onDrain(this)
    }
    if (this.v1) {
      if (out.length === 1) {
        this.ws.send(out[0], done)
        return
      }
      // Array frames of at most maxItemsPerFrame messages and about maxFrameBytes (big results
      // would otherwise make frames over what clients accept).
      const { maxItemsPerFrame, maxFrameBytes } = this.hub.options
      let start = 0
      let bytes = 0
      for (let i = 0; i < out.length; i++) {
        bytes += out[i].length
        const last = i === out.length - 1
        if (last || i + 1 - start >= maxItemsPerFrame || bytes + out[i + 1].length > maxFrameBytes) {
          this.ws.send(`[${out.slice(start, i + 1).join(',')}]`, last ? done : undefined)
          start = i + 1
          bytes = 0
        }
      }
      return
    }
    // One socket write for the burst.
    const socket = this.socket
    socket?.cork()
    for (let i = 0; i < out.length; i++) this.ws.send(out[i], i === out.length - 1 ? done : undefined)
    socket?.uncork()
  }

  /** Stops reading the socket (flow control). */
  pause(): void {
    this.flowPaused = true
    this.applyPause()
  }

  /** Resumes reading the socket (unless frames read already wait to be handled). */
  resume(): void {
    this.flowPaused = false
    this.applyPause()
    // Frames read before the pause are handled now.
    if (this.inbox.length > 0 && !this.draining) {
      this.draining = true
      setImmediate(() => void this.drain())
    }
  }

  // The socket is read only when neither flow control nor a full inbox holds it.
  private applyPause(): void {
    if (!this.isOpen) return
    const hold = this.flowPaused || this.inbox.length >= INBOX_FRAMES || this.inboxBytes >= this.hub.options.maxFrameBytes
    if (hold && !this.ws.isPaused) this.ws.pause()
    else if (!hold && this.ws.isPaused) this.ws.resume()
  }

  /** Ends the stream from the server side. */
  close(code: number, reason: string): void {
    if (this.isOpen) this.ws.close(code, reason)
  }

  private onClose(): void {
    clearTimeout(this.authTimer)
    this.closed = true
    this.outbox = []
    if (this.legacyTracked.length > 0) this.hub.returnUndelivered(this.owner as string, this.legacyTracked)
    this.legacyTracked = []
    if (this.owner !== undefined) this.hub.unregister(this)
  }
}

/** `{task}` of a pipeline whose task is known (a transformers.js model downloaded on first use knows it once loaded). */
function taskOf(pipeline: Pipeline): { task?: string } {
  const task = pipeline.task
  return typeof task === 'string' && task !== '' && task !== 'unknown' ? { task } : {}
}

import type { WebSocket } from 'ws'
import { AuthenticationError, InferenceStreamError, ModelError, OverloadedError } from '../errors.js'
import { errorStatus, frameText, parseBearer, type ServerMessage, type StatusMessage } from '../protocol.js'
import type { Compute } from '../models/pipeline.js'
import type { StreamHub } from './stream-hub.js'
import { ownerKey } from './store/result-store.js'
import { StreamSession, taskOf, type ReadFrame } from './streams/stream-session.js'

export { outputsJson } from './streams/stream-session.js'

let nextConnectionId = 1

// Frames read and not yet handled, per stream, before its socket stops being read.
const INBOX_FRAMES = 64
// Bytes of frames handled as one group (one submit) at most, beyond the first frame.
const GROUP_BYTES = 64 * 1024

/**
 * One websocket of `/bulk/stream/{compute}/{model}`: reads frames (bounded, in order, in groups),
 * writes messages (batched into array frames on v1), and authenticates the first frame. Until then
 * it has no tenant and nothing else is done with it; once authenticated, its {@link session}
 * handles every later frame and joins this node's streams.
 */
export class StreamConnection {
  readonly id = nextConnectionId++
  private sessionOf: StreamSession | undefined
  private outbox: string[] = []
  // Legacy: ids of store results in the outbox, handed back if they cannot be written.
  private legacyTracked: string[] = []
  private flushScheduled = false
  private closed = false
  private readonly authTimer: NodeJS.Timeout
  // Frames not handled yet, in arrival order. The frames of one socket read are handled together
  // (one submit to the state backend for all their payloads, as they batch in the workers).
  private inbox: ReadFrame[] = []
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

  /** The authenticated stream, or undefined before (and without) authentication. */
  get session(): StreamSession | undefined {
    return this.sessionOf
  }

  /** The socket closed (frames read before still count: a client's last acks come just before its close). */
  get ended(): boolean {
    return this.closed
  }

  get isOpen(): boolean {
    return !this.closed && this.ws.readyState === 1
  }

  /** Bytes queued on the socket and not yet sent. */
  get bufferedAmount(): number {
    return this.ws.bufferedAmount
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
          if (!this.sessionOf) await this.authenticate(frames.shift()!.text)
          const session = this.sessionOf
          if (!session) continue
          if (frames.length > 0) await session.handleFrames(frames)
          await this.hub.sockets.checkFlowNow(session.owner)
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
    const hub = this.hub
    const tenant = hub.authenticate(token, this.socket?.remoteAddress, `stream ${this.compute}/${this.model}`)
    if (!tenant) {
      this.reject(new AuthenticationError('Invalid token'))
      return
    }
    if (hub.sockets.countOf(tenant.id) >= hub.options.maxStreamsPerTenant) {
      this.reject(new OverloadedError(`This tenant already has ${hub.options.maxStreamsPerTenant} open streams (the limit); close one or reuse a stream`))
      return
    }
    const pipeline = hub.pipelineFor(this.model, this.compute)
    if (pipeline instanceof Error) {
      this.reject(pipeline)
      return
    }
    const owner = ownerKey(tenant.id, this.model)
    const c = await hub.state.counts(owner)
    if (!this.isOpen) return
    const session = new StreamSession(this, hub, tenant, owner, pipeline)
    this.sessionOf = session
    const o = hub.options
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
    hub.register(session)
    session.watchLoading()
    session.watchWorkers()
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

  /** Queues a message's text for this turn's write; `tracked`: the id of a legacy store result in it. */
  push(text: string, tracked?: string): void {
    this.outbox.push(text)
    if (tracked !== undefined) this.legacyTracked.push(tracked)
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
    const session = this.sessionOf
    if (!this.isOpen) {
      if (tracked.length > 0) session?.written(tracked, new Error('closed'))
      return
    }
    const done = (err?: Error): void => session?.written(tracked, err)
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
    const unwritten = this.legacyTracked
    this.legacyTracked = []
    this.sessionOf?.closed(unwritten)
  }
}

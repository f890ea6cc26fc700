import { EventEmitter } from 'node:events'
import WebSocket, { type ClientOptions } from 'ws'
import {
  AuthenticationError,
  ConnectionLostError,
  InferenceStreamError,
  ProtocolError,
  UnknownModelError,
} from '../errors.js'
import type http from 'node:http'
import { parseServerFrame, SUBPROTOCOL_V1, type StatusMessage } from '../protocol.js'
import { backoffDelay, type ResolvedReconnect } from './backoff.js'

/** Options of {@link StreamSocket}. */
export interface StreamSocketOptions {
  /** Stream URLs: one, or several to fail over between (round robin). */
  urls: readonly string[]
  token: string
  /** Ask for subprotocol `inference-stream.v1`. */
  v1: boolean
  reconnect: ResolvedReconnect | false
  /** Most messages per v1 frame (the server's announced limit wins when lower). */
  maxItemsPerFrame: number
  /** Passed to `ws` (headers, agent, handshakeTimeout...). */
  wsOptions?: ClientOptions
}

/**
 * Events of a {@link StreamSocket}:
 * - `open` (reconnected: boolean): the Bearer frame is sent; payloads may follow.
 * - `result` (id, outputs), `status` (message), `resume` (unknown ids).
 * - `reconnecting` (attempt, delayMs, cause, url): after a cut, attempt `attempt` goes to `url` (the
 *   next one of the list) in `delayMs`; `downgrade` (the server does not speak v1).
 * - `unreachable` (url, cause): the first connection could not reach `url` and tries the next one.
 * - `fatal` (error): the socket gave up; nothing more will be emitted.
 * - `unsent` (messages): messages queued for the turn's write when the socket closed; they never left.
 * - `ignored` (reason): a frame that could not be used.
 */
export interface StreamSocketEvents {
  open: [reconnected: boolean]
  result: [id: string, outputs: unknown]
  status: [message: StatusMessage]
  resume: [unknown: string[]]
  reconnecting: [attempt: number, delayMs: number, cause: Error | undefined, url: string]
  unreachable: [url: string, cause: Error | undefined]
  downgrade: []
  fatal: [error: InferenceStreamError]
  unsent: [messages: unknown[]]
  ignored: [reason: string]
}

/**
 * One logical connection to a stream endpoint over successive websockets: authenticates, batches
 * outgoing v1 messages per event-loop turn, parses incoming frames, and reconnects with backoff
 * after a cut. What to resend after a reconnect is the owner's decision (InferenceStream).
 *
 * With several URLs: the first connection tries each in order (no backoff: a server that is down
 * is skipped at once) and fails only when none answers; after a cut each attempt goes to the next
 * URL (round robin from the one that was cut), with the one backoff policy counting attempts across
 * the list. A refusal that retrying cannot fix (credentials, unknown model, not a stream endpoint)
 * is fatal wherever it comes from: the servers of one deployment answer alike.
 */
export class StreamSocket extends EventEmitter<StreamSocketEvents> {
  private ws: WebSocket | undefined
  private outbox: unknown[] = []
  private flushScheduled = false
  private acks: string[] = []
  private maxInFlight: number | undefined
  private attempt = 0
  // Index in o.urls of the URL in use (or being tried).
  private index = 0
  // The first connection's failures, one per URL tried: `url (why)`.
  private readonly unreached: string[] = []
  private opened = false
  private closedByUser = false
  private timer: NodeJS.Timeout | undefined
  private lastCause: Error | undefined
  private fatalStatus: StatusMessage | undefined
  // The last status with an error code: what a close 1008 that follows it is about.
  private errorStatus: StatusMessage | undefined
  /** The current connection's socket (from ws's 'upgrade' event), to cork bursts of frames. */
  private socket: import('node:net').Socket | undefined
  /** The HTTP answer of a refused handshake of the current attempt. */
  private refused: { status: number; message: string } | undefined
  private frameLimit: number
  /** Whether the current connection speaks v1 (false after a downgrade). */
  v1: boolean

  constructor(private readonly o: StreamSocketOptions) {
    super()
    this.v1 = o.v1
    this.frameLimit = o.maxItemsPerFrame
  }

  /** Whether a websocket is open and authenticated (as far as the client knows). */
  get connected(): boolean {
    return this.ws?.readyState === WebSocket.OPEN
  }

  /** The URL in use, or being tried. */
  get url(): string {
    return this.o.urls[this.index]
  }

  /** Whether a websocket of this connection ever opened. */
  get everOpened(): boolean {
    return this.opened
  }

  /**
   * Most items the server lets one connection hold sent and unanswered (its `x-max-in-flight`
   * upgrade header, docs/protocol.md); undefined before the first upgrade or from a server that does
   * not say.
   */
  get serverMaxInFlight(): number | undefined {
    return this.maxInFlight
  }

  /** Opens the first connection. */
  start(): void {
    this.connect()
  }

  private connect(): void {
    this.timer = undefined
    this.fatalStatus = undefined
    this.errorStatus = undefined
    this.refused = undefined
    this.socket = undefined
    const ws = new WebSocket(this.url, this.v1 ? [SUBPROTOCOL_V1] : [], { perMessageDeflate: false, ...this.o.wsOptions })
    this.ws = ws
    ws.on('open', () => {
      if (this.v1 && ws.protocol !== SUBPROTOCOL_V1) {
        // A server without our extensions: speak the original protocol from now on.
        this.v1 = false
        this.emit('downgrade')
      }
      ws.send(`Bearer ${this.o.token}`)
      const reconnected = this.opened
      this.opened = true
      this.emit('open', reconnected)
    })
    ws.on('message', (data) => this.onMessage(data as Buffer))
    ws.on('upgrade', (res) => {
      this.socket = res.socket
      const n = Number(res.headers['x-max-in-flight'])
      this.maxInFlight = Number.isInteger(n) && n > 0 ? n : undefined
    })
    ws.on('unexpected-response', (_req, res) => this.onRefusedHandshake(ws, res))
    ws.on('error', (err) => {
      this.lastCause = err
    })
    ws.on('close', (code, reason) => this.onClose(ws, code, reason.toString()))
  }

  private onMessage(data: Buffer): void {
    // Any frame proves the connection works: the reconnect budget starts over.
    this.attempt = 0
    for (const e of parseServerFrame(data.toString('utf8'))) {
      if (e.kind === 'result') this.emit('result', e.id, e.outputs)
      else if (e.kind === 'status') {
        const status = e.status
        if (status.code === 'ERR_AUTHENTICATION' || status.code === 'ERR_UNKNOWN_MODEL') this.fatalStatus = status
        if (typeof status.code === 'string') this.errorStatus = status
        const limits = status.limits as { maxItemsPerFrame?: number } | undefined
        if (limits && typeof limits.maxItemsPerFrame === 'number') {
          this.frameLimit = Math.max(1, Math.min(this.o.maxItemsPerFrame, limits.maxItemsPerFrame))
        }
        this.emit('status', status)
      } else if (e.kind === 'resume') this.emit('resume', e.unknown)
      else this.emit('ignored', e.reason)
    }
  }

  // A handshake the server answered with an HTTP status rather than 101: keep the status and
  // the start of its body (our server's `{"error"}`), then end the attempt.
  private onRefusedHandshake(ws: WebSocket, res: http.IncomingMessage): void {
    const chunks: Buffer[] = []
    let size = 0
    const end = (): void => {
      clearTimeout(timer)
      let message = Buffer.concat(chunks).toString('utf8').trim()
      try {
        const body = JSON.parse(message) as { error?: unknown }
        if (typeof body.error === 'string') message = body.error
      } catch {
        // not JSON: the text as it is
      }
      this.refused = { status: res.statusCode ?? 0, message: message.slice(0, 300) }
      ws.terminate()
    }
    const timer = setTimeout(end, 2000)
    res.on('data', (d: Buffer) => {
      if (size < 4096) chunks.push(d)
      size += d.length
    })
    res.once('end', end)
    res.once('error', end)
  }

  private onClose(ws: WebSocket, code: number, reason: string): void {
    if (ws !== this.ws) return
    this.ws = undefined
    const unsent = this.outbox
    this.outbox = []
    // Acks of results this connection held: the server hands those results out again.
    this.acks = []
    if (this.closedByUser) return
    if (unsent.length > 0) this.emit('unsent', unsent)
    const refused = this.refused
    // A refused handshake's own words, not ws's "closed before the connection was established".
    const cause = refused ? new Error(`HTTP ${refused.status}${refused.message ? `: ${refused.message}` : ''}`) : this.lastCause
    this.lastCause = undefined
    const fatal = this.fatalError(code, reason, cause)
    if (fatal) {
      this.emit('fatal', fatal)
      return
    }
    if (!this.opened) {
      // Never connected: a wrong address or a server that is down. Backoff is for cuts of a stream
      // that worked; here it would only make the user wait to hear the same thing. The next URL of
      // the list is tried at once; the stream fails when none answers, naming each.
      const why = cause ? cause.message : `closed with ${code}${reason ? ` ${reason}` : ''}`
      const urls = this.o.urls
      if (urls.length === 1) {
        this.emit('fatal', new ConnectionLostError(`Cannot reach ${this.url} (${why}); nothing was sent`, 0, { cause }))
        return
      }
      this.unreached.push(`${this.url} (${why})`)
      if (this.index + 1 < urls.length) {
        this.emit('unreachable', this.url, cause)
        this.index++
        this.timer = setTimeout(() => this.connect(), 0)
        return
      }
      this.emit('fatal', new ConnectionLostError(`Cannot reach any of the ${urls.length} endpoints tried: ${this.unreached.join(', ')}; nothing was sent`, 0, { cause }))
      return
    }
    if (this.o.reconnect === false) {
      this.emit('fatal', new ConnectionLostError(`Connection to ${this.url} closed (${code}${reason ? ` ${reason}` : ''})`, 0, { cause }))
      return
    }
    this.attempt++
    if (this.attempt > this.o.reconnect.maxAttempts) {
      const why = cause ? cause.message : `closed with ${code}`
      const message =
        this.o.urls.length === 1
          ? `Could not reconnect to ${this.url} after ${this.o.reconnect.maxAttempts} attempts (${why})`
          : `Could not reconnect to any of ${this.o.urls.join(', ')} after ${this.o.reconnect.maxAttempts} attempts (the last, to ${this.url}: ${why})`
      this.emit('fatal', new ConnectionLostError(message, 0, { cause }))
      return
    }
    // Round robin: a cut server is likely down, the next one likely up (with one URL: the same one).
    this.index = (this.index + 1) % this.o.urls.length
    const delay = backoffDelay(this.attempt, this.o.reconnect)
    this.emit('reconnecting', this.attempt, delay, cause, this.url)
    this.timer = setTimeout(() => this.connect(), delay)
  }

  // Closes that retrying cannot fix: refused credentials, unknown model, endpoint not found.
  private fatalError(code: number, reason: string, cause: Error | undefined): InferenceStreamError | undefined {
    const status = this.fatalStatus ?? (code === 1008 ? this.errorStatus : undefined)
    if (code === 1008 || status) {
      const message = status?.message ?? (reason || 'Connection refused by policy (1008)')
      if (status?.code === 'ERR_UNKNOWN_MODEL') return new UnknownModelError(message)
      // A model this server cannot run (no GPU, a missing package): the server's own code and words.
      if (status?.code !== undefined && status.code !== 'ERR_AUTHENTICATION') return new InferenceStreamError(message, status.code)
      return new AuthenticationError(message)
    }
    if (this.refused) {
      const { status, message } = this.refused
      const why = message ? `HTTP ${status}: ${message}` : `HTTP ${status}`
      if (status === 401 || status === 403) return new AuthenticationError(`${this.url} refused the connection (${why})`)
      if (status >= 400 && status < 500) return new ProtocolError(`${this.url} is not a stream endpoint (${why})`)
    }
    return undefined
  }

  /**
   * Queues a message; the messages of one event-loop turn go out together (v1: as one array
   * frame; legacy: one frame each, in one socket write). False when not connected.
   */
  send(msg: unknown): boolean {
    const ws = this.ws
    if (!ws || ws.readyState !== WebSocket.OPEN) return false
    this.outbox.push(msg)
    if (!this.flushScheduled) {
      this.flushScheduled = true
      setImmediate(() => this.flush())
    }
    return true
  }

  /**
   * Queues an ack (v1) of a result: the acks of a turn go out as one message, ahead of everything
   * else queued in that turn. A server stops reading a connection that has too much queued (flow
   * control) while the results it holds wait for their acks: acks must never wait behind new items.
   */
  ack(id: string): void {
    const ws = this.ws
    if (!ws || ws.readyState !== WebSocket.OPEN) return
    this.acks.push(id)
    if (!this.flushScheduled) {
      this.flushScheduled = true
      setImmediate(() => this.flush())
    }
  }

  private flush(): void {
    this.flushScheduled = false
    const out = this.outbox
    this.outbox = []
    if (this.acks.length > 0) {
      out.unshift({ type: 'ack', ids: this.acks })
      this.acks = []
    }
    const ws = this.ws
    if (!ws || ws.readyState !== WebSocket.OPEN || out.length === 0) return
    if (this.v1) {
      for (let i = 0; i < out.length; i += this.frameLimit) {
        ws.send(JSON.stringify(out.length === 1 ? out[0] : out.slice(i, i + this.frameLimit)))
      }
      return
    }
    // Legacy: one frame per message, as the original protocol has it, but the turn's frames go
    // out in one corked socket write (ws exposes no cork: the socket comes from its 'upgrade' event).
    const socket = this.socket
    socket?.cork()
    for (const m of out) ws.send(JSON.stringify(m))
    socket?.uncork()
  }

  /** Bytes queued in the websocket and not yet written to the network. */
  get bufferedAmount(): number {
    return this.ws?.bufferedAmount ?? 0
  }

  /** Cuts the current websocket as a network failure would (it reconnects); for failure drills. */
  drop(): void {
    this.ws?.terminate()
  }

  /** Closes for good: no reconnect, no more events. */
  close(): void {
    this.closedByUser = true
    if (this.timer) clearTimeout(this.timer)
    this.timer = undefined
    // What this turn queued (the last acks) goes out before the close frame: an unsent ack leaves
    // the result undelivered on the server, which would hand it to the token's next stream.
    if (this.outbox.length > 0 || this.acks.length > 0) this.flush()
    const ws = this.ws
    this.ws = undefined
    if (!ws) return
    if (ws.readyState === WebSocket.OPEN) {
      ws.close(1000)
      // A peer that never answers the close handshake must not keep the process alive.
      const t = setTimeout(() => ws.terminate(), 1000)
      t.unref()
      ws.once('close', () => clearTimeout(t))
    } else ws.terminate()
  }
}

import { Duplex } from 'node:stream'
import {
  AbortError,
  CheckpointError,
  ConnectionLostError,
  InferenceItemError,
  InferenceStreamError,
  InvalidPayloadError,
  MissingInputError,
} from '../errors.js'
import { MAX_ID_LENGTH, parametersKey, type StatusMessage } from '../protocol.js'
import { CheckpointJournal, inputHash } from './checkpoint-journal.js'
import { LatencyStats } from './latency-stats.js'
import { ReorderBuffer } from './reorder-buffer.js'
import { StreamSocket } from './stream-socket.js'
import { resolveStreamOptions, streamPathOf, type InferenceStreamOptions, type ResolvedStreamOptions } from './options.js'

/** What the readable side emits for each record written. */
export interface InferenceResult<R = unknown> {
  /** The item's id (given by the `id` option, or `${runId}-${seq}`). */
  id: string
  /** The model's outputs; for a failed item, the server's error body `{"error", "code"}`. */
  outputs: unknown
  /** The record written (unless `includeRecord: false`). */
  record?: R
  /** Set when the item failed (on the server, or locally before sending). */
  error?: InferenceStreamError
}

/** Progress counters of an {@link InferenceStream}. */
export interface InferenceStreamStats {
  /** Records written. */
  written: number
  /** Payloads sent (a payload resent after a reconnect counts again in `resent`, not here). */
  sent: number
  /** Results received for items in flight. */
  received: number
  /** Results that were errors (server-side or local). */
  failed: number
  /** Sent and not yet answered. */
  inFlight: number
  /** Reconnects after cuts. */
  reconnects: number
  /** Payloads sent again because the server did not know them after a reconnect. */
  resent: number
  /** Results ignored: ids never sent, or already answered. */
  ignored: number
  /** Results replayed from the checkpoint journal, without the network. */
  replayed: number
}

interface Entry<R> {
  seq: number
  id: string
  record: R
  payload: { id: string; inputs: unknown; parameters?: Record<string, unknown> }
  sent: boolean
  // performance.now() when first sent, for latency.
  sentAt: number
  // False while its write-ahead journal entry is not yet on disk: it may not be sent before.
  durable: boolean
}

// Ids asked about after a reconnect (or from an earlier run) whose results do not come are asked
// about again: first after this long without an answer to any of them, doubling up to the max.
// A server that knows an id as pending delivers its result when it finishes, but one routed to
// another front-end (the one that died, or the one an earlier run used) may wait in the shared
// store until something asks for it; asking again gets it (lookup is cheap, nothing is rerun).
const REASK_MIN_MS = 1000
const REASK_MAX_MS = 16_000

// Checkpoint replays read at once (results read back from the journal, not sent: outside the
// network window, which a resumed run may have set to one record).
const REPLAY_WINDOW = 1024

// Marks a skipped failure in the reorder buffer: it takes its place in the order, emits nothing.
const SKIP = Symbol('skip')
type Slot<R> = InferenceResult<R> | typeof SKIP

function isErrorBody(outputs: unknown): outputs is { error: string; code?: string } {
  return typeof outputs === 'object' && outputs !== null && !Array.isArray(outputs) && typeof (outputs as { error?: unknown }).error === 'string'
}

/**
 * Object-mode Duplex: records in, inference results out, over one websocket stream.
 *
 * At most `maxInFlight` records are between the writable and the readable side: `_write` holds
 * its callback when the window is full, so the source pauses. Results come out in input order
 * (`ordered`, default) or as they arrive. After a cut the stream reconnects; on v1 it asks the
 * server which ids it does not know and resends only those, on legacy it resends the unanswered
 * ones (the server runs a known id only once either way). Errors surface through `destroy(err)`.
 *
 * Given several URLs it fails over: the first connection takes the first that answers, and after a
 * cut it reconnects to the next one, round robin, and resumes there the same way (servers sharing
 * their state know every id either was sent, so nothing runs or is billed twice).
 *
 * Events besides the stream's own: `status` (a server status message), `reconnecting` (attempt,
 * delayMs, cause, url: the next attempt, after a cut), `reconnect` (count, once connected again),
 * `unreachable` (url, cause: the first connection skips a URL that does not answer),
 * `downgrade` (the server does not speak v1), `checkpoint` (once the
 * checkpoint is open: `{path, results, unanswered}`, the results it holds from earlier runs and the
 * ids they sent without an answer — how much a resumed run will replay and ask about).
 *
 * @example
 * await pipeline(source, new InferenceStream({ url, model: 'builtin/sentiment', token }), sink)
 */
export class InferenceStream<R = unknown> extends Duplex {
  private readonly o: ResolvedStreamOptions<R>
  private readonly socket: StreamSocket
  private readonly inflight = new Map<string, Entry<R>>()
  private readonly reorder = new ReorderBuffer<Slot<R>>()
  private ready: InferenceResult<R>[] = []
  private readyHead = 0
  private outstanding = 0
  // Of those, results being read back from the checkpoint journal (replays): they do not hold the
  // network window, which may be one record wide, and have a bound of their own.
  private replaying = 0
  private seq = 0
  private wantRead = false
  private heldWrite: ((err?: Error | null) => void) | undefined
  private finalCallback: ((err?: Error | null) => void) | undefined
  private readonly onAbort: (() => void) | undefined
  private readonly counters = { written: 0, sent: 0, received: 0, failed: 0, reconnects: 0, resent: 0, ignored: 0, replayed: 0 }
  private journal: CheckpointJournal | undefined
  // Ids whose results are journaled but not yet on disk (their ack waits for the commit).
  private readonly journaling = new Set<string>()
  private idOf: (record: R, seq: number) => string
  private requery: string[] = []
  private requeryScheduled = false
  private compacting: Promise<void> | undefined
  private maxOutstanding = 0
  private modelTask: string | undefined
  // Ids asked about (resume query, or resent on legacy) whose results have not come yet.
  private readonly awaiting = new Set<string>()
  private reaskTimer: NodeJS.Timeout | undefined
  private reaskDelay = REASK_MIN_MS
  private awaitedAnswered = false

  constructor(options: InferenceStreamOptions<R>) {
    // Checked before the stream exists: a bad option throws here and leaves no half-built stream
    // whose _construct would fail on the next tick.
    const o = resolveStreamOptions(options)
    super({ objectMode: true, writableHighWaterMark: 16, readableHighWaterMark: 16 })
    this.o = o
    this.idOf = this.o.id
    this.socket = new StreamSocket({
      urls: this.o.streamUrls,
      token: this.o.token,
      v1: this.o.v1,
      reconnect: this.o.reconnect,
      maxItemsPerFrame: this.o.maxItemsPerFrame,
      wsOptions: this.o.wsOptions,
    })
    this.socket.on('open', (reconnected) => this.onOpen(reconnected))
    this.socket.on('result', (id, outputs) => this.onResult(id, outputs))
    this.socket.on('resume', (unknown) => this.onResume(unknown))
    this.socket.on('status', (msg: StatusMessage) => {
      if (typeof msg.task === 'string' && msg.task !== '') this.modelTask = msg.task
      this.emit('status', msg)
    })
    this.socket.on('downgrade', () => this.emit('downgrade'))
    this.socket.on('ignored', () => this.counters.ignored++)
    this.socket.on('unsent', (msgs) => this.onUnsent(msgs))
    this.socket.on('reconnecting', (attempt, delayMs, cause, url) => this.emit('reconnecting', attempt, delayMs, cause, url))
    this.socket.on('unreachable', (url, cause) => this.emit('unreachable', url, cause))
    this.socket.on('fatal', (err) => {
      if (err instanceof ConnectionLostError && this.socket.everOpened) {
        const n = this.inflight.size
        err = new ConnectionLostError(`${err.message}; ${n} item${n === 1 ? '' : 's'} sent and unanswered`, n, { cause: err })
      }
      this.destroy(err)
    })
    const signal = this.o.signal
    if (signal) {
      this.onAbort = () => this.destroy(new AbortError(undefined, { cause: signal.reason }))
      if (signal.aborted) {
        queueMicrotask(this.onAbort)
      } else signal.addEventListener('abort', this.onAbort, { once: true })
    }
    this.socket.start()
  }

  override _construct(callback: (err?: Error | null) => void): void {
    const cp = this.o.checkpoint
    if (!cp) return callback()
    const header = {
      // What is run, not where: a resume may use other endpoints, in any order (see streamPathOf).
      model: streamPathOf(this.o.streamUrls[0]),
      parameters: parametersKey(this.o.parameters),
      fingerprint: { ...cp.fingerprint, ...(this.o.runId ? { runId: this.o.runId } : {}) },
    }
    CheckpointJournal.open(cp.path, header, { commitIntervalMs: cp.commitIntervalMs, runId: this.o.runId, lock: cp.lock, fingerprintNames: cp.fingerprintNames }).then(
      (journal) => {
        this.journal = journal
        // Default ids take the checkpoint's run id, so a re-run produces the same ids.
        if (!this.o.customId) this.idOf = (_r, seq) => `${journal.runId}-${seq}`
        journal.onCommit = (sentIds, resultIds) => this.onJournalCommit(sentIds, resultIds)
        journal.onError = (err) => this.destroy(err)
        this.emit('checkpoint', { path: cp.path, results: journal.resultCount, unanswered: journal.unansweredCount })
        callback()
      },
      (err: Error) => callback(err),
    )
  }

  /** Round-trip latency of answered items (sent → result), in ms: `percentile(50)`, `mean`, `max`. */
  readonly latency = new LatencyStats()

  /** Progress counters (a snapshot). */
  get stats(): InferenceStreamStats {
    return { ...this.counters, inFlight: this.inFlight }
  }

  /** Sent (or waiting to be sent) and not yet answered. */
  get inFlight(): number {
    return this.inflight.size
  }

  /** Largest number of records ever between the two sides; never above `maxInFlight`, nor above the server's `X-Max-In-Flight`. */
  get peakInFlight(): number {
    return this.maxOutstanding
  }

  /**
   * The model's task (`text-classification`, `token-classification`, …) as the server named it in a
   * status message (when the stream connected, or when the model finished loading); undefined until
   * then, or from a server that does not say. Writers take it as `task: () => stream.task`.
   */
  get task(): string | undefined {
    return this.modelTask
  }

  /** The websocket URL in use (with several, the one connected or being tried). */
  get url(): string {
    return this.socket.url
  }

  /** Every websocket URL of the stream, in the order given (one unless it fails over). */
  get urls(): readonly string[] {
    return this.o.streamUrls
  }

  /** Cuts the current websocket as a network failure would; the stream reconnects. For drills and tests. */
  dropConnection(): void {
    this.socket.drop()
  }

  override _write(record: R, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    const seq = this.seq++
    this.counters.written++
    this.outstanding++
    const entry = this.makeEntry(record, seq)
    if (entry instanceof InferenceStreamError) {
      this.notePeak()
      // A record that cannot become a payload fails alone, in its place in the order.
      const result: InferenceResult<R> = { id: this.failedId(record, seq), outputs: { error: entry.message, code: entry.code }, error: entry }
      if (this.o.includeRecord) result.record = record
      this.settle(seq, result)
    } else if (this.journal) {
      if (!this.writeJournaled(entry, this.journal)) this.notePeak()
    } else {
      this.notePeak()
      this.inflight.set(entry.id, entry)
      this.trySend(entry)
    }
    if (this.canWrite()) callback()
    else this.heldWrite = callback
  }

  private notePeak(): void {
    const n = this.outstanding - this.replaying
    if (n > this.maxOutstanding) this.maxOutstanding = n
  }

  private trySend(entry: Entry<R>): void {
    if (this.socket.send(entry.payload)) {
      entry.sent = true
      entry.sentAt = performance.now()
      this.counters.sent++
    }
  }

  // With a checkpoint: replay a journaled result, wait for an id sent by an earlier run, or
  // journal a new id (write-ahead) and send it once that is on disk. True when replayed.
  private writeJournaled(entry: Entry<R>, journal: CheckpointJournal): boolean {
    const hash = inputHash(entry.payload.inputs)
    const known = journal.sentHash(entry.id)
    if (known !== undefined && known !== '' && known !== hash) {
      this.destroy(new CheckpointError(`Checkpoint ${journal.path} is from another input: item ${entry.id} had other inputs`))
      return false
    }
    if (journal.hasResult(entry.id)) {
      this.counters.replayed++
      this.replaying++
      journal.readResult(entry.id).then(
        (outputs) => {
          this.replaying--
          if (this.destroyed) return
          const result: InferenceResult<R> = { id: entry.id, outputs }
          if (this.o.includeRecord) result.record = entry.record
          if (isErrorBody(outputs)) result.error = new InferenceItemError(outputs.error, entry.id, outputs.code)
          this.settle(entry.seq, result)
        },
        (err: Error) => {
          this.replaying--
          this.destroy(err)
        },
      )
      return true
    }
    this.inflight.set(entry.id, entry)
    if (known !== undefined) {
      // Sent by an earlier run: ask the server about it rather than send it blindly.
      entry.sent = true
      this.counters.sent++
      this.requeryLater(entry.id)
      return false
    }
    entry.durable = false
    journal.appendSent(entry.id, hash)
    return false
  }

  private requeryLater(id: string): void {
    this.requery.push(id)
    if (this.requeryScheduled) return
    this.requeryScheduled = true
    setImmediate(() => {
      this.requeryScheduled = false
      const ids = this.requery.filter((i) => this.inflight.has(i))
      this.requery = []
      // Not connected: onOpen asks about every sent id anyway.
      if (ids.length === 0 || !this.socket.connected) return
      this.ask(ids)
      this.awaitAnswers(ids)
    })
  }

  // Asks the server about ids sent earlier: a resume query on v1; on legacy the payloads again
  // (the server answers a known id from its store, or leaves it to the run under way).
  private ask(ids: string[]): void {
    if (this.socket.v1) this.socket.send({ type: 'resume', ids })
    else for (const i of ids) this.resend(this.inflight.get(i) as Entry<R>)
  }

  // Watches asked-about ids: when none of them is answered for a while, asks about them again.
  private awaitAnswers(ids: Iterable<string>): void {
    for (const id of ids) this.awaiting.add(id)
    this.reaskDelay = REASK_MIN_MS
    this.armReask()
  }

  private armReask(): void {
    if (this.reaskTimer || this.awaiting.size === 0 || this.destroyed) return
    this.reaskTimer = setTimeout(() => this.onReaskTimer(), this.reaskDelay)
  }

  private onReaskTimer(): void {
    this.reaskTimer = undefined
    for (const id of this.awaiting) if (!this.inflight.has(id)) this.awaiting.delete(id)
    if (this.awaiting.size === 0 || this.destroyed) return
    if (this.awaitedAnswered) {
      // Answers are coming: look again later.
      this.awaitedAnswered = false
      this.reaskDelay = REASK_MIN_MS
    } else {
      // Not connected: onOpen asks about them anyway.
      if (this.socket.connected) this.ask([...this.awaiting])
      this.reaskDelay = Math.min(REASK_MAX_MS, this.reaskDelay * 2)
    }
    this.armReask()
  }

  private stopReask(): void {
    if (this.reaskTimer) clearTimeout(this.reaskTimer)
    this.reaskTimer = undefined
    this.awaiting.clear()
  }

  private resend(e: Entry<R>): void {
    if (this.socket.send(e.payload)) this.counters.resent++
  }

  private onJournalCommit(sentIds: string[], resultIds: string[]): void {
    for (const id of sentIds) {
      const e = this.inflight.get(id)
      if (!e || e.durable) continue
      e.durable = true
      this.trySend(e)
    }
    // Acked only once journaled: until then the server keeps the result for a reconnect.
    for (const id of resultIds) this.journaling.delete(id)
    if (this.socket.v1) for (const id of resultIds) this.ack(id)
    const journal = this.journal
    if (journal && journal.wantsCompaction && !this.compacting) {
      this.compacting = journal.compact().then(
        () => {
          this.compacting = undefined
        },
        (err: Error) => {
          this.destroy(err)
        },
      )
    }
  }

  // The id a failed record's result carries: its own when the id mapping gives a usable one (the
  // failure was elsewhere), else the sequence number. Only failures pay for the second call.
  private failedId(record: R, seq: number): string {
    try {
      const id = this.idOf(record, seq)
      if (typeof id === 'string' && id.length > 0 && id.length <= MAX_ID_LENGTH) return id
    } catch {
      // the id mapping itself failed
    }
    return String(seq)
  }

  private makeEntry(record: R, seq: number): Entry<R> | InferenceStreamError {
    let payload
    let id
    try {
      payload = this.o.input(record)
      id = this.idOf(record, seq)
    } catch (err) {
      return err instanceof InferenceStreamError ? err : new InvalidPayloadError(`Record ${seq} could not be mapped: ${(err as Error)?.message ?? err}`)
    }
    if (typeof payload !== 'object' || payload === null) {
      return new InvalidPayloadError(`Record ${seq}: the input mapping returned ${String(payload)}, not a payload {inputs, parameters?}`)
    }
    // The same rule as the server's: no inputs (absent, null) is missing; '' is an input.
    if (payload.inputs === undefined || payload.inputs === null) {
      return new MissingInputError(`Record ${seq} has no inputs (the input mapping returned ${payload.inputs === null ? '"inputs": null' : 'no "inputs"'})`)
    }
    if (typeof id !== 'string' || id.length === 0 || id.length > MAX_ID_LENGTH) {
      return new InvalidPayloadError(`Record ${seq}: the id must be a non-empty string of at most ${MAX_ID_LENGTH} characters, got ${JSON.stringify(id)}`)
    }
    if (this.inflight.has(id)) return new InvalidPayloadError(`Record ${seq}: id ${JSON.stringify(id)} is already in flight`)
    const parameters = this.o.parameters ? { ...this.o.parameters, ...payload.parameters } : payload.parameters
    const wire: Entry<R>['payload'] = { id, inputs: payload.inputs }
    if (parameters !== undefined) wire.parameters = parameters
    return { seq, id, record, payload: wire, sent: false, sentAt: 0, durable: true }
  }

  // Records let in at once: maxInFlight, and no more than the server takes from one connection
  // (over it, the server stops reading the socket while the results it holds wait for acks: a
  // deadlock). Before the first connection, one: the server's bound comes with the handshake.
  private window(): number {
    if (!this.socket.everOpened) return 1
    return Math.min(this.o.maxInFlight, this.socket.serverMaxInFlight ?? Infinity)
  }

  // Whether another record may come in: the network window has room (replays being read do not
  // count), and fewer than REPLAY_WINDOW replays are being read.
  private canWrite(): boolean {
    return this.outstanding - this.replaying < this.window() && this.replaying < REPLAY_WINDOW
  }

  private onOpen(reconnected: boolean): void {
    if (reconnected) {
      this.counters.reconnects++
      this.emit('reconnect', this.counters.reconnects)
    }
    const known: string[] = []
    const resent: string[] = []
    for (const e of this.inflight.values()) {
      if (e.sent && this.socket.v1) {
        known.push(e.id)
        continue
      }
      if (!e.durable) continue // sent when its journal entry is on disk
      // Never sent, or legacy (no resume query): send. The server runs a known id only once.
      if (this.socket.send(e.payload)) {
        if (e.sent) {
          this.counters.resent++
          resent.push(e.id)
        } else this.counters.sent++
        e.sent = true
        if (e.sentAt === 0) e.sentAt = performance.now()
      }
    }
    if (known.length > 0) this.socket.send({ type: 'resume', ids: known })
    this.awaitAnswers(known.length > 0 ? known : resent)
    // The window is known now (the server's bound): let more records in if it grew.
    if (this.heldWrite && this.canWrite()) {
      const cb = this.heldWrite
      this.heldWrite = undefined
      cb()
    }
  }

  // Payloads queued for a frame that never left because the socket closed: not sent after all.
  private onUnsent(msgs: unknown[]): void {
    for (const m of msgs) {
      const id = (m as { id?: unknown }).id
      const e = typeof id === 'string' ? this.inflight.get(id) : undefined
      if (e && e.payload === m && e.sent) {
        e.sent = false
        this.counters.sent--
      }
    }
  }

  private onResume(unknown: string[]): void {
    for (const id of unknown) {
      const e = this.inflight.get(id)
      // Sent again here: its result comes back to this connection like any other.
      this.awaiting.delete(id)
      if (e) this.resend(e)
    }
  }

  private onResult(id: string, outputs: unknown): void {
    // Frames already buffered when the stream was destroyed: the server keeps those results.
    if (this.destroyed) return
    const e = this.inflight.get(id)
    if (!e) {
      this.counters.ignored++
      // Acked all the same (unless its first copy awaits the journal, whose commit acks it): the
      // server holds a v1 result against this connection until it is acked, and a connection
      // holding maxQueuedPerToken of them is handed nothing more. Copies of results this run
      // already has (an ack lost in a server crash, a resume answering what the reconnect had
      // just delivered) and other runs' leftovers on the token would otherwise stall it. An acked
      // result stays retained, so another run of the token can still resume it.
      if (this.socket.v1 && !this.journaling.has(id)) this.ack(id)
      return
    }
    this.inflight.delete(id)
    if (this.awaiting.delete(id)) this.awaitedAnswered = true
    this.counters.received++
    if (e.sentAt > 0) this.latency.add(performance.now() - e.sentAt)
    if (this.journal) {
      this.journal.appendResult(id, outputs)
      this.journaling.add(id)
    } else if (this.socket.v1) this.ack(id)
    const result: InferenceResult<R> = { id, outputs }
    if (this.o.includeRecord) result.record = e.record
    if (isErrorBody(outputs)) result.error = new InferenceItemError(outputs.error, id, outputs.code)
    this.settle(e.seq, result)
  }

  // A finished record: failures follow `onError`, everything takes its place in the order.
  private settle(seq: number, result: InferenceResult<R>): void {
    if (result.error) {
      this.counters.failed++
      if (this.o.onError === 'emit') {
        this.destroy(result.error)
        return
      }
      if (this.o.onError === 'skip') {
        this.place(seq, SKIP)
        return
      }
    }
    this.place(seq, result)
  }

  private ack(id: string): void {
    this.socket.ack(id)
  }

  // Queued acks go out with the close (the socket flushes what this turn queued first).
  private closeSocket(): void {
    this.socket.close()
  }

  // Puts a finished slot in order (or straight out when unordered), then pushes what can go.
  private place(seq: number, slot: Slot<R>): void {
    if (this.o.ordered) {
      for (const s of this.reorder.add(seq, slot)) this.enqueue(s)
    } else this.enqueue(slot)
    this.pushReady()
  }

  private enqueue(slot: Slot<R>): void {
    if (slot === SKIP) this.outstanding--
    else this.ready.push(slot)
  }

  private pushReady(): void {
    while (this.wantRead && this.readyHead < this.ready.length) {
      const r = this.ready[this.readyHead++]
      this.outstanding--
      this.wantRead = this.push(r)
    }
    if (this.readyHead === this.ready.length) {
      this.ready = []
      this.readyHead = 0
    }
    if (this.heldWrite && this.canWrite()) {
      const cb = this.heldWrite
      this.heldWrite = undefined
      cb()
    }
    this.maybeEnd()
  }

  override _read(): void {
    this.wantRead = true
    this.pushReady()
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.finalCallback = callback
    this.maybeEnd()
  }

  private maybeEnd(): void {
    if (!this.finalCallback || this.outstanding > 0) return
    const cb = this.finalCallback
    this.finalCallback = undefined
    this.closeJournal(true).then(
      () => {
        // The last acks (released by the final commit) go out before the socket closes.
        setImmediate(() => {
          this.stopReask()
          this.push(null)
          this.closeSocket()
          if (this.onAbort) this.o.signal?.removeEventListener('abort', this.onAbort)
          cb()
        })
      },
      (err: Error) => cb(err),
    )
  }

  // Commits what is pending (compacting at the end of a finished run) and closes the file.
  private async closeJournal(finished: boolean): Promise<void> {
    const journal = this.journal
    if (!journal) return
    this.journal = undefined
    await this.compacting
    await journal.commit()
    if (finished && journal.wantsFinalCompaction) await journal.compact()
    await journal.close()
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.stopReask()
    this.closeSocket()
    if (this.onAbort) this.o.signal?.removeEventListener('abort', this.onAbort)
    this.heldWrite = undefined
    this.finalCallback = undefined
    // What was journaled stays journaled: a re-run resumes from it.
    this.closeJournal(false).then(
      () => callback(err),
      () => callback(err),
    )
  }
}

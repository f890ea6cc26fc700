import { randomUUID } from 'node:crypto'
import { IdConflictError, InferenceStreamError, LimitExceededError, ModelError, ShuttingDownError, toWireError } from '../../errors.js'
import type { Pipeline } from '../../models/pipeline.js'
import { errorStatus, parseClientFrame, payloadFingerprint, type ServerMessage, type StatusMessage } from '../../protocol.js'
import { groupKey } from '../queue/work-queue.js'
import type { Route, SubmitItem } from '../state/state-backend.js'
import type { StreamHub } from '../stream-hub.js'
import type { StreamConnection } from '../stream-connection.js'
import type { Tenant } from '../tenants.js'

// A stream's socket is not handed more results while this much is still unsent (slow reader):
// they stay undelivered in the store and count against the token's flow-control bound.
const SEND_HIGH_WATER = 4 * 1024 * 1024

// Acknowledgements of one stream sent to the backend and not yet answered, at most: past it the
// stream's next frames wait for them (a client that only sends acks cannot queue work without end).
const ACKS_AHEAD = 8

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

/** A frame as read from the socket. */
export interface ReadFrame {
  readonly text: string
  readonly bytes: number
}

/**
 * An authenticated stream: the tenant, the owner (tenant and model) its ids and results belong to,
 * and what it does with frames (payloads submitted, acks, resume queries) and results (written,
 * tracked until acknowledged). Its socket's reading and writing are its {@link StreamConnection}'s;
 * a connection has a session only once its first frame authenticated it, so nothing here is ever
 * asked of a connection that is not.
 */
export class StreamSession {
  /** v1 results written and not yet acked; handed back to the store if the socket closes. */
  readonly unacked = new Set<string>()
  // Acknowledgements under way (see ACKS_AHEAD).
  private acking = 0
  // The route and the group of this stream's items without parameters: one object and one string
  // for all of them (a group key built per item would be hashed anew by every queue lookup).
  private readonly route: Route
  private readonly plainGroup: string

  constructor(
    private readonly conn: StreamConnection,
    private readonly hub: StreamHub,
    readonly tenant: Tenant,
    /** Tenant and model: the scope of this stream's ids and results. */
    readonly owner: string,
    readonly pipeline: Pipeline,
  ) {
    this.route = Object.freeze({ node: hub.node })
    this.plainGroup = groupKey(conn.model, conn.compute, undefined)
  }

  /** The connection's id (unique in this process). */
  get id(): number {
    return this.conn.id
  }

  get model(): string {
    return this.conn.model
  }

  get isOpen(): boolean {
    return this.conn.isOpen
  }

  /** Whether this stream should be handed more results now. */
  canTake(): boolean {
    return (
      this.conn.isOpen &&
      this.conn.bufferedAmount < SEND_HIGH_WATER &&
      // No byte cap on unacked results: a paused socket would then never read the acks that
      // release them. Their memory is the store's, bounded by the retained budget.
      this.unacked.size < this.hub.options.maxQueuedPerToken
    )
  }

  /** Stops reading the socket (flow control). */
  pause(): void {
    this.conn.pause()
  }

  /** Reads the socket again. */
  resume(): void {
    this.conn.resume()
  }

  /** Sends a message (see {@link StreamConnection.send}). */
  send(msg: ServerMessage | StatusMessage): void {
    this.conn.send(msg)
  }

  /** Ends the stream from the server side. */
  close(code: number, reason: string): void {
    this.conn.close(code, reason)
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
    if (!this.conn.isOpen) {
      if (tracked) this.hub.router.returnUndelivered(this.owner, [id])
      return
    }
    if (tracked && this.conn.v1) this.unacked.add(id)
    this.conn.push(resultText(id, outputs), tracked && !this.conn.v1 ? id : undefined)
  }

  /** Legacy results the connection wrote (`err` absent) or could not write. */
  written(tracked: readonly string[], err: Error | undefined): void {
    if (tracked.length > 0) {
      // A failed legacy write: the socket is gone; those results wait for the next stream (the
      // client ignores any it had already received). A written one is delivered (legacy has no acks).
      if (err) this.hub.router.returnUndelivered(this.owner, [...tracked])
      else this.hub.state.acknowledge(this.owner, tracked).catch((e: unknown) => this.hub.logger?.error({ err: e }, 'acknowledging results failed'))
    }
    if (!err) this.hub.router.onDrain(this)
  }

  /** The socket closed: legacy results not written go back to the store; the stream leaves the hub. */
  closed(unwritten: readonly string[]): void {
    if (unwritten.length > 0) this.hub.router.returnUndelivered(this.owner, [...unwritten])
    this.hub.unregister(this)
  }

  /**
   * A model that is not loaded yet starts loading now (so items sent next wait less), and this
   * stream is told: a `loading` status with `estimated_time` at once and every status interval
   * (see the server's status timer), then one when it is ready, or why it failed to load.
   */
  watchLoading(): void {
    const pipeline = this.pipeline
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

  /**
   * On a front-end that runs no model (`workers: 0`): when no worker process online serves this
   * stream's model, the stream is told so at once (its items wait in the queue until one does).
   */
  watchWorkers(): void {
    const { state, options } = this.hub
    if (options.workers !== 0 || !state.workersOnline) return
    state.workersOnline().then(
      (online) => {
        if (!this.isOpen || online.some((w) => w.models.includes(this.model))) return
        this.send({
          type: 'status',
          message: `No worker process serves ${this.model} now (${online.length} online): items wait in the queue until one does`,
          workers: 0,
        })
      },
      (err: unknown) => this.hub.logger?.warn({ err }, 'reading the workers online failed'),
    )
  }

  /** The status message of this stream's model while it loads, or undefined when it does not. */
  loadingStatus(): StatusMessage | undefined {
    const state = this.pipeline.loadState?.()
    if (state === undefined || (state.state !== 'loading' && state.state !== 'unloaded')) return undefined
    return { type: 'status', message: `Model ${this.model} is currently loading`, loading: true, estimated_time: state.estimatedTime ?? 20 }
  }

  /** Handles frames read after authentication, in order: consecutive payloads are one submit. */
  async handleFrames(frames: readonly ReadFrame[]): Promise<void> {
    let batch: SubmitItem[] = []
    const { state, metrics, options } = this.hub
    const owner = this.owner
    const tenant = this.tenant.id
    // Consecutive payloads are submitted together (one backend transition), before any ack or resume after them.
    const submit = async (): Promise<void> => {
      if (batch.length === 0) return
      const items = batch
      batch = []
      let outcomes
      try {
        outcomes = await this.hub.router.submitStream(this, items)
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
    // Indexed loops on this path, here and below: no iterator objects per frame, entry or id.
    for (let f = 0; f < frames.length; f++) {
      const frame = frames[f]
      if (this.conn.ended) return
      if (frame.bytes > options.maxFrameBytes) {
        const err = new LimitExceededError(`Frame is ${frame.bytes} bytes, over the limit of ${options.maxFrameBytes}; it was skipped`)
        metrics.rejected.inc({ code: err.code })
        this.send(errorStatus(err))
        continue
      }
      const entries = parseClientFrame(frame.text, this.conn.v1, options)
      // Inputs are measured by their share of the frame: no second serialization on the hot path.
      let payloads = 0
      for (let k = 0; k < entries.length; k++) if (entries[k].kind === 'payload') payloads++
      const bytes = payloads > 0 ? Math.ceil(frame.bytes / payloads) : 0
      for (let k = 0; k < entries.length; k++) {
        const e = entries[k]
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
              compute: this.conn.compute,
              inputs: e.payload.inputs,
              parameters,
              group: parameters === undefined ? this.plainGroup : groupKey(this.model, this.conn.compute, parameters),
              fingerprint,
              bytes,
              route: this.route,
            })
            break
          }
          case 'ack':
            await submit()
            for (let j = 0; j < e.ids.length; j++) this.unacked.delete(e.ids[j])
            // Not awaited: the next frames need not wait for a round trip to a shared store. Every
            // backend applies transitions in the order they are called (memory and SQLite at the
            // call, Redis on one connection in order), so a later submit or resume sees it.
            this.acking++
            const acked = state.acknowledge(owner, e.ids).then(
              () => {
                this.acking--
              },
              (err: unknown) => {
                this.acking--
                this.hub.logger?.error({ err }, 'acknowledging results failed')
              },
            )
            if (this.acking > ACKS_AHEAD) await acked
            this.hub.router.flush(owner)
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
}

/** `{task}` of a pipeline whose task is known (a transformers.js model downloaded on first use knows it once loaded). */
export function taskOf(pipeline: Pipeline): { task?: string } {
  const task = pipeline.task
  return typeof task === 'string' && task !== '' && task !== 'unknown' ? { task } : {}
}

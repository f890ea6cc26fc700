import type { Logger } from 'pino'
import type { Routed, StateBackend, SubmitItem, SubmitOutcome } from '../state/state-backend.js'
import type { LocalSinks } from './local-sinks.js'
import type { StreamSession } from './stream-session.js'
import type { StreamSockets } from './stream-sockets.js'

// Results handed to streams per flush round; small enough to interleave with other work.
const FLUSH_CHUNK = 256

/**
 * Delivers what the state backend routes to this node: a sink's result to that sink, a stream
 * result to a stream of its owner here (the one that sent the item first, while it can take it),
 * taken from the store with `takeUndelivered` so that a result finished by a worker in another
 * process, or before a restart, is delivered the same way. A result no stream can take stays
 * undelivered in the store for the owner's next stream.
 */
export class ResultRouter {
  // The stream (connection id) that sent each queued item of this node, per owner and id: its
  // result goes there first. Maps per owner rather than one map under `owner\nid` keys: no key
  // string is built (and hashed) twice per item.
  private readonly origins = new Map<string, Map<string, number>>()
  // Owners that may have undelivered results in the store (routed here, returned, or not known):
  // a drained socket asks the store only for these.
  private readonly waiting = new Set<string>()
  // Flushes run one at a time per owner; a request during one runs again after it.
  private readonly flushing = new Map<string, boolean>()
  private readonly unsubscribe: () => void

  constructor(
    private readonly state: StateBackend,
    private readonly node: string,
    private readonly sockets: StreamSockets,
    private readonly sinks: LocalSinks,
    private readonly logger: Logger | undefined,
  ) {
    this.unsubscribe = state.subscribe(node, (routed) => this.onRouted(routed))
  }

  /** Stops receiving results (shutdown). */
  detach(): void {
    this.unsubscribe()
  }

  /** Submits a stream's items (their results come back to this node's streams of the owner, that one first), then checks flow. */
  async submitStream(session: StreamSession, items: SubmitItem[]): Promise<SubmitOutcome[]> {
    const owner = session.owner
    try {
      const outcomes = await this.state.submit(items)
      let origins = this.origins.get(owner)
      const from = session.id
      for (let i = 0; i < items.length; i++) {
        if (outcomes[i].status !== 'queued') continue
        if (!origins) this.origins.set(owner, (origins = new Map()))
        origins.set(items[i].id, from)
      }
      return outcomes
    } finally {
      this.sockets.checkFlow(owner)
    }
  }

  /**
   * An owner's stream opened here: results may wait from before (another stream, another node, a
   * restart). The owner's first stream here attaches this node to the owner first, so that results
   * of its items submitted through other nodes are routed here from then on; the flush after it
   * takes those finished before.
   */
  opened(owner: string, first: boolean): void {
    this.waiting.add(owner)
    if (!first) return this.flush(owner)
    this.state.attach(this.node, owner, true).then(
      () => this.flush(owner),
      (err: unknown) => {
        this.logger?.error({ err }, 'attaching to the owner\'s results failed')
        this.flush(owner)
      },
    )
  }

  /** The owner's last stream here closed: its results need not be routed here any more. */
  closed(owner: string): void {
    this.state.attach(this.node, owner, false).catch((err: unknown) => this.logger?.error({ err }, 'detaching from the owner\'s results failed'))
  }

  /** Results that could not be written go back to the store (undelivered), then on to another stream. */
  returnUndelivered(owner: string, ids: string[]): void {
    this.waiting.add(owner)
    this.state.returnUndelivered(owner, ids).then(
      () => this.flush(owner),
      (err: unknown) => this.logger?.error({ err }, 'returning results to the store failed'),
    )
  }

  /** A stream's socket made progress on writing: give it more if results wait. */
  onDrain(session: StreamSession): void {
    if (session.canTake() && this.waiting.has(session.owner)) this.flush(session.owner)
    // Written legacy results were acknowledged: the tenant may be under its budgets again.
    else if (this.sockets.anyTenantPaused) this.sockets.checkFlow(session.owner)
  }

  // Results the backend routed to this node: sinks get theirs; owners with stream results are flushed.
  private onRouted(routed: Routed[]): void {
    const owners = new Set<string>()
    for (let i = 0; i < routed.length; i++) {
      const r = routed[i]
      if (r.sink !== undefined) {
        this.sinks.answer(r.sink, r.outputs ?? 'null', { failed: r.failed ?? false, computeSeconds: r.computeSeconds ?? 0 })
        continue
      }
      if (r.oversize && r.outputs !== undefined) {
        // Over the whole retained budget alone: written once, untracked, by a stream that can take
        // it now; the store keeps an error body for the id, which a resend or resume gets.
        const s = this.sockets.pick(r.owner)
        if (s) {
          s.sendResultJson(r.id, r.outputs, false)
          void this.state.claim(r.owner, r.id).then(async (claimed) => {
            if (claimed !== undefined) await this.state.acknowledge(r.owner, [r.id])
          })
          continue
        }
      }
      owners.add(r.owner)
    }
    for (const owner of owners) {
      this.waiting.add(owner)
      this.flush(owner)
    }
  }

  /** Hands waiting results of an owner to its open streams, while they can take them; one flush per owner at a time. */
  flush(owner: string): void {
    if (this.flushing.has(owner)) {
      this.flushing.set(owner, true)
      return
    }
    this.flushing.set(owner, false)
    this.runFlush(owner)
      .catch((err: unknown) => this.logger?.error({ err }, 'handing results to streams failed'))
      .finally(() => {
        const again = this.flushing.get(owner)
        this.flushing.delete(owner)
        if (again) this.flush(owner)
        else this.sockets.checkFlow(owner)
      })
  }

  private async runFlush(owner: string): Promise<void> {
    for (;;) {
      if (!this.waiting.has(owner) || !this.sockets.pick(owner)) return
      // Cleared before asking: a result routed meanwhile sets it again (and flushes again).
      this.waiting.delete(owner)
      const batch = await this.state.takeUndelivered(owner, FLUSH_CHUNK)
      if (batch.length === FLUSH_CHUNK) this.waiting.add(owner)
      if (batch.length === 0) return
      const origins = this.origins.get(owner)
      // The last origin looked up (results of one stream come in runs): one map lookup fewer per result.
      let lastFrom: number | undefined
      let lastStream: StreamSession | undefined
      let i = 0
      for (; i < batch.length; i++) {
        // Not `const [id, outputs] = …`: array destructuring runs the iterator protocol.
        const id = batch[i][0]
        const outputs = batch[i][1]
        // The stream that sent the item first, while it can take it; else any stream of the owner.
        const from = origins?.get(id)
        let s: StreamSession | undefined
        if (from !== undefined) {
          if (from !== lastFrom) {
            lastFrom = from
            lastStream = this.sockets.get(from)
          }
          s = lastStream
        }
        if (!s || !s.canTake()) s = this.sockets.pick(owner)
        if (!s) break
        if (from !== undefined) origins!.delete(id)
        s.sendResultJson(id, outputs, true)
      }
      if (origins && origins.size === 0 && this.origins.get(owner) === origins) this.origins.delete(owner)
      if (i < batch.length) {
        this.waiting.add(owner)
        await this.state.returnUndelivered(owner, batch.slice(i).map(([id]) => id))
        return
      }
      if (batch.length < FLUSH_CHUNK) return
    }
  }
}

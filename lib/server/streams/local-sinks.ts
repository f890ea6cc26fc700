import { randomBytes } from 'node:crypto'
import { toWireError } from '../../errors.js'
import type { StateBackend, SubmitItem, SubmitOutcome } from '../state/state-backend.js'

/** How an item's result came about, for those that answer with more than the outputs (HTTP headers). */
export interface ResultInfo {
  /** The outputs are an `{"error", "code"}` body. */
  failed: boolean
  /** Seconds the model took for the whole batch the item was in; 0 when no model ran. */
  computeSeconds: number
}

/** Receives the result of one sink-routed item (a waiting classic HTTP request, a job's row): its outputs as JSON text. */
export type ResultSink = (outputs: string, info: ResultInfo) => void

/** An item for {@link LocalSinks.submit}: a submit item without its route (the sinks set it). */
export type DirectItem = Omit<SubmitItem, 'route' | 'bytes'> & { bytes?: number }

/** What {@link LocalSinks.submit} takes besides the item and its sink. */
export interface DirectSubmitOptions {
  /** Refuse the item with `overloaded` over the tenant's queued bytes (see `SubmitOptions`). */
  maxQueuedBytes?: number
  /** Gets the outcome other than `queued` (a duplicate, a conflict, over budget) instead of the sink. */
  onRefused?: (outcome: Exclude<SubmitOutcome, { status: 'queued' }>) => void
}

/** Bytes of inputs as JSON, for the queued-bytes accounting of items that come without a frame. */
export function jsonBytes(inputs: unknown): number {
  if (typeof inputs === 'string') return inputs.length + 2
  try {
    return JSON.stringify(inputs)?.length ?? 0
  } catch {
    return 0
  }
}

/** Whether JSON text is an `{"error", "code"}` body. */
export function isErrorJson(outputs: string): boolean {
  if (!outputs.startsWith('{"error"')) return false
  try {
    const v = JSON.parse(outputs) as { error?: unknown; code?: unknown }
    return typeof v.error === 'string' && typeof v.code === 'string'
  } catch {
    return false
  }
}

/**
 * This node's sinks: requesters waiting for one item's result each (a classic HTTP request, a
 * job's row). An item submitted here is routed to `{node, sink}`; the result router hands it to
 * {@link answer}. Sink names are unique across restarts of the node (a random prefix per
 * process), so a result of an item a previous process submitted never reaches a new requester.
 */
export class LocalSinks {
  private readonly sinks = new Map<string, ResultSink>()
  private readonly prefix = randomBytes(6).toString('hex')
  private next = 1

  constructor(
    private readonly state: StateBackend,
    /** This node's name in routes. */
    private readonly node: string,
  ) {}

  /**
   * Submits one item whose result goes only to `sink`, once: returns a function that drops the
   * sink (the requester went away: the item may still run; its result is then not handed to
   * anyone) at once. The sink gets the error if the backend refuses the item, and the outcome
   * other than `queued` unless `onRefused` takes it (a finished duplicate's stored result).
   */
  submit(item: DirectItem, sink: ResultSink, options: DirectSubmitOptions = {}): () => void {
    const name = `${this.prefix}:${this.next++}`
    this.sinks.set(name, sink)
    const full: SubmitItem = { ...item, bytes: item.bytes ?? jsonBytes(item.inputs), route: { node: this.node, sink: name } }
    this.state.submit([full], { maxQueuedBytes: options.maxQueuedBytes }).then(
      ([outcome]) => {
        if (outcome.status === 'queued') return
        this.sinks.delete(name)
        if (options.onRefused) options.onRefused(outcome)
        else if (outcome.status === 'done') sink(outcome.outputs, { failed: isErrorJson(outcome.outputs), computeSeconds: 0 })
      },
      (err: unknown) => this.answer(name, JSON.stringify(toWireError(err)), { failed: true, computeSeconds: 0 }),
    )
    return () => {
      this.sinks.delete(name)
    }
  }

  /** Sinks waiting for a result. */
  get size(): number {
    return this.sinks.size
  }

  /** Hands a result to its sink, once; a sink that is gone (or of another process) is ignored. */
  answer(name: string, outputs: string, info: ResultInfo): void {
    const sink = this.sinks.get(name)
    if (!sink) return
    this.sinks.delete(name)
    sink(outputs, info)
  }

  /** Answers every waiting sink with the same body (shutdown: what is still queued will not run here). */
  failAll(body: unknown): void {
    const json = JSON.stringify(body)
    for (const name of [...this.sinks.keys()]) this.answer(name, json, { failed: true, computeSeconds: 0 })
  }
}

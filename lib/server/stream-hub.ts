import type { Logger } from 'pino'
import type { InferenceStreamError } from '../errors.js'
import type { Compute, Pipeline } from '../models/pipeline.js'
import type { ServerMetrics } from './metrics.js'
import type { ResolvedServerOptions } from './options.js'
import type { StateBackend } from './state/state-backend.js'
import { LocalSinks, type DirectItem, type DirectSubmitOptions, type ResultSink } from './streams/local-sinks.js'
import { ResultRouter } from './streams/result-router.js'
import type { StreamSession } from './streams/stream-session.js'
import { StreamSockets } from './streams/stream-sockets.js'
import type { Tenant } from './tenants.js'

export { jsonBytes, type DirectItem, type ResultInfo, type ResultSink } from './streams/local-sinks.js'

/**
 * This node's side of the state layer, in three parts: its authenticated streams and their flow
 * control ({@link StreamSockets}), its waiting requesters ({@link LocalSinks}: classic HTTP
 * requests, job rows), and the router that hands them what the state backend routes to this node
 * ({@link ResultRouter}). Every item goes through the backend's `submit`; results come back
 * through its `subscribe`, so the same code serves a result that a worker in another process
 * finished. Also the context a stream connection works in (options, metrics, authentication).
 */
export class StreamHub {
  /** This node's authenticated streams. */
  readonly sockets: StreamSockets
  /** This node's waiting requesters. */
  readonly sinks: LocalSinks
  /** Routes results to streams and sinks. */
  readonly router: ResultRouter
  /** Set at shutdown: new items are answered `ERR_SHUTTING_DOWN`. */
  closing = false

  constructor(
    readonly options: ResolvedServerOptions,
    readonly state: StateBackend,
    /** This node's name in routes. */
    readonly node: string,
    readonly metrics: ServerMetrics,
    readonly logger: Logger | undefined,
    /** The tenant of a bearer token, or undefined when it is refused (then logged with `remote` and `route`). */
    readonly authenticate: (token: string, remote: string | undefined, route: string) => Tenant | undefined,
    /** The pipeline serving `model` on `compute`, or why there is none (the error the client sees). */
    readonly pipelineFor: (model: string, compute: Compute) => Pipeline | InferenceStreamError,
  ) {
    this.sockets = new StreamSockets(options, state, metrics, logger)
    this.sinks = new LocalSinks(state, node)
    this.router = new ResultRouter(state, node, this.sockets, this.sinks, logger)
  }

  /** A stream authenticated: it may now receive the owner's waiting results. */
  register(s: StreamSession): void {
    const first = !this.sockets.has(s.owner)
    this.sockets.add(s)
    this.router.opened(s.owner, first)
  }

  /** A stream closed: its unacked v1 results go back to the store and on to other streams. */
  unregister(s: StreamSession): void {
    if (!this.sockets.delete(s)) return
    if (!this.sockets.has(s.owner)) this.router.closed(s.owner)
    const unacked = [...s.unacked]
    s.unacked.clear()
    if (unacked.length > 0) this.router.returnUndelivered(s.owner, unacked)
    else this.router.flush(s.owner)
  }

  /** See {@link LocalSinks.submit}. */
  submitDirect(item: DirectItem, sink: ResultSink, options?: DirectSubmitOptions): () => void {
    return this.sinks.submit(item, sink, options)
  }

  /** Answers every waiting sink with an error (shutdown: what is still queued will not run here). */
  failSinks(body: unknown): void {
    this.sinks.failAll(body)
  }

  /** Stops receiving results (shutdown). */
  detach(): void {
    this.router.detach()
  }
}

import type { Logger } from 'pino';
import type { ServerMetrics } from './metrics.js';
import type { ResolvedServerOptions } from './options.js';
import type { WorkItem, WorkQueue } from './queue/work-queue.js';
import type { ResultStore } from './store/result-store.js';
import type { StreamConnection } from './stream-connection.js';
/**
 * The open streams of every token, and the routing of results to them: a result goes to the
 * stream that sent the item when it is still open, else to any open stream of the token, else
 * it waits in the store. Also applies per-token flow control.
 */
export declare class StreamHub {
    readonly options: ResolvedServerOptions;
    readonly store: ResultStore;
    readonly queue: WorkQueue;
    readonly metrics: ServerMetrics;
    readonly logger: Logger | undefined;
    readonly acceptsToken: (token: string) => boolean;
    readonly hasModel: (model: string) => boolean;
    private readonly streams;
    private readonly byId;
    private readonly paused;
    private readonly cursor;
    closing: boolean;
    constructor(options: ResolvedServerOptions, store: ResultStore, queue: WorkQueue, metrics: ServerMetrics, logger: Logger | undefined, acceptsToken: (token: string) => boolean, hasModel: (model: string) => boolean);
    /** A stream authenticated: it may now receive the token's waiting results. */
    register(conn: StreamConnection): void;
    /** A stream closed: its unacked v1 results go back to the store and on to other streams. */
    unregister(conn: StreamConnection): void;
    /** Open streams of a token. */
    streamsOf(token: string): Iterable<StreamConnection>;
    /** All open streams. */
    allStreams(): Iterable<StreamConnection>;
    private pick;
    /** Queues accepted items, then applies flow control to the token. */
    enqueue(conn: StreamConnection, items: WorkItem[]): void;
    /** Pauses the token's sockets when it has too much queued or undelivered. */
    checkFlow(token: string): void;
    /** A worker finished an item: store it, then hand it to a stream if one can take it. */
    onResult(item: WorkItem, outputs: unknown): void;
    /** Hands waiting results of a token to its open streams, while they can take them. */
    flush(token: string): void;
    /** A stream's socket made progress on writing: give it more if results wait. */
    onDrain(conn: StreamConnection): void;
}

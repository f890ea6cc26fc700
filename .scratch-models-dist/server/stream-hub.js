import { toWireError } from '../errors.js';
// Results handed to streams per flush round; small enough to interleave with other work.
const FLUSH_CHUNK = 256;
/**
 * The open streams of every token, and the routing of results to them: a result goes to the
 * stream that sent the item when it is still open, else to any open stream of the token, else
 * it waits in the store. Also applies per-token flow control.
 */
export class StreamHub {
    options;
    store;
    queue;
    metrics;
    logger;
    acceptsToken;
    hasModel;
    streams = new Map();
    byId = new Map();
    paused = new Set();
    // Round-robin cursor per token, so several streams share results.
    cursor = new Map();
    closing = false;
    constructor(options, store, queue, metrics, logger, acceptsToken, hasModel) {
        this.options = options;
        this.store = store;
        this.queue = queue;
        this.metrics = metrics;
        this.logger = logger;
        this.acceptsToken = acceptsToken;
        this.hasModel = hasModel;
    }
    /** A stream authenticated: it may now receive the token's waiting results. */
    register(conn) {
        const token = conn.token;
        let set = this.streams.get(token);
        if (!set) {
            set = new Set();
            this.streams.set(token, set);
        }
        set.add(conn);
        this.byId.set(conn.id, conn);
        this.metrics.connections.inc();
        if (this.paused.has(token))
            conn.pause();
        this.flush(token);
    }
    /** A stream closed: its unacked v1 results go back to the store and on to other streams. */
    unregister(conn) {
        const token = conn.token;
        if (!this.byId.delete(conn.id))
            return;
        this.metrics.connections.dec();
        const set = this.streams.get(token);
        set?.delete(conn);
        if (set && set.size === 0)
            this.streams.delete(token);
        if (conn.unacked.size > 0)
            this.store.returnUndelivered(token, conn.unacked);
        conn.unacked.clear();
        this.flush(token);
    }
    /** Open streams of a token. */
    streamsOf(token) {
        return this.streams.get(token) ?? [];
    }
    /** All open streams. */
    allStreams() {
        return this.byId.values();
    }
    pick(token) {
        const set = this.streams.get(token);
        if (!set)
            return undefined;
        const list = [...set];
        const start = this.cursor.get(token) ?? 0;
        for (let i = 0; i < list.length; i++) {
            const c = list[(start + i) % list.length];
            if (c.canTake()) {
                this.cursor.set(token, start + i + 1);
                return c;
            }
        }
        return undefined;
    }
    /** Queues accepted items, then applies flow control to the token. */
    enqueue(conn, items) {
        const token = conn.token;
        this.queue.push(items).catch((err) => {
            // The queue refused (closing): answer each item so nothing waits forever.
            const body = toWireError(err);
            for (const item of items) {
                this.store.drop(token, item.id);
                conn.sendResult(item.id, body, false);
            }
        });
        this.checkFlow(token);
    }
    /** Pauses the token's sockets when it has too much queued or undelivered. */
    checkFlow(token) {
        const c = this.store.counts(token);
        const load = c.queued + c.processing + c.undelivered;
        const limit = this.options.maxQueuedPerToken;
        if (!this.paused.has(token)) {
            if (load >= limit) {
                this.paused.add(token);
                for (const s of this.streamsOf(token))
                    s.pause();
            }
        }
        else if (load <= limit / 2) {
            this.paused.delete(token);
            for (const s of this.streamsOf(token))
                s.resume();
        }
    }
    /** A worker finished an item: store it, then hand it to a stream if one can take it. */
    onResult(item, outputs) {
        const { token, id } = item;
        this.store.complete(token, id, outputs);
        let conn = item.origin === undefined ? undefined : this.byId.get(item.origin);
        if (!conn || !conn.canTake())
            conn = this.pick(token);
        if (!conn)
            return;
        if (this.store.claim(token, id))
            conn.sendResult(id, outputs, true);
    }
    /** Hands waiting results of a token to its open streams, while they can take them. */
    flush(token) {
        for (;;) {
            const conn = this.pick(token);
            if (!conn)
                return;
            const batch = this.store.takeUndelivered(token, FLUSH_CHUNK);
            if (batch.length === 0)
                break;
            for (const [id, outputs] of batch)
                conn.sendResult(id, outputs, true);
            if (batch.length < FLUSH_CHUNK)
                break;
        }
        this.checkFlow(token);
    }
    /** A stream's socket made progress on writing: give it more if results wait. */
    onDrain(conn) {
        const token = conn.token;
        if (token === undefined || !conn.canTake())
            return;
        if (this.store.counts(token).undelivered > 0)
            this.flush(token);
    }
}
//# sourceMappingURL=stream-hub.js.map
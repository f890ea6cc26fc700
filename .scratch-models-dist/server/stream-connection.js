import { randomUUID } from 'node:crypto';
import { AuthenticationError, LimitExceededError, ShuttingDownError, UnknownModelError, toWireError } from '../errors.js';
import { errorStatus, frameText, parametersKey, parseBearer, parseClientFrame, resultMessage, } from '../protocol.js';
// A stream's socket is not handed more results while this much is still unsent (slow reader):
// they stay undelivered in the store and count against the token's flow-control bound.
const SEND_HIGH_WATER = 4 * 1024 * 1024;
let nextConnectionId = 1;
/**
 * One websocket of `/bulk/stream/{compute}/{model}`: authenticates the first frame, turns payload
 * frames into queued work, and writes results (batched into array frames on v1).
 */
export class StreamConnection {
    ws;
    hub;
    model;
    compute;
    v1;
    id = nextConnectionId++;
    token;
    /** v1 results written and not yet acked; handed back to the store if the socket closes. */
    unacked = new Set();
    outbox = [];
    flushScheduled = false;
    closed = false;
    authTimer;
    constructor(ws, hub, model, compute, v1) {
        this.ws = ws;
        this.hub = hub;
        this.model = model;
        this.compute = compute;
        this.v1 = v1;
        this.authTimer = setTimeout(() => {
            this.reject(new AuthenticationError('No "Bearer <token>" frame received in time'));
        }, hub.options.authTimeoutMs);
        ws.on('message', (data, isBinary) => this.onMessage(data, isBinary));
        ws.on('close', () => this.onClose());
        ws.on('error', (err) => hub.logger?.debug({ err, conn: this.id }, 'stream socket error'));
    }
    get isOpen() {
        return !this.closed && this.ws.readyState === 1;
    }
    /** Whether this stream should be handed more results now. */
    canTake() {
        return (this.isOpen &&
            this.token !== undefined &&
            this.ws.bufferedAmount < SEND_HIGH_WATER &&
            this.unacked.size < this.hub.options.maxQueuedPerToken);
    }
    reject(err) {
        clearTimeout(this.authTimer);
        if (!this.isOpen)
            return;
        this.hub.metrics.rejected.inc({ code: err.code });
        this.ws.send(JSON.stringify(errorStatus(err)));
        this.ws.close(1008, err.message.slice(0, 120));
        this.closed = true;
    }
    onMessage(data, _isBinary) {
        if (this.closed)
            return;
        const text = frameText(data);
        if (this.token === undefined) {
            this.authenticate(text);
            return;
        }
        const bytes = Buffer.isBuffer(data) ? data.length : Buffer.byteLength(text);
        if (bytes > this.hub.options.maxFrameBytes) {
            const err = new LimitExceededError(`Frame is ${bytes} bytes, over the limit of ${this.hub.options.maxFrameBytes}; it was skipped`);
            this.hub.metrics.rejected.inc({ code: err.code });
            this.send(errorStatus(err));
            return;
        }
        this.handleFrame(text);
    }
    authenticate(text) {
        clearTimeout(this.authTimer);
        let token;
        try {
            token = parseBearer(text);
        }
        catch (err) {
            this.reject(err);
            return;
        }
        if (!this.hub.acceptsToken(token)) {
            this.reject(new AuthenticationError('Invalid token'));
            return;
        }
        if (!this.hub.hasModel(this.model)) {
            this.reject(new UnknownModelError(`Model ${this.model} does not exist`));
            return;
        }
        this.token = token;
        const c = this.hub.store.counts(token);
        const o = this.hub.options;
        this.send({
            type: 'status',
            message: `Connected to ${this.model} (${this.compute})`,
            queued: c.queued,
            processing: c.processing,
            done: c.done,
            limits: { maxFrameBytes: o.maxFrameBytes, maxItemsPerFrame: o.maxItemsPerFrame, maxInputsBytes: o.maxInputsBytes },
        });
        this.hub.register(this);
    }
    handleFrame(text) {
        const token = this.token;
        const { store, metrics, options } = this.hub;
        const entries = parseClientFrame(text, this.v1, options);
        const items = [];
        const now = Date.now();
        for (const e of entries) {
            switch (e.kind) {
                case 'payload': {
                    const id = e.payload.id ?? randomUUID();
                    if (this.hub.closing) {
                        this.sendResult(id, toWireError(new ShuttingDownError()), false);
                        break;
                    }
                    const state = store.admit(token, id);
                    if (state === 'new') {
                        const parameters = e.payload.parameters;
                        items.push({
                            token,
                            id,
                            model: this.model,
                            compute: this.compute,
                            inputs: e.payload.inputs,
                            parameters,
                            group: `${this.model}\n${this.compute}\n${parametersKey(parameters)}`,
                            enqueuedAt: now,
                            origin: this.id,
                        });
                    }
                    else {
                        metrics.duplicates.inc({ state });
                        // A finished duplicate gets its stored result again; a pending one gets its result when it is done.
                        if (state === 'done')
                            this.sendResult(id, store.lookup(token, id).outputs, false);
                    }
                    break;
                }
                case 'ack':
                    for (const id of e.ids)
                        this.unacked.delete(id);
                    this.hub.flush(token);
                    break;
                case 'resume': {
                    const unknown = [];
                    for (const id of e.ids) {
                        const found = store.lookup(token, id);
                        if (found.state === 'unknown')
                            unknown.push(id);
                        else if (found.state === 'done' && !this.unacked.has(id))
                            this.sendResult(id, found.outputs, true);
                    }
                    this.send({ type: 'resume', unknown });
                    break;
                }
                case 'error':
                    metrics.rejected.inc({ code: e.error.code });
                    if (e.id !== undefined)
                        this.sendResult(e.id, toWireError(e.error), false);
                    else
                        this.send(errorStatus(e.error));
                    break;
            }
        }
        if (items.length > 0)
            this.hub.enqueue(this, items);
    }
    /**
     * Writes a result. `tracked`: the result is the store's, so on v1 it stays unacked until the
     * client acks, and on a failed legacy write it goes back to the store.
     */
    sendResult(id, outputs, tracked) {
        const msg = resultMessage(id, outputs);
        if (this.v1) {
            if (tracked)
                this.unacked.add(id);
            this.send(msg);
            return;
        }
        if (!this.isOpen) {
            if (tracked)
                this.hub.store.returnUndelivered(this.token, [id]);
            return;
        }
        this.ws.send(JSON.stringify(msg), (err) => {
            if (err && tracked)
                this.hub.store.returnUndelivered(this.token, [id]);
            else
                this.hub.onDrain(this);
        });
    }
    /** Sends a message; v1 messages written in one tick go out as one array frame. */
    send(msg) {
        if (!this.isOpen)
            return;
        if (!this.v1) {
            this.ws.send(JSON.stringify(msg));
            return;
        }
        this.outbox.push(msg);
        if (!this.flushScheduled) {
            this.flushScheduled = true;
            setImmediate(() => this.flushOutbox());
        }
    }
    flushOutbox() {
        this.flushScheduled = false;
        const out = this.outbox;
        this.outbox = [];
        if (!this.isOpen || out.length === 0)
            return;
        const max = this.hub.options.maxItemsPerFrame;
        for (let i = 0; i < out.length; i += max) {
            const chunk = out.length === 1 ? out[0] : out.slice(i, i + max);
            this.ws.send(JSON.stringify(chunk), () => this.hub.onDrain(this));
        }
    }
    /** Stops reading the socket (flow control). */
    pause() {
        if (this.isOpen && !this.ws.isPaused)
            this.ws.pause();
    }
    /** Resumes reading the socket. */
    resume() {
        if (this.isOpen && this.ws.isPaused)
            this.ws.resume();
    }
    /** Ends the stream from the server side. */
    close(code, reason) {
        if (this.isOpen)
            this.ws.close(code, reason);
    }
    onClose() {
        clearTimeout(this.authTimer);
        this.closed = true;
        this.outbox = [];
        if (this.token !== undefined)
            this.hub.unregister(this);
    }
}
//# sourceMappingURL=stream-connection.js.map
class TokenState {
    pending = new Map(); // id -> running?
    processing = 0;
    // Insertion order is completion order, so eviction takes the oldest first.
    done = new Map();
    undelivered = new Set();
    completed = 0;
    billed = 0;
}
/** In-process {@link ResultStore}: bounded by count and TTL per token. */
export class MemoryResultStore {
    options;
    tokens = new Map();
    /** Undelivered results dropped by the count bound or the TTL since start. */
    lost = 0;
    constructor(options) {
        this.options = options;
    }
    state(token) {
        let s = this.tokens.get(token);
        if (!s) {
            s = new TokenState();
            this.tokens.set(token, s);
        }
        return s;
    }
    admit(token, id) {
        const s = this.state(token);
        if (s.pending.has(id))
            return 'pending';
        if (s.done.has(id))
            return 'done';
        s.pending.set(id, false);
        return 'new';
    }
    markRunning(token, id) {
        const s = this.tokens.get(token);
        if (s && s.pending.get(id) === false) {
            s.pending.set(id, true);
            s.processing++;
        }
    }
    drop(token, id) {
        const s = this.tokens.get(token);
        if (!s)
            return;
        if (s.pending.get(id))
            s.processing--;
        s.pending.delete(id);
    }
    complete(token, id, outputs) {
        const s = this.state(token);
        const running = s.pending.get(id);
        if (running === undefined && s.done.has(id))
            return; // already finished: keep the first result
        if (running)
            s.processing--;
        s.pending.delete(id);
        s.done.set(id, { outputs, at: Date.now() });
        s.undelivered.add(id);
        s.completed++;
        while (s.done.size > this.options.maxRetained)
            this.evictOldest(s);
    }
    evictOldest(s) {
        const first = s.done.keys().next();
        if (first.done)
            return;
        s.done.delete(first.value);
        if (s.undelivered.delete(first.value))
            this.lost++;
    }
    lookup(token, id) {
        const s = this.tokens.get(token);
        if (!s)
            return { state: 'unknown' };
        if (s.pending.has(id))
            return { state: 'pending' };
        const d = s.done.get(id);
        return d ? { state: 'done', outputs: d.outputs } : { state: 'unknown' };
    }
    claim(token, id) {
        return this.tokens.get(token)?.undelivered.delete(id) ?? false;
    }
    takeUndelivered(token, max) {
        const s = this.tokens.get(token);
        const out = [];
        if (!s)
            return out;
        for (const id of s.undelivered) {
            if (out.length >= max)
                break;
            s.undelivered.delete(id);
            const d = s.done.get(id);
            if (d)
                out.push([id, d.outputs]);
        }
        return out;
    }
    returnUndelivered(token, ids) {
        const s = this.tokens.get(token);
        if (!s)
            return;
        for (const id of ids)
            if (s.done.has(id))
                s.undelivered.add(id);
    }
    bill(token, n) {
        this.state(token).billed += n;
    }
    counts(token) {
        const s = this.tokens.get(token);
        if (!s)
            return { queued: 0, processing: 0, done: 0, undelivered: 0, billed: 0 };
        return {
            queued: s.pending.size - s.processing,
            processing: s.processing,
            done: s.completed,
            undelivered: s.undelivered.size,
            billed: s.billed,
        };
    }
    busyTokens() {
        const out = [];
        for (const [t, s] of this.tokens)
            if (s.pending.size > 0 || s.undelivered.size > 0)
                out.push(t);
        return out;
    }
    sweep(now = Date.now()) {
        const before = this.lost;
        for (const s of this.tokens.values()) {
            for (const [id, d] of s.done) {
                if (now - d.at < this.options.retentionMs)
                    break; // completion order: the rest are younger
                s.done.delete(id);
                if (s.undelivered.delete(id))
                    this.lost++;
            }
        }
        return this.lost - before;
    }
    /** Every token seen (billing survives retention so the bill is never reset by a sweep). */
    allTokens() {
        return [...this.tokens.keys()];
    }
}
//# sourceMappingURL=memory-result-store.js.map
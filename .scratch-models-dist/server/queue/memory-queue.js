import { ShuttingDownError } from '../../errors.js';
/** FIFO with O(1) shift and unshift (a plain array's shift is O(n) on long queues). */
class Deque {
    buf = new Array(16);
    head = 0;
    length = 0;
    grow() {
        const next = new Array(this.buf.length * 2);
        for (let i = 0; i < this.length; i++)
            next[i] = this.buf[(this.head + i) % this.buf.length];
        this.buf = next;
        this.head = 0;
    }
    push(v) {
        if (this.length === this.buf.length)
            this.grow();
        this.buf[(this.head + this.length) % this.buf.length] = v;
        this.length++;
    }
    unshift(v) {
        if (this.length === this.buf.length)
            this.grow();
        this.head = (this.head - 1 + this.buf.length) % this.buf.length;
        this.buf[this.head] = v;
        this.length++;
    }
    shift() {
        if (this.length === 0)
            return undefined;
        const v = this.buf[this.head];
        this.buf[this.head] = undefined;
        this.head = (this.head + 1) % this.buf.length;
        this.length--;
        return v;
    }
    peek() {
        return this.length === 0 ? undefined : this.buf[this.head];
    }
}
/**
 * In-process work queue (the embedded default). Items are grouped by `WorkItem.group`; a pull
 * serves the group whose oldest item has waited longest, so a token's send order is kept within
 * a model and parameters. Nothing survives the process: durability is the Redis queue's job.
 */
export class MemoryWorkQueue {
    groups = new Map();
    leases = new Map();
    queued = 0;
    processing = 0;
    nextLease = 1;
    closed = false;
    // Pulls waiting for a push; each wakes, re-checks, and waits again if nothing fits.
    waiters = new Set();
    async push(items) {
        if (this.closed)
            throw new ShuttingDownError('Work queue is closed');
        for (const item of items) {
            let g = this.groups.get(item.group);
            if (!g) {
                g = new Deque();
                this.groups.set(item.group, g);
            }
            g.push(item);
        }
        this.queued += items.length;
        this.wake();
    }
    wake() {
        if (this.waiters.size === 0)
            return;
        const ws = this.waiters;
        this.waiters = new Set();
        for (const w of ws)
            w();
    }
    oldestGroup() {
        let best;
        let bestAt = Infinity;
        for (const g of this.groups.values()) {
            const h = g.peek();
            if (h && h.enqueuedAt < bestAt) {
                best = g;
                bestAt = h.enqueuedAt;
            }
        }
        return best;
    }
    take(g, maxBatch) {
        const items = [];
        while (items.length < maxBatch && g.length > 0)
            items.push(g.shift());
        if (g.length === 0)
            this.groups.delete(items[0].group);
        this.queued -= items.length;
        this.processing += items.length;
        const lease = { id: this.nextLease++, items };
        this.leases.set(lease.id, lease);
        return lease;
    }
    async pull({ maxBatch, maxWaitMs, signal }) {
        for (;;) {
            if (this.closed || signal?.aborted)
                return null;
            const g = this.oldestGroup();
            let waitMs = -1;
            if (g) {
                const age = Date.now() - g.peek().enqueuedAt;
                if (g.length >= maxBatch || age >= maxWaitMs)
                    return this.take(g, maxBatch);
                // The oldest group is still filling; a younger group that is already full need not wait.
                for (const other of this.groups.values())
                    if (other.length >= maxBatch)
                        return this.take(other, maxBatch);
                waitMs = maxWaitMs - age;
            }
            await new Promise((resolve) => {
                let timer;
                const done = () => {
                    if (timer)
                        clearTimeout(timer);
                    signal?.removeEventListener('abort', done);
                    this.waiters.delete(done);
                    resolve();
                };
                this.waiters.add(done);
                signal?.addEventListener('abort', done, { once: true });
                if (waitMs >= 0)
                    timer = setTimeout(done, waitMs);
            });
        }
    }
    async ack(lease) {
        if (this.leases.delete(lease.id))
            this.processing -= lease.items.length;
    }
    async release(lease) {
        if (!this.leases.delete(lease.id))
            return;
        this.processing -= lease.items.length;
        // Back to the front, in their original order.
        for (let i = lease.items.length - 1; i >= 0; i--) {
            const item = lease.items[i];
            let g = this.groups.get(item.group);
            if (!g) {
                g = new Deque();
                this.groups.set(item.group, g);
            }
            g.unshift(item);
        }
        this.queued += lease.items.length;
        this.wake();
    }
    stats() {
        return { queued: this.queued, processing: this.processing };
    }
    async close() {
        this.closed = true;
        this.wake();
    }
}
//# sourceMappingURL=memory-queue.js.map
import type { Lease, PullOptions, QueueStats, WorkItem, WorkQueue } from './work-queue.js';
/**
 * In-process work queue (the embedded default). Items are grouped by `WorkItem.group`; a pull
 * serves the group whose oldest item has waited longest, so a token's send order is kept within
 * a model and parameters. Nothing survives the process: durability is the Redis queue's job.
 */
export declare class MemoryWorkQueue implements WorkQueue {
    private readonly groups;
    private readonly leases;
    private queued;
    private processing;
    private nextLease;
    private closed;
    private waiters;
    push(items: WorkItem[]): Promise<void>;
    private wake;
    private oldestGroup;
    private take;
    pull({ maxBatch, maxWaitMs, signal }: PullOptions): Promise<Lease | null>;
    ack(lease: Lease): Promise<void>;
    release(lease: Lease): Promise<void>;
    stats(): QueueStats;
    close(): Promise<void>;
}

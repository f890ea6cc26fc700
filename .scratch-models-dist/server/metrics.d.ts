import { Counter, Gauge, Histogram, Registry } from 'prom-client';
/**
 * The label that stands for a token in metrics and logs: the first 12 hex digits of its SHA-256.
 * Tokens are secrets, so they never appear in clear.
 */
export declare function tokenLabel(token: string): string;
/** Prometheus metrics of one server (its own registry, so several servers can share a process). */
export declare class ServerMetrics {
    readonly registry: Registry<"text/plain; version=0.0.4; charset=utf-8">;
    readonly billed: Counter<"token">;
    readonly items: Counter<"model" | "outcome">;
    readonly duplicates: Counter<"state">;
    readonly rejected: Counter<"code">;
    readonly batchSize: Histogram<"model">;
    readonly batchSeconds: Histogram<"model">;
    readonly connections: Gauge<string>;
    readonly lost: Counter<string>;
    constructor(queueStats: () => {
        queued: number;
        processing: number;
    });
}

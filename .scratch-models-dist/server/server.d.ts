import http from 'node:http';
import type { ModelRegistry } from '../models/pipeline.js';
import { ServerMetrics } from './metrics.js';
import { type ResolvedServerOptions, type ServerOptions } from './options.js';
import type { TokenCounts } from './store/result-store.js';
/** Whether a socket address is on this machine (127.0.0.0/8, ::1, IPv4-mapped loopback). */
export declare function isLoopback(address: string | undefined): boolean;
/**
 * The inference server: websocket streams at `/bulk/stream/{cpu|gpu}/{model}`, `/health` and
 * `/metrics`, a work queue and batch workers behind them. Create with {@link createServer}.
 */
export declare class InferenceServer {
    /** The underlying HTTP server. */
    readonly http: http.Server;
    /** Options in force, after defaults. */
    readonly options: ResolvedServerOptions;
    /** Models served. */
    readonly registry: ModelRegistry;
    /** Prometheus metrics. */
    readonly metrics: ServerMetrics;
    private readonly queue;
    private readonly store;
    private readonly hub;
    private readonly wss;
    private readonly workers;
    private readonly tokens;
    private readonly timers;
    private closing;
    constructor(options?: ServerOptions);
    /** Whether the server accepts anyone (no token configured) — only from loopback then. */
    get open(): boolean;
    /**
     * Starts listening. Defaults: port 0 (any free port), host 127.0.0.1.
     * @returns the base URL, e.g. `http://127.0.0.1:8080`.
     */
    listen(port?: number, host?: string): Promise<string>;
    /** Base URL (`http://host:port`) once listening. */
    get url(): string;
    /** Websocket URL of a model's stream. */
    streamUrl(model: string, compute?: 'cpu' | 'gpu'): string;
    /** Items billed to a token so far (one per item run by a model). */
    billed(token: string): number;
    /** A token's counters: queued, processing, done, undelivered, billed. */
    counts(token: string): TokenCounts;
    private allowed;
    private onRequest;
    private onUpgrade;
    private heartbeat;
    private sendStatus;
    /**
     * Graceful shutdown: refuses new streams and payloads, lets queued and running work finish
     * (up to `shutdownTimeoutMs`, results go to open streams), hands back what is left, closes
     * every socket with 1001 and releases the models. Safe to call twice.
     */
    close(): Promise<void>;
    private doClose;
}
/**
 * Creates an inference server (not yet listening: call `listen()`).
 * @example
 * const server = createServer({ tokens: ['secret'] })
 * const url = await server.listen(8080)
 */
export declare function createServer(options?: ServerOptions): InferenceServer;

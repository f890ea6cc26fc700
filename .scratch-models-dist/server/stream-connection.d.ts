import type { WebSocket } from 'ws';
import { type ServerMessage, type StatusMessage } from '../protocol.js';
import type { StreamHub } from './stream-hub.js';
/**
 * One websocket of `/bulk/stream/{compute}/{model}`: authenticates the first frame, turns payload
 * frames into queued work, and writes results (batched into array frames on v1).
 */
export declare class StreamConnection {
    readonly ws: WebSocket;
    private readonly hub;
    readonly model: string;
    readonly compute: string;
    readonly v1: boolean;
    readonly id: number;
    token: string | undefined;
    /** v1 results written and not yet acked; handed back to the store if the socket closes. */
    readonly unacked: Set<string>;
    private outbox;
    private flushScheduled;
    private closed;
    private readonly authTimer;
    constructor(ws: WebSocket, hub: StreamHub, model: string, compute: string, v1: boolean);
    get isOpen(): boolean;
    /** Whether this stream should be handed more results now. */
    canTake(): boolean;
    private reject;
    private onMessage;
    private authenticate;
    private handleFrame;
    /**
     * Writes a result. `tracked`: the result is the store's, so on v1 it stays unacked until the
     * client acks, and on a failed legacy write it goes back to the store.
     */
    sendResult(id: string, outputs: unknown, tracked: boolean): void;
    /** Sends a message; v1 messages written in one tick go out as one array frame. */
    send(msg: ServerMessage | StatusMessage): void;
    private flushOutbox;
    /** Stops reading the socket (flow control). */
    pause(): void;
    /** Resumes reading the socket. */
    resume(): void;
    /** Ends the stream from the server side. */
    close(code: number, reason: string): void;
    private onClose;
}

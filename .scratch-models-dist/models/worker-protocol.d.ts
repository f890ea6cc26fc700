import type { Parameters } from './pipeline.js';
/** A batch for a thread: run `modelId` on every item's `inputs`. */
export interface WorkerTask {
    id: number;
    modelId: string;
    inputs: unknown[];
    parameters: Parameters;
}
/** One item's result as it crosses the thread boundary. */
export type ItemOutcome = {
    ok: true;
    value: unknown;
} | {
    ok: false;
    message: string;
    code: string;
};
/** A thread's answer to a task: one outcome per item, or a failure of the whole batch. */
export type WorkerReply = {
    id: number;
    items: ItemOutcome[];
} | {
    id: number;
    error: {
        message: string;
        stack?: string;
    };
};
/** Runs a batch inside a thread: one output or `Error` per item, as `Pipeline.run`. Throwing fails the batch. */
export type TaskHandler = (inputs: unknown[], parameters: Parameters) => unknown[] | Promise<unknown[]>;
/** Turns a handler's per-item results into transferable outcomes (Errors keep message and code). */
export declare function encodeItems(results: unknown[]): ItemOutcome[];
/**
 * Rebuilds per-item results on the main thread: an input error becomes a `ModelInputError`, any
 * other failure of one item a `ModelError`; outputs pass through.
 */
export declare function decodeItems(items: ItemOutcome[]): unknown[];
/**
 * Serves tasks in a worker thread: each task goes to `handlers[task.modelId]` and the reply is posted
 * back. Call once from the worker entry file, after loading the models. Tasks are handled one at a
 * time, in order (the pool sends a thread one task at a time anyway).
 */
export declare function serveTasks(handlers: Record<string, TaskHandler>): void;

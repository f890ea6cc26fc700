/**
 * Messages between a {@link WorkerPool} and its threads, and the thread side of the protocol.
 * Errors do not survive structured cloning as their own classes, so per-item errors travel as
 * `{message, code}` and are rebuilt on the main thread.
 */
import { parentPort } from 'node:worker_threads';
import { InferenceStreamError, ModelError, ModelInputError } from '../errors.js';
/** Turns a handler's per-item results into transferable outcomes (Errors keep message and code). */
export function encodeItems(results) {
    return results.map((value) => {
        if (!(value instanceof Error))
            return { ok: true, value };
        const code = value instanceof InferenceStreamError ? value.code : 'ERR_MODEL';
        return { ok: false, message: value.message, code };
    });
}
/**
 * Rebuilds per-item results on the main thread: an input error becomes a `ModelInputError`, any
 * other failure of one item a `ModelError`; outputs pass through.
 */
export function decodeItems(items) {
    return items.map((item) => {
        if (item.ok)
            return item.value;
        return item.code === 'ERR_MODEL_INPUT' ? new ModelInputError(item.message) : new ModelError(item.message);
    });
}
/**
 * Serves tasks in a worker thread: each task goes to `handlers[task.modelId]` and the reply is posted
 * back. Call once from the worker entry file, after loading the models. Tasks are handled one at a
 * time, in order (the pool sends a thread one task at a time anyway).
 */
export function serveTasks(handlers) {
    const port = parentPort;
    if (port === null)
        throw new ModelError('serveTasks() must run inside a worker thread');
    port.on('message', (task) => {
        void answer(task).then((reply) => {
            try {
                port.postMessage(reply);
            }
            catch (err) {
                // An output that cannot be cloned fails its batch instead of crashing the thread.
                port.postMessage({ id: task.id, error: { message: `Model ${task.modelId} returned outputs that cannot be sent: ${err.message}` } });
            }
        });
    });
    async function answer(task) {
        try {
            const handler = Object.hasOwn(handlers, task.modelId) ? handlers[task.modelId] : undefined;
            if (handler === undefined)
                throw new Error(`Model ${task.modelId} is not served by this worker`);
            const results = await handler(task.inputs, task.parameters);
            if (!Array.isArray(results) || results.length !== task.inputs.length) {
                throw new Error(`Model ${task.modelId} returned ${Array.isArray(results) ? results.length : 'no'} results for ${task.inputs.length} items`);
            }
            return { id: task.id, items: encodeItems(results) };
        }
        catch (err) {
            const error = err instanceof Error ? err : new Error(String(err));
            return { id: task.id, error: { message: error.message, stack: error.stack } };
        }
    }
}
//# sourceMappingURL=worker-protocol.js.map
/**
 * Messages between a {@link WorkerPool} and its threads, and the thread side of the protocol.
 * Errors do not survive structured cloning as their own classes, so per-item errors travel as
 * `{message, code}` and are rebuilt on the main thread.
 */
import { parentPort } from 'node:worker_threads'
import { DeviceUnavailableError, InferenceStreamError, ModelError, ModelInputError, ModelLoadError, ShuttingDownError } from '../errors.js'
import type { Parameters } from './pipeline.js'

/** A batch for a thread: run `modelId` on every item's `inputs`. */
export interface WorkerTask {
  id: number
  modelId: string
  inputs: unknown[]
  parameters: Parameters
}

/** One item's result as it crosses the thread boundary. */
export type ItemOutcome = { ok: true; value: unknown } | { ok: false; message: string; code: string }

/** A thread's answer to a task: one outcome per item, or a failure of the whole batch. */
export type WorkerReply = { id: number; items: ItemOutcome[] } | { id: number; error: { message: string; stack?: string } }

/** Runs a batch inside a thread: one output or `Error` per item, as `Pipeline.run`. Throwing fails the batch. */
export type TaskHandler = (inputs: unknown[], parameters: Parameters) => unknown[] | Promise<unknown[]>

/** Turns a handler's per-item results into transferable outcomes (Errors keep message and code). */
export function encodeItems(results: unknown[]): ItemOutcome[] {
  return results.map((value) => {
    if (!(value instanceof Error)) return { ok: true, value }
    const code = value instanceof InferenceStreamError ? value.code : 'ERR_MODEL'
    return { ok: false, message: value.message, code }
  })
}

/**
 * Rebuilds per-item results on the main thread: input, load, device and shutdown errors become
 * their own classes again, any other failure of one item a `ModelError`; outputs pass through.
 */
export function decodeItems(items: ItemOutcome[]): unknown[] {
  return items.map((item) => {
    if (item.ok) return item.value
    switch (item.code) {
      case 'ERR_MODEL_INPUT':
        return new ModelInputError(item.message)
      case 'ERR_MODEL_LOAD':
        return new ModelLoadError(item.message)
      case 'ERR_DEVICE_UNAVAILABLE':
        return new DeviceUnavailableError(item.message)
      case 'ERR_SHUTTING_DOWN':
        return new ShuttingDownError(item.message)
      default:
        return new ModelError(item.message)
    }
  })
}

/**
 * Serves tasks in a worker thread: each task goes to `handlers[task.modelId]` and the reply is posted
 * back. Call once from the worker entry file, after loading the models. Tasks are handled one at a
 * time, in order (the pool sends a thread one task at a time anyway).
 */
export function serveTasks(handlers: Record<string, TaskHandler>): void {
  const port = parentPort
  if (port === null) throw new ModelError('serveTasks() must run inside a worker thread')
  port.on('message', (task: WorkerTask) => {
    void answer(task).then((reply) => {
      try {
        port.postMessage(reply)
      } catch (err) {
        // An output that cannot be cloned fails its batch instead of crashing the thread.
        port.postMessage({ id: task.id, error: { message: `Model ${task.modelId} returned outputs that cannot be sent: ${(err as Error).message}` } })
      }
    })
  })

  async function answer(task: WorkerTask): Promise<WorkerReply> {
    try {
      const handler = Object.hasOwn(handlers, task.modelId) ? handlers[task.modelId] : undefined
      if (handler === undefined) throw new Error(`Model ${task.modelId} is not served by this worker`)
      const results = await handler(task.inputs, task.parameters)
      if (!Array.isArray(results) || results.length !== task.inputs.length) {
        throw new Error(`Model ${task.modelId} returned ${Array.isArray(results) ? results.length : 'no'} results for ${task.inputs.length} items`)
      }
      return { id: task.id, items: encodeItems(results) }
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err))
      return { id: task.id, error: { message: error.message, stack: error.stack } }
    }
  }
}

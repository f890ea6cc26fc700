/**
 * `builtin/echo`: returns every item's inputs unchanged. A transport and throughput fixture, not a
 * model: it runs on the main thread and costs next to nothing, so benchmarks measure the plumbing.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { ModelInputError } from '../errors.js'
import { describeValue } from './describe-value.js'
import type { Parameters, Pipeline } from './pipeline.js'

/** Model id of the echo pipeline. */
export const ECHO_MODEL_ID = 'builtin/echo'

/**
 * Largest accepted `parameters.delay_ms`, 10 000 ms. One payload must not be able to park a server
 * worker for long (the fair share keeps other tenants served, but a worker held for a minute is a
 * worker lost for a minute); a larger value fails the batch's items with `ERR_MODEL_INPUT`, it is
 * not clamped, so the sender learns the limit rather than measuring a different delay.
 */
export const MAX_ECHO_DELAY_MS = 10_000

/**
 * Echo pipeline, task `echo`. Outputs are the items' `inputs`, unchanged (same references).
 *
 * `parameters.delay_ms` (default none): sleep that many milliseconds once per batch before
 * answering, to simulate a slow model. It must be a finite number in [0, {@link MAX_ECHO_DELAY_MS}];
 * otherwise every item of the batch gets a `ModelInputError` (parameters are shared by the batch)
 * and nothing sleeps. An aborted `signal` clears the timer and rejects with `signal.reason`.
 */
export class EchoPipeline implements Pipeline {
  readonly id = ECHO_MODEL_ID
  readonly task = 'echo'

  async run(inputs: unknown[], parameters: Parameters, signal?: AbortSignal): Promise<unknown[]> {
    signal?.throwIfAborted()
    const delay = parameters.delay_ms
    if (delay !== undefined) {
      if (typeof delay !== 'number' || !Number.isFinite(delay) || delay < 0 || delay > MAX_ECHO_DELAY_MS) {
        const error = new ModelInputError(
          `parameters.delay_ms must be a finite number of milliseconds between 0 and ${MAX_ECHO_DELAY_MS}, got ${describeValue(delay)}`,
        )
        return inputs.map(() => error)
      }
      if (delay > 0) await abortableSleep(delay, signal)
    }
    return inputs.slice()
  }
}

/** Creates the `builtin/echo` pipeline. */
export function createEchoPipeline(): Pipeline {
  return new EchoPipeline()
}

async function abortableSleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  try {
    // timers/promises removes its timer and listener on abort, so nothing leaks or holds the loop.
    await sleep(ms, undefined, { signal })
  } catch (err) {
    // Reject with the caller's own reason (as signal.throwIfAborted() does), not Node's AbortError wrapper.
    if (signal?.aborted) throw signal.reason
    throw err
  }
}

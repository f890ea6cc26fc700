import type { Parameters, Pipeline } from './pipeline.js';
/** Model id of the echo pipeline. */
export declare const ECHO_MODEL_ID = "builtin/echo";
/**
 * Largest accepted `parameters.delay_ms`, 60 000 ms. One payload must not be able to park a server
 * worker for days (and Node's timers overflow past 2^31-1 ms, firing after 1 ms instead).
 */
export declare const MAX_ECHO_DELAY_MS = 60000;
/**
 * Echo pipeline, task `echo`. Outputs are the items' `inputs`, unchanged (same references).
 *
 * `parameters.delay_ms` (default none): sleep that many milliseconds once per batch before
 * answering, to simulate a slow model. It must be a finite number in [0, {@link MAX_ECHO_DELAY_MS}];
 * otherwise every item of the batch gets a `ModelInputError` (parameters are shared by the batch)
 * and nothing sleeps. An aborted `signal` clears the timer and rejects with `signal.reason`.
 */
export declare class EchoPipeline implements Pipeline {
    readonly id = "builtin/echo";
    readonly task = "echo";
    run(inputs: unknown[], parameters: Parameters, signal?: AbortSignal): Promise<unknown[]>;
}
/** Creates the `builtin/echo` pipeline. */
export declare function createEchoPipeline(): Pipeline;

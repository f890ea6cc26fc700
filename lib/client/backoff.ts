/** Reconnect policy of a client. */
export interface ReconnectOptions {
  /** Attempts after a cut before giving up. Default 10. */
  maxAttempts?: number
  /** Delay before the first attempt, in ms. Default 100. */
  minDelayMs?: number
  /** Largest delay between attempts, in ms. Default 5000. */
  maxDelayMs?: number
  /** Growth of the delay per attempt. Default 2. */
  factor?: number
}

/** A reconnect policy with every field set. */
export type ResolvedReconnect = Required<ReconnectOptions>

/** Defaults of {@link ReconnectOptions}. */
export const RECONNECT_DEFAULTS: ResolvedReconnect = { maxAttempts: 10, minDelayMs: 100, maxDelayMs: 5000, factor: 2 }

/**
 * Delay before reconnect attempt `attempt` (1-based): exponential, capped, with "equal jitter"
 * (half fixed, half random) so many clients cut at once do not reconnect in lockstep.
 */
export function backoffDelay(attempt: number, policy: ResolvedReconnect, random = Math.random): number {
  const base = Math.min(policy.maxDelayMs, policy.minDelayMs * policy.factor ** (attempt - 1))
  return Math.round(base / 2 + (random() * base) / 2)
}

/**
 * A counting limiter: at most `limit` slots are taken at once. Where p-limit queues functions (the
 * caller goes on at once and the queue grows), `acquire()` makes the caller itself wait for a slot,
 * so a loop reading a file stops reading while every slot is taken: backpressure, memory flat in
 * the input size.
 */
import { InvalidOptionError } from './errors.js'

interface Waiter {
  resolve: () => void
  signal: AbortSignal | undefined
  onAbort: () => void
}

/**
 * At most `limit` slots taken at once. `acquire()` takes one (waiting, first come first served,
 * while all are taken), `release()` gives one back, `idle()` waits until none is taken. Both waits
 * take an AbortSignal: on abort they reject with the signal's reason and take nothing.
 * @example
 * const limiter = new Limiter(16)
 * for await (const row of rows) {
 *   await limiter.acquire(signal)
 *   send(row, () => limiter.release())
 * }
 * await limiter.idle(signal)
 */
export class Limiter {
  /** Most slots taken at once. */
  readonly limit: number
  #active = 0
  // Callers waiting for a slot, oldest first. Not empty only while every slot is taken: a released
  // slot goes straight to the oldest waiter.
  #waiting: Waiter[] = []
  #idle: Waiter[] = []

  /** @throws InvalidOptionError unless `limit` is an integer >= 1. */
  constructor(limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new InvalidOptionError(`Limiter: "limit" must be an integer >= 1, got ${JSON.stringify(limit)}`)
    this.limit = limit
  }

  /** Slots taken now. */
  get active(): number {
    return this.#active
  }

  /** Callers waiting in `acquire()`. */
  get pending(): number {
    return this.#waiting.length
  }

  /**
   * Takes a slot: at once when one is free and nobody waits, else when a `release()` hands it over
   * (in call order). Rejects with `signal.reason` when `signal` aborts first (no slot taken); once
   * it has resolved the slot is the caller's, to release, even if the signal aborts later.
   */
  acquire(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason)
    if (this.#active < this.limit && this.#waiting.length === 0) {
      this.#active++
      return Promise.resolve()
    }
    return this.#wait(this.#waiting, signal)
  }

  /**
   * Gives a slot back (to the oldest waiter, if any).
   * @throws Error when no slot is taken (a release without its acquire is a bug of the caller).
   */
  release(): void {
    if (this.#active === 0) throw new Error('Limiter: release() without a slot taken')
    const next = this.#waiting.shift()
    if (next) {
      // The slot passes straight on: `active` stays as it is.
      next.signal?.removeEventListener('abort', next.onAbort)
      next.resolve()
      return
    }
    this.#active--
    if (this.#active === 0) {
      const idle = this.#idle
      this.#idle = []
      for (const w of idle) {
        w.signal?.removeEventListener('abort', w.onAbort)
        w.resolve()
      }
    }
  }

  /** Resolves when no slot is taken (at once if none is). Rejects with `signal.reason` when `signal` aborts first. */
  idle(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason)
    if (this.#active === 0) return Promise.resolve()
    return this.#wait(this.#idle, signal)
  }

  #wait(list: Waiter[], signal: AbortSignal | undefined): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const w: Waiter = {
        resolve,
        signal,
        onAbort: () => {
          const i = list.indexOf(w)
          if (i !== -1) list.splice(i, 1)
          reject(signal!.reason)
        },
      }
      signal?.addEventListener('abort', w.onAbort, { once: true })
      list.push(w)
    })
  }
}

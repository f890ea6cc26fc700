/**
 * The fairness rule of the work queues, as a small pure piece any backend can apply (the memory
 * queue here; a SQLite or Redis state layer keeps the same two numbers per tenant in its store).
 *
 * 1. **Round robin over tenants.** The next free worker is offered to the tenants with queued work
 *    least recently served first; a tenant that arrives (or comes back after it had nothing queued
 *    or running) joins at the back of the round, so sending in small bursts does not jump the line.
 *    While two tenants both have work, they alternate batch for batch, however deep either queue is.
 * 2. **A lease cap per tenant.** A tenant holds at most {@link leaseCap}`(workers)` batches at once
 *    (`max(1, workers - 1)`), so one worker is always left for another tenant.
 *
 * Within the chosen tenant the queue takes that tenant's oldest ready group, fills the batch with
 * its items of the group (its send order kept, or with length-aware batching its first in line and
 * those nearest its length: ./length-batching.ts) and tops it up with other tenants' items of the same
 * group, oldest first: batching across tenants costs nobody a worker. Riding along is not a turn:
 * only the chosen tenant goes to the back of the round, and the lease counts against its cap only.
 */

/**
 * Most batches one tenant may hold at once with `workers` workers: `max(1, workers - 1)`.
 *
 * Why a cap that holds even when no other tenant is waiting: a worker that a tenant takes stays
 * taken until its batch ends (up to `batchTimeoutMs`), so a cap that only applied "while another
 * tenant waits" would let a tenant that came first park every worker, and the next tenant would wait
 * for a batch to end. Leaving one worker free means another tenant's first batch starts at once;
 * the price is that a lone tenant uses `workers - 1` workers (batches grow to make up for it).
 */
export function leaseCap(workers: number): number {
  return Math.max(1, workers - 1)
}

/**
 * Round-robin order of tenants: least recently served first. Pure bookkeeping (no I/O, no
 * clock); the queue asks {@link order}, picks the first tenant that can be served, and reports it
 * with {@link served}.
 */
export class FairShare {
  /** Tenant → the sequence number of its last served batch, or of its arrival. */
  readonly #last = new Map<string, number>()
  #seq = 0

  /** `tenant` has work queued: if it is not in the round, it joins at the back. */
  arrived(tenant: string): void {
    if (!this.#last.has(tenant)) this.#last.set(tenant, ++this.#seq)
  }

  /**
   * `tenants` ordered by who should be offered the next worker: least recently served (or
   * arrived) first. Tenants not in the round (never `arrived`) come first, in the order given.
   */
  order(tenants: Iterable<string>): string[] {
    const list = [...tenants]
    const at = (t: string): number => this.#last.get(t) ?? 0
    return list.map((t, i) => ({ t, i, at: at(t) })).sort((a, b) => a.at - b.at || a.i - b.i).map((e) => e.t)
  }

  /** `tenant` was given a batch: it goes to the back of the round. */
  served(tenant: string): void {
    this.#last.set(tenant, ++this.#seq)
  }

  /**
   * `tenant` has nothing queued or running: it leaves the round (memory stays bounded by live
   * tenants); when it has work again it `arrived` anew, at the back.
   */
  forget(tenant: string): void {
    this.#last.delete(tenant)
  }
}

/**
 * Restores input order from sequence numbers: values are added in any order and come out in
 * sequence order as soon as every earlier sequence is in. It holds only values whose predecessor
 * is missing, so its size never exceeds the number of items in flight.
 */
export class ReorderBuffer<T> {
  private readonly held = new Map<number, T>()
  private next: number

  /** @param start the first sequence number expected. Default 0. */
  constructor(start = 0) {
    this.next = start
  }

  /** Values waiting for an earlier sequence. */
  get size(): number {
    return this.held.size
  }

  /** The next sequence number to come out. */
  get nextSeq(): number {
    return this.next
  }

  /**
   * Adds the value of `seq` and returns the values now ready, in order (possibly none).
   * @throws {RangeError} for a sequence already out or already held: a caller bug, never data.
   */
  add(seq: number, value: T): T[] {
    if (seq < this.next || this.held.has(seq)) throw new RangeError(`Sequence ${seq} was already added`)
    if (seq !== this.next) {
      this.held.set(seq, value)
      return []
    }
    const out = [value]
    this.next++
    while (this.held.has(this.next)) {
      out.push(this.held.get(this.next) as T)
      this.held.delete(this.next)
      this.next++
    }
    return out
  }
}

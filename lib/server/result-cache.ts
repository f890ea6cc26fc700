/** Limits of a {@link ResultCache}. */
export interface ResultCacheOptions {
  /** Most entries kept; 0 disables the cache (nothing is stored). */
  maxEntries: number
  /** Most bytes of bodies kept in all; a body larger than this alone is not stored. */
  maxBytes: number
}

/**
 * A least-recently-used cache of serialized results (response bodies) by key, bounded by entry
 * count and by total body bytes — both, because one entry may be as large as a whole request. A
 * `Map` keeps insertion order, so re-inserting on every hit makes its first key the least recently
 * used one.
 */
export class ResultCache {
  private readonly entries = new Map<string, Buffer>()
  private total = 0

  constructor(private readonly options: ResultCacheOptions) {}

  /** Whether the cache stores anything at all. */
  get enabled(): boolean {
    return this.options.maxEntries > 0 && this.options.maxBytes > 0
  }

  /** Entries held. */
  get size(): number {
    return this.entries.size
  }

  /** Bytes of bodies held. */
  get bytes(): number {
    return this.total
  }

  /** The body stored under `key` (now the most recently used), or `undefined`. */
  get(key: string): Buffer | undefined {
    const body = this.entries.get(key)
    if (body === undefined) return undefined
    this.entries.delete(key)
    this.entries.set(key, body)
    return body
  }

  /** Stores `body` under `key` (replacing an older one), evicting the least recently used beyond the bounds. */
  set(key: string, body: Buffer): void {
    this.delete(key)
    if (!this.enabled || body.length > this.options.maxBytes) return
    this.entries.set(key, body)
    this.total += body.length
    while (this.entries.size > this.options.maxEntries || this.total > this.options.maxBytes) {
      const oldest = this.entries.keys().next()
      if (oldest.done) break
      this.delete(oldest.value)
    }
  }

  /** Removes one entry. */
  delete(key: string): void {
    const body = this.entries.get(key)
    if (body === undefined) return
    this.entries.delete(key)
    this.total -= body.length
  }

  /** Removes every entry. */
  clear(): void {
    this.entries.clear()
    this.total = 0
  }
}

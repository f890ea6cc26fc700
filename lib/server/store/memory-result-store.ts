import type { IdState, ResultStore, TokenCounts } from './result-store.js'

/** Limits of a {@link MemoryResultStore}. */
export interface MemoryResultStoreOptions {
  /** Finished results kept per token (for duplicates, resume and absent clients). */
  maxRetained: number
  /** How long a finished result is kept, in ms. */
  retentionMs: number
}

interface DoneEntry {
  outputs: unknown
  at: number
}

class TokenState {
  readonly pending = new Map<string, boolean>() // id -> running?
  processing = 0
  // Insertion order is completion order, so eviction takes the oldest first.
  readonly done = new Map<string, DoneEntry>()
  readonly undelivered = new Set<string>()
  completed = 0
  billed = 0
}

/** In-process {@link ResultStore}: bounded by count and TTL per token. */
export class MemoryResultStore implements ResultStore {
  private readonly tokens = new Map<string, TokenState>()
  /** Undelivered results dropped by the count bound or the TTL since start. */
  lost = 0

  constructor(private readonly options: MemoryResultStoreOptions) {}

  private state(token: string): TokenState {
    let s = this.tokens.get(token)
    if (!s) {
      s = new TokenState()
      this.tokens.set(token, s)
    }
    return s
  }

  admit(token: string, id: string): 'new' | 'pending' | 'done' {
    const s = this.state(token)
    if (s.pending.has(id)) return 'pending'
    if (s.done.has(id)) return 'done'
    s.pending.set(id, false)
    return 'new'
  }

  markRunning(token: string, id: string): void {
    const s = this.tokens.get(token)
    if (s && s.pending.get(id) === false) {
      s.pending.set(id, true)
      s.processing++
    }
  }

  drop(token: string, id: string): void {
    const s = this.tokens.get(token)
    if (!s) return
    if (s.pending.get(id)) s.processing--
    s.pending.delete(id)
  }

  complete(token: string, id: string, outputs: unknown): void {
    const s = this.state(token)
    const running = s.pending.get(id)
    if (running === undefined && s.done.has(id)) return // already finished: keep the first result
    if (running) s.processing--
    s.pending.delete(id)
    s.done.set(id, { outputs, at: Date.now() })
    s.undelivered.add(id)
    s.completed++
    while (s.done.size > this.options.maxRetained) this.evictOldest(s)
  }

  private evictOldest(s: TokenState): void {
    const first = s.done.keys().next()
    if (first.done) return
    s.done.delete(first.value)
    if (s.undelivered.delete(first.value)) this.lost++
  }

  lookup(token: string, id: string): { state: IdState; outputs?: unknown } {
    const s = this.tokens.get(token)
    if (!s) return { state: 'unknown' }
    if (s.pending.has(id)) return { state: 'pending' }
    const d = s.done.get(id)
    return d ? { state: 'done', outputs: d.outputs } : { state: 'unknown' }
  }

  claim(token: string, id: string): boolean {
    return this.tokens.get(token)?.undelivered.delete(id) ?? false
  }

  takeUndelivered(token: string, max: number): Array<[string, unknown]> {
    const s = this.tokens.get(token)
    const out: Array<[string, unknown]> = []
    if (!s) return out
    for (const id of s.undelivered) {
      if (out.length >= max) break
      s.undelivered.delete(id)
      const d = s.done.get(id)
      if (d) out.push([id, d.outputs])
    }
    return out
  }

  returnUndelivered(token: string, ids: Iterable<string>): void {
    const s = this.tokens.get(token)
    if (!s) return
    for (const id of ids) if (s.done.has(id)) s.undelivered.add(id)
  }

  bill(token: string, n: number): void {
    this.state(token).billed += n
  }

  counts(token: string): TokenCounts {
    const s = this.tokens.get(token)
    if (!s) return { queued: 0, processing: 0, done: 0, undelivered: 0, billed: 0 }
    return {
      queued: s.pending.size - s.processing,
      processing: s.processing,
      done: s.completed,
      undelivered: s.undelivered.size,
      billed: s.billed,
    }
  }

  busyTokens(): string[] {
    const out: string[] = []
    for (const [t, s] of this.tokens) if (s.pending.size > 0 || s.undelivered.size > 0) out.push(t)
    return out
  }

  sweep(now = Date.now()): number {
    const before = this.lost
    for (const s of this.tokens.values()) {
      for (const [id, d] of s.done) {
        if (now - d.at < this.options.retentionMs) break // completion order: the rest are younger
        s.done.delete(id)
        if (s.undelivered.delete(id)) this.lost++
      }
    }
    return this.lost - before
  }

  /** Every token seen (billing survives retention so the bill is never reset by a sweep). */
  allTokens(): string[] {
    return [...this.tokens.keys()]
  }
}

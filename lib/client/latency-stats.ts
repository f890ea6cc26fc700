/**
 * Latency percentiles in bounded memory: a uniform reservoir sample (Vitter's algorithm R) of at
 * most `capacity` values, so a run of any length keeps the same few kilobytes.
 */
export class LatencyStats {
  private readonly samples: number[] = []
  private seen = 0
  private total = 0
  private maxValue = 0

  /** @param capacity samples kept. Default 10000 (percentiles within about 1%). */
  constructor(private readonly capacity = 10_000) {}

  /** Records one latency, in ms. */
  add(ms: number): void {
    this.seen++
    this.total += ms
    if (ms > this.maxValue) this.maxValue = ms
    if (this.samples.length < this.capacity) this.samples.push(ms)
    else {
      const j = Math.floor(Math.random() * this.seen)
      if (j < this.capacity) this.samples[j] = ms
    }
  }

  /** Values recorded. */
  get count(): number {
    return this.seen
  }

  /** Mean, in ms (0 when empty). */
  get mean(): number {
    return this.seen === 0 ? 0 : this.total / this.seen
  }

  /** Largest value, in ms. */
  get max(): number {
    return this.maxValue
  }

  /** The `p`-th percentile (0–100), in ms; 0 when empty. */
  percentile(p: number): number {
    if (this.samples.length === 0) return 0
    const sorted = [...this.samples].sort((a, b) => a - b)
    const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
    return sorted[i]
  }
}

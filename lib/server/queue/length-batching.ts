/**
 * Length-aware batching, the pure part: which items of a window of queued ones go into one batch
 * so that the batch pads as little as possible. A model pads every input of a batch to the longest
 * one (a transformer's cost grows with batch × longest), so a batch of similar lengths does the
 * same work with fewer wasted tokens. The queue (./memory-queue.ts) calls it with the lengths of a
 * tenant's next items of a group (oldest first; {@link inputLength}) and always passes index 0 as `must`: the oldest is
 * in every batch, so an item is never passed over for ever (see `Batching`).
 */

/** How a batch is picked from a group's queued items (server option `batching`, CLI `--batching`). */
export type Batching = 'length' | 'fifo'

/** The values {@link Batching} takes, for option checks and CLI choices. */
export const BATCHINGS: readonly Batching[] = ['length', 'fifo']

/**
 * Items a length-aware pull looks at, in batches: the next `maxBatch × LENGTH_WINDOW_BATCHES` items
 * of the tenant's group (oldest first). A wider window forms closer batches but lets a short item
 * overtake more long ones.
 */
export const LENGTH_WINDOW_BATCHES = 8

/** Items one length-aware pull of `maxBatch` looks at: `maxBatch × LENGTH_WINDOW_BATCHES`, at most 2^20. */
export function lengthWindow(maxBatch: number): number {
  return Math.min(maxBatch * LENGTH_WINDOW_BATCHES, 2 ** 20)
}

/**
 * The length of an item for batching: a token estimate, as cheap as reading a property. A string's
 * `length` (WordPiece and BPE vocabularies average about 4 characters a token on English text, so
 * characters order texts as their token counts do, up to a few tokens); for a list or an object
 * (a batch of texts, `{text, text_pair}`, zero-shot's sequences), the sum over its elements or
 * values of a string's length, a nested list's length, or 1 for anything else. Not the JSON bytes
 * of the item: the server measures a v1 frame's items by an even share of the frame.
 */
export function inputLength(inputs: unknown): number {
  if (typeof inputs === 'string') return inputs.length
  if (inputs === null || typeof inputs !== 'object') return 0
  const values = Array.isArray(inputs) ? inputs : Object.values(inputs)
  let n = 0
  for (let i = 0; i < values.length; i++) {
    const v: unknown = values[i]
    n += typeof v === 'string' ? v.length : Array.isArray(v) ? v.length : 1
  }
  return n
}

/**
 * Lengths that differ by at most an eighth of the longest, or by at most this many characters
 * (about 4 tokens, see {@link inputLength}), count as equal: such items are batched in order, as FIFO would, without sorting. Keeps traffic of alike
 * inputs (fixed-size inputs, the echo benchmarks' numbered texts) on the FIFO fast path.
 */
const UNIFORM_SLACK = 16

/** Whether lengths from `min` to `max` spread so little that order is as good as sorting. */
export function uniformLengths(min: number, max: number): boolean {
  return max - min <= Math.max(max / 8, UNIFORM_SLACK)
}

/** Items already in the batch that `lengthRun` adds to: their count, summed lengths and longest. */
export interface BatchSoFar {
  readonly count: number
  readonly sum: number
  readonly max: number
}

// Indices of a window fit in 21 bits (see `lengthRun`); the queue's windows are far smaller.
const INDEX_SPAN = 2 ** 21

const EMPTY: BatchSoFar = { count: 0, sum: 0, max: 0 }

/**
 * The indices (ascending) of `take` of `lengths` that, added to `base`, pad least: the run of
 * `take` consecutive items in length order with the smallest `(count × longest) − Σ lengths`,
 * among the runs that hold index `must` (−1: any run). All indices when `take ≥ lengths.length`.
 * Ties go to the shorter run.
 */
export function lengthRun(lengths: readonly number[], take: number, must = -1, base: BatchSoFar = EMPTY): number[] {
  const n = lengths.length
  if (take >= n) return lengths.map((_, i) => i)
  if (take <= 0) return []
  // Length order, stable (older first among equal lengths): one key per item, length × 2^21 +
  // index, sorted as numbers (a typed array's sort, no comparator calls). Exact while lengths stay
  // under 2^32 and windows under 2^21 items; a fractional length sorts by its integer part.
  const keys = new Float64Array(n)
  for (let i = 0; i < n; i++) keys[i] = Math.floor(lengths[i]) * INDEX_SPAN + i
  keys.sort()
  const order = new Array<number>(n)
  for (let i = 0; i < n; i++) order[i] = keys[i] % INDEX_SPAN
  const prefix = new Float64Array(n + 1)
  for (let i = 0; i < n; i++) prefix[i + 1] = prefix[i] + lengths[order[i]]
  const at = must >= 0 ? order.indexOf(must) : -1
  const lo = at >= 0 ? Math.max(0, at - take + 1) : 0
  const hi = at >= 0 ? Math.min(at, n - take) : n - take
  let best = lo
  let bestPad = Infinity
  for (let s = lo; s <= hi; s++) {
    const longest = Math.max(base.max, lengths[order[s + take - 1]])
    const pad = (base.count + take) * longest - base.sum - (prefix[s + take] - prefix[s])
    if (pad < bestPad) {
      bestPad = pad
      best = s
    }
  }
  return order.slice(best, best + take).sort((a, b) => a - b)
}

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
export const LENGTH_WINDOW_BATCHES = 32

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
 * of the item: the server measures a v1 frame's items by an even share of the frame. `text`
 * measures each string instead of its `length` (a model's token count: `Pipeline.inputLength`).
 */
export function inputLength(inputs: unknown, text?: (s: string) => number): number {
  if (typeof inputs === 'string') return text ? text(inputs) : inputs.length
  if (inputs === null || typeof inputs !== 'object') return 0
  const values = Array.isArray(inputs) ? inputs : Object.values(inputs)
  let n = 0
  for (let i = 0; i < values.length; i++) {
    const v: unknown = values[i]
    n += typeof v === 'string' ? (text ? text(v) : v.length) : Array.isArray(v) ? v.length : 1
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
  // index, compared as numbers (typed arrays, no comparator calls). Exact while lengths stay
  // under 2^32 and windows under 2^21 items; a fractional length sorts by its integer part.
  let keys = new Float64Array(n)
  for (let i = 0; i < n; i++) keys[i] = Math.floor(lengths[i]) * INDEX_SPAN + i
  if (must >= 0 && n > 2 * take) {
    // Only runs that hold `must` count: they lie within the take − 1 keys just below its key and
    // the take − 1 just above. Those are picked in linear time (quickselect), not by sorting all.
    const k0 = keys[must]
    const below = new Float64Array(n)
    const above = new Float64Array(n)
    let nb = 0
    let na = 0
    for (let i = 0; i < n; i++) {
      const k = keys[i]
      if (k < k0) below[nb++] = k
      else if (k > k0) above[na++] = k
    }
    const lo = nb > take - 1 ? nb - (take - 1) : 0
    if (lo > 0) selectNth(below, nb, lo)
    if (na > take - 1) selectNth(above, na, take - 1)
    const near = new Float64Array(nb - lo + 1 + Math.min(na, take - 1))
    near.set(below.subarray(lo, nb), 0)
    near[nb - lo] = k0
    near.set(above.subarray(0, Math.min(na, take - 1)), nb - lo + 1)
    keys = near
  }
  keys.sort()
  const m = keys.length
  const order = new Array<number>(m)
  for (let i = 0; i < m; i++) order[i] = keys[i] % INDEX_SPAN
  const prefix = new Float64Array(m + 1)
  for (let i = 0; i < m; i++) prefix[i + 1] = prefix[i] + lengths[order[i]]
  const at = must >= 0 ? order.indexOf(must) : -1
  const lo = at >= 0 ? Math.max(0, at - take + 1) : 0
  const hi = at >= 0 ? Math.min(at, m - take) : m - take
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

/**
 * Reorders the first `n` values of `a` so that the `k`th smallest is at index `k`, every value
 * before it is smaller and every value after it larger (the values are distinct). Hoare's
 * quickselect with the middle element as pivot: linear on average.
 */
function selectNth(a: Float64Array, n: number, k: number): void {
  let left = 0
  let right = n - 1
  while (right > left) {
    const pivot = a[(left + right) >>> 1]
    let i = left
    let j = right
    while (i <= j) {
      while (a[i] < pivot) i++
      while (a[j] > pivot) j--
      if (i <= j) {
        const t = a[i]
        a[i] = a[j]
        a[j] = t
        i++
        j--
      }
    }
    if (k <= j) right = j
    else if (k >= i) left = i
    else return
  }
}

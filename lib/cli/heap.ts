// How far V8 lets the heap grow past what a full GC left alive. Node sizes its default heap from
// the machine's memory, and on a machine of 16 GiB or more V8 then grows the heap up to 4× the
// live size before collecting: the CLI's main job (CSV → InferenceStream → Parquet, about 36 MiB
// alive) peaked at 213 MiB of RSS at 1M rows; at 2× it peaks at 191 MiB at the same speed
// (benchmarks/pipeline-e2e.js, peers e2e-thread and e2e-cli, 3 runs). The flag is read at each collection, so setting
// it once the process runs takes effect; it is process-wide (model and writer threads too).
import { setFlagsFromString } from 'node:v8'

/** The growth the CLI sets: the old generation's next limit is (1 + this / 100) × its live size. */
export const CLI_HEAP_GROWING_PERCENT = 100

/**
 * Sets V8's `--heap-growing-percent` for this process, unless node was started with it (then the
 * operator's value stands). Returns the value in force, or undefined when left to node.
 */
export function tuneHeapGrowth(execArgv: readonly string[] = process.execArgv, percent = CLI_HEAP_GROWING_PERCENT): number | undefined {
  const given = execArgv.find((a) => /^--heap[-_]growing[-_]percent(=|$)/.test(a))
  if (given !== undefined) {
    const value = Number(given.split('=')[1])
    return Number.isFinite(value) && value > 0 ? value : undefined
  }
  setFlagsFromString(`--heap-growing-percent=${percent}`)
  return percent
}

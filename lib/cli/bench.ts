import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { Command } from 'commander'
import { InferenceStream } from '../client/inference-stream.js'
import { InvalidOptionError } from '../errors.js'
import { formatOf } from '../io/formats.js'
import { readRecords } from '../io/read-records.js'
import { ENDPOINTS_HELP, endpointsFlag, intFlag, intListFlag, jsonObjectFlag } from './common.js'
import { ANONYMOUS_TOKEN } from '../server/http-util.js'
import { startEmbedded, type EmbeddedServer } from './embedded.js'
import { addModelFlags, registryFromFlags } from './model-flags.js'

/** One measured level of `bench`. */
export interface BenchRow {
  inFlight: number
  items: number
  seconds: number
  itemsPerSecond: number
  p50: number
  p95: number
  p99: number
  failed: number
  /** Mean items per model call during the level, from the server's `/metrics`; null when unreadable. */
  meanBatch: number | null
}

/** What the server says about its batching (`/health`), where it says it. */
export interface BenchServerInfo {
  workers?: number
  maxBatch?: number
}

const SAMPLE_TEXTS = [
  'I love this product, it works perfectly.',
  'Terrible quality, it broke after two days.',
  'The package arrived on Tuesday.',
  'Great value for the money and fast shipping.',
  'Customer service never answered my emails.',
]

/** Sum and count of the server's batch-size histogram for one model (Prometheus text). */
interface BatchCounters {
  sum: number
  count: number
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')
}

/** Reads `inference_stream_batch_size_{sum,count}` of `model` from `/metrics` text. */
export function parseBatchCounters(text: string, model: string): BatchCounters | undefined {
  const label = `{model="${escapeLabel(model)}"}`
  const read = (name: string): number | undefined => {
    const prefix = `inference_stream_batch_size_${name}${label} `
    const line = text.split('\n').find((l) => l.startsWith(prefix))
    return line === undefined ? undefined : Number(line.slice(prefix.length))
  }
  const sum = read('sum')
  const count = read('count')
  // A model that has not run a batch yet has no series: zero so far.
  if (sum === undefined || count === undefined) return text.includes('inference_stream_batch_size') ? { sum: 0, count: 0 } : undefined
  return { sum, count }
}

async function readBatchCounters(url: string, model: string, metricsToken: string | undefined): Promise<BatchCounters | undefined> {
  try {
    const res = await fetch(new URL('/metrics', url), { headers: metricsToken ? { authorization: `Bearer ${metricsToken}` } : {} })
    if (!res.ok) return undefined
    return parseBatchCounters(await res.text(), model)
  } catch {
    return undefined
  }
}

// The server's /health, from the first of `urls` that answers (its url, for /metrics too).
async function readServerInfo(urls: string[]): Promise<BenchServerInfo & { url?: string }> {
  for (const url of urls) {
    try {
      const res = await fetch(new URL('/health', url))
      const body = (await res.json()) as { workers?: unknown; max_batch?: unknown }
      return {
        url,
        workers: typeof body.workers === 'number' ? body.workers : undefined,
        maxBatch: typeof body.max_batch === 'number' ? body.max_batch : undefined,
      }
    } catch {
      // down, or not ours: the next one
    }
  }
  return {}
}

/**
 * Reads up to `limit` model inputs from the `column` of a CSV, TSV, JSONL, JSON or Parquet file
 * (rows with no value in it are skipped). Throws InvalidOptionError naming the file and the
 * columns it has when the column is missing or empty.
 */
export async function loadBenchInputs(path: string, column: string, options: { format?: string; limit: number }): Promise<unknown[]> {
  const format = formatOf(path, options.format)
  const inputs: unknown[] = []
  let columns: string[] | undefined
  const reader = readRecords(path, { format })
  for await (const record of reader) {
    const r = record as Record<string, unknown>
    columns ??= Object.keys(r)
    if (!(column in r)) break
    const v = r[column]
    if (v !== undefined && v !== null && v !== '') inputs.push(v)
    if (inputs.length >= options.limit) break
  }
  reader.destroy()
  if (columns !== undefined && !columns.includes(column)) {
    throw new InvalidOptionError(`--input ${path} has no column "${column}" (columns: ${columns.map((c) => JSON.stringify(c)).join(', ') || 'none'}); choose one with --column`)
  }
  if (inputs.length === 0) throw new InvalidOptionError(`--input ${path} has no values in column "${column}"`)
  return inputs
}

/**
 * Measures one model or endpoint: `items` records through an InferenceStream at each in-flight
 * level, items/s, round-trip latency percentiles (ms) and, where the server's `/metrics` can be
 * read, the mean batch the server reached. `onProgress` is called as items come back. With several
 * `url`s the stream fails over between them; `/metrics` is read from `metricsUrl` (default: the first).
 */
export async function benchLevels(o: {
  url: string | string[]
  metricsUrl?: string
  token: string
  model: string
  items: number
  levels: number[]
  inputs: unknown[]
  parameters?: Record<string, unknown>
  protocol: 'v1' | 'legacy'
  metricsToken?: string
  onProgress?: (level: number, done: number, seconds: number) => void
  onLevel?: (row: BenchRow) => void
}): Promise<BenchRow[]> {
  const rows: BenchRow[] = []
  const metricsUrl = o.metricsUrl ?? (typeof o.url === 'string' ? o.url : o.url[0])
  for (const inFlight of o.levels) {
    const before = await readBatchCounters(metricsUrl, o.model, o.metricsToken)
    const stream = new InferenceStream<number>({
      url: o.url,
      model: o.model,
      token: o.token,
      maxInFlight: inFlight,
      parameters: o.parameters,
      protocol: o.protocol,
      includeRecord: false,
      input: (i) => ({ inputs: o.inputs[i % o.inputs.length] }),
    })
    const started = performance.now()
    let done = 0
    await pipeline(
      Readable.from((function* () { for (let i = 0; i < o.items; i++) yield i })()),
      stream,
      new Writable({
        objectMode: true,
        write: (_r, _e, cb) => {
          done++
          o.onProgress?.(inFlight, done, (performance.now() - started) / 1000)
          cb()
        },
      }),
    )
    const seconds = (performance.now() - started) / 1000
    const after = await readBatchCounters(metricsUrl, o.model, o.metricsToken)
    const batches = before && after ? after.count - before.count : 0
    const l = stream.latency
    const row: BenchRow = {
      inFlight,
      items: o.items,
      seconds,
      itemsPerSecond: o.items / seconds,
      p50: l.percentile(50),
      p95: l.percentile(95),
      p99: l.percentile(99),
      failed: stream.stats.failed,
      meanBatch: before && after && batches > 0 ? (after.sum - before.sum) / batches : null,
    }
    rows.push(row)
    o.onLevel?.(row)
  }
  return rows
}

/**
 * What to set, from the measured levels: the smallest in-flight within 10% of the best
 * throughput (more only adds latency), whether throughput was still rising at the highest
 * level, and what the mean batch says about `--max-batch` and `--workers`. One sentence a line.
 */
export function recommend(rows: BenchRow[], server: BenchServerInfo): string[] {
  const ok = rows.filter((r) => r.failed < r.items)
  if (ok.length === 0) return ['Every item failed at every level: nothing to recommend (see the failed column).']
  const lines: string[] = []
  const best = ok.reduce((a, b) => (b.itemsPerSecond > a.itemsPerSecond ? b : a))
  const chosen = ok.filter((r) => r.itemsPerSecond >= 0.9 * best.itemsPerSecond).reduce((a, b) => (b.inFlight < a.inFlight ? b : a))
  const rate = (r: BenchRow): string => `${r.itemsPerSecond.toFixed(0)} items/s`
  if (chosen.inFlight === best.inFlight) {
    lines.push(`Use --max-in-flight ${chosen.inFlight}: the best throughput measured (${rate(chosen)}, p95 ${chosen.p95.toFixed(1)} ms).`)
  } else {
    lines.push(`Use --max-in-flight ${chosen.inFlight}: ${rate(chosen)}, within 10% of the best (${rate(best)} at ${best.inFlight}) with p95 ${chosen.p95.toFixed(1)} ms instead of ${best.p95.toFixed(1)} ms.`)
  }
  const sorted = [...ok].sort((a, b) => a.inFlight - b.inFlight)
  const top = sorted[sorted.length - 1]
  const prev = sorted[sorted.length - 2]
  if (prev && top === best && top.itemsPerSecond > 1.1 * prev.itemsPerSecond) {
    lines.push(`Throughput was still rising at in-flight ${top.inFlight}: measure higher levels too (--in-flight ${prev.inFlight},${top.inFlight},${top.inFlight * 4}).`)
  }
  const { workers, maxBatch } = server
  if (chosen.meanBatch !== null && maxBatch !== undefined) {
    const mb = chosen.meanBatch
    if (mb >= 0.9 * maxBatch) {
      lines.push(`Batches were full (mean ${mb.toFixed(1)} of --max-batch ${maxBatch}): a larger --max-batch on the server may raise throughput if the model gains from bigger batches.`)
    } else if (mb < 2 && workers !== undefined && workers > 1 && chosen.inFlight >= workers * 2) {
      lines.push(`Batches stayed small (mean ${mb.toFixed(1)}) with ${workers} workers: fewer --workers (or --max-wait-ms 2..5) lets batches fill, which helps models that batch well.`)
    } else if (workers !== undefined && chosen.inFlight < workers * maxBatch && mb < 0.5 * maxBatch) {
      lines.push(`Mean batch ${mb.toFixed(1)} of --max-batch ${maxBatch}: batches can only fill when in-flight reaches workers × max-batch (${workers} × ${maxBatch} = ${workers * maxBatch}).`)
    }
  }
  return lines
}

/** The progress line of `bench` while a level runs. */
export function benchProgressLine(level: number, done: number, items: number, seconds: number): string {
  const rate = seconds > 0 ? done / seconds : 0
  return `in-flight ${level}: ${done}/${items} items, ${rate >= 100 ? rate.toFixed(0) : rate.toFixed(1)} items/s`
}

/** `inference-stream bench`: throughput and latency of a model or endpoint. */
export function benchCommand(): Command {
  return addModelFlags(new Command('bench'))
    .description('Measure a model or endpoint: items/s, latency percentiles and mean batch at several in-flight levels, and what to set')
    .requiredOption('-m, --model <id>', 'model id, e.g. builtin/sentiment')
    .option('--endpoint <url>', `server URL (default: an embedded server in this process); ${ENDPOINTS_HELP} (/health and /metrics: the first that answers)`, endpointsFlag)
    .option('--token <token>', 'bearer token for --endpoint (or INFERENCE_STREAM_TOKEN)')
    .option('--metrics-token <token>', 'bearer token for the endpoint\'s /metrics, to report the mean batch (not needed for a server on this machine)')
    .option('-n, --items <n>', 'items per level', intFlag('items', 1), 5000)
    .option('--in-flight <list>', 'in-flight levels to measure', intListFlag('in-flight'), [1, 16, 256])
    .option('-i, --input <file>', 'take the inputs from a file (.csv, .tsv, .jsonl, .json, .parquet): the first --items values of --column')
    .option('-c, --column <name>', 'column of --input holding the model inputs', 'text')
    .option('--input-format <format>', 'format of --input when its extension does not tell')
    .option('--text <text...>', 'input texts to cycle through (default: short product reviews)')
    .option('--parameters <json>', 'parameters for every item', jsonObjectFlag('parameters'))
    .option('--legacy', 'use the original protocol (one payload per frame, no acks)')
    .option('--workers <n>', 'batch workers of the embedded server', intFlag('workers', 1), 4)
    .option('--max-batch <n>', 'most items per model call on the embedded server', intFlag('max-batch', 1), 32)
    .option('--max-wait-ms <ms>', 'how long an idle worker of the embedded server waits for a batch to fill', intFlag('max-wait-ms', 0), 0)
    .option('--threads <n>', 'worker threads of the embedded server\'s CPU models', intFlag('threads', 1), 1)
    .option('--progress-interval <ms>', 'interval of progress lines when stderr is not a terminal', intFlag('progress-interval', 100), 5000)
    .option('--no-progress', 'no progress output on stderr')
    .option('--json', 'print the result as JSON')
    .addHelpText(
      'after',
      `
Examples:
  $ inference-stream bench --model builtin/sentiment
  $ inference-stream bench --model builtin/sentiment --input examples/reviews.csv --column text --items 2000
  $ inference-stream bench --model builtin/echo --items 50000 --in-flight 1,64,1024 --max-batch 64
  $ inference-stream bench --model org/model --endpoint http://gpu-box:8080 --token $TOKEN --json

The embedded server's --workers, --max-batch and --max-wait-ms are those of serve; against an
--endpoint they are the server's own, read from its /health.`,
    )
    .action(async (o) => {
      if (o.input && o.text) throw new InvalidOptionError('--input and --text both give the inputs: pass one')
      const inputs: unknown[] = o.input
        ? await loadBenchInputs(o.input, o.column, { format: o.inputFormat, limit: o.items })
        : (o.text ?? SAMPLE_TEXTS)
      let embedded: EmbeddedServer | undefined
      let urls: string[] = o.endpoint ?? []
      let token: string | undefined = o.token ?? process.env.INFERENCE_STREAM_TOKEN
      if (urls.length === 0) {
        embedded = await startEmbedded({
          registry: registryFromFlags(o, { defaultModel: o.model }),
          server: { workers: o.workers, maxBatch: o.maxBatch, maxWaitMs: o.maxWaitMs },
        })
        urls = [embedded.url]
        token = embedded.token
      } else if (!token) {
        // A server without tokens (loopback) takes any; one with tokens answers that one is needed.
        token = ANONYMOUS_TOKEN
      }
      const tty = process.stderr.isTTY === true
      const say = (line: string): void => {
        if (o.progress) process.stderr.write(tty ? `\r\x1b[2K${line}` : `${line}\n`)
      }
      let lastLine = performance.now()
      try {
        const server = await readServerInfo(urls)
        const where = embedded ? 'embedded server' : urls.join(', ')
        const batching = server.workers !== undefined && server.maxBatch !== undefined ? `, ${server.workers} workers, max batch ${server.maxBatch}` : ''
        const source = o.input ? `${inputs.length} inputs from ${o.input}` : `${inputs.length} sample texts`
        const heading = `${o.model} @ ${where}${batching}; ${o.items} items per level, ${source}`
        if (o.progress) process.stderr.write(`${heading}\n`)
        const rows = await benchLevels({
          url: urls.length === 1 ? urls[0] : urls,
          metricsUrl: server.url,
          token: token as string,
          model: o.model,
          items: o.items,
          levels: o.inFlight,
          inputs,
          parameters: o.parameters,
          protocol: o.legacy ? 'legacy' : 'v1',
          metricsToken: o.metricsToken,
          onProgress: (level, done, seconds) => {
            const now = performance.now()
            if (now - lastLine < (tty ? 250 : o.progressInterval)) return
            lastLine = now
            say(benchProgressLine(level, done, o.items, seconds))
          },
          onLevel: (r) => {
            lastLine = performance.now()
            const batch = r.meanBatch === null ? '' : `, mean batch ${r.meanBatch.toFixed(1)}`
            say(`in-flight ${r.inFlight}: ${r.items} items in ${r.seconds.toFixed(1)} s, ${r.itemsPerSecond.toFixed(0)} items/s, p95 ${r.p95.toFixed(1)} ms${batch}, ${r.failed} failed`)
            if (o.progress && tty) process.stderr.write('\n')
          },
        })
        const advice = recommend(rows, server)
        if (o.json) {
          const result = { model: o.model, endpoint: embedded ? null : urls.length === 1 ? urls[0] : urls, workers: server.workers ?? null, maxBatch: server.maxBatch ?? null, items: o.items, levels: rows, recommendation: advice }
          process.stdout.write(`${JSON.stringify(result, null, 2)}\n`)
        } else {
          process.stdout.write(`${heading}\n\n`)
          process.stdout.write('| in-flight | items/s | p50 ms | p95 ms | p99 ms | mean batch | failed |\n|--:|--:|--:|--:|--:|--:|--:|\n')
          for (const r of rows) {
            const mb = r.meanBatch === null ? 'n/a' : r.meanBatch.toFixed(1)
            process.stdout.write(`| ${r.inFlight} | ${r.itemsPerSecond.toFixed(0)} | ${r.p50.toFixed(1)} | ${r.p95.toFixed(1)} | ${r.p99.toFixed(1)} | ${mb} | ${r.failed} |\n`)
          }
          if (rows.some((r) => r.meanBatch === null)) process.stdout.write('\nmean batch n/a: the server\'s /metrics could not be read (pass --metrics-token)\n')
          process.stdout.write(`\n${advice.join('\n')}\n`)
        }
      } catch (err) {
        // Wrong flags, model or token: a usage error (exit 2). Anything else (a server that cannot
        // be reached or was lost): the bench failed, exit 1, as `run` does.
        const code = (err as { code?: string }).code
        if (err instanceof InvalidOptionError || code === 'ERR_UNKNOWN_MODEL' || code === 'ERR_AUTHENTICATION' || code === 'ERR_INPUT_FILE' || code === 'ERR_UNKNOWN_FORMAT') throw err
        process.stderr.write(`${tty && o.progress ? '\n' : ''}inference-stream: bench failed: ${(err as Error).message}${code ? ` (${code})` : ''}\n`)
        process.exitCode = 1
      } finally {
        await embedded?.close()
      }
    })
}

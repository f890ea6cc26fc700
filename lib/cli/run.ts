import { createWriteStream, existsSync, mkdirSync, type WriteStream } from 'node:fs'
import { rm } from 'node:fs/promises'
import { basename, dirname, extname, join, resolve } from 'node:path'
import { Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { Command, Option } from 'commander'
import { InferenceStream } from '../client/inference-stream.js'
import { AbortError, BadRecordError, CheckpointError, CheckpointLockedError, InvalidOptionError, UnknownFormatError } from '../errors.js'
import { acquireCheckpointLock } from '../client/checkpoint-lock.js'
import { countRows } from '../io/count-rows.js'
import { formatOf, type RecordFormat } from '../io/formats.js'
import { inputFromColumn, uniqueIdColumn } from '../io/mapping.js'
import { readRecords } from '../io/read-records.js'
import { writeRecords } from '../io/write-records.js'
import { batchingOption, ENDPOINTS_HELP, endpointsFlag, intFlag, jsonObjectFlag } from './common.js'
import type { Batching } from '../server/queue/length-batching.js'
import { ANONYMOUS_TOKEN } from '../server/http-util.js'
import { startEmbedded, type EmbeddedServer } from './embedded.js'
import { addModelFlags, registryFromFlags, type ModelFlags } from './model-flags.js'
import { Progress } from './progress.js'

/** Exit codes of `run` (also in its --help and docs/cli.md). */
export const EXIT = { ok: 0, failed: 1, usage: 2, someRowsFailed: 3, interrupted: 130 } as const

/** The default output path: next to the input, `<name>.results.parquet`. */
export function defaultOutput(input: string): string {
  return join(dirname(input), `${basename(input, extname(input))}.results.parquet`)
}

// Checks the first record has the columns the flags name, so a wrong --column (or --id-column) is
// one clear error rather than every row failing. A --parameters-column may be absent from a JSON
// record (that row has no parameters), so it is checked only where every row has the same columns.
function checkFirstRecord(flags: Array<[flag: string, column: string | undefined]>): Transform {
  let first = true
  return new Transform({
    objectMode: true,
    transform(record, _e, cb) {
      if (first) {
        first = false
        for (const [flag, column] of flags) {
          if (column === undefined) continue
          if (typeof record !== 'object' || record === null || !(column in record)) {
            const cols = typeof record === 'object' && record !== null ? Object.keys(record) : []
            return cb(new InvalidOptionError(`Input has no column "${column}" (columns: ${cols.map((c) => JSON.stringify(c)).join(', ') || 'none'}); choose one with ${flag}`))
          }
        }
      }
      cb(null, record)
    },
  })
}

/** `inference-stream run`: the main job, a file through a model into a file. */
export function runCommand(): Command {
  return addModelFlags(new Command('run'))
    .description('Run every row of a CSV / TSV / JSONL / JSON / Parquet file through a model and write the results')
    .argument('<input>', 'input file (.csv, .tsv, .jsonl, .ndjson, .json, .parquet)')
    .option('-o, --output <path>', 'output file (.parquet, .csv, .tsv, .jsonl); default <input>.results.parquet')
    .option('-m, --model <id>', 'model id', 'builtin/sentiment')
    .option('-c, --column <name>', 'input column holding the model inputs', 'text')
    .addOption(new Option('--input-format <format>', 'input format (default: from the extension)').choices(['csv', 'tsv', 'jsonl', 'json', 'parquet']))
    .addOption(new Option('--output-format <format>', 'output format (default: from the extension)').choices(['csv', 'tsv', 'jsonl', 'parquet']))
    .option('--id-column <name>', 'column with a unique id per row (default: run id + row number); a row repeating an earlier id fails with ERR_ID_CONFLICT')
    .option('--parameters <json>', 'parameters for every row, e.g. \'{"top_k": 1}\'', jsonObjectFlag('parameters'))
    .option('--parameters-column <name>', 'column with per-row parameters (JSON object)')
    .option('--max-in-flight <n>', 'rows sent and not yet written out', intFlag('max-in-flight', 1), 2048)
    .option('--unordered', 'write results as they arrive instead of in input order')
    .option('--checkpoint [path]', 'journal progress to resume after a crash (default path: <output>.ckpt)')
    .option('--resume', 'resume from the checkpoint (it must exist)')
    .option('--stop-after-failures <n>', 'stop (exit 1) when the first N rows all fail with the same error; 0: never stop', intFlag('stop-after-failures'), 100)
    .option('--keep-checkpoint', 'keep the checkpoint after a finished run (default: removed once the output is complete)')
    .option('--endpoint <url>', `a running server (default: an embedded server in this process); ${ENDPOINTS_HELP}`, endpointsFlag)
    .option('--token <token>', 'bearer token for --endpoint (or INFERENCE_STREAM_TOKEN); not needed by a server without tokens')
    .addOption(new Option('--compute <kind>', 'compute of the stream URL').choices(['cpu', 'gpu']).default('cpu'))
    .option('--legacy', 'speak the original protocol (no acks, no resume queries)')
    .option('--threads <n>', 'worker threads of the embedded server\'s CPU models', intFlag('threads', 1), 1)
    .addOption(batchingOption('embedded server only (not --endpoint): '))
    .option('--progress-interval <ms>', 'interval of progress lines when stderr is not a terminal', intFlag('progress-interval', 100), 5000)
    .option('--no-progress', 'no progress output')
    .option('--no-writer-thread', 'encode a Parquet output on the main thread (default: on a worker thread, using a second core)')
    .addHelpText(
      'after',
      `
Examples:
  $ inference-stream run examples/reviews.csv --model builtin/sentiment --column text -o reviews.parquet
  $ inference-stream run data.jsonl -m builtin/ner -c sentence -o entities.jsonl --checkpoint
  $ inference-stream run big.parquet -o out.parquet --endpoint http://gpu-box:8080 --token $TOKEN --resume
  $ inference-stream run big.parquet -o out.parquet --endpoint http://fe-a:8080 --endpoint http://fe-b:8080 --checkpoint

Without --endpoint the built-in models run in this process (offline, no download).
With several --endpoint (front-ends sharing one state, e.g. on Redis), the run starts on the first
that answers (failing only when none does) and, when one is lost, goes on on the next: rows sent
and unanswered are asked about there (v1 resume query) and only those it does not know are sent
again, so nothing is billed twice.
The output keeps the input columns and adds id, outputs (raw JSON), error, and flat columns
for common tasks (label, score, ...). It appears only when complete (written via <output>.partial).
Malformed input rows (broken quoting, a wrong number of columns) are skipped: the first five are
shown with their line and reason, all of them listed in <output>.errors.jsonl.

--id-column: ids are idempotency keys. A row whose id an earlier row already used is not run:
it fails with ERR_ID_CONFLICT (the output still has it; the summary counts them). A server that
already knows an id with other inputs or parameters (e.g. from an earlier run) answers
ERR_ID_CONFLICT too; with the same inputs it answers the stored result, not billed again.

Exit codes: 0 all rows done; 3 done, some rows failed (see the error column); 1 the run failed
(e.g. the server was lost: re-run with the same --checkpoint to resume; or another run holds
the checkpoint, ERR_CHECKPOINT_LOCKED); 2 bad flags or input;
130 interrupted (Ctrl-C; resumable with --checkpoint).`,
    )
    .action(async (input: string, o) => {
      process.exitCode = await runAction(input, o)
    })
}

interface RunFlags extends ModelFlags {
  output?: string
  model: string
  column: string
  inputFormat?: RecordFormat
  outputFormat?: RecordFormat
  idColumn?: string
  parameters?: Record<string, unknown>
  parametersColumn?: string
  maxInFlight: number
  unordered?: boolean
  checkpoint?: string | boolean
  resume?: boolean
  keepCheckpoint?: boolean
  stopAfterFailures: number
  endpoint?: string[]
  token?: string
  compute: 'cpu' | 'gpu'
  legacy?: boolean
  threads: number
  batching: Batching
  progressInterval: number
  progress: boolean
  writerThread: boolean
}

async function runAction(input: string, o: RunFlags): Promise<number> {
  if (!existsSync(input)) throw new InvalidOptionError(`Input file ${input} does not exist`)
  flagFormat(input, o.inputFormat, 'input') // unknown extension: one clear line now, naming the flag
  const output = o.output ?? defaultOutput(input)
  flagFormat(output, o.outputFormat, 'output')
  if (resolve(output) === resolve(input)) throw new InvalidOptionError('The output would overwrite the input; choose another --output')
  let checkpoint: string | undefined
  if (o.checkpoint !== undefined || o.resume) checkpoint = typeof o.checkpoint === 'string' ? o.checkpoint : `${output}.ckpt`
  if (o.resume && !existsSync(checkpoint as string)) throw new InvalidOptionError(`Nothing to resume: checkpoint ${checkpoint} does not exist (start with --checkpoint)`)
  if (!checkpoint) return runWith(input, output, undefined, o)
  // Locked before anything is touched: a second run on the same checkpoint stops here, never
  // racing the first on the journal or on <output>.partial.
  let lock
  try {
    lock = await acquireCheckpointLock(checkpoint)
  } catch (err) {
    if (!(err instanceof CheckpointLockedError)) throw err
    process.stderr.write(`inference-stream: ${err.message} (${err.code})\n`)
    return EXIT.failed
  }
  try {
    const code = await runWith(input, output, checkpoint, o)
    // The output is complete: a checkpoint left behind would only make the next run of this
    // command replay everything instead of running the (possibly changed) input.
    if ((code === EXIT.ok || code === EXIT.someRowsFailed) && !o.keepCheckpoint) await rm(checkpoint, { force: true })
    return code
  } finally {
    await lock.release()
  }
}

async function runWith(input: string, output: string, checkpoint: string | undefined, o: RunFlags): Promise<number> {

  let embedded: EmbeddedServer | undefined
  let url: string | string[] | undefined = o.endpoint
  let token = o.token ?? process.env.INFERENCE_STREAM_TOKEN
  if (!url || url.length === 0) {
    // Audio paths in the input resolve next to it.
    embedded = await startEmbedded({ registry: registryFromFlags(o, { defaultModel: o.model, audioRoot: dirname(resolve(input)) }), server: { batching: o.batching } })
    url = embedded.url
    token = embedded.token
  } else if (!token) {
    // A server without tokens (loopback) takes any; one with tokens answers that one is needed.
    token = ANONYMOUS_TOKEN
  }

  const ac = new AbortController()
  const onSigint = (): void => ac.abort(new Error('interrupted'))
  process.once('SIGINT', onSigint)
  const reader = readRecords(input, { format: o.inputFormat })
  let readerEnded = false
  reader.once('end', () => (readerEnded = true))
  // Malformed rows: the first few in the summary, all of them in <output>.errors.jsonl.
  const badRows = new BadRowLog(`${output}.errors.jsonl`)
  reader.on('bad-record', (err: BadRecordError) => badRows.add(err))
  const mapInput = inputFromColumn(o.column, { parameters: o.parameters, parametersColumn: o.parametersColumn }) as (r: Record<string, unknown>) => { inputs: unknown }
  // With --id-column, ids must be unique: a repeated one fails its row (ERR_ID_CONFLICT).
  const unique = o.idColumn ? uniqueIdColumn(o.idColumn, mapInput) : undefined
  const stream = new InferenceStream<Record<string, unknown>>({
    url,
    model: o.model,
    compute: o.compute,
    token: token as string,
    input: unique ? unique.input : mapInput,
    id: o.idColumn ? (r) => String(r[o.idColumn as string] ?? '') : undefined,
    maxInFlight: o.maxInFlight,
    ordered: !o.unordered,
    protocol: o.legacy ? 'legacy' : 'v1',
    signal: ac.signal,
    checkpoint: checkpoint
      ? {
          path: checkpoint,
          lock: false,
          // Stored under the same keys as before (a checkpoint of an earlier version resumes);
          // a refused resume names them as the flags that set them.
          fingerprint: { input: resolve(input), column: o.column, idColumn: o.idColumn ?? null, parameters: o.parameters ?? null, parametersColumn: o.parametersColumn ?? null },
          fingerprintNames: { input: 'input file', column: '--column', idColumn: '--id-column', parameters: '--parameters', parametersColumn: '--parameters-column' },
        }
      : undefined,
  })
  let written = 0
  // The output's folder is created as needed, as `-o out/today/reviews.parquet` suggests.
  mkdirSync(dirname(resolve(output)), { recursive: true })
  // The task the server names (on connect) fixes the flat columns: a first row without entities is `[]`, not missing.
  // A Parquet output is encoded on a worker thread (--no-writer-thread: on this one): the same
  // file, with this thread free for reading, the stream (and an embedded server).
  const writer = writeRecords(output, { format: o.outputFormat, task: () => stream.task, thread: o.writerThread })
  const failures = new FailureTally()
  let progress: Progress | undefined
  const stopAfter = o.stopAfterFailures
  const counter = new Transform({
    objectMode: true,
    transform(r: { error?: Error & { code?: string; remoteCode?: string } }, _e, cb) {
      written++
      if (r.error) failures.add(r.error.remoteCode ?? r.error.code ?? 'ERR', r.error.message)
      // Every row so far failed, all the same way: the rest would too (a missing parameter, a
      // model that cannot load). Say so now rather than after the whole file.
      if (stopAfter > 0 && written === stopAfter && failures.total === written && failures.codes === 1) {
        return cb(new AllFailingError(failures.only(), written))
      }
      // The last row: say "writing output…" now, not at the next tick.
      if (readerEnded && written >= reader.recordsRead) progress?.refresh()
      cb(null, r)
    },
    flush(cb) {
      progress?.refresh()
      cb()
    },
  })
  progress = o.progress
    ? new Progress(
        {
          written: () => written,
          skipped: () => reader.badRecords,
          // Every row read is written: what is left is the output's footer, rename and the checkpoint's last commit.
          finishing: () => readerEnded && written >= reader.recordsRead,
          stream: stream as InferenceStream<unknown>,
        },
        { tty: process.stderr.isTTY === true, intervalMs: o.progressInterval, label: basename(input) },
      )
    : undefined
  // A front-end skipped or lost: said once each, so a run that goes on elsewhere does not look stuck.
  const say = (text: string): void => (progress ? progress.message(text) : void process.stderr.write(`${text}\n`))
  stream.on('unreachable', (u: string, cause?: Error) => say(`inference-stream: cannot reach ${u}${cause ? ` (${cause.message})` : ''}; trying the next --endpoint`))
  if (stream.urls.length > 1) stream.on('reconnect', () => say(`inference-stream: reconnected to ${stream.url}`))
  // Said once the checkpoint is open (the progress display exists by then).
  stream.once('checkpoint', (cp: { path: string; results: number; unanswered: number }) => {
    if (cp.results === 0 && cp.unanswered === 0) {
      if (o.resume) say(`inference-stream: resuming from ${cp.path}: no rows done yet`)
      return
    }
    // Asked of the server (v1 resume query): only the ones it does not know are sent again, and
    // an embedded server started afresh knows none of them.
    const asked = cp.unanswered > 0 ? `; ${cp.unanswered} sent earlier without an answer: the server is asked about them, and those it does not know are sent again` : ''
    say(`inference-stream: resuming from ${cp.path}: ${cp.results} rows already done (replayed from the checkpoint${asked}); continuing with the rest`)
  })
  // Counted beside the job (a large CSV takes a moment): the bar shows the total once known.
  // Stopped when the run ends, so a run that fails at once does not wait for it to exit.
  const counting = new AbortController()
  countRows(input, { format: o.inputFormat, signal: counting.signal }).then(
    (n) => progress?.setTotal(n),
    () => progress?.setTotal(undefined),
  )
  // With a checkpoint, the bar starts once it is open: what the run resumes from is said first.
  if (checkpoint && progress) stream.once('checkpoint', () => progress?.start())
  else progress?.start()
  const started = performance.now()
  let code: number = EXIT.ok
  try {
    const headed = ['csv', 'tsv', 'parquet'].includes(formatOf(input, o.inputFormat))
    const columns: Array<[string, string | undefined]> = [['--column', o.column], ['--id-column', o.idColumn], ['--parameters-column', headed ? o.parametersColumn : undefined]]
    await pipeline(reader, checkFirstRecord(columns), stream, counter, writer)
  } catch (err) {
    progress?.stop()
    await badRows.close()
    badRows.report()
    // Nothing was written (the server could not be reached, an unknown model, a refused token):
    // no empty <output>.partial is left behind.
    if (written === 0) await rm(`${output}.partial`, { force: true })
    if (err instanceof AllFailingError) {
      process.stderr.write(`inference-stream: ${err.message}\n`)
      // Nothing worth keeping: no half-written output is left behind.
      await rm(`${output}.partial`, { force: true })
      return EXIT.failed
    }
    if (err instanceof AbortError) {
      process.stderr.write(`inference-stream: interrupted after ${written} rows${checkpoint ? `; re-run the same command to resume from ${checkpoint}` : ''}\n`)
      return EXIT.interrupted
    }
    // Wrong flags, wrong column, a checkpoint of another run: a usage error (exit 2), one line.
    if (err instanceof InvalidOptionError || err instanceof CheckpointError) throw err
    const e = err as Error & { code?: string }
    process.stderr.write(`inference-stream: run failed after ${written} rows: ${e.message}${e.code ? ` (${e.code})` : ''}\n`)
    // A model the server does not have (or cannot run on gpu), a refused token: nothing ran; fix the flags.
    if (e.code === 'ERR_AUTHENTICATION' && !(o.token ?? process.env.INFERENCE_STREAM_TOKEN) && o.endpoint) {
      process.stderr.write('inference-stream: this server needs a token: pass --token (or set INFERENCE_STREAM_TOKEN)\n')
    }
    if (e.code === 'ERR_UNKNOWN_MODEL' || e.code === 'ERR_DEVICE_UNAVAILABLE' || e.code === 'ERR_AUTHENTICATION') return EXIT.usage
    // An input that cannot be read as its format says (a directory, not Parquet, a .json that is not
    // one array, a header naming a column twice): bad input, exit 2 as documented.
    if (e.code === 'ERR_INPUT_FILE') {
      if (checkpoint && written > 0) process.stderr.write(`inference-stream: progress is in ${checkpoint}\n`)
      return EXIT.usage
    }
    if (checkpoint) process.stderr.write(`inference-stream: progress is in ${checkpoint}; re-run the same command to resume\n`)
    return EXIT.failed
  } finally {
    counting.abort()
    process.off('SIGINT', onSigint)
    await embedded?.close()
  }
  progress?.stop(true)
  await badRows.close()
  badRows.report()
  const seconds = (performance.now() - started) / 1000
  const s = stream.stats
  const l = stream.latency
  const lines = [
    `${written} rows -> ${output} in ${seconds.toFixed(2)} s (${(written / seconds).toFixed(0)} rows/s)`,
    `failed: ${s.failed}${failures.total > 0 ? ` (${failures.summary()})` : ''}${unique?.duplicates ? ` (duplicate ids: ${unique.duplicates})` : ''}${badRows.count ? `, malformed input rows skipped: ${badRows.count} (listed in ${badRows.path})` : ''}${s.reconnects ? `, reconnects: ${s.reconnects}` : ''}${s.replayed ? `, replayed from checkpoint: ${s.replayed}` : ''}`,
    `latency p50 ${l.percentile(50).toFixed(1)} ms, p95 ${l.percentile(95).toFixed(1)} ms`,
  ]
  process.stdout.write(`${lines.join('\n')}\n`)
  if (s.failed > 0) code = EXIT.someRowsFailed
  return code
}

// The format of a file from its extension, or one line naming the flag that sets it.
function flagFormat(path: string, format: string | undefined, which: 'input' | 'output'): void {
  let found: RecordFormat
  try {
    found = formatOf(path, format)
  } catch (err) {
    if (!(err instanceof UnknownFormatError)) throw err
    const ext = extname(path)
    throw new UnknownFormatError(
      `Cannot tell the format of ${which} ${path} from its extension${ext ? ` "${ext}"` : ''}: name it ${which === 'input' ? '.csv, .tsv, .jsonl, .json or .parquet' : '.parquet, .csv, .tsv or .jsonl'}, or pass --${which}-format ${which === 'input' ? 'csv|tsv|jsonl|json|parquet' : 'csv|tsv|jsonl|parquet'}`,
    )
  }
  if (which === 'output' && found === 'json') {
    throw new UnknownFormatError(`Cannot write output ${path}: a JSON array is read, not written; name it .jsonl (one JSON object a line), .parquet, .csv or .tsv, or pass --output-format jsonl`)
  }
}

/**
 * Malformed input rows of a run: every one as a JSON line in `path` (created at the first one,
 * so a clean run leaves none; one left by an earlier run is removed), the first few kept for the
 * summary on stderr.
 */
class BadRowLog {
  count = 0
  private readonly first: BadRecordError[] = []
  private file: WriteStream | undefined
  private failure: Error | undefined

  constructor(readonly path: string) {}

  add(err: BadRecordError): void {
    this.count++
    if (this.first.length < 5) this.first.push(err)
    if (this.failure) return
    if (!this.file) {
      this.file = createWriteStream(this.path)
      this.file.on('error', (e) => (this.failure ??= e))
    }
    // Same names as the error columns of failed rows in the output.
    const entry = err.line === undefined ? { line: null, error: err.message, error_code: err.code } : { line: err.line, error: err.reason, error_code: err.code }
    this.file.write(`${JSON.stringify(entry)}\n`)
  }

  /** Ends the file (or removes one an earlier run left when there was no malformed row). */
  async close(): Promise<void> {
    const file = this.file
    if (!file) {
      await rm(this.path, { force: true }).catch(() => {})
      return
    }
    if (!file.closed) await new Promise<void>((resolve) => file.end(() => resolve()))
  }

  /** The first few on stderr, and where the rest are. */
  report(): void {
    if (this.count === 0) return
    const lines = [`inference-stream: ${this.count} malformed input row${this.count === 1 ? '' : 's'} skipped (not run, not in the output):`]
    for (const e of this.first) lines.push(`  ${e.line === undefined ? e.message : `line ${e.line}: ${e.reason}`}`)
    if (this.count > this.first.length) lines.push(`  … and ${this.count - this.first.length} more`)
    lines.push(
      this.failure
        ? `inference-stream: could not write ${this.path}: ${this.failure.message}`
        : `inference-stream: ${this.count === 1 ? 'it is' : 'all of them are'} listed in ${this.path} (one JSON line each: line, error, error_code)`,
    )
    process.stderr.write(`${lines.join('\n')}\n`)
  }
}

/** Failed rows by error code, with the first message of each (for the summary). */
class FailureTally {
  total = 0
  private readonly byCode = new Map<string, { count: number; example: string }>()

  add(code: string, message: string): void {
    this.total++
    const seen = this.byCode.get(code)
    if (seen) seen.count++
    else if (this.byCode.size < 20) this.byCode.set(code, { count: 1, example: message })
  }

  get codes(): number {
    return this.byCode.size
  }

  only(): { code: string; example: string } {
    const [code, { example }] = this.byCode.entries().next().value as [string, { count: number; example: string }]
    return { code, example }
  }

  summary(): string {
    return [...this.byCode].map(([code, { count, example }]) => `${code} ×${count}, e.g. ${JSON.stringify(example.length > 120 ? `${example.slice(0, 117)}...` : example)}`).join('; ')
  }
}

/** The first rows of a run all failed with one error: the run stops (exit 1). */
class AllFailingError extends Error {
  constructor(failure: { code: string; example: string }, rows: number) {
    super(
      `the first ${rows} rows all failed with ${failure.code}: ${failure.example}\n` +
        'inference-stream: stopped early, as the rest would fail the same way; fix the cause, or pass --stop-after-failures 0 to run every row anyway',
    )
    this.name = 'AllFailingError'
  }
}

import { rm } from 'node:fs/promises'
import { basename } from 'node:path'
import { Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import cliProgress from 'cli-progress'
import { Command, CommanderError, Option } from 'commander'
import { BulkClient, isFinal, type BulkJobStatus } from '../client/bulk-client.js'
import { DatasetBulk } from '../client/dataset-bulk.js'
import {
  AbortError,
  BulkJobCancelledError,
  BulkJobFailedError,
  HttpError,
  InputFileError,
  InvalidOptionError,
  UnknownFormatError,
} from '../errors.js'
import { formatOf } from '../io/formats.js'
import { writeRecords } from '../io/write-records.js'
import { ENDPOINTS_HELP, endpointsFlag, intFlag, jsonObjectFlag } from './common.js'

/** Exit codes of `bulk` (also in its --help and docs/bulk.md, "Client"). */
export const BULK_EXIT = { ok: 0, failed: 1, usage: 2, interrupted: 130 } as const

const SERVER_NOTE = `Bulk jobs run on a server started with --data-dir (\`inference-stream serve --data-dir DIR\`),
so every bulk command needs --endpoint URL; --token (or INFERENCE_STREAM_TOKEN) when the server has tokens.

FAILOVER: --endpoint may be repeated (front-ends sharing the jobs and the data folder). Status polls,
downloads, cancel and upload go to the next one when a server does not answer or answers 502/503/504;
\`bulk run\` only when the request surely reached no server (connection refused): otherwise the job
may have started, and the command fails rather than start a second one (look with \`bulk jobs\`).`

const EXIT_NOTE = `Exit codes: 0 done; 1 the job failed or was cancelled, or the server failed or could not be
reached; 2 bad flags, or a request the server refused (unknown dataset, column, model or job;
a server started without --data-dir);
130 interrupted (Ctrl-C stops waiting; the job goes on on the server).`

/** Where the bulk commands write and what they read of the process; tests pass their own. */
export interface BulkIo {
  stdout: { write(text: string): unknown }
  stderr: { write(text: string): unknown }
  /** Whether stderr is a terminal (a progress bar rather than lines). */
  stderrIsTTY: boolean
  env: NodeJS.ProcessEnv
  setExitCode(code: number): void
}

/** The process's own {@link BulkIo}. */
export function processIo(): BulkIo {
  return {
    stdout: process.stdout,
    stderr: process.stderr,
    stderrIsTTY: process.stderr.isTTY === true,
    env: process.env,
    setExitCode: (code) => {
      process.exitCode = code
    },
  }
}

interface ServerFlags {
  endpoint?: string[]
  token?: string
}

// Usage errors of commander (unknown flag, missing argument) exit 2 like our own; help exits 0.
function usageExit(io: BulkIo, cmd: Command): Command {
  return cmd.configureOutput({ writeOut: (t) => void io.stdout.write(t), writeErr: (t) => void io.stderr.write(t) }).exitOverride((err) => {
    throw err.exitCode === 0 ? err : new CommanderError(BULK_EXIT.usage, err.code, err.message)
  })
}

function withServer(io: BulkIo, cmd: Command): Command {
  return usageExit(
    io,
    cmd
      .option('--endpoint <url>', `the server (started with --data-dir), e.g. http://127.0.0.1:8080; required; ${ENDPOINTS_HELP} (see FAILOVER below)`, endpointsFlag)
      .option('--token <token>', 'bearer token (or INFERENCE_STREAM_TOKEN)'),
  )
}

function clientOf(o: ServerFlags, io: BulkIo): BulkClient {
  if (!o.endpoint || o.endpoint.length === 0) {
    throw new InvalidOptionError('--endpoint URL is required: bulk jobs run on a server started with `inference-stream serve --data-dir DIR`')
  }
  const token = o.token ?? (io.env.INFERENCE_STREAM_TOKEN || undefined)
  try {
    return new BulkClient({ url: o.endpoint, token })
  } catch (err) {
    if (err instanceof InvalidOptionError) throw new InvalidOptionError(err.message.replace('Option "url"', '--endpoint').replace('Option "token"', '--token'))
    throw err
  }
}

/** The exit code of an error, after printing it as one line on stderr. */
function report(err: unknown, io: BulkIo): number {
  const e = err as Error & { code?: string }
  const line = (text: string): void => {
    io.stderr.write(`inference-stream: ${text}\n`)
  }
  if (err instanceof AbortError) return BULK_EXIT.interrupted
  if (err instanceof BulkJobFailedError || err instanceof BulkJobCancelledError) {
    line(`${e.message} (${e.code})`)
    return BULK_EXIT.failed
  }
  if (err instanceof HttpError) {
    // The message already names the request, its status and the server's code.
    line(e.message)
    // A server that runs no bulk jobs (501): the wrong --endpoint, or one to restart with --data-dir.
    if (err.remoteCode === 'ERR_BULK_DISABLED') return BULK_EXIT.usage
    return err.status !== undefined && err.status >= 400 && err.status < 500 ? BULK_EXIT.usage : BULK_EXIT.failed
  }
  if (err instanceof InvalidOptionError || err instanceof UnknownFormatError || err instanceof InputFileError) {
    line(`${e.message} (${e.code})`)
    return BULK_EXIT.usage
  }
  line(`${e?.message ?? String(err)}${e?.code ? ` (${e.code})` : ''}`)
  if (io.env.DEBUG) io.stderr.write(`${e?.stack}\n`)
  return BULK_EXIT.failed
}

// Runs an action with Ctrl-C as an abort, and turns its outcome into the exit code.
function act<A extends unknown[]>(io: BulkIo, fn: (signal: AbortSignal, ...args: A) => Promise<number>) {
  return async (...args: A): Promise<void> => {
    const ac = new AbortController()
    const onSigint = (): void => ac.abort(new Error('interrupted'))
    process.once('SIGINT', onSigint)
    try {
      io.setExitCode(await fn(ac.signal, ...args))
    } catch (err) {
      io.setExitCode(report(err, io))
    } finally {
      process.off('SIGINT', onSigint)
    }
  }
}

function isoTime(epochSeconds: number | null | undefined): string {
  return typeof epochSeconds === 'number' ? new Date(epochSeconds * 1000).toISOString().replace(/\.\d+Z$/, 'Z') : '-'
}

/** A job's status as a short two-column table. */
export function statusTable(s: BulkJobStatus): string {
  const d = s.dataset
  const secs = typeof s.end_time === 'number' && typeof s.start_time === 'number' ? ` (${(s.end_time - s.start_time).toFixed(1)} s)` : ''
  const rows: [string, string][] = [
    ['job', s.jobid],
    ['state', s.state],
    ['model', s.model],
    ['dataset', d ? `${d.name} (config ${d.config}, split ${d.split}, column ${d.column})` : '-'],
    ['rows', `${s.processed}${s.total !== null && s.total !== undefined ? `/${s.total}` : ''} processed, ${s.failed} failed`],
    ['output', `${s.bulk_name}${s.revision ? ` @ ${s.revision}` : ''}`],
    ['started', isoTime(s.start_time)],
    ['ended', `${isoTime(s.end_time)}${secs}`],
  ]
  if (s.error) rows.push(['error', s.error])
  return rows.map(([k, v]) => `${k.padEnd(9)}${v}`).join('\n')
}

function rate(n: number): string {
  return n >= 100 ? n.toFixed(0) : n.toFixed(1)
}

/**
 * Progress of a job on stderr while waiting: a bar on a TTY, else one line per change of state and
 * at most one every `intervalMs` while rows move (logs, CI).
 */
class JobProgress {
  private bar: cliProgress.SingleBar | undefined
  private lastLine = 0
  private lastState = ''
  private lastProcessed = -1
  private first: { at: number; processed: number } | undefined

  constructor(
    private readonly io: BulkIo,
    private readonly opts: { tty: boolean; intervalMs: number; enabled: boolean },
  ) {}

  update(s: BulkJobStatus): void {
    if (!this.opts.enabled) return
    const now = performance.now()
    if (s.state === 'running' && !this.first) this.first = { at: now, processed: s.processed }
    const secs = this.first ? (now - this.first.at) / 1000 : 0
    // A job that ended between two polls: its own start and end times tell its rate.
    const ran = isFinal(s.state) && typeof s.end_time === 'number' ? s.end_time - s.start_time : 0
    const r = ran > 0 ? s.processed / ran : secs > 0 && this.first ? (s.processed - this.first.processed) / secs : 0
    const label = `job ${s.jobid.slice(0, 8)}`
    if (this.opts.tty) {
      if (!this.bar) {
        this.bar = new cliProgress.SingleBar(
          { format: `${label} [{bar}] {value}/{total} | {state} | {rate} rows/s | {failed} failed`, stream: this.io.stderr as NodeJS.WritableStream, hideCursor: true, clearOnComplete: false, barsize: 30, fps: 5 },
          cliProgress.Presets.shades_classic,
        )
        this.bar.start(s.total ?? Math.max(s.processed, 1), s.processed, { state: s.state, rate: '0', failed: s.failed })
      }
      this.bar.setTotal(s.total ?? Math.max(s.processed, 1))
      this.bar.update(s.processed, { state: s.state, rate: rate(r), failed: s.failed })
      if (isFinal(s.state)) this.stop()
      return
    }
    const changed = s.state !== this.lastState
    const moved = s.processed !== this.lastProcessed && now - this.lastLine >= this.opts.intervalMs
    if (!changed && !moved) return
    this.lastState = s.state
    this.lastProcessed = s.processed
    this.lastLine = now
    const of = s.total !== null ? `/${s.total}` : ''
    const pct = s.total ? ` (${Math.floor((100 * s.processed) / s.total)}%)` : ''
    this.io.stderr.write(`${label}: ${s.state}, ${s.processed}${of} rows${pct}, ${rate(r)} rows/s, ${s.failed} failed\n`)
  }

  stop(): void {
    this.bar?.stop()
    this.bar = undefined
  }
}

function progressOptions(cmd: Command): Command {
  return cmd
    .option('--poll-interval <ms>', 'first delay between status polls (grows 1.5x per poll up to 5 s)', intFlag('poll-interval', 1), 250)
    .option('--progress-interval <ms>', 'interval of progress lines when stderr is not a terminal', intFlag('progress-interval', 0), 2000)
    .option('--no-progress', 'no progress output')
}

interface ProgressFlags {
  pollInterval: number
  progressInterval: number
  progress: boolean
}

function progressOf(o: ProgressFlags, io: BulkIo): JobProgress {
  return new JobProgress(io, { tty: io.stderrIsTTY, intervalMs: o.progressInterval, enabled: o.progress })
}

function pollOf(o: ProgressFlags): { pollIntervalMs: number; maxPollIntervalMs: number } {
  return { pollIntervalMs: o.pollInterval, maxPollIntervalMs: Math.max(o.pollInterval, 5000) }
}

interface RunFlags extends ServerFlags, ProgressFlags {
  model: string
  compute: 'cpu' | 'gpu'
  dataset: string
  config: string
  split: string
  column: string
  parameters?: Record<string, unknown>
  keepColumns?: string[]
  keepAllColumns?: boolean
  bulkName?: string
  wait?: boolean
  json?: boolean
}

// `--keep-columns a,b --keep-columns c`: the names in order.
function collectColumns(value: string, previous: string[] = []): string[] {
  const names = value.split(',').map((c) => c.trim())
  if (names.some((c) => c === '')) throw new InvalidOptionError(`--keep-columns takes column names separated by commas, got "${value}"`)
  return [...previous, ...names]
}

function runSub(io: BulkIo): Command {
  return progressOptions(
    withServer(
      io,
      new Command('run')
        .description('Start a bulk job: a model over a column of a dataset of the server; prints its jobid and bulk_name')
        .requiredOption('-m, --model <id>', 'model id, e.g. builtin/sentiment')
        .requiredOption('-d, --dataset <name>', 'input dataset in the server\'s datasets folder (or uploaded), e.g. reviews or org/reviews')
        .option('--config <name>', 'its config', 'default')
        .requiredOption('--split <name>', 'its split, e.g. train')
        .requiredOption('-c, --column <name>', 'the column holding the model inputs')
        .option('--parameters <json>', 'parameters for every row, e.g. \'{"top_k": 1}\'', jsonObjectFlag('parameters'))
        .option('--keep-columns <names>', 'other columns of the dataset to copy into the outputs, separated by commas (repeatable)', collectColumns)
        .option('--keep-all-columns', 'copy every other column of the dataset into the outputs')
        .option('--bulk-name <name>', 'output dataset (default: one per dataset, config, split, column and model)')
        .addOption(new Option('--compute <kind>', 'compute of the job').choices(['cpu', 'gpu']).default('cpu'))
        .option('-w, --wait', 'wait for the job to end, with progress, then print its status (exit 1 if it failed)')
        .option('--json', 'print JSON ({jobid, bulk_name}; with --wait the final status) instead of text'),
    ),
  )
    .addHelpText(
      'after',
      `
Examples:
  $ inference-stream bulk run --endpoint http://127.0.0.1:8080 --token $TOKEN \\
      --model builtin/sentiment --dataset reviews --split train --column text --wait
  $ inference-stream bulk run --endpoint $URL -m builtin/sentiment -d reviews --split train -c text \\
      --keep-columns id,rating --wait
  $ inference-stream bulk run --endpoint $URL -m builtin/ner -d org/news --config en --split test \\
      -c body --bulk-name me/news-entities --json

${SERVER_NOTE}
Without --wait the command returns at once; follow the job with \`bulk status JOBID\` and read its
outputs with \`bulk download JOBID -o out.parquet\`.

${EXIT_NOTE}`,
    )
    .action(
      act(io, async (signal, o: RunFlags) => {
        if (o.keepColumns && o.keepAllColumns) throw new InvalidOptionError('--keep-columns and --keep-all-columns both say what to keep: pass one')
        const client = clientOf(o, io)
        const started = await client.start(
          {
            model: o.model,
            compute: o.compute,
            dataset_name: o.dataset,
            dataset_config: o.config,
            dataset_split: o.split,
            dataset_column: o.column,
            parameters: o.parameters,
            keep_columns: o.keepAllColumns ? '*' : o.keepColumns,
            bulk_name: o.bulkName,
          },
          { signal },
        )
        if (!o.wait) {
          io.stdout.write(o.json ? `${JSON.stringify(started)}\n` : `jobid     ${started.jobid}\nbulk_name ${started.bulk_name}\n`)
          return BULK_EXIT.ok
        }
        if (!o.json) io.stdout.write(`jobid     ${started.jobid}\nbulk_name ${started.bulk_name}\n`)
        return waitAndPrint(io, client, started.jobid, o, signal)
      }),
    )
}

async function waitAndPrint(io: BulkIo, client: BulkClient, jobId: string, o: ProgressFlags & { json?: boolean }, signal: AbortSignal): Promise<number> {
  const progress = progressOf(o, io)
  let final: BulkJobStatus
  try {
    final = await client.wait(jobId, { ...pollOf(o), signal, onStatus: (s) => progress.update(s) })
  } catch (err) {
    progress.stop()
    if (err instanceof AbortError) {
      io.stderr.write(`inference-stream: stopped waiting; job ${jobId} goes on (\`bulk status ${jobId}\`, \`bulk cancel ${jobId}\`)\n`)
    }
    throw err
  }
  progress.stop()
  io.stdout.write(o.json ? `${JSON.stringify(final)}\n` : `${statusTable(final)}\n`)
  if (final.state === 'completed') return BULK_EXIT.ok
  io.stderr.write(`inference-stream: job ${jobId} ${final.state}${final.error ? `: ${final.error}` : ''} (${final.state === 'failed' ? 'ERR_JOB_FAILED' : 'ERR_JOB_CANCELLED'})\n`)
  return BULK_EXIT.failed
}

function statusSub(io: BulkIo): Command {
  return withServer(
    io,
    new Command('status')
      .description('Show the status of a bulk job')
      .argument('<jobid>', 'the job id `bulk run` printed')
      .option('--json', 'print the status object as JSON'),
  )
    .addHelpText(
      'after',
      `
Examples:
  $ inference-stream bulk status 784448e647f5e988 --endpoint http://127.0.0.1:8080
  $ inference-stream bulk status 784448e647f5e988 --endpoint $URL --json | jq .status.processed

The JSON is the server's answer {"status": {active, start_time, state, jobid, bulk_name, model,
dataset, total, processed, failed, end_time, error, revision}}. The exit code is 0 whatever the
job's state (use \`bulk run --wait\` to wait for it); 2 for an unknown job.

${SERVER_NOTE}`,
    )
    .action(
      act(io, async (signal, jobId: string, o: ServerFlags & { json?: boolean }) => {
        const s = await clientOf(o, io).status(jobId, { signal })
        io.stdout.write(o.json ? `${JSON.stringify({ status: s })}\n` : `${statusTable(s)}\n`)
        return BULK_EXIT.ok
      }),
    )
}

function jobsSub(io: BulkIo): Command {
  return withServer(io, new Command('jobs').description('List the bulk jobs of this token').option('--json', 'print a JSON array of statuses'))
    .addHelpText(
      'after',
      `
Example:
  $ inference-stream bulk jobs --endpoint http://127.0.0.1:8080 --token $TOKEN

${SERVER_NOTE}`,
    )
    .action(
      act(io, async (signal, o: ServerFlags & { json?: boolean }) => {
        const jobs = await clientOf(o, io).jobs({ signal })
        if (o.json) {
          io.stdout.write(`${JSON.stringify(jobs)}\n`)
          return BULK_EXIT.ok
        }
        for (const s of jobs) {
          const of = s.total !== null ? `/${s.total}` : ''
          io.stdout.write(`${s.jobid}  ${s.state.padEnd(9)}  ${s.processed}${of} rows  ${s.model}  ${s.dataset?.name}/${s.dataset?.config}/${s.dataset?.split}:${s.dataset?.column} -> ${s.bulk_name}\n`)
        }
        if (jobs.length === 0) io.stdout.write('no jobs\n')
        return BULK_EXIT.ok
      }),
    )
}

function cancelSub(io: BulkIo): Command {
  return withServer(io, new Command('cancel').description('Cancel a queued or running bulk job').argument('<jobid>', 'the job id').option('--json', 'print the status after as JSON'))
    .addHelpText(
      'after',
      `
Example:
  $ inference-stream bulk cancel 784448e647f5e988 --endpoint http://127.0.0.1:8080

A job that already ended cannot be cancelled (HTTP 409, exit 2). A cancelled job commits nothing.

${SERVER_NOTE}`,
    )
    .action(
      act(io, async (signal, jobId: string, o: ServerFlags & { json?: boolean }) => {
        const s = await clientOf(o, io).cancel(jobId, { signal })
        io.stdout.write(o.json ? `${JSON.stringify({ status: s })}\n` : `${statusTable(s)}\n`)
        return BULK_EXIT.ok
      }),
    )
}

interface DownloadFlags extends ServerFlags, ProgressFlags {
  output: string
  dataset?: string
  revision?: string
  parseOutputs?: boolean
}

function downloadSub(io: BulkIo): Command {
  return progressOptions(
    withServer(
      io,
      new Command('download')
        .description('Write the output rows of a bulk job (waiting for it if needed), or of any revision of an output dataset, to a file')
        .argument('[jobid]', 'the job whose outputs to read (or --dataset)')
        .requiredOption('-o, --output <path>', 'output file: .parquet, .jsonl, .ndjson, .csv or .tsv')
        .option('-d, --dataset <name>', 'read this output dataset (a bulk_name) instead of a job\'s outputs')
        .option('-r, --revision <rev>', 'with --dataset: branch, tag or commit sha (default main, the latest run)')
        .option('--parse-outputs', 'write outputs as JSON values (nested in .jsonl) rather than JSON text'),
    ),
  )
    .addHelpText(
      'after',
      `
Examples:
  $ inference-stream bulk download 784448e647f5e988 -o reviews.sentiment.parquet --endpoint http://127.0.0.1:8080
  $ inference-stream bulk download --dataset bulk-reviews-default-train-text-builtin-sentiment -o latest.jsonl --endpoint $URL
  $ inference-stream bulk download --dataset me/news-entities --revision 3dd58a2 -o older.csv --endpoint $URL

Columns: id, row (index in the source split), the source column, the flat task columns (label,
score, ...), outputs (the model's outputs as JSON text), error and error_code (set for a failed
row). A job still running is waited for (with progress); a failed or cancelled one exits 1. The
file appears only when complete.

${SERVER_NOTE}

${EXIT_NOTE}`,
    )
    .action(
      act(io, async (signal, jobId: string | undefined, o: DownloadFlags) => {
        if ((jobId === undefined) === (o.dataset === undefined)) throw new InvalidOptionError('Give a JOBID or --dataset NAME (one of them)')
        if (o.revision !== undefined && o.dataset === undefined) throw new InvalidOptionError('--revision goes with --dataset (a job\'s outputs are read at the revision it committed)')
        if (formatOf(o.output) === 'json') throw new UnknownFormatError(`Cannot write ${o.output}: use .jsonl, .parquet, .csv or .tsv`)
        const client = clientOf(o, io)
        const progress = progressOf(o, io)
        const bulk = new DatasetBulk({
          url: client.urls,
          token: o.token ?? (io.env.INFERENCE_STREAM_TOKEN || undefined),
          ...(jobId !== undefined ? { jobId } : { dataset: o.dataset, revision: o.revision }),
          ...pollOf(o),
          parseOutputs: o.parseOutputs === true,
          signal,
        })
        bulk.on('progress', (s: BulkJobStatus) => progress.update(s))
        let rows = 0
        const count = new Transform({
          objectMode: true,
          transform(r, _e, cb) {
            rows++
            cb(null, r)
          },
        })
        const started = performance.now()
        try {
          await pipeline(bulk, count, writeRecords(o.output, { kind: 'records' }))
        } catch (err) {
          // A download is not resumed: what it wrote so far is of no use, and none is left behind.
          await rm(`${o.output}.partial`, { force: true })
          if (err instanceof AbortError) io.stderr.write(`inference-stream: interrupted after ${rows} rows; nothing written${jobId ? ` (job ${jobId} goes on)` : ''}\n`)
          throw err
        } finally {
          progress.stop()
        }
        const secs = (performance.now() - started) / 1000
        io.stdout.write(`${rows} rows -> ${o.output} (${bulk.bulkName} @ ${bulk.revision}) in ${secs.toFixed(2)} s\n`)
        return BULK_EXIT.ok
      }),
    )
}

interface UploadFlags extends ServerFlags {
  dataset: string
  config: string
  split: string
}

function uploadSub(io: BulkIo): Command {
  return withServer(
    io,
    new Command('upload')
      .description('Send a local CSV / TSV / JSONL / JSON / Parquet file to the server as a split of an input dataset')
      .argument('<file>', 'the file (.csv, .tsv, .jsonl, .ndjson, .json, .parquet)')
      .requiredOption('-d, --dataset <name>', 'input dataset name, e.g. reviews or org/reviews')
      .option('--config <name>', 'its config', 'default')
      .requiredOption('--split <name>', 'the split the file becomes, e.g. train'),
  )
    .addHelpText(
      'after',
      `
Examples:
  $ inference-stream bulk upload reviews.csv --dataset reviews --split train --endpoint http://127.0.0.1:8080
  $ inference-stream bulk upload test.parquet -d org/reviews --config small --split test --endpoint $URL --token $TOKEN
  $ inference-stream bulk run -m builtin/sentiment -d reviews --split train -c text --wait --endpoint $URL

The file is streamed; it replaces the whole split (docs/bulk.md, "Uploads").

${SERVER_NOTE}`,
    )
    .action(
      act(io, async (signal, file: string, o: UploadFlags) => {
        const client = clientOf(o, io)
        const r = await client.upload(file, o.dataset, o.config, o.split, { signal })
        io.stdout.write(`${basename(file)} (${r.bytes} bytes) -> dataset ${r.dataset}, config ${r.config}, split ${r.split}\n`)
        return BULK_EXIT.ok
      }),
    )
}

/** `inference-stream bulk`: bulk jobs on a server (`run`, `status`, `jobs`, `cancel`, `download`, `upload`). */
export function bulkCommand(io: BulkIo = processIo()): Command {
  return usageExit(
    io,
    new Command('bulk')
      .description('Bulk jobs on a server started with --data-dir: run a model over a dataset column, follow, cancel, download outputs, upload datasets')
      .addCommand(runSub(io))
      .addCommand(statusSub(io))
      .addCommand(jobsSub(io))
      .addCommand(cancelSub(io))
      .addCommand(downloadSub(io))
      .addCommand(uploadSub(io))
      .addHelpText(
        'after',
        `
Examples:
  $ inference-stream serve --token hf_s3cret --data-dir ./data &
  $ inference-stream bulk upload reviews.csv -d reviews --split train --endpoint http://127.0.0.1:8080 --token hf_s3cret
  $ inference-stream bulk run -m builtin/sentiment -d reviews --split train -c text --wait --endpoint http://127.0.0.1:8080 --token hf_s3cret
  $ inference-stream bulk download JOBID -o reviews.sentiment.parquet --endpoint http://127.0.0.1:8080 --token hf_s3cret

${SERVER_NOTE}

${EXIT_NOTE}`,
      ),
  )
}

import cliProgress from 'cli-progress'
import type { InferenceStream } from '../client/inference-stream.js'

/** What a progress reporter reads. */
export interface ProgressSource {
  done: () => number
  stream: InferenceStream<unknown>
}

function fmtRate(n: number): string {
  return n >= 100 ? n.toFixed(0) : n.toFixed(1)
}

function fmtEta(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?'
  if (seconds < 60) return `${Math.round(seconds)}s`
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m${String(Math.round(seconds % 60)).padStart(2, '0')}s`
  return `${Math.floor(seconds / 3600)}h${String(Math.round((seconds % 3600) / 60)).padStart(2, '0')}m`
}

/**
 * Progress of a run on stderr: a bar on a TTY (rows done / total where known, rate, ETA, errors,
 * reconnects), a plain line every `intervalMs` otherwise (logs, CI). Stop it before the summary.
 */
export class Progress {
  private bar: cliProgress.SingleBar | undefined
  private timer: NodeJS.Timeout | undefined
  private readonly started = performance.now()

  constructor(
    private readonly src: ProgressSource,
    private readonly total: number | undefined,
    private readonly opts: { tty: boolean; intervalMs: number; label: string },
  ) {}

  private line(): string {
    const done = this.src.done()
    const s = this.src.stream.stats
    const secs = (performance.now() - this.started) / 1000
    const rate = secs > 0 ? done / secs : 0
    const of = this.total !== undefined ? `/${this.total}` : ''
    const eta = this.total !== undefined && rate > 0 ? ` eta ${fmtEta((this.total - done) / rate)}` : ''
    return `${this.opts.label}: ${done}${of} rows, ${fmtRate(rate)} rows/s${eta}, ${s.failed} failed, ${s.reconnects} reconnects`
  }

  start(): void {
    if (this.opts.tty) {
      this.bar = new cliProgress.SingleBar(
        {
          format: `${this.opts.label} [{bar}] {value}/{total} | {rate} rows/s | eta {etaText} | {failed} failed | {reconnects} reconnects`,
          stream: process.stderr,
          hideCursor: true,
          clearOnComplete: false,
          barsize: 30,
          fps: 5,
        },
        cliProgress.Presets.shades_classic,
      )
      this.bar.start(this.total ?? 0, 0, { rate: '0', etaText: '?', failed: 0, reconnects: 0 })
      this.timer = setInterval(() => this.update(), 200)
    } else {
      this.timer = setInterval(() => process.stderr.write(`${this.line()}\n`), this.opts.intervalMs)
    }
    this.timer.unref()
  }

  private update(): void {
    if (!this.bar) return
    const done = this.src.done()
    const secs = (performance.now() - this.started) / 1000
    const rate = secs > 0 ? done / secs : 0
    const s = this.src.stream.stats
    // Unknown total: let the bar's total follow the count so it still shows progress.
    if (this.total === undefined) this.bar.setTotal(Math.max(done, 1))
    this.bar.update(done, {
      rate: fmtRate(rate),
      etaText: this.total !== undefined && rate > 0 ? fmtEta((this.total - done) / rate) : '?',
      failed: s.failed,
      reconnects: s.reconnects,
    })
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
    if (this.bar) {
      this.update()
      this.bar.stop()
      this.bar = undefined
    }
  }
}

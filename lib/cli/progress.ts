import type { InferenceStream } from '../client/inference-stream.js'

/** What a progress reporter reads. */
export interface ProgressSource {
  /** Rows written to the output so far, rows replayed from a checkpoint included. */
  written: () => number
  /** Malformed input rows skipped so far (read, never written). */
  skipped: () => number
  /** True once every input row is read and written: only finalising the output is left. */
  finishing: () => boolean
  stream: InferenceStream<unknown>
}

/** Where a run is, as {@link formatBar} and {@link formatLine} show it. */
export interface ProgressState {
  label: string
  /** Input rows handled: written (replayed included) plus skipped. */
  done: number
  /** Input rows in all; undefined while counting (`counting`) or when it cannot be known. */
  total: number | undefined
  counting: boolean
  /** Rows/s of this run (replayed rows left out) over the last `windowMs`; undefined until measured. */
  rate: number | undefined
  failed: number
  skipped: number
  reconnects: number
  /**
   * `running`; `waiting`: no row yet after `stallAfterMs`; `stalled`: no row for longer than
   * `stallAfterMs` and ten typical gaps between rows; `finishing`: every row is written, the output
   * is being completed; `done`: the output is complete.
   */
  phase: 'running' | 'waiting' | 'stalled' | 'finishing' | 'done'
  /** Seconds in `waiting`, `stalled` or `finishing`. */
  phaseSeconds: number
  /** `waiting` or `stalled`: what for (`server`, `input`, `reconnect (attempt 3)`). */
  waitingFor: string
}

/** Timing of a {@link ProgressMeter}. */
export interface ProgressTiming {
  /** Span of the recent rate, in ms. Default 20 000. */
  windowMs?: number
  /** Least time without a row before a run counts as stalled, in ms. Default 5 000. */
  stallAfterMs?: number
}

interface Sample {
  t: number
  processed: number
}

/**
 * Pure core of the progress display: fed counters and the time, it keeps a rate over a recent
 * window (not the whole run's average, which hides a stall for minutes and then promises hours),
 * of this run's rows only (rows replayed from a checkpoint cost nothing and would fake a speed),
 * and tells a stall from a slow model by comparing the time since the last row with the gaps
 * between rows before it.
 */
export class ProgressMeter {
  private readonly windowMs: number
  private readonly stallAfterMs: number
  private readonly samples: Sample[] = []
  private lastDone = 0
  private lastChange: number
  private rateAtChange: number | undefined
  private finishingSince: number | undefined

  constructor(
    private readonly started: number,
    timing: ProgressTiming = {},
  ) {
    this.windowMs = timing.windowMs ?? 20_000
    this.stallAfterMs = timing.stallAfterMs ?? 5_000
    this.lastChange = started
    this.samples.push({ t: started, processed: 0 })
  }

  /**
   * The state at time `now` (ms, same clock as `started`) given the counters. `processed` is the
   * rows this run did itself (written minus replayed).
   */
  update(
    now: number,
    c: { done: number; processed: number; total: number | undefined; counting: boolean; failed: number; skipped: number; reconnects: number; inFlight: number; reconnecting: number; finishing: boolean; label: string },
  ): ProgressState {
    this.samples.push({ t: now, processed: c.processed })
    // Keep one sample at or before the window's start, so the rate spans the whole window.
    while (this.samples.length > 2 && this.samples[1].t <= now - this.windowMs) this.samples.shift()
    const first = this.samples[0]
    const span = now - first.t
    const rate = span >= 1000 ? ((c.processed - first.processed) * 1000) / span : undefined
    if (c.done !== this.lastDone) {
      this.lastDone = c.done
      this.lastChange = now
      if (rate !== undefined && rate > 0) this.rateAtChange = rate
    }
    let phase: ProgressState['phase'] = 'running'
    let phaseSeconds = 0
    const idle = now - this.lastChange
    if (c.finishing) {
      this.finishingSince ??= now
      phase = 'finishing'
      phaseSeconds = (now - this.finishingSince) / 1000
    } else if (c.done === 0 && c.processed === 0 && idle >= this.stallAfterMs) {
      phase = 'waiting'
      phaseSeconds = idle / 1000
    } else if (idle >= Math.max(this.stallAfterMs, this.rateAtChange ? 10_000 / this.rateAtChange : 0)) {
      phase = 'stalled'
      phaseSeconds = idle / 1000
    }
    const waitingFor = c.reconnecting > 0 ? `reconnect (attempt ${c.reconnecting})` : c.inFlight > 0 ? 'server' : 'input'
    return {
      label: c.label,
      done: c.done,
      total: c.total,
      counting: c.counting,
      rate,
      failed: c.failed,
      skipped: c.skipped,
      reconnects: c.reconnects,
      phase,
      phaseSeconds,
      waitingFor,
    }
  }
}

/** `42s`, `3m05s`, `2h10m`; `?` for what is not a time. */
export function fmtDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?'
  const s = Math.round(seconds)
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`
}

function fmtRate(n: number | undefined, compact = false): string {
  const unit = compact ? '/s' : ' rows/s'
  if (n === undefined) return `…${unit}`
  return `${n >= 100 ? n.toFixed(0) : n.toFixed(1)}${unit}`
}

function eta(s: ProgressState): string {
  if (s.total === undefined || s.rate === undefined) return 'eta ?'
  const left = Math.max(0, s.total - s.done)
  if (left === 0) return 'eta 0s'
  return s.rate > 0 ? `eta ${fmtDuration(left / s.rate)}` : 'eta ?'
}

// What replaces rate and ETA outside the running phase; undefined while running.
// `compact`: 1 shorter words, 2 also no reason.
function phaseText(s: ProgressState, compact: 0 | 1 | 2 = 0): string | undefined {
  const t = fmtDuration(s.phaseSeconds)
  if (compact === 2 && (s.phase === 'waiting' || s.phase === 'stalled')) return `${s.phase} ${t}`
  const what = compact ? s.waitingFor.replace(/ \(attempt (\d+)\)$/, ' $1') : `waiting for ${s.waitingFor}`
  switch (s.phase) {
    case 'finishing':
      return compact ? `writing… ${t}` : `writing output… ${t}`
    case 'done':
      return 'done'
    case 'waiting':
      return compact ? `no rows yet ${t} (${what})` : `no rows yet after ${t} (${what})`
    case 'stalled':
      return compact ? `stalled ${t} (${what})` : `stalled for ${t} (${what})`
    case 'running':
      return undefined
  }
}

function count(s: ProgressState): string {
  return `${s.done}/${s.total ?? (s.counting ? '…' : '?')}`
}

function percent(s: ProgressState): string | undefined {
  if (s.total === undefined || s.total === 0) return undefined
  return `${Math.min(100, Math.floor((s.done * 100) / s.total))}%`
}

function graphic(s: ProgressState, width: number): string {
  const fill = s.total ? Math.min(width, Math.round((s.done / s.total) * width)) : 0
  return `[${'█'.repeat(fill)}${'░'.repeat(width - fill)}]`
}

function width(text: string): number {
  return [...text].length
}

interface Layout {
  label: string | undefined
  bar: number
  pct: boolean
  skipped: boolean
  reconnects: boolean
  compact: 0 | 1 | 2
  sep: string
}

function layout(s: ProgressState, l: Layout): string {
  const stage = phaseText(s, l.compact)
  const head = [l.label, l.bar > 0 && s.total !== undefined ? graphic(s, l.bar) : undefined, count(s), l.pct ? percent(s) : undefined]
  const tail = [
    ...(stage ? [stage] : [fmtRate(s.rate, l.compact > 0), eta(s)]),
    `${s.failed} failed`,
    l.skipped && s.skipped > 0 ? `${s.skipped} malformed` : undefined,
    l.reconnects && s.reconnects > 0 ? `${s.reconnects} reconnects` : undefined,
  ]
  return [head.filter((x) => x !== undefined).join(' '), ...tail.filter((x) => x !== undefined)].join(l.sep)
}

// Every layout, from the richest to the leanest (always as many).
function layouts(s: ProgressState, max: number): Layout[] {
  const full: Layout = { label: s.label, bar: 30, pct: true, skipped: true, reconnects: true, compact: 0, sep: ' | ' }
  const lean: Layout = { ...full, bar: 0, pct: false, skipped: false, reconnects: false }
  const out: Layout[] = []
  for (let bar = 30; bar >= 10; bar--) out.push({ ...full, bar })
  out.push({ ...full, bar: 0 }, { ...full, bar: 0, pct: false }, { ...full, bar: 0, pct: false, reconnects: false }, lean)
  // The label, shortened to what is left.
  const room = max - width(layout(s, { ...lean, label: undefined })) - 1
  const chars = [...s.label]
  out.push(room >= 6 && room < chars.length ? { ...lean, label: `${chars.slice(0, room - 1).join('')}…` } : lean)
  out.push({ ...lean, label: undefined }, { ...lean, label: undefined, compact: 1 }, { ...lean, label: undefined, compact: 1, sep: ' ' }, { ...lean, label: undefined, compact: 2, sep: ' ' })
  return out
}

/**
 * Fits the bar line to a terminal `columns` wide; `previous` is the layout of the last frame (an
 * index), kept while it fits unless a richer one fits with room to spare, so the layout does not
 * flip from frame to frame as numbers change width.
 */
function fitBar(s: ProgressState, columns: number, previous?: number): { line: string; index: number } {
  const max = Math.max(1, columns - 1)
  const lines = layouts(s, max).map((l) => layout(s, l))
  const fits = (margin: number): number => lines.findIndex((line) => width(line) <= max - margin)
  let index = fits(0)
  if (index === -1) index = lines.length - 1
  else if (previous !== undefined && index < previous && previous < lines.length && width(lines[previous]) <= max) {
    const roomy = fits(4)
    index = roomy !== -1 && roomy < previous ? roomy : previous
  }
  const line = lines[index]
  return { line: width(line) <= max ? line : [...line].slice(0, max).join(''), index }
}

/**
 * The progress bar line for a terminal `columns` wide (it never reaches the last column, where
 * terminals wrap). As space runs out, the bar graphic shrinks and goes first, then the percentage,
 * reconnects, skipped rows, the label (shortened, then dropped), then words are shortened: counts,
 * rate, ETA (or the phase) and failures stay.
 */
export function formatBar(s: ProgressState, columns: number): string {
  return fitBar(s, columns).line
}

/** {@link formatBar} frame after frame: a layout is kept while it fits, so the bar does not jump about. */
export class BarFitter {
  private index: number | undefined
  private columns = 0

  fit(s: ProgressState, columns: number): string {
    const r = fitBar(s, columns, columns === this.columns ? this.index : undefined)
    this.index = r.index
    this.columns = columns
    return r.line
  }
}

/** One plain progress line (logs, CI). */
export function formatLine(s: ProgressState): string {
  const pct = percent(s)
  const stage = phaseText(s)
  const parts = [
    `${s.label}: ${count(s)} rows${pct ? ` (${pct})` : ''}`,
    ...(stage ? [stage] : [`${fmtRate(s.rate)}, ${eta(s)}`]),
    `${s.failed} failed`,
  ]
  if (s.skipped > 0) parts.push(`${s.skipped} malformed skipped`)
  parts.push(`${s.reconnects} reconnects`)
  return parts.join(', ')
}

/**
 * Progress of a run on stderr: a bar on a TTY, redrawn in place and fitted to the terminal's width
 * at each redraw; a plain line every `intervalMs` otherwise (logs, CI), plus one when the output
 * starts being written. The total may come later ({@link setTotal}): the count runs beside the
 * job. Stop it before the summary.
 */
export class Progress {
  private timer: NodeJS.Timeout | undefined
  private readonly meter: ProgressMeter
  private readonly fitter = new BarFitter()
  private total: number | undefined
  private counting = true
  private reconnecting = 0
  private lastPrinted = 0
  private drawn = false
  private wasFinishing = false
  private readonly onReconnecting = (attempt: number): void => {
    this.reconnecting = attempt
  }
  private readonly onReconnect = (): void => {
    this.reconnecting = 0
  }

  constructor(
    private readonly src: ProgressSource,
    private readonly opts: { tty: boolean; intervalMs: number; label: string; columns?: () => number | undefined; write?: (text: string) => void; timing?: ProgressTiming },
  ) {
    this.meter = new ProgressMeter(performance.now(), opts.timing)
  }

  /** The input's row count, once known; `undefined`: it cannot be known. */
  setTotal(total: number | undefined): void {
    this.total = total
    this.counting = false
  }

  private write(text: string): void {
    if (this.opts.write) this.opts.write(text)
    else process.stderr.write(text)
  }

  private state(): ProgressState {
    const s = this.src.stream.stats
    const written = this.src.written()
    const skipped = this.src.skipped()
    const done = written + skipped
    // The count may be behind the rows read (a count still running, or a file that grew).
    const total = this.total !== undefined ? Math.max(this.total, done) : undefined
    return this.meter.update(performance.now(), {
      done,
      processed: Math.max(0, written - s.replayed),
      total,
      counting: this.counting,
      failed: s.failed,
      skipped,
      reconnects: s.reconnects,
      inFlight: s.inFlight,
      reconnecting: this.reconnecting,
      finishing: this.src.finishing(),
      label: this.opts.label,
    })
  }

  private stopped = false

  start(): void {
    // Started late (once a checkpoint opened) after the run already ended: nothing to show.
    if (this.stopped) return
    this.src.stream.on('reconnecting', this.onReconnecting)
    this.src.stream.on('reconnect', this.onReconnect)
    const tick = this.opts.tty ? 200 : Math.min(1000, this.opts.intervalMs)
    this.lastPrinted = performance.now()
    this.timer = setInterval(() => this.tick(), tick)
    this.timer.unref()
    if (this.opts.tty) this.draw(this.state())
  }

  /** Shows the state now rather than at the next tick (on a plain stream: only when the phase changed). */
  refresh(): void {
    if (this.timer) this.tick()
  }

  /** Writes a line of its own on stderr without breaking the bar (which is drawn again below it). */
  message(text: string): void {
    if (this.opts.tty && this.drawn) {
      this.write(`\r\x1b[K${text}\n`)
      this.draw(this.state())
    } else this.write(`${text}\n`)
  }

  private columns(): number {
    return (this.opts.columns ? this.opts.columns() : process.stderr.columns) || 80
  }

  private draw(s: ProgressState): void {
    this.write(`\r${this.fitter.fit(s, this.columns())}\x1b[K`)
    this.drawn = true
  }

  private tick(): void {
    const s = this.state()
    if (this.opts.tty) return this.draw(s)
    const now = performance.now()
    const entering = s.phase === 'finishing' && !this.wasFinishing
    this.wasFinishing = s.phase === 'finishing'
    if (entering || now - this.lastPrinted >= this.opts.intervalMs) {
      this.lastPrinted = now
      this.write(`${formatLine(s)}\n`)
    }
  }

  /** Stops the display; on a TTY the bar's last state stays on its line. `done`: the run is complete, so the total is what was done. */
  stop(done = false): void {
    this.stopped = true
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
    this.src.stream.off('reconnecting', this.onReconnecting)
    this.src.stream.off('reconnect', this.onReconnect)
    if (!this.opts.tty) return
    if (done) this.setTotal(this.src.written() + this.src.skipped())
    const s = this.state()
    if (done) s.phase = 'done'
    this.draw(s)
    if (this.drawn) this.write('\n')
    this.drawn = false
  }
}

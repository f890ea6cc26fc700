import pino, { type Logger } from 'pino'

/** How `serve` writes its log: one JSON object a line, readable lines, or by the terminal. */
export type LogFormat = 'auto' | 'pretty' | 'json'

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' }
const COLORS: Record<number, string> = { 10: '90', 20: '36', 30: '32', 40: '33', 50: '31', 60: '35' }
// pino's own fields, not the record's.
const BASE = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'err'])

function value(v: unknown): string {
  if (typeof v === 'string') return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v)
  return JSON.stringify(v) ?? String(v)
}

function clock(ms: number): string {
  const d = new Date(ms)
  const p = (n: number, w = 2): string => String(n).padStart(w, '0')
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`
}

/**
 * One pino JSON line as a line for people: `12:03:04.567 INFO  message key=value ...`, an error's
 * stack indented below. A line that is not pino's JSON is returned as it is.
 */
export function prettyLine(line: string, color = false): string {
  let rec: Record<string, unknown>
  try {
    rec = JSON.parse(line) as Record<string, unknown>
  } catch {
    return line.endsWith('\n') ? line : `${line}\n`
  }
  const level = typeof rec.level === 'number' ? rec.level : 30
  let name = (LEVELS[level] ?? String(level)).padEnd(5)
  if (color) name = `\x1b[${COLORS[level] ?? '0'}m${name}\x1b[0m`
  const fields = Object.entries(rec)
    .filter(([k]) => !BASE.has(k))
    .map(([k, v]) => `${k}=${value(v)}`)
  let out = `${clock(typeof rec.time === 'number' ? rec.time : Date.now())} ${name} ${String(rec.msg ?? '')}`
  if (fields.length > 0) out += ` ${fields.join(' ')}`
  const err = rec.err as { message?: string; stack?: string } | undefined
  if (err) out += `\n    ${(err.stack ?? err.message ?? JSON.stringify(err)).split('\n').join('\n    ')}`
  return `${out}\n`
}

/**
 * The server's logger on stderr: readable lines on a terminal (colored unless `NO_COLOR`), pino's
 * JSON lines otherwise (files, journald, log shippers), or as `format` says.
 */
export function createLogger(level: string, format: LogFormat = 'auto', out: NodeJS.WriteStream = process.stderr): Logger {
  const pretty = format === 'pretty' || (format === 'auto' && out.isTTY === true)
  if (!pretty) return pino({ level }, out === process.stderr ? pino.destination(2) : out)
  const color = out.isTTY === true && !process.env.NO_COLOR
  return pino({ level }, { write: (line: string) => out.write(prettyLine(line, color)) })
}

/**
 * Stops a long-running command gracefully on SIGINT or SIGTERM: `close` (then exit 0, or 1 when it
 * fails); a second signal exits 1 at once (gives up waiting).
 */
export function stopOnSignals(logger: Logger, close: () => Promise<void>): void {
  let stopping = false
  const stop = (signal: string): void => {
    if (stopping) process.exit(1)
    stopping = true
    logger.info({ signal }, 'shutting down')
    close().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed')
        process.exit(1)
      },
    )
  }
  process.on('SIGINT', () => stop('SIGINT'))
  process.on('SIGTERM', () => stop('SIGTERM'))
}

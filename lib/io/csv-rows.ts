// fast-csv's row tokenizer. Its stream (CsvParserStream) throws away every row of a chunk when one
// row is malformed and cannot go on after it, so the reader drives the same tokenizer directly,
// adding line numbers and resynchronising after a bad row. Guarded by test/io-csv.ts.
import { Parser } from '@fast-csv/parse/build/src/parser/Parser.js'
import { ParserOptions } from '@fast-csv/parse'

/** One row of fields, or the reason a row could not be parsed; `line` is where it starts (1-based). */
export type CsvRow = { fields: string[]; line: number } | { error: string; line: number }

/** Options of {@link CsvRows}. */
export interface CsvRowsOptions {
  /** Field delimiter. Default `,`. */
  delimiter?: string
  /** Quote character. Default `"`. */
  quote?: string
  /** Escape of a quote inside a quoted field. Default: the quote itself (`""`). */
  escape?: string
  /** Longest row in characters before it counts as malformed (an unclosed quote). Default 8 Mi (8 388 608). */
  maxRecordLength?: number
}

const LINE_BREAK = /\r\n|\r|\n/g

// fast-csv's messages quote the rest of the input ("at 'b,3\\n'4,5\\n''"); say what is wrong instead.
function describe(err: unknown, quote: string): string {
  const message = (err as Error)?.message ?? String(err)
  if (message.includes('missing closing')) return `unclosed quote: no closing ${quote} before the end of the input`
  const m = /expected: '(.*?)' OR new line got: '(.*?)'/.exec(message)
  if (m) return `text after a closing quote: expected ${JSON.stringify(m[1].replace(/\\(.)/g, '$1'))} or a line break, got ${JSON.stringify(m[2])}`
  return message
}

function lineBreaks(fields: string[]): number {
  let n = 0
  for (const f of fields) {
    if (f.includes('\n') || f.includes('\r')) n += f.match(LINE_BREAK)!.length
  }
  return n
}

/** End (exclusive) of the physical line starting at `from`: just past its line break, or the text's end. */
function lineEnd(text: string, from: number): number {
  for (let i = from; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === 10) return i + 1
    if (c === 13) return text.charCodeAt(i + 1) === 10 ? i + 2 : i + 1
  }
  return text.length
}

function hasLineBreak(text: string): boolean {
  return text.includes('\n') || text.includes('\r')
}

/** Index just past the first line break of `text`, or -1 when it has none. */
function firstLineEnd(text: string): number {
  const n = text.indexOf('\n')
  const r = text.indexOf('\r')
  if (n < 0 && r < 0) return -1
  if (r < 0 || (n >= 0 && n < r)) return n + 1
  return text.charCodeAt(r + 1) === 10 ? r + 2 : r + 1
}

// Characters fast-csv skips as blanks before a field (its NEXT_TOKEN_REGEXP is /([^\s]|\r\n|\n|\r|,)/).
const BLANK = /\s/

/**
 * The common case of fast-csv's `Parser.parse(data, more)`, about ten times cheaper: rows of plain
 * fields (no quote inside, no blank at their start) and quoted fields (opening at the field's start,
 * `""` inside, closing right before a delimiter or line break). Returns what fast-csv returns for
 * such text — the complete rows (`[]` for a blank line) and the unfinished rest — or `undefined` as
 * soon as the text holds anything else (a quote inside a plain field, a blank before a field, text
 * after a closing quote, a BOM), for fast-csv to parse as before. Guarded by test/io-csv-fast.ts,
 * which compares the two on generated text.
 */
export function fastCsvParse(data: string, more: boolean, delimiter: number, quote: number): { line: string; rows: string[][] } | undefined {
  const rows: string[][] = []
  const n = data.length
  if (n > 0 && data.charCodeAt(0) === 0xfeff) return undefined
  let rowStart = 0
  let i = 0
  for (;;) {
    // At the start of a row.
    if (i >= n) return { line: '', rows }
    let c = data.charCodeAt(i)
    if (c === 10 || c === 13) {
      // A blank line: fast-csv's [] (a lone CR at the end may be half a CRLF).
      if (c === 13) {
        if (i + 1 >= n && more) return { line: data.slice(rowStart), rows }
        i += data.charCodeAt(i + 1) === 10 ? 2 : 1
      } else i++
      rows.push([])
      rowStart = i
      continue
    }
    const fields: string[] = []
    for (;;) {
      // At the start of a field.
      if (i >= n) {
        // After a delimiter at the very end: fast-csv adds an empty field.
        if (!more) {
          fields.push('')
          rows.push(fields)
          return { line: '', rows }
        }
        return { line: data.slice(rowStart), rows }
      }
      c = data.charCodeAt(i)
      if (c === quote) {
        let from = i + 1
        let value = ''
        let j = from
        for (;;) {
          const q = data.indexOf(data[i], j)
          if (q < 0 || q + 1 >= n) {
            // No closing quote yet, or the quote is the last character: the row is unfinished
            // (or, without more data, fast-csv's business: an unclosed quote, or a last field).
            if (more) return { line: data.slice(rowStart), rows }
            if (q < 0) return undefined
            value += data.slice(from, q)
            i = q + 1
            break
          }
          if (data.charCodeAt(q + 1) === quote) {
            value += data.slice(from, q + 1)
            from = j = q + 2
            continue
          }
          value += data.slice(from, q)
          i = q + 1
          break
        }
        fields.push(value)
        if (i >= n) {
          rows.push(fields)
          return { line: '', rows }
        }
        c = data.charCodeAt(i)
        if (c !== delimiter && c !== 10 && c !== 13) return undefined
      } else if (c === delimiter || c === 10 || c === 13) {
        fields.push('')
      } else {
        if (BLANK.test(data[i])) return undefined
        const from = i
        for (; i < n; i++) {
          c = data.charCodeAt(i)
          if (c === delimiter || c === 10 || c === 13) break
          if (c === quote) return undefined
        }
        if (i >= n) {
          if (more) return { line: data.slice(rowStart), rows }
          fields.push(data.slice(from))
          rows.push(fields)
          return { line: '', rows }
        }
        fields.push(data.slice(from, i))
      }
      // At a delimiter or a line break after a field.
      if (c === delimiter) {
        i++
        continue
      }
      if (c === 13) {
        if (i + 1 >= n && more) return { line: data.slice(rowStart), rows }
        i += data.charCodeAt(i + 1) === 10 ? 2 : 1
      } else i++
      rows.push(fields)
      rowStart = i
      break
    }
  }
}

/**
 * Pure core of the CSV reader: text in (any chunking), rows out with the line each starts on.
 * A row that does not parse (text after a closing quote, an unclosed quote at the end of the input,
 * a row over `maxRecordLength`) becomes an `{error, line}` entry and parsing resumes on the line after
 * the one it started on. Blank lines are skipped. Holds at most one unfinished row of text.
 */
export class CsvRows {
  private readonly parser: Parser
  private readonly maxRecordLength: number
  private readonly quote: string
  private readonly delimiter: number
  private readonly quoteCode: number
  private readonly escapeCode: number
  // The fast tokenizer knows only `""` as an escape.
  private readonly fast: boolean
  private pending = ''
  // Length of `pending` when it was last parsed and found unfinished.
  private tried = 0
  // Dropping the rest of an over-long line, up to its line break (it may span chunks).
  private skipping = false
  private line = 1

  constructor(options: CsvRowsOptions = {}) {
    const { delimiter = ',', quote = '"', escape, maxRecordLength = 8 * 1024 * 1024 } = options
    this.parser = new Parser(new ParserOptions({ delimiter, quote, headers: false, ...(escape === undefined ? {} : { escape }) }))
    this.maxRecordLength = maxRecordLength
    this.quote = quote
    this.delimiter = delimiter.charCodeAt(0)
    this.quoteCode = quote.charCodeAt(0)
    this.escapeCode = (escape ?? quote).charCodeAt(0)
    this.fast = this.escapeCode === this.quoteCode
  }

  /**
   * Parses `text` after what came before; returns the rows it completed. Linear in the input
   * whatever the chunking: a row spanning many chunks is not tokenized again from its start at
   * every chunk (that was quadratic — minutes of a blocked event loop for one 50 MB cell), only
   * when a line break arrives and the unfinished text has doubled since it was last tried, or when
   * it passes `maxRecordLength`.
   */
  push(text: string): CsvRow[] {
    const out: CsvRow[] = []
    if (this.skipping) {
      const end = firstLineEnd(text)
      if (end < 0) return out
      this.skipping = false
      text = text.slice(end)
    }
    const data = this.pending + text
    const due = this.pending === '' || data.length > this.maxRecordLength || (data.length >= 2 * this.tried && hasLineBreak(text))
    // fast-csv tokenizes ~10 MB/s: a long unfinished row is first checked by a plain scan (a
    // hundred times faster) and handed to it only once a row is complete, so one huge cell never
    // holds the event loop for a second.
    if (!due || (data.length > 65_536 && this.recordEnd(data, this.maxRecordLength) < 0 && data.length <= this.maxRecordLength)) {
      this.pending = data
      if (due) this.tried = data.length
      return out
    }
    if (data.length > this.maxRecordLength && this.recordEnd(data, this.maxRecordLength) < 0) {
      this.pending = data
    } else this.parse(data, true, out)
    while (this.pending.length > this.maxRecordLength) {
      // An unfinished row this long is an unclosed quote or a cell over the limit, not data to
      // hold: drop its first line and go on, so one row cannot pull a large file into memory.
      const rest = this.pending
      this.pending = ''
      out.push({ error: `row longer than ${this.maxRecordLength} characters (an unclosed quote?)`, line: this.line })
      this.line++
      const end = lineEnd(rest, 0)
      // The line goes on in the next chunks: skip to its end there.
      if (end === rest.length && !/[\r\n]$/.test(rest)) this.skipping = true
      else this.parse(rest.slice(end), true, out)
    }
    this.tried = this.pending.length
    return out
  }

  /** Ends the input; returns the last rows. */
  end(): CsvRow[] {
    const out: CsvRow[] = []
    const rest = this.pending
    this.pending = ''
    this.tried = 0
    this.skipping = false
    if (rest) this.parse(rest, false, out)
    return out
  }

  /**
   * Index just past the line break ending the first record of `data` (which starts at a record),
   * or -1 when none comes within `limit` characters. Follows quoting as fast-csv does: a quote
   * opens a quoted field only at the start of a field (after blanks); escape + quote inside it is
   * a quote. Only a hint of when to parse: fast-csv still decides what the rows are.
   */
  private recordEnd(data: string, limit: number): number {
    const n = Math.min(data.length, limit)
    const q = this.quoteCode
    const esc = this.escapeCode
    let fieldStart = true
    for (let i = 0; i < n; i++) {
      const c = data.charCodeAt(i)
      if (c === 10) return i + 1
      if (c === 13) return data.charCodeAt(i + 1) === 10 ? i + 2 : i + 1
      if (c === this.delimiter) {
        fieldStart = true
        continue
      }
      if (fieldStart && (c === 32 || c === 9)) continue
      if (fieldStart && c === q) {
        // A quoted field: on to its closing quote.
        for (i++; ; i++) {
          if (i >= n) return -1
          const k = data.charCodeAt(i)
          const next = data.charCodeAt(i + 1)
          if (k === esc && (next === q || (esc !== q && next === esc))) i++
          else if (k === q) break
        }
      }
      fieldStart = false
    }
    return -1
  }

  private parse(data: string, more: boolean, out: CsvRow[]): void {
    try {
      const { line, rows } = (this.fast && fastCsvParse(data, more, this.delimiter, this.quoteCode)) || this.parser.parse(data, more)
      this.emit(rows, out)
      this.pending = line
    } catch {
      this.recover(data, more, out)
    }
  }

  // Only blanks (not the delimiter) and a line break between `from` and `to`.
  private blank(data: string, from: number, to: number): boolean {
    for (let i = from; i < to; i++) {
      const c = data.charCodeAt(i)
      if (c === 10 || c === 13) return true
      if ((c !== 32 && c !== 9) || c === this.delimiter) return false
    }
    return false
  }

  private emit(rows: string[][], out: CsvRow[]): void {
    for (const fields of rows) {
      // fast-csv gives [] for a blank (or whitespace-only) line.
      if (fields.length > 0) out.push({ fields, line: this.line })
      this.line += 1 + lineBreaks(fields)
    }
  }

  // Slow path, only for text holding a malformed row: parse one row at a time (a row grows line by
  // line while it is an open quoted field) so the rows before the bad one are kept and the bad one
  // is located; then skip the line it starts on.
  private recover(data: string, more: boolean, out: CsvRow[]): void {
    let start = 0
    while (start < data.length) {
      // Blank lines before the row are not part of it: else a lone \r (fast-csv holds it back,
      // waiting for a \n) would be reported as the bad row's line, and the row then again.
      for (;;) {
        const e = lineEnd(data, start)
        if (e === start || !this.blank(data, start, e)) break
        if (more && e === data.length && data.charCodeAt(e - 1) === 13) break // maybe half a \r\n
        start = e
        this.line++
      }
      if (start >= data.length) break
      let end = start
      for (;;) {
        end = lineEnd(data, end)
        const last = end >= data.length
        const piece = data.slice(start, end)
        let parsed: { line: string; rows: string[][] }
        try {
          parsed = this.parser.parse(piece, last ? more : true)
        } catch (err) {
          if (more && lineEnd(data, start) === data.length && !data.endsWith('\n')) {
            // The bad row's line is not complete yet (or a CRLF is split): wait for the rest of it,
            // so the skip ends where the line does.
            this.pending = data.slice(start)
            return
          }
          out.push({ error: describe(err, this.quote), line: this.line })
          this.line++
          start = lineEnd(data, start)
          break
        }
        if (parsed.rows.length > 0) {
          this.emit(parsed.rows, out)
          start = end - parsed.line.length
          break
        }
        if (last) {
          this.pending = piece
          return
        }
      }
    }
    this.pending = ''
  }
}

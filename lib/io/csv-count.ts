// Counting CSV records without parsing them, for progress totals: a byte scan that follows quoting
// the way the reader (fast-csv's tokenizer driven by csv-rows.ts) does, so a quoted line break does
// not count and a malformed row counts once, as the one bad record the reader reports for it.

const SPACE = 0x20
const TAB = 0x09
const CR = 0x0d
const LF = 0x0a

/** CSV dialect of a {@link CsvRecordCounter}: single ASCII characters. */
export interface CsvCountDialect {
  /** Default `,`. */
  delimiter?: string
  /** Default `"`. */
  quote?: string
  /** Escape of a quote inside a quoted field. Default: the quote (`""`). */
  escape?: string
  /** Longest record in bytes before it counts as an unclosed quote, as the reader's `maxRecordLength`. Default 8 Mi. */
  maxRecordLength?: number
}

const enum Mode {
  Field,
  Quoted,
  AfterQuote,
  SkipLine,
}

function asciiCode(name: string, value: string): number {
  const code = value.charCodeAt(0)
  if (value.length !== 1 || code > 0x7f) throw new RangeError(`${name} must be one ASCII character to be counted`)
  return code
}

/**
 * Pure core of the quote-aware CSV count: bytes in (any chunking), `records` out — the rows the
 * reader would give, good or malformed, header included; blank lines do not count.
 *
 * Quoting is followed as the reader does it: a quote opens a quoted field only at the start of a
 * field (after blanks), `""` (or `escape` + quote) inside one is a quote, line breaks inside one
 * belong to the record. Where the reader finds a malformed record (text after a closing quote, a
 * quote still open at the end of the input or past `maxRecordLength`) it reports it on the line
 * where it starts and resumes on the next line: so does the counter, which may mean going back to
 * bytes of an earlier chunk — {@link push} and {@link end} then return the file offset to read
 * from again (rare: only for a malformed record).
 */
export class CsvRecordCounter {
  /** Records counted so far. */
  records = 0

  private readonly delimiter: number
  private readonly quote: number
  private readonly escape: number
  private readonly maxRecordLength: number
  // The last byte was a \r ending a line: a \n right after it belongs to the same line break.
  private afterCR = false
  private mode = Mode.Field
  private fieldStart = true
  private content = false
  // File offset where the current record starts.
  private recordStart = 0
  // Quoted field: the previous chunk ended on a quote (closing, or the first of `""`) or an escape.
  private pendingQuote = false
  private pendingEscape = false

  constructor(dialect: CsvCountDialect = {}) {
    const { delimiter = ',', quote = '"', escape = quote, maxRecordLength = 8 * 1024 * 1024 } = dialect
    this.delimiter = asciiCode('delimiter', delimiter)
    this.quote = asciiCode('quote', quote)
    this.escape = asciiCode('escape', escape)
    this.maxRecordLength = maxRecordLength
  }

  /**
   * Counts the records of `buf`, which starts at file offset `base` and follows what came before
   * (or the offset last returned). Returns undefined, or an earlier offset to read from again.
   */
  push(buf: Uint8Array, base: number): number | undefined {
    const { delimiter, quote, escape } = this
    const n = buf.length
    // Where the next delimiter, \n and \r are (n: none left), found by the native indexOf and
    // looked for again only once passed: a long unquoted field or line costs no loop in JS.
    let nextDelimiter = -1
    let nextLF = -1
    let nextCR = -1
    const lineEnd = (from: number): number => {
      if (nextLF < from) nextLF = indexOr(buf, LF, from, n)
      if (nextCR < from) nextCR = indexOr(buf, CR, from, n)
      return nextLF < nextCR ? nextLF : nextCR
    }
    let i = 0
    while (i < n) {
      if (this.afterCR) {
        // \r\n is one line break: the record after it starts past the \n.
        this.afterCR = false
        if (buf[i] === LF) {
          i++
          if (this.mode === Mode.Field && !this.content) this.recordStart = base + i
          continue
        }
      }
      switch (this.mode) {
        case Mode.SkipLine: {
          const end = lineEnd(i)
          if (end === n) return undefined
          this.lineBreak(buf[end], base + end + 1)
          i = end + 1
          break
        }
        case Mode.Quoted: {
          if (this.pendingQuote) {
            this.pendingQuote = false
            if (buf[i] === quote && escape === quote) {
              i++
              continue
            }
            this.mode = Mode.AfterQuote
            continue
          }
          if (this.pendingEscape) {
            this.pendingEscape = false
            if (buf[i] === quote || buf[i] === escape) i++
            continue
          }
          const q = escape === quote ? buf.indexOf(quote, i) : nextOf(buf, i, quote, escape, -1)
          if (q === -1 || q === n) {
            if (base + n - this.recordStart <= this.maxRecordLength) return undefined
            // Longer than the reader holds: an unclosed quote.
            const back = this.malformed(base)
            if (back !== undefined) return back
            i = this.recordStart - base
            // Back to the record's start: what was found ahead of it no longer holds.
            nextDelimiter = nextLF = nextCR = -1
            continue
          }
          if (buf[q] === escape && escape !== quote) {
            if (q + 1 === n) this.pendingEscape = true
            // As fast-csv: an escape escapes a quote or another escape, else it is itself.
            i = q + 1 < n && (buf[q + 1] === quote || buf[q + 1] === escape) ? q + 2 : q + 1
            continue
          }
          if (q + 1 === n) {
            this.pendingQuote = true
            i = n
            continue
          }
          if (escape === quote && buf[q + 1] === quote) {
            i = q + 2
            continue
          }
          this.mode = Mode.AfterQuote
          i = q + 1
          break
        }
        case Mode.AfterQuote: {
          const c = buf[i]
          if (c === delimiter) {
            this.mode = Mode.Field
            this.fieldStart = true
            i++
          } else if (c === LF || c === CR) {
            this.endRecord(c, base + i + 1)
            i++
          } else if (c === SPACE || c === TAB) {
            i++
          } else {
            // Text after a closing quote: the reader reports the record and resumes on the line
            // after the one it starts on.
            const back = this.malformed(base)
            if (back !== undefined) return back
            i = this.recordStart - base
            // Back to the record's start: what was found ahead of it no longer holds.
            nextDelimiter = nextLF = nextCR = -1
          }
          break
        }
        case Mode.Field: {
          // Byte by byte only where a quote could open a field; elsewhere jump to the next delimiter
          // or line break.
          const c = buf[i]
          if (c === LF || c === CR) {
            this.endRecord(c, base + i + 1)
            i++
          } else if (c === delimiter) {
            this.content = true
            this.fieldStart = true
            i++
          } else if (c === SPACE || c === TAB) {
            i++
          } else if (c === quote && this.fieldStart) {
            this.content = true
            this.mode = Mode.Quoted
            i++
          } else {
            this.content = true
            this.fieldStart = false
            if (nextDelimiter < i + 1) nextDelimiter = indexOr(buf, delimiter, i + 1, n)
            const end = lineEnd(i + 1)
            i = nextDelimiter < end ? nextDelimiter : end
          }
          break
        }
      }
    }
    return undefined
  }

  /** Ends the input. Returns undefined, or an offset to read from again (a quote never closed). */
  end(): number | undefined {
    switch (this.mode) {
      case Mode.Quoted:
        if (this.pendingQuote) {
          this.records++
          break
        }
        // The reader reports the unclosed quote on the record's first line and resumes after it.
        this.records++
        this.pendingEscape = false
        this.mode = Mode.SkipLine
        return this.recordStart
      case Mode.AfterQuote:
        this.records++
        break
      case Mode.Field:
        if (this.content) this.records++
        break
      case Mode.SkipLine:
        break
    }
    this.startRecord(0)
    this.afterCR = false
    return undefined
  }

  // A malformed record: count it, then skip the line it starts on. When that line starts before
  // `buf` (offset `base`), returns its offset to read from; else the caller goes on at recordStart.
  private malformed(base: number): number | undefined {
    this.records++
    this.mode = Mode.SkipLine
    this.pendingQuote = false
    this.pendingEscape = false
    if (this.recordStart < base) return this.recordStart
    return undefined
  }

  private endRecord(c: number, next: number): void {
    if (this.content) this.records++
    this.lineBreak(c, next)
  }

  private lineBreak(c: number, next: number): void {
    this.startRecord(next)
    this.afterCR = c === CR
  }

  private startRecord(at: number): void {
    this.mode = Mode.Field
    this.fieldStart = true
    this.content = false
    this.recordStart = at
  }
}

function indexOr(buf: Uint8Array, byte: number, from: number, none: number): number {
  const i = buf.indexOf(byte, from)
  return i === -1 ? none : i
}

// Index of the first of the bytes a, b, c (-1: none) from `from`, or buf.length.
function nextOf(buf: Uint8Array, from: number, a: number, b: number, c: number): number {
  for (let i = from; i < buf.length; i++) {
    const x = buf[i]
    if (x === a || x === b || x === c) return i
  }
  return buf.length
}

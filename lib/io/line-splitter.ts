/** One line of text (without its line break) and its 1-based number, or a line that was too long. */
export type Line = { text: string; line: number } | { tooLong: true; line: number }

/**
 * Pure core of the JSONL reader: text in (any chunking), whole lines out with their numbers.
 * `\n` and `\r\n` end a line. A line longer than `maxLength` characters is reported as `tooLong`
 * and its text dropped as it streams by, so one huge line never sits in memory.
 */
export class LineSplitter {
  private pending = ''
  private line = 1
  private discarding = false

  constructor(private readonly maxLength: number) {}

  /** Splits `text` after what came before; returns the lines it completed. */
  push(text: string, out: Line[] = []): Line[] {
    let start = 0
    for (;;) {
      const nl = text.indexOf('\n', start)
      if (nl === -1) break
      if (this.discarding) {
        this.discarding = false
      } else {
        let s = this.pending + text.slice(start, nl)
        this.pending = ''
        if (s.endsWith('\r')) s = s.slice(0, -1)
        out.push(s.length > this.maxLength ? { tooLong: true, line: this.line } : { text: s, line: this.line })
      }
      this.line++
      start = nl + 1
    }
    if (!this.discarding) {
      this.pending += text.slice(start)
      if (this.pending.length > this.maxLength) {
        out.push({ tooLong: true, line: this.line })
        this.pending = ''
        this.discarding = true
      }
    }
    return out
  }

  /** Ends the input; returns the last line when it had no line break. */
  end(out: Line[] = []): Line[] {
    if (!this.discarding && this.pending.length > 0) {
      const s = this.pending.endsWith('\r') ? this.pending.slice(0, -1) : this.pending
      out.push({ text: s, line: this.line })
    }
    this.pending = ''
    this.discarding = false
    return out
  }
}

// The fast CSV tokenizer (fastCsvParse) against fast-csv's own Parser, which it stands in for: on
// generated text, whenever the fast one answers, the answer must be fast-csv's exactly (rows and
// the unfinished rest), for both `more` values, two dialects, and text that is mostly well formed
// (so the fast path answers often) with blanks, stray quotes, lone CRs and BOMs mixed in.
import t from 'tap'
import { Parser } from '@fast-csv/parse/build/src/parser/Parser.js'
import { ParserOptions } from '@fast-csv/parse'
import { CsvRows, fastCsvParse, type CsvRow } from '../lib/io/csv-rows.js'
import { prng } from './helpers/prng.js'

const DIALECTS = [
  { delimiter: ',', quote: '"' },
  { delimiter: ';', quote: "'" },
]

function randomText(rand: () => number, delimiter: string, quote: string, odd: boolean): string {
  const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)]
  const plain = ['a', 'bc', 'é', '😀', '1.5', '', 'x y', 'z\t', ',', ';', '"', "'"].filter((s) => s !== delimiter && s !== quote)
  const oddBits = [' ', '\t', '\u00a0', quote, `${quote}x`, '\r', '\ufeff', `x${quote}`, ` ${quote}a${quote}`]
  let s = ''
  const rows = 1 + Math.floor(rand() * 6)
  for (let r = 0; r < rows; r++) {
    const fields = Math.floor(rand() * 4)
    const out: string[] = []
    for (let f = 0; f < fields; f++) {
      const roll = rand()
      if (odd && roll < 0.08) out.push(pick(oddBits))
      else if (roll < 0.45) {
        // A quoted field, possibly holding delimiters, doubled quotes and line breaks.
        const inner = Array.from({ length: Math.floor(rand() * 4) }, () => pick([...plain, delimiter, quote + quote, '\n', '\r\n', ' '])).join('')
        out.push(quote + inner + quote)
      } else out.push(pick(plain))
    }
    s += out.join(delimiter) + pick(['\n', '\n', '\r\n', '\r', '\n\n'])
  }
  // Sometimes an unfinished last row.
  if (rand() < 0.5) s = s.slice(0, Math.floor(rand() * s.length))
  return s
}

t.test('fastCsvParse answers as fast-csv does, or not at all', async (t) => {
  const rand = prng(17)
  let answered = 0
  let cases = 0
  let mismatches = 0
  for (const { delimiter, quote } of DIALECTS) {
    const parser = new Parser(new ParserOptions({ delimiter, quote, headers: false }))
    for (let k = 0; k < 4000; k++) {
      const text = randomText(rand, delimiter, quote, k % 3 === 0)
      for (const more of [true, false]) {
        cases++
        const fast = fastCsvParse(text, more, delimiter.charCodeAt(0), quote.charCodeAt(0))
        if (fast === undefined) continue
        answered++
        let slow: { line: string; rows: string[][] } | string
        try {
          slow = parser.parse(text, more)
        } catch (err) {
          slow = `throws ${(err as Error).message}`
        }
        if (JSON.stringify(fast) !== JSON.stringify(slow) && mismatches++ < 5) {
          t.fail(`${JSON.stringify(text)} (more ${more}): fast ${JSON.stringify(fast)}, fast-csv ${JSON.stringify(slow)}`)
        }
      }
    }
  }
  t.equal(mismatches, 0, `no mismatch in ${cases} cases`)
  // Not a vacuous pass: the fast path answers most well-formed text.
  t.ok(answered > cases * 0.4, `the fast path answered ${answered} of ${cases}`)
})

t.test('CsvRows gives the same rows with and without the fast path, however the text is chunked', async (t) => {
  const rand = prng(5)
  for (let k = 0; k < 300; k++) {
    const text = randomText(rand, ',', '"', k % 2 === 0)
    const cuts = [0, ...Array.from({ length: 3 }, () => Math.floor(rand() * text.length)).sort((a, b) => a - b), text.length]
    const chunks = cuts.slice(1).map((c, i) => text.slice(cuts[i], c))
    const run = (escape?: string): CsvRow[] => {
      // escape '"' is the default spelled out: same dialect. An escape unlike the quote turns the
      // fast path off, so the reference run below uses fast-csv alone.
      const rows = new CsvRows(escape === undefined ? {} : { escape })
      const out: CsvRow[] = []
      for (const c of chunks) out.push(...rows.push(c))
      out.push(...rows.end())
      return out
    }
    const fast = run()
    const slow = runSlow(chunks)
    t.same(fast, slow, `${JSON.stringify(text)} in ${chunks.length} chunks`)
  }
})

// CsvRows with the fast path off (as for a custom escape), same dialect otherwise.
function runSlow(chunks: string[]): CsvRow[] {
  const rows = new CsvRows()
  ;(rows as unknown as { fast: boolean }).fast = false
  const out: CsvRow[] = []
  for (const c of chunks) out.push(...rows.push(c))
  out.push(...rows.end())
  return out
}

import type { AsyncBuffer, ColumnMetaData, Compressors, DecodedArray, ParquetParsers, SchemaTree } from 'hyparquet'
import { convertDictionary, DEFAULT_PARSERS, getTreePath, parquetHeader, readPage } from './hyparquet-pages.js'

/** What hyparquet's page decoder needs to know of a column (its `ColumnDecoder`). */
type ColumnDecoder = Parameters<typeof readPage>[2]

/** How a {@link ColumnPages} decodes values: hyparquet's options. */
export interface PageDecodeOptions {
  compressors?: Compressors
  parsers?: Partial<ParquetParsers>
  /** Decode BYTE_ARRAY without a text annotation as text (hyparquet's default) or keep the bytes. */
  utf8?: boolean
}

/** Bytes read from the file at a time, at least: one positioned read per page of pyarrow's 1 MiB pages. */
export const READ_AHEAD = 1 << 20

/**
 * The data pages of one column chunk (one leaf column of one row group), read from the file and
 * decoded one page at a time with hyparquet's own page decoder, so that memory is one page (its
 * compressed bytes, a read-ahead window of {@link READ_AHEAD} bytes, its decoded values) and the
 * chunk's dictionary, not the chunk. Needs no page index (pandas/pyarrow write none by default):
 * page headers are read in file order.
 *
 * Each {@link next} gives the next decoded rows, complete: for a repeated (list) column, the last
 * row of a page is held back until the next page shows whether it continues there (format v1 pages
 * may split a row).
 */
export class ColumnPages {
  /** The leaf's path in the schema (`['meta', 'source']`). */
  readonly path: string[]
  /** Rows given by {@link next} so far. */
  rows = 0

  private readonly decoder: ColumnDecoder
  private readonly end: number
  private readonly repeated: boolean
  private pos: number
  // The read-ahead window: file bytes [bufferStart, bufferStart + buffer.byteLength).
  private buffer = new Uint8Array(0)
  private bufferStart: number
  private dictionary: DecodedArray | undefined
  // A repeated column's last row, maybe continued by the next page: [row], or undefined.
  private carry: unknown[] | undefined

  constructor(
    private readonly file: AsyncBuffer,
    schema: SchemaTree,
    meta: ColumnMetaData,
    options: PageDecodeOptions,
  ) {
    this.path = meta.path_in_schema
    const schemaPath = getTreePath(schema, meta.path_in_schema)
    this.decoder = {
      pathInSchema: meta.path_in_schema,
      type: meta.type,
      element: schemaPath[schemaPath.length - 1].element,
      schemaPath,
      codec: meta.codec,
      compressors: options.compressors,
      utf8: options.utf8,
      // A partial parsers object keeps the defaults for the rest (as hyparquet's readRowGroup does).
      parsers: { ...DEFAULT_PARSERS, ...options.parsers },
    }
    this.repeated = schemaPath.some((s) => s.element.repetition_type === 'REPEATED')
    // Some writers (Polars) leave dictionary_page_offset out: the chunk starts at its first page.
    this.pos = Number(meta.dictionary_page_offset || meta.data_page_offset)
    this.bufferStart = this.pos
    this.end = this.pos + Number(meta.total_compressed_size)
  }

  /** The next rows of the chunk (at least one), or undefined once every page is decoded. */
  async next(): Promise<DecodedArray | undefined> {
    // hyparquet's readColumn stops one byte short of the end too (a trailing byte of some writers).
    while (this.pos < this.end - 1) {
      const { header, data } = await this.page()
      if (header.type === 'DICTIONARY_PAGE') {
        const { data: values } = readPage(data, header, this.decoder, undefined, undefined, 0)
        if (values) this.dictionary = convertDictionary(values, this.decoder)
        continue
      }
      const { data: values } = readPage(data, header, this.decoder, this.dictionary, this.carry, 0)
      if (!values) continue
      if (!this.repeated) {
        if (values.length === 0) continue
        this.rows += values.length
        return values
      }
      // `values` is the carried row (continued or not) followed by this page's rows: keep the last back.
      const rows = values as unknown[]
      this.carry = rows.length > 0 ? [rows[rows.length - 1]] : this.carry
      const complete = rows.slice(0, -1)
      if (complete.length === 0) continue
      this.rows += complete.length
      return complete
    }
    if (this.carry) {
      const last = this.carry
      this.carry = undefined
      this.rows += last.length
      return last
    }
    return undefined
  }

  /** Reads the next page's header and bytes, leaving `pos` after it. */
  private async page() {
    let want = Math.min(64 * 1024, this.end - this.pos)
    for (;;) {
      await this.ensure(want)
      const reader = { view: new DataView(this.buffer.buffer, this.buffer.byteOffset, this.buffer.byteLength), offset: this.pos - this.bufferStart }
      let header: ReturnType<typeof parquetHeader>
      try {
        header = parquetHeader(reader)
      } catch (err) {
        // A header longer than the window (big statistics): read more, up to the chunk's end.
        if (err instanceof RangeError && this.pos + want < this.end) {
          want = Math.min(want * 2, this.end - this.pos)
          continue
        }
        throw err
      }
      const size = header.compressed_page_size
      if (!Number.isSafeInteger(size) || size < 0) throw new Error(`parquet page header at byte ${this.pos} is invalid (page size ${size})`)
      const length = reader.offset - (this.pos - this.bufferStart) + size
      if (this.pos + length > this.end) throw new Error(`parquet page at byte ${this.pos} runs past its column chunk (${length} bytes, ${this.end - this.pos} left)`)
      if (length > this.buffer.byteLength - (this.pos - this.bufferStart)) {
        want = length
        continue
      }
      this.pos += length
      return { header, data: reader }
    }
  }

  // Makes the window hold `want` bytes from `pos`: keeps what it has of them, reads the rest and
  // READ_AHEAD more (so a run of small pages costs one read), never past the chunk.
  private async ensure(want: number): Promise<void> {
    const offset = this.pos - this.bufferStart
    const have = this.buffer.byteLength - offset
    if (have >= want) return
    const readEnd = Math.min(this.end, this.pos + Math.max(want, READ_AHEAD))
    const readStart = this.pos + Math.max(0, have)
    const more = new Uint8Array(await this.file.slice(readStart, readEnd))
    const next = new Uint8Array(readEnd - this.pos)
    if (have > 0) next.set(this.buffer.subarray(offset))
    next.set(more, Math.max(0, have))
    this.buffer = next
    this.bufferStart = this.pos
  }
}

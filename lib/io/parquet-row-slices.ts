import type { AsyncBuffer, DecodedArray, RowGroup, SchemaTree } from 'hyparquet'
import { assembleNested, DEFAULT_PARSERS } from './hyparquet-pages.js'
import { ColumnPages, type PageDecodeOptions } from './parquet-column-pages.js'

/** Rows a {@link rowGroupSlices} slice holds at most. */
export const SLICE_ROWS = 1024

/** One leaf column's pages, and the page being consumed. */
interface Leaf {
  pages: ColumnPages
  values: DecodedArray
  at: number
}

/** A top-level column: its schema node and its leaves (one, or several for a struct). */
interface Column {
  name: string
  node: SchemaTree
  leaves: Leaf[]
}

/**
 * The rows of one row group, as top-level column values, in slices of at most `sliceRows` rows
 * (`{ name: values }`, every array of the slice's length), decoding pages only as slices are
 * asked for: memory is about one page per leaf column and one slice, however many rows the group
 * has (see {@link ColumnPages}). Structs, lists and maps are assembled per slice with hyparquet's
 * `assembleNested`. Throws if a column chunk holds fewer rows than the group says.
 */
export async function* rowGroupSlices(
  file: AsyncBuffer,
  schema: SchemaTree,
  group: RowGroup,
  names: string[],
  options: PageDecodeOptions,
  sliceRows = SLICE_ROWS,
): AsyncGenerator<Map<string, DecodedArray>> {
  const groupRows = Number(group.num_rows)
  const columns: Column[] = names.map((name) => {
    const node = schema.children.find((c) => c.element.name === name)
    if (!node) throw new Error(`parquet column not found: ${name}`)
    return { name, node, leaves: [] }
  })
  const byName = new Map(columns.map((c) => [c.name, c]))
  for (const chunk of group.columns) {
    if (chunk.file_path) throw new Error('parquet file_path not supported')
    const meta = chunk.meta_data
    if (!meta) throw new Error('parquet column metadata is undefined')
    byName.get(meta.path_in_schema[0])?.leaves.push({ pages: new ColumnPages(file, schema, meta, options), values: [], at: 0 })
  }
  const parsers = { ...DEFAULT_PARSERS, ...options.parsers }
  for (let done = 0; done < groupRows; ) {
    const n = Math.min(sliceRows, groupRows - done)
    // Each leaf's next n rows, gathered across its pages.
    const slice = new Map<string, DecodedArray>()
    for (const column of columns) {
      const parts = new Map<string, DecodedArray>()
      for (const leaf of column.leaves) parts.set(leaf.pages.path.join('.'), await take(leaf, n, groupRows))
      if (column.node.children.length === 0) {
        const values = parts.get(column.name)
        if (!values) throw new Error(`parquet column ${column.name} has no column chunk`)
        slice.set(column.name, values)
      } else {
        assembleNested(parts, column.node, parsers)
        const assembled = parts.get(column.name)
        if (!assembled) throw new Error(`parquet column ${column.name} not assembled`)
        slice.set(column.name, assembled)
      }
    }
    done += n
    yield slice
  }
}

// The next n values of a leaf, from as many pages as they span; a view of the page when they fit in it.
async function take(leaf: Leaf, n: number, groupRows: number): Promise<DecodedArray> {
  if (leaf.values.length - leaf.at >= n) {
    const start = leaf.at
    leaf.at += n
    return sliceOf(leaf.values, start, leaf.at)
  }
  const out: unknown[] = []
  while (out.length < n) {
    if (leaf.at >= leaf.values.length) {
      const next = await leaf.pages.next()
      if (!next) throw new Error(`parquet column ${leaf.pages.path.join('.')} has ${leaf.pages.rows} rows, its row group ${groupRows}`)
      leaf.values = next
      leaf.at = 0
    }
    const end = Math.min(leaf.values.length, leaf.at + n - out.length)
    for (let i = leaf.at; i < end; i++) out.push(leaf.values[i])
    leaf.at = end
  }
  // Drop a consumed page now rather than at the next slice.
  if (leaf.at >= leaf.values.length) {
    leaf.values = []
    leaf.at = 0
  }
  return out as DecodedArray
}

function sliceOf(values: DecodedArray, start: number, end: number): DecodedArray {
  return Array.isArray(values) ? values.slice(start, end) : (values as Exclude<DecodedArray, unknown[]>).subarray(start, end)
}

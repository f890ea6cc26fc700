import type { Writable } from 'node:stream'
import { RecordWriter, resolveWriterOptions, type WriterOptions } from './record-writer.js'
import { toJsonText } from './output-columns.js'

/** Options of {@link writeJsonl}. */
export type JsonlWriteOptions = WriterOptions

/**
 * Writes InferenceStream results as JSON Lines: one object per result with the columns of every
 * writer (`id`, input columns, flat task columns, `outputs`, `error`, `error_code`; see docs/io.md),
 * nested values kept as JSON (not text). With `columns`, only those keys. To a path (atomic by
 * default) or a Writable (ended at the end).
 */
export function writeJsonl(target: string | Writable, options: JsonlWriteOptions = {}): RecordWriter {
  return new JsonlWriter(target, resolveWriterOptions(options, 'writeJsonl'))
}

class JsonlWriter extends RecordWriter {
  private readonly columns: string[] | undefined

  constructor(target: string | Writable, options: ReturnType<typeof resolveWriterOptions<JsonlWriteOptions>>) {
    // JSONL needs no column plan: nothing to hold back.
    super('jsonl', target, { ...options, sampleSize: 1 })
    this.columns = options.columns
  }

  protected async begin(): Promise<void> {}

  protected writeRow(row: Record<string, unknown>): Promise<void> {
    let value = row
    if (this.columns) {
      value = {}
      for (const c of this.columns) value[c] = row[c] ?? null
    }
    return this.send(`${toJsonText(value)}\n`)
  }

  protected complete(): Promise<void> {
    return this.endOut()
  }
}

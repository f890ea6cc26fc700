// Types of the parts of parquetjs-lite (which ships none) that lib/io uses.
declare module 'parquetjs-lite' {
  namespace parquet {
    interface FieldDefinition {
      type?: string
      optional?: boolean
      repeated?: boolean
      compression?: string
      encoding?: string
      statistics?: boolean
      fields?: Record<string, FieldDefinition>
    }
    interface ParquetField {
      name: string
      path: string[]
      primitiveType?: string
      originalType?: string
      repetitionType: string
      isNested?: boolean
      fields?: Record<string, ParquetField>
    }
    class ParquetSchema {
      constructor(fields: Record<string, FieldDefinition>)
      fields: Record<string, ParquetField>
      fieldList: ParquetField[]
    }
    interface WriterOptions {
      rowGroupSize?: number
      pageSize?: number
      useDataPageV2?: boolean
      pageIndex?: boolean
    }
    /** A row group being filled: the shape parquetjs-lite's shredder builds (lib/shred.js). */
    interface RowBuffer {
      rowCount?: number
      pageRowCount?: number
      columnData?: Record<string, { dlevels: number[]; rlevels: number[]; values: unknown[]; distinct_values: Set<unknown>; count: number }>
      pages?: Record<string, unknown[]>
    }
    class ParquetWriter {
      static openStream(schema: ParquetSchema, stream: NodeJS.WritableStream, options?: WriterOptions): Promise<ParquetWriter>
      appendRow(row: Record<string, unknown>): Promise<void>
      close(): Promise<void>
      setMetadata(key: string, value: string): void
      setRowGroupSize(rows: number): void
      rowGroupSize: number
      rowBuffer: RowBuffer
    }
    interface ParquetCursor {
      next(): Promise<Record<string, unknown> | null>
      nextRowGroup(): Promise<Record<string, unknown>[] | null>
    }
    class ParquetReader {
      static openFile(path: string): Promise<ParquetReader>
      getCursor(columns?: string[]): ParquetCursor
      getRowCount(): number | { valueOf(): number }
      getSchema(): ParquetSchema
      getMetadata(): Record<string, string>
      close(): Promise<void>
    }
  }
  export = parquet
}

// The value converters the writer uses when it fills a row group itself (see write-parquet.ts).
declare module 'parquetjs-lite/lib/types.js' {
  const types: { toPrimitive(type: string, value: unknown): unknown }
  export = types
}

// The PLAIN codec, whose BYTE_ARRAY encoder the writer replaces with one that copies strings
// straight into the page (see write-parquet.ts).
declare module 'parquetjs-lite/lib/codec/plain.js' {
  const plain: { encodeValues(type: string, values: unknown[], opts?: unknown): Buffer }
  export = plain
}

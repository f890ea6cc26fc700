import { InvalidOptionError, SchemaMismatchError } from '../errors.js'
import { FLAT_COLUMNS } from './mapping.js'
import { isPlainObject } from './options.js'
import type { ResultRows } from './result-row.js'

/**
 * Type of an output column. `string` UTF8, `double` DOUBLE (every JS number), `int32`/`int64`
 * integers, `boolean`, `json`: any value as its JSON text (a UTF8 column).
 */
export type ColumnType = 'string' | 'double' | 'int32' | 'int64' | 'boolean' | 'json'

/** One column of an output file. */
export interface OutputColumn {
  name: string
  type: ColumnType
}

const COLUMN_TYPES: readonly ColumnType[] = ['string', 'double', 'int32', 'int64', 'boolean', 'json']

// Types of the columns a results row always has, and of the flat task columns.
const KNOWN_TYPES: Record<string, ColumnType> = { id: 'string', outputs: 'json', error: 'string', error_code: 'string', ...FLAT_COLUMNS }

/** Throws `InvalidOptionError` unless `schema` is undefined or maps column names to {@link ColumnType}s. */
export function checkSchema(schema: unknown): void {
  if (schema === undefined) return
  if (!isPlainObject(schema)) throw new InvalidOptionError('Option "schema" must be an object of column name → type')
  for (const [name, type] of Object.entries(schema)) {
    if (!COLUMN_TYPES.includes(type as ColumnType)) {
      throw new InvalidOptionError(`Option "schema.${name}" must be one of ${COLUMN_TYPES.join(', ')}, got ${JSON.stringify(type)}`)
    }
  }
}

function kindOf(value: unknown): ColumnType | undefined {
  switch (typeof value) {
    case 'string':
      return 'string'
    case 'number':
      return 'double'
    case 'boolean':
      return 'boolean'
    case 'bigint':
      return 'int64'
    case 'undefined':
      return undefined
    default:
      return value === null ? undefined : 'json'
  }
}

/**
 * Type of a column from its sampled values: the one kind of its non-null values (a number is
 * `double`, an object or array `json`); `json` when they mix kinds or are all null, since JSON holds
 * anything that comes later.
 */
export function inferColumnType(values: Iterable<unknown>): ColumnType {
  let found: ColumnType | undefined
  for (const v of values) {
    const k = kindOf(v)
    if (k === undefined) continue
    if (found === undefined) found = k
    else if (found !== k) return 'json'
  }
  return found ?? 'json'
}

/**
 * The columns of an output file from its first rows: `columns` when given (exact set and order),
 * else every key seen in the sample plus the columns every row of the kind and task has, in the
 * rows' order (see `ResultRows`). Types: `schema` first, then the known result columns, then
 * {@link inferColumnType}.
 */
export function planColumns(sample: Record<string, unknown>[], rows: ResultRows, options: { columns?: string[]; schema?: Record<string, ColumnType> } = {}): OutputColumn[] {
  let names: string[]
  if (options.columns) {
    names = options.columns
  } else {
    const seen: string[] = [...rows.baseColumns()]
    for (const row of sample) for (const key of Object.keys(row)) seen.push(key)
    seen.push(...rows.taskColumns())
    seen.push(...Object.keys(options.schema ?? {}))
    names = rows.order(seen)
  }
  return names.map((name) => {
    const given = options.schema?.[name]
    if (given) return { name, type: given }
    const known = rows.kind === 'results' ? KNOWN_TYPES[name] : undefined
    return { name, type: known ?? inferColumnType(sample.map((r) => r[name])) }
  })
}

/** JSON text of a value; BigInt becomes a decimal string rather than a throw. */
export function toJsonText(value: unknown): string | null {
  let text: string | undefined
  try {
    text = JSON.stringify(value)
  } catch {
    // Rare (BigInt): retry with a replacer, which would slow every call if always on.
    text = JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))
  }
  return text === undefined ? null : text
}

function mismatch(column: OutputColumn, value: unknown, row: number): SchemaMismatchError {
  const got = value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value
  return new SchemaMismatchError(
    `Row ${row}, column ${JSON.stringify(column.name)}: a ${got} (${String(toJsonText(value)).slice(0, 60)}) does not fit the column's type ${column.type}` +
      ` (inferred from the first rows); pass schema: {${JSON.stringify(column.name)}: 'json'} (or the type it should have)`,
    column.name,
  )
}

/**
 * The value a Parquet cell of `column` stores for `value`: null for null/undefined (and NaN, which
 * parquetjs-lite cannot write), JSON text for `json` columns. Throws `SchemaMismatchError` naming the
 * column and the 0-based row when the value does not fit.
 */
export function parquetCell(column: OutputColumn, value: unknown, row: number): unknown {
  if (value === null || value === undefined) return null
  switch (column.type) {
    case 'json':
      return toJsonText(value)
    case 'string':
      if (typeof value === 'string') return value
      break
    case 'double':
      if (typeof value === 'number') return Number.isNaN(value) ? null : value
      break
    case 'int32':
      if (typeof value === 'number' && Number.isInteger(value) && value >= -(2 ** 31) && value < 2 ** 31) return value
      break
    case 'int64':
      if (typeof value === 'bigint' || (typeof value === 'number' && Number.isSafeInteger(value))) return value
      break
    case 'boolean':
      if (typeof value === 'boolean') return value
      break
  }
  throw mismatch(column, value, row)
}

/** The text a CSV cell stores for `value`: '' for null/undefined, JSON text for objects and arrays. */
export function csvCell(value: unknown): string {
  if (value === null || value === undefined) return ''
  if (typeof value === 'string') return value
  if (typeof value === 'object') return toJsonText(value) ?? ''
  return String(value)
}

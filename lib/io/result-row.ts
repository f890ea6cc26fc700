import { InferenceStreamError, InvalidOptionError } from '../errors.js'
import { FLAT_COLUMNS, TASK_COLUMNS, detectTask, flattenOutputs, isErrorBody, normalizeTask, type FlattenTask } from './mapping.js'
import { isPlainObject } from './options.js'

/** What a writer is given: InferenceStream results (default), or plain records written as they are. */
export type RowKind = 'results' | 'records'

/** Options of {@link ResultRows}. */
export interface ResultRowsOptions {
  /** `'results'` (default): InferenceStream results `{id, outputs, record?, error?}`. `'records'`: any objects, one column per key. */
  kind?: RowKind
  /**
   * Task of the outputs, for the flat columns (see `flattenOutputs`). Default: detected from the first
   * outputs that show it. A function is asked at each row until it answers (e.g. the task a server
   * names when the stream connects: `() => stream.task`); until then rows are detected as without.
   */
  task?: string | (() => string | undefined)
  /** Add the flat task columns (`label`, `score`, …). Default true; the raw `outputs` are kept either way. */
  flatten?: boolean
}

/** Columns of a result row that are not input columns; an input column of one of these names gets an `input_` prefix. */
export const RESERVED_COLUMNS: ReadonlySet<string> = new Set(['id', 'record', 'outputs', 'error', 'error_code', ...Object.keys(FLAT_COLUMNS)])

// Where each kind of column goes in an output file: id, inputs, flat task columns, outputs, error.
const FLAT_ORDER = Object.keys(FLAT_COLUMNS)
function rank(name: string): number {
  if (name === 'id') return 0
  const flat = FLAT_ORDER.indexOf(name)
  if (flat >= 0) return 20 + flat
  if (name === 'outputs') return 40
  if (name === 'error') return 41
  if (name === 'error_code') return 42
  return 10
}

/**
 * Pure core of the writers: turns each InferenceStream result into one flat row. Columns, in order:
 * `id`; the record's columns (a non-object record is one column `record`; an input column named like
 * a result column becomes `input_<name>`); the flat task columns; `outputs` (raw); `error` (message,
 * null when ok) and `error_code`. The task, when not given, is fixed by the first result that shows it,
 * so every row of a file is flattened the same way.
 */
export class ResultRows {
  readonly kind: RowKind
  private readonly flatten: boolean
  private taskValue: FlattenTask | undefined
  private taskGiven: boolean
  private taskSource: (() => string | undefined) | undefined

  constructor(options: ResultRowsOptions = {}) {
    const { kind = 'results', task, flatten = true } = options
    if (kind !== 'results' && kind !== 'records') throw new InvalidOptionError(`Option "kind" must be "results" or "records", got ${JSON.stringify(kind)}`)
    if (task !== undefined && typeof task !== 'string' && typeof task !== 'function') {
      throw new InvalidOptionError(`Option "task" must be a string or a function returning one, got ${JSON.stringify(task)}`)
    }
    if (typeof flatten !== 'boolean') throw new InvalidOptionError(`Option "flatten" must be a boolean, got ${JSON.stringify(flatten)}`)
    this.kind = kind
    this.flatten = flatten
    this.taskSource = typeof task === 'function' ? task : undefined
    this.taskValue = typeof task === 'string' ? normalizeTask(task) : undefined
    this.taskGiven = typeof task === 'string'
  }

  /** The task the rows are flattened for: given, or detected so far. */
  get task(): FlattenTask | undefined {
    return this.taskValue
  }

  /** Flat columns every row of the task has (even when a row lacks them, e.g. an error). */
  taskColumns(): readonly string[] {
    return this.flatten && this.taskValue ? TASK_COLUMNS[this.taskValue] : []
  }

  /** Columns every results row has, whatever its outputs. */
  baseColumns(): readonly string[] {
    return this.kind === 'results' ? ['id', 'outputs', 'error', 'error_code'] : []
  }

  /** `names` in output-file order (see the class). Records keep their own order. */
  order(names: Iterable<string>): string[] {
    const list = [...new Set(names)]
    if (this.kind === 'records') return list
    return list.map((name, i) => ({ name, i, r: rank(name) })).sort((a, b) => a.r - b.r || a.i - b.i).map((x) => x.name)
  }

  /** The row of one item. Throws `InvalidOptionError` for a results writer given something that is not a result. */
  toRow(item: unknown): Record<string, unknown> {
    if (this.kind === 'records') return isPlainObject(item) ? item : { record: item }
    if (!isPlainObject(item) || typeof item.id !== 'string' || !('outputs' in item)) {
      throw new InvalidOptionError(
        `Expected an InferenceStream result {id, outputs, record?, error?}, got ${JSON.stringify(item)?.slice(0, 100)}; pass kind: 'records' to write plain records`,
      )
    }
    const row: Record<string, unknown> = { id: item.id }
    const record = item.record
    if (isPlainObject(record)) {
      for (const [key, value] of Object.entries(record)) row[RESERVED_COLUMNS.has(key) ? `input_${key}` : key] = value
    } else if (record !== undefined) {
      row.record = record
    }
    const outputs = item.outputs
    if (this.flatten) {
      if (this.taskSource !== undefined && this.taskValue === undefined && !this.taskGiven) {
        const told = this.taskSource()
        if (typeof told === 'string') {
          this.taskValue = normalizeTask(told)
          this.taskGiven = true
          this.taskSource = undefined
        }
      }
      if (this.taskValue === undefined && !this.taskGiven) this.taskValue = detectTask(outputs)
      const flat = flattenOutputs(outputs, this.taskValue ?? (this.taskGiven ? '' : undefined))
      delete flat.error
      delete flat.error_code
      Object.assign(row, flat)
    }
    row.outputs = outputs
    const error = item.error
    if (error instanceof Error) {
      row.error = error.message
      const remote = (error as { remoteCode?: unknown }).remoteCode
      row.error_code = typeof remote === 'string' ? remote : error instanceof InferenceStreamError ? error.code : null
    } else if (isErrorBody(outputs)) {
      row.error = outputs.error
      row.error_code = typeof outputs.code === 'string' ? outputs.code : null
    } else {
      row.error = null
      row.error_code = null
    }
    return row
  }
}

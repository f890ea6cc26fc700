import { IdConflictError, InvalidOptionError, InvalidPayloadError, MissingInputError } from '../errors.js'
import type { RecordPayload } from '../client/options.js'
import { isPlainObject } from './options.js'

/** Options of {@link inputFromColumn}. */
export interface InputFromColumnOptions {
  /** Parameters of every payload. Default none. */
  parameters?: Record<string, unknown>
  /**
   * A column holding each row's own parameters: an object, or a JSON object in a string (as a CSV
   * field is). Merged over `parameters` per key; an empty value means none. Default none.
   */
  parametersColumn?: string
}

function describeColumns(record: Record<string, unknown>): string {
  const keys = Object.keys(record)
  return keys.length === 0 ? 'it has none' : `it has ${keys.slice(0, 10).map((k) => JSON.stringify(k)).join(', ')}${keys.length > 10 ? ', …' : ''}`
}

/**
 * An `input` function for `InferenceStream` taking the model's `inputs` from one column of each
 * record: `record → {inputs: record[column], parameters}`. A record without the column, or whose
 * value is `undefined` or `null` (a JSON null, a Parquet null), throws `MissingInputError` naming
 * the column; the stream fails that record alone. An empty or blank string is a value like any
 * other (a CSV cell is always a string, so an empty cell is `''`): the model gets it and answers
 * as it does for empty text (docs/models.md, "Empty and missing inputs"). A bad `parametersColumn`
 * value throws `InvalidPayloadError`.
 */
export function inputFromColumn(column: string, options: InputFromColumnOptions = {}): (record: unknown) => RecordPayload {
  if (typeof column !== 'string' || column === '') throw new InvalidOptionError(`inputFromColumn: "column" must be a non-empty string, got ${JSON.stringify(column)}`)
  if (typeof options !== 'object' || options === null) throw new InvalidOptionError('inputFromColumn options must be an object')
  const { parameters, parametersColumn } = options
  if (parameters !== undefined && !isPlainObject(parameters)) throw new InvalidOptionError('Option "parameters" must be an object')
  if (parametersColumn !== undefined && (typeof parametersColumn !== 'string' || parametersColumn === '')) {
    throw new InvalidOptionError(`Option "parametersColumn" must be a non-empty string, got ${JSON.stringify(parametersColumn)}`)
  }

  const rowParameters = (record: Record<string, unknown>): Record<string, unknown> | undefined => {
    const value = record[parametersColumn!]
    if (value === undefined || value === null || value === '') return undefined
    let parsed = value
    if (typeof value === 'string') {
      try {
        parsed = JSON.parse(value)
      } catch {
        throw new InvalidPayloadError(`Column ${JSON.stringify(parametersColumn)} must hold a JSON object of parameters, got ${JSON.stringify(value.slice(0, 80))}`)
      }
    }
    if (!isPlainObject(parsed)) throw new InvalidPayloadError(`Column ${JSON.stringify(parametersColumn)} must hold an object of parameters, got ${JSON.stringify(parsed)?.slice(0, 80)}`)
    return parsed
  }

  return (record: unknown): RecordPayload => {
    if (!isPlainObject(record)) throw new MissingInputError(`Input column ${JSON.stringify(column)}: the record is not an object with columns`, column)
    if (!Object.hasOwn(record, column)) throw new MissingInputError(`The record has no column ${JSON.stringify(column)} (${describeColumns(record)})`, column)
    const inputs = record[column]
    // '' is text (the Inference API takes it, and a CSV cannot tell an empty cell from ""); only
    // the absence of a value is missing.
    if (inputs === undefined || inputs === null) throw new MissingInputError(`The record's column ${JSON.stringify(column)} has no value (${inputs === null ? 'null' : 'undefined'})`, column)
    const own = parametersColumn === undefined ? undefined : rowParameters(record)
    const merged = own && parameters ? { ...parameters, ...own } : (own ?? parameters)
    return merged === undefined ? { inputs } : { inputs, parameters: merged }
  }
}

/** Tasks {@link flattenOutputs} knows. */
export type FlattenTask = 'text-classification' | 'zero-shot-classification' | 'token-classification' | 'feature-extraction'

/** Columns {@link flattenOutputs} may give, with their types, in output-file order. */
export const FLAT_COLUMNS = {
  label: 'string',
  score: 'double',
  labels: 'json',
  scores: 'json',
  entities: 'json',
  entity_count: 'int32',
} as const

/** The flat columns of each task, in output-file order. */
export const TASK_COLUMNS: Record<FlattenTask, readonly (keyof typeof FLAT_COLUMNS)[]> = {
  'text-classification': ['label', 'score'],
  'zero-shot-classification': ['label', 'score', 'labels', 'scores'],
  'token-classification': ['entities', 'entity_count'],
  'feature-extraction': [],
}

// Task names of the Inference API that share a shape with one of ours.
const ALIASES: Record<string, FlattenTask> = {
  'sentiment-analysis': 'text-classification',
  ner: 'token-classification',
}

/** `task` as one of {@link FlattenTask}, following aliases; undefined for a task without flat columns. */
export function normalizeTask(task: string | undefined): FlattenTask | undefined {
  if (task === undefined) return undefined
  if (task in TASK_COLUMNS) return task as FlattenTask
  return ALIASES[task]
}

/** An `{"error": ...}` body: what a failed item's outputs are. */
export function isErrorBody(outputs: unknown): outputs is { error: string; code?: string } {
  return isPlainObject(outputs) && typeof outputs.error === 'string'
}

const isLabelScore = (v: unknown): v is { label: string; score: number } =>
  isPlainObject(v) && typeof v.label === 'string' && typeof v.score === 'number'
const isEntity = (v: unknown): boolean =>
  isPlainObject(v) && (typeof v.entity_group === 'string' || typeof v.entity === 'string') && ('word' in v || 'start' in v)
const isNumberArray = (v: unknown): boolean => Array.isArray(v) && (v.length === 0 || typeof v[0] === 'number' || isNumberArray(v[0]))

/**
 * The task whose output shape `outputs` has, or undefined when it cannot tell (an error body, an
 * empty list, a shape of no known task). `[{label, score}]` or `[[{label, score}]]`:
 * text-classification; `{labels, scores}`: zero-shot-classification; `[{entity_group | entity, word,
 * start, end, score}]`: token-classification; nested numbers: feature-extraction.
 */
export function detectTask(outputs: unknown): FlattenTask | undefined {
  if (isPlainObject(outputs)) {
    return Array.isArray(outputs.labels) && Array.isArray(outputs.scores) ? 'zero-shot-classification' : undefined
  }
  if (!Array.isArray(outputs) || outputs.length === 0) return undefined
  const first = outputs[0]
  if (typeof first === 'number') return 'feature-extraction'
  if (isLabelScore(first)) return 'text-classification'
  if (isEntity(first)) return 'token-classification'
  if (Array.isArray(first)) {
    if (isLabelScore(first[0])) return 'text-classification'
    if (isNumberArray(first)) return 'feature-extraction'
  }
  return undefined
}

function top(list: unknown[]): { label: string; score: number } | undefined {
  let best: { label: string; score: number } | undefined
  for (const item of list) if (isLabelScore(item) && (best === undefined || item.score > best.score)) best = item
  return best
}

/**
 * Flat columns of an item's `outputs`, for tables (CSV, Parquet); the raw outputs stay the caller's
 * to keep. `task` (default: detected by {@link detectTask}) picks the shape:
 * - text-classification → `label`, `score` of the best label (one text's list; several lists: none);
 * - zero-shot-classification → `label`, `score` of the best label plus `labels`, `scores` (arrays);
 * - token-classification → `entities` (the array) and `entity_count`;
 * - feature-extraction, unknown shapes → `{}` (the raw outputs hold it all);
 * - an error body `{"error", "code"?}` → `error` (and `error_code`), whatever the task.
 * A value of the wrong shape for the given task gives `{}`, never a throw.
 */
export function flattenOutputs(outputs: unknown, task?: string): Record<string, unknown> {
  if (isErrorBody(outputs)) {
    return typeof outputs.code === 'string' ? { error: outputs.error, error_code: outputs.code } : { error: outputs.error }
  }
  const t = task === undefined ? detectTask(outputs) : normalizeTask(task)
  switch (t) {
    case 'text-classification': {
      if (!Array.isArray(outputs)) return {}
      const list = outputs.length === 1 && Array.isArray(outputs[0]) ? outputs[0] : outputs
      const best = top(list as unknown[])
      return best ? { label: best.label, score: best.score } : {}
    }
    case 'zero-shot-classification': {
      if (!isPlainObject(outputs) || !Array.isArray(outputs.labels) || !Array.isArray(outputs.scores)) return {}
      const { labels, scores } = outputs as { labels: unknown[]; scores: unknown[] }
      let i = -1
      for (let j = 0; j < scores.length; j++) if (typeof scores[j] === 'number' && (i < 0 || (scores[j] as number) > (scores[i] as number))) i = j
      const best = i >= 0 && typeof labels[i] === 'string' ? { label: labels[i], score: scores[i] } : {}
      return { ...best, labels, scores }
    }
    case 'token-classification':
      return Array.isArray(outputs) ? { entities: outputs, entity_count: outputs.length } : {}
    default:
      return {}
  }
}

/** An input mapping that also checks that an id column is unique; see {@link uniqueIdColumn}. */
export interface UniqueIdInput<R> {
  /** The input mapping to give `InferenceStream` (`input`). */
  input: (record: R) => RecordPayload
  /** Records failed so far because their id was already used by an earlier record. */
  readonly duplicates: number
}

/**
 * Wraps an input mapping so the ids of `idColumn` are unique as the records are read (the
 * idempotency-key rule, client side): a record whose id an earlier record already had fails alone
 * with `IdConflictError` (`ERR_ID_CONFLICT`) and is not sent — the server would otherwise answer it
 * with the earlier record's result (same inputs) or a conflict. The stream calls `input` once per
 * record, in input order. Keeps every id seen (memory grows with the number of distinct ids).
 * Empty ids are not recorded (the stream fails those records itself).
 */
export function uniqueIdColumn<R>(idColumn: string, input: (record: R) => RecordPayload): UniqueIdInput<R> {
  const seen = new Set<string>()
  let duplicates = 0
  return {
    input(record: R): RecordPayload {
      const v = isPlainObject(record) ? (record as Record<string, unknown>)[idColumn] : undefined
      const id = String(v ?? '')
      if (id !== '') {
        if (seen.has(id)) {
          duplicates++
          throw new IdConflictError(`Id ${JSON.stringify(id)} of column ${JSON.stringify(idColumn)} was already used by an earlier row; this row was not run (ids must be unique)`)
        }
        seen.add(id)
      }
      return input(record)
    },
    get duplicates() {
      return duplicates
    },
  }
}

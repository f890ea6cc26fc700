import type http from 'node:http'
import type { Logger } from 'pino'
import {
  InferenceStreamError,
  InvalidJsonError,
  InvalidPayloadError,
  InvalidDatasetNameError,
  JobStateError,
    toWireError,
} from '../../errors.js'
import { resolvePipeline, type ModelRegistry } from '../../models/pipeline.js'
import type { InputDatasets } from '../datasets/input-datasets.js'
import { assertDatasetName } from '../datasets/output-datasets.js'
import { tenantOf, readBody, sendJson } from '../http-util.js'
import { httpStatusOf } from '../http-status.js'
import type { Tenant, Tenants } from '../tenants.js'
import type { JobRecord, JobStore } from '../store/job-store.js'
import { bulkRecordColumns, type BulkJobs } from './bulk-jobs.js'

/** What the bulk routes need from the server. */
export interface BulkRoutesContext {
  jobs: BulkJobs
  store: JobStore
  /** The input datasets of a tenant (by id): its uploads over the operator's folder. */
  inputs: (tenant: string) => InputDatasets
  registry: ModelRegistry
  tenants: Tenants
  /** Largest body of `POST /bulk/run`, in bytes. */
  maxBodyBytes: number
  /** Largest uploaded dataset file, in bytes. */
  maxUploadBytes: number
  closing: () => boolean
  logger?: Logger
}

const RUN = /^\/bulk\/run\/(cpu|gpu)\/(.+)$/
const STATUS = /^\/bulk\/status\/([A-Za-z0-9_-]+)$/
const CANCEL = /^\/bulk\/cancel\/([A-Za-z0-9_-]+)$/
const UPLOAD = /^\/bulk\/datasets\/(.+)\/([^/]+)\/([^/]+)\.(csv|tsv|jsonl|ndjson|json|parquet)$/


function fail(res: http.ServerResponse, err: unknown): void {
  const body = toWireError(err)
  sendJson(res, err instanceof InferenceStreamError ? httpStatusOf(err.code) : 500, body)
}

/** A slug of a name part for a default output dataset name. */
function slug(s: string): string {
  return s.replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^[-.]+|[-.]+$/g, '') || 'x'
}

/**
 * The default output dataset of a job: one name per (model, dataset, config, split, column), so
 * running the same job again commits a new version of the same dataset.
 */
export function defaultBulkName(model: string, d: { name: string; config: string; split: string; column: string }): string {
  return `bulk-${slug(d.name)}-${slug(d.config)}-${slug(d.split)}-${slug(d.column)}-${slug(model)}`.slice(0, 96).replace(/[-.]+$/, '')
}

/** The status body of a job: the original's `active` and `start_time`, plus our fields. */
export function jobStatus(job: JobRecord): { status: Record<string, unknown> } {
  return {
    status: {
      active: job.state === 'queued' || job.state === 'running' ? 1 : 0,
      start_time: job.startTime,
      state: job.state,
      jobid: job.id,
      bulk_name: job.bulkName,
      model: job.model,
      dataset: job.dataset,
      keep_columns: job.keepColumns,
      total: job.total,
      processed: job.processed,
      failed: job.failed,
      end_time: job.endTime,
      error: job.error,
      revision: job.revision,
    },
  }
}

/**
 * Bulk job routes: `POST /bulk/run/{compute}/{model}`, `GET /bulk/status/{jobid}`,
 * `POST /bulk/cancel/{jobid}`, `GET /bulk/jobs`, `GET /bulk/datasets` and dataset upload
 * `PUT /bulk/datasets/{name}/{config}/{split}.{ext}`. Returns false for other paths.
 */
export function handleBulkRoutes(req: http.IncomingMessage, res: http.ServerResponse, path: string, c: BulkRoutesContext): boolean {
  if (!path.startsWith('/bulk/') || path.startsWith('/bulk/stream/')) return false
  serve(req, res, path, c).catch((err: unknown) => {
    c.logger?.error({ err }, 'bulk request failed')
    if (!res.headersSent) fail(res, err)
    else res.destroy()
  })
  return true
}

async function serve(req: http.IncomingMessage, res: http.ServerResponse, path: string, c: BulkRoutesContext): Promise<void> {
  const tenant = tenantOf(req, c.tenants)
  if (tenant instanceof InferenceStreamError) {
    res.setHeader('www-authenticate', 'Bearer')
    return fail(res, tenant)
  }
  const method = req.method ?? 'GET'
  let m: RegExpExecArray | null
  if ((m = RUN.exec(path))) {
    if (method !== 'POST') return methodNotAllowed(res, 'POST')
    const model = decodeOr(m[2])
    // As /models answers a bad encoding: the client's mistake, not the server's.
    if (model === undefined) return fail(res, new InvalidPayloadError(`Model id is not valid URL encoding: ${JSON.stringify(m[2])}`))
    return run(req, res, c, tenant, m[1], model)
  }
  if ((m = STATUS.exec(path))) {
    const job = c.store.get(m[1])
    // Another tenant's job is as unknown as a missing one.
    if (!job || job.tenant !== tenant.id) return sendJson(res, 404, { error: `No job ${m[1]}`, code: 'ERR_JOB_NOT_FOUND' })
    if (method === 'DELETE') return cancel(res, c, job)
    if (method !== 'GET') return methodNotAllowed(res, 'GET, DELETE')
    return sendJson(res, 200, jobStatus(job))
  }
  if ((m = CANCEL.exec(path))) {
    if (method !== 'POST') return methodNotAllowed(res, 'POST')
    const job = c.store.get(m[1])
    if (!job || job.tenant !== tenant.id) return sendJson(res, 404, { error: `No job ${m[1]}`, code: 'ERR_JOB_NOT_FOUND' })
    return cancel(res, c, job)
  }
  if (path === '/bulk/jobs') {
    if (method !== 'GET') return methodNotAllowed(res, 'GET')
    return sendJson(res, 200, { jobs: c.store.list({}).filter((j) => j.tenant === tenant.id).map((j) => jobStatus(j).status) })
  }
  if (path === '/bulk/datasets') {
    if (method !== 'GET') return methodNotAllowed(res, 'GET')
    return sendJson(res, 200, { datasets: await c.inputs(tenant.id).list() })
  }
  if ((m = UPLOAD.exec(path))) {
    if (method !== 'PUT' && method !== 'POST') return methodNotAllowed(res, 'PUT, POST')
    const [name, config, split] = [decodeOr(m[1]), decodeOr(m[2]), decodeOr(m[3])]
    if (name === undefined || config === undefined || split === undefined) {
      return fail(res, new InvalidDatasetNameError(`Dataset path is not valid URL encoding: ${JSON.stringify(`${m[1]}/${m[2]}/${m[3]}`)}`))
    }
    // Into the tenant's own uploads, never the operator's folder.
    const stored = await c.inputs(tenant.id).upload(name, config, split, m[4], req, { maxBytes: c.maxUploadBytes })
    c.logger?.info({ tenant: tenant.name, dataset: `${name}/${config}/${split}.${m[4]}`, bytes: stored.bytes, format: stored.format }, 'dataset uploaded')
    // The dataset-relative path: the server's own folders are none of the client's business.
    return sendJson(res, 201, { dataset: name, config, split, path: `${name}/${config}/${split}.${m[4]}` })
  }
  sendJson(res, 404, { error: `Not found: ${method} ${path}` })
}

function decodeOr(raw: string): string | undefined {
  try {
    return decodeURIComponent(raw)
  } catch {
    return undefined
  }
}

function cancel(res: http.ServerResponse, c: BulkRoutesContext, job: JobRecord): void {
  if (!c.jobs.cancel(job.id)) return fail(res, new JobStateError(`Job ${job.id} is already ${c.store.get(job.id)?.state ?? job.state}`))
  c.logger?.info({ job: job.id }, 'bulk job cancelled')
  sendJson(res, 200, jobStatus(c.store.get(job.id) as JobRecord))
}

function methodNotAllowed(res: http.ServerResponse, allow: string): void {
  res.setHeader('allow', allow)
  sendJson(res, 405, { error: `Method not allowed; use ${allow}` })
}

async function run(req: http.IncomingMessage, res: http.ServerResponse, c: BulkRoutesContext, tenant: Tenant, compute: string, model: string): Promise<void> {
  if (c.closing()) return sendJson(res, 503, { error: 'Server is shutting down', code: 'ERR_SHUTTING_DOWN' })
  const body = await readBody(req, c.maxBodyBytes)
  if (body === 'aborted') return
  if (body === 'too-large') return sendJson(res, 413, { error: `Body over ${c.maxBodyBytes} bytes`, code: 'ERR_LIMIT_EXCEEDED' })
  let v: unknown
  try {
    v = JSON.parse(body.toString('utf8'))
  } catch (err) {
    return fail(res, new InvalidJsonError(`Body is not valid JSON: ${(err as Error).message}`))
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return fail(res, new InvalidPayloadError('Body must be a JSON object'))
  const b = v as Record<string, unknown>
  for (const field of ['dataset_name', 'dataset_config', 'dataset_split', 'dataset_column']) {
    if (typeof b[field] !== 'string' || (b[field] as string).length === 0) {
      return fail(res, new InvalidPayloadError(`"${field}" is required: a non-empty string`))
    }
  }
  if (b.parameters !== undefined && (typeof b.parameters !== 'object' || b.parameters === null || Array.isArray(b.parameters))) {
    return fail(res, new InvalidPayloadError('"parameters" must be a JSON object'))
  }
  const pipeline = resolvePipeline(c.registry, model, compute === 'gpu' ? 'gpu' : 'cpu')
  if (pipeline instanceof Error) return fail(res, pipeline)
  // The job's first batch waits for the model; start loading it now.
  pipeline.load?.().catch(() => {})
  const dataset = { name: b.dataset_name as string, config: b.dataset_config as string, split: b.dataset_split as string, column: b.dataset_column as string }
  let resolved
  try {
    resolved = await c.inputs(tenant.id).resolve(dataset.name, dataset.config, dataset.split)
  } catch (err) {
    return fail(res, err)
  }
  let columns: string[]
  try {
    columns = await c.inputs(tenant.id).columns(resolved)
  } catch (err) {
    return fail(res, err)
  }
  if (!columns.includes(dataset.column)) {
    return sendJson(res, 400, {
      error: `Dataset ${dataset.name} (${dataset.config}/${dataset.split}) has no column "${dataset.column}" (columns: ${columns.join(', ')})`,
      code: 'ERR_INVALID_PAYLOAD',
    })
  }
  let keepColumns: string[] = []
  if (b.keep_columns !== undefined) {
    const k = b.keep_columns
    if (k === '*') keepColumns = columns.filter((c) => c !== dataset.column)
    else if (Array.isArray(k) && k.every((c) => typeof c === 'string' && c !== '')) {
      const missing = (k as string[]).filter((c) => !columns.includes(c))
      if (missing.length > 0) {
        // Worded for the API and the CLI alike (keep_columns / --keep-columns), as the other kept-column message.
        const many = missing.length > 1
        return fail(res, new InvalidPayloadError(`Cannot keep column${many ? 's' : ''} ${missing.map((c) => JSON.stringify(c)).join(', ')}: dataset ${dataset.name} (${dataset.config}/${dataset.split}) has no such column${many ? 's' : ''} (columns: ${columns.join(', ')})`))
      }
      keepColumns = [...new Set(k as string[])].filter((c) => c !== dataset.column)
    } else return fail(res, new InvalidPayloadError('"keep_columns" must be an array of column names, or "*" for every column'))
    try {
      bulkRecordColumns(dataset.column, keepColumns)
    } catch (err) {
      return fail(res, err)
    }
  }
  let bulkName = defaultBulkName(model, dataset)
  if (b.bulk_name !== undefined) {
    if (typeof b.bulk_name !== 'string') return fail(res, new InvalidPayloadError('"bulk_name" must be a string'))
    try {
      assertDatasetName(b.bulk_name)
    } catch (err) {
      return fail(res, err)
    }
    bulkName = b.bulk_name
  }
  const job = c.jobs.start({ tenant: tenant.id, model, compute, dataset, parameters: b.parameters as Record<string, unknown> | undefined, keepColumns, bulkName })
  c.logger?.info({ job: job.id, tenant: tenant.name, model, dataset: `${dataset.name}/${dataset.config}/${dataset.split}`, column: dataset.column, bulkName }, 'bulk job submitted')
  sendJson(res, 200, { jobid: job.id, bulk_name: job.bulkName })
}

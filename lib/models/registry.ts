/** The default ModelRegistry: builtin models plus the pipelines a user passes in. */
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { InvalidOptionError, ModelError, ShuttingDownError, UnknownModelError } from '../errors.js'
import { ECHO_MODEL_ID, EchoPipeline } from './builtin-echo.js'
import { defaultCacheDir, defaultHubCacheDir, isHubModelId, normalizeTask, resolveModelDir, TRANSFORMERS_TASKS, type ModelSearchPaths } from './model-files.js'
import type { Compute, ModelRegistry, Pipeline } from './pipeline.js'
import { gpuAvailable, gpuUnavailableError, TransformersPipeline } from './transformers-pipeline.js'
import { PooledPipeline } from './pooled-pipeline.js'
import { NER_MODEL_ID, NER_TASK } from './wink-entities.js'
import { SENTIMENT_MODEL_ID, SENTIMENT_TASK } from './wink-sentiment.js'
import { WINK_WORKER_FILE } from './wink-worker-file.js'
import { WorkerPool } from './worker-pool.js'
import { hasDependency, missingDependency } from '../optional-deps.js'

/** Options of {@link createModelRegistry}. */
export interface ModelRegistryOptions {
  /**
   * Extra pipelines, as an array (served under each `pipeline.id`) or a record (served under each
   * key). They take precedence over builtins of the same id, and `close()` closes them. Default none.
   */
  models?: readonly Pipeline[] | Readonly<Record<string, Pipeline>>
  /** Worker threads of the wink models (`builtin/sentiment`, `builtin/ner`), shared by both. Default 1. */
  threads?: number
  /** Batches that may wait for a wink thread before `run()` rejects with `OverloadedError`. Default 1024. */
  maxQueue?: number
  /** Serve `builtin/echo`, `builtin/sentiment` and `builtin/ner`. Default true. */
  builtins?: boolean
  /**
   * Serve every other Hub model id through `@huggingface/transformers` (docs/models.md), from
   * these places; `false` serves only builtins and `models`. Default: on, with the defaults below.
   */
  transformers?: TransformersOptions | false
}

/** Where and how the registry finds and runs transformers.js models. */
export interface TransformersOptions {
  /** A models folder in Hub layout (`{dir}/{org}/{name}/config.json`). Default none. */
  modelsDir?: string
  /** transformers.js's download cache. Default `$INFERENCE_STREAM_CACHE` or `~/.cache/inference-stream/models`. */
  cacheDir?: string
  /** The Python Hub cache to read. Default `$HF_HUB_CACHE`, `$HF_HOME/hub` or `~/.cache/huggingface/hub`. */
  hubCacheDir?: string
  /** Download from the Hub what is not on disk. Default false: offline. */
  allowDownload?: boolean
  /** The Hub to download from. Default `$HF_ENDPOINT` or `https://huggingface.co`. */
  hubUrl?: string
  /** The task of a model id, where its files do not say or say another (`--task ID=TASK`). */
  tasks?: Readonly<Record<string, string>>
  /** ONNX precision for every model (`fp32`, `q8`, `fp16`...). Default: per folder, the best it has. */
  dtype?: string
  /** ONNX Runtime threads per inference. Default 0: the cores divided among a model's threads. */
  threads?: number
  /** Threads per model, each with its own copy of it, running batches side by side. Default 1. */
  modelThreads?: number
  /** What a `gpu` URL does on a machine without CUDA: `error` (refused, the default) or `cpu` (runs on CPU). */
  gpuFallback?: 'error' | 'cpu'
  /** Folder relative audio paths resolve in (speech models); the server passes its datasets folder. */
  audioRoot?: string
}

const defaults = { threads: 1, maxQueue: 1024, builtins: true }

/** Ids of the builtin models, in the order `list()` shows them. */
export const BUILTIN_MODEL_IDS: readonly string[] = [ECHO_MODEL_ID, SENTIMENT_MODEL_ID, NER_MODEL_ID]

/**
 * Creates a {@link ModelRegistry}. Builtins are cheap until used: `builtin/echo` runs on the main
 * thread; `builtin/sentiment` and `builtin/ner` share one {@link WorkerPool} created on the first
 * `get()` of either, whose threads (each loading wink's English model once) start on the first
 * batch. After `close()`, pipelines already handed out reject with `ShuttingDownError`.
 */
export function createModelRegistry(options: ModelRegistryOptions = {}): ModelRegistry {
  const opts = { ...defaults, ...options }
  if (!Number.isInteger(opts.threads) || opts.threads < 1) {
    throw new InvalidOptionError(`options.threads must be a positive integer, got ${String(opts.threads)}`)
  }
  if (!Number.isInteger(opts.maxQueue) || opts.maxQueue < 0) {
    throw new InvalidOptionError(`options.maxQueue must be a non-negative integer, got ${String(opts.maxQueue)}`)
  }
  if (typeof opts.builtins !== 'boolean') {
    throw new InvalidOptionError(`options.builtins must be a boolean, got ${typeof opts.builtins}`)
  }
  const extra = readModels(opts.models)

  let pool: WorkerPool | undefined
  let closed: Promise<void> | undefined
  const winkPool = (): WorkerPool => {
    if (closed !== undefined) throw new ShuttingDownError('Model registry is closed')
    pool ??= new WorkerPool({ file: WINK_WORKER_FILE, threads: opts.threads, maxQueue: opts.maxQueue })
    return pool
  }
  // Pipeline objects are light; only the pool behind the wink ones costs, and it is made on demand.
  const builtins = new Map<string, () => Pipeline>()
  if (opts.builtins) {
    let echo: Pipeline | undefined
    let sentiment: Pipeline | undefined
    let ner: Pipeline | undefined
    builtins.set(ECHO_MODEL_ID, () => (echo ??= new EchoPipeline()))
    builtins.set(SENTIMENT_MODEL_ID, () => (sentiment ??= new PooledPipeline(SENTIMENT_MODEL_ID, SENTIMENT_TASK, winkPool)))
    builtins.set(NER_MODEL_ID, () => (ner ??= new PooledPipeline(NER_MODEL_ID, NER_TASK, winkPool)))
  }

  const hf = opts.transformers === false ? undefined : readTransformers(opts.transformers ?? {})
  const hfPipelines = new Map<string, TransformersPipeline>()
  const hfGet = (id: string, compute: Compute): TransformersPipeline | undefined => {
    if (hf === undefined || !isHubModelId(id) || !transformersInstalled()) return undefined
    if (compute === 'gpu' && !gpuAvailable()) {
      if (hf.gpuFallback !== 'cpu') return undefined
      compute = 'cpu'
    }
    const key = `${compute}:${id}`
    const known = hfPipelines.get(key)
    if (known !== undefined) return known
    if (closed !== undefined) return undefined
    const { dir } = resolveModelDir(id, hf.paths)
    if (dir === undefined && !hf.allowDownload) return undefined
    const pipeline = new TransformersPipeline({
      id,
      dir,
      task: hf.tasks[id],
      cacheDir: hf.paths.cacheDir,
      allowDownload: hf.allowDownload,
      hubUrl: hf.hubUrl,
      compute,
      dtype: hf.dtype,
      threads: hf.threads,
      modelThreads: hf.modelThreads,
      audioRoot: hf.audioRoot,
    })
    hfPipelines.set(key, pipeline)
    return pipeline
  }

  return {
    get(id: string, compute: Compute = 'cpu'): Pipeline | undefined {
      const pipeline = extra.get(id)
      if (pipeline !== undefined) return pipeline
      const builtin = builtins.get(id)
      if (builtin === undefined) return hfGet(id, compute)
      // Creating the pool on get() (not at startup) keeps a registry that never serves wink free.
      if (id !== ECHO_MODEL_ID && closed === undefined) winkPool()
      return builtin()
    },
    unavailable(id: string, compute: Compute = 'cpu'): Error | undefined {
      if (this.get(id, compute) !== undefined) return undefined
      if (hf === undefined || !isHubModelId(id)) return new UnknownModelError(`Model ${id} does not exist`)
      if (!transformersInstalled()) return missingDependency('@huggingface/transformers', `Model ${id} (a Hugging Face model id; built-in: ${[...builtins.keys()].join(', ')})`)
      if (compute === 'gpu' && !gpuAvailable() && hf.gpuFallback !== 'cpu') return gpuUnavailableError(id)
      const { looked } = resolveModelDir(id, hf.paths)
      return new UnknownModelError(
        `Model ${id} does not exist here: looked for ${id}/config.json in ${looked.join(', ')}; ` +
          'put the model in the models folder (--models DIR), or start the server with --allow-download to fetch it from the Hub',
      )
    },
    list(): string[] {
      const local = hf?.paths.modelsDir !== undefined ? listModels(hf.paths.modelsDir) : []
      const loaded = [...hfPipelines.values()].map((p) => p.id)
      return [...new Set([...builtins.keys(), ...extra.keys(), ...local, ...loaded])]
    },
    close(): Promise<void> {
      closed ??= (async () => {
        const closing: Array<Promise<void> | undefined> = [pool?.close()]
        for (const pipeline of new Set(extra.values())) closing.push(pipeline.close?.())
        for (const pipeline of hfPipelines.values()) closing.push(pipeline.close())
        const results = await Promise.allSettled(closing)
        // Every pipeline gets its close() even if one fails; the first failure is reported.
        const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
        if (failed !== undefined) throw failed.reason
      })()
      return closed
    },
  }
}

interface ResolvedTransformers {
  paths: ModelSearchPaths
  allowDownload: boolean
  hubUrl?: string
  tasks: Record<string, string>
  dtype?: string
  threads: number
  modelThreads: number
  gpuFallback: 'error' | 'cpu'
  audioRoot?: string
}

function readTransformers(o: TransformersOptions): ResolvedTransformers {
  if (typeof o !== 'object' || o === null) throw new InvalidOptionError('options.transformers must be an object or false')
  for (const key of ['modelsDir', 'cacheDir', 'hubCacheDir', 'dtype', 'audioRoot', 'hubUrl'] as const) {
    if (o[key] !== undefined && (typeof o[key] !== 'string' || o[key] === '')) {
      throw new InvalidOptionError(`options.transformers.${key} must be a non-empty string, got ${typeof o[key]}`)
    }
  }
  const allowDownload = o.allowDownload ?? false
  if (typeof allowDownload !== 'boolean') throw new InvalidOptionError('options.transformers.allowDownload must be a boolean')
  const threads = o.threads ?? 0
  if (!Number.isInteger(threads) || threads < 0) throw new InvalidOptionError(`options.transformers.threads must be a non-negative integer, got ${String(threads)}`)
  const modelThreads = o.modelThreads ?? 1
  if (!Number.isInteger(modelThreads) || modelThreads < 1) throw new InvalidOptionError(`options.transformers.modelThreads must be a positive integer, got ${String(modelThreads)}`)
  const gpuFallback = o.gpuFallback ?? 'error'
  if (gpuFallback !== 'error' && gpuFallback !== 'cpu') throw new InvalidOptionError(`options.transformers.gpuFallback must be "error" or "cpu", got ${JSON.stringify(gpuFallback)}`)
  const tasks: Record<string, string> = {}
  for (const [id, task] of Object.entries(o.tasks ?? {})) {
    if (typeof task !== 'string' || normalizeTask(task) === undefined) {
      throw new InvalidOptionError(`options.transformers.tasks[${JSON.stringify(id)}] must be one of ${TRANSFORMERS_TASKS.join(', ')}, got ${JSON.stringify(task)}`)
    }
    tasks[id] = task
  }
  return {
    paths: { modelsDir: o.modelsDir, cacheDir: o.cacheDir ?? defaultCacheDir(), hubCacheDir: o.hubCacheDir ?? defaultHubCacheDir() },
    allowDownload,
    hubUrl: o.hubUrl,
    tasks,
    dtype: o.dtype,
    threads,
    modelThreads,
    gpuFallback,
    audioRoot: o.audioRoot,
  }
}

/** Model ids in a models folder: `{org}/{name}` (or `{name}`) folders that hold a `config.json`. */
function listModels(dir: string): string[] {
  const ids: string[] = []
  const entries = (path: string): string[] => {
    try {
      return readdirSync(path, { withFileTypes: true }).filter((e) => e.isDirectory() && !e.name.startsWith('.')).map((e) => e.name)
    } catch {
      return []
    }
  }
  const has = (path: string): boolean => {
    try {
      return readdirSync(path).includes('config.json')
    } catch {
      return false
    }
  }
  for (const top of entries(dir)) {
    if (has(join(dir, top))) ids.push(top)
    else for (const name of entries(join(dir, top))) if (has(join(dir, top, name))) ids.push(`${top}/${name}`)
  }
  return ids.sort()
}

function readModels(models: ModelRegistryOptions['models']): Map<string, Pipeline> {
  const byId = new Map<string, Pipeline>()
  if (models === undefined) return byId
  if (typeof models !== 'object' || models === null) {
    throw new InvalidOptionError('options.models must be an array of pipelines or a record of pipelines by id')
  }
  const entries: Array<[string, unknown]> = Array.isArray(models)
    ? models.map((p: unknown) => [(p as Pipeline | null)?.id, p] as [string, unknown])
    : Object.entries(models)
  for (const [id, pipeline] of entries) {
    if (typeof id !== 'string' || id === '') {
      throw new InvalidOptionError('options.models entries must have a non-empty string id')
    }
    if (typeof pipeline !== 'object' || pipeline === null || typeof (pipeline as Pipeline).run !== 'function') {
      throw new InvalidOptionError(`options.models[${JSON.stringify(id)}] must be a Pipeline (an object with run())`)
    }
    byId.set(id, pipeline as Pipeline)
  }
  return byId
}

let transformersFound: boolean | undefined
// Whether transformers.js is installed, looked up once (and again while it is not, so installing it
// while a server runs is seen).
function transformersInstalled(): boolean {
  if (transformersFound !== true) transformersFound = hasDependency('@huggingface/transformers')
  return transformersFound
}

/**
 * The catalogue of a registry for a process that runs no model (a front-end with `workers: 0`
 * over a shared state backend): the same ids, tasks and errors, so streams and requests are
 * checked as usual, but its pipelines never load (no loading status, no memory) and refuse to run
 * (the workers of the cluster run the items).
 */
export function catalogueOf(registry: ModelRegistry): ModelRegistry {
  const views = new WeakMap<Pipeline, Pipeline>()
  return {
    get(id, compute) {
      const p = registry.get(id, compute)
      if (p === undefined) return undefined
      let view = views.get(p)
      if (!view) {
        view = {
          id: p.id,
          task: p.task,
          run: () => Promise.reject(new ModelError(`Model ${p.id} runs in the worker processes, not in this front-end (workers: 0)`)),
        }
        views.set(p, view)
      }
      return view
    },
    unavailable: registry.unavailable ? (id, compute) => registry.unavailable!(id, compute) : undefined,
    list: () => registry.list(),
    close: () => registry.close(),
  }
}

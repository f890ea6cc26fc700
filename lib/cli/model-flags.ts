/**
 * The model flags shared by `serve`, `run` and `bench` (which embed a server): where Hugging Face
 * models are found and how they run (transformers.js), and model ids served by an upstream HTTP
 * endpoint. See docs/models.md.
 */
import { Command, Option } from 'commander'
import { InvalidOptionError } from '../errors.js'
import { normalizeTask, TRANSFORMERS_TASKS } from '../models/model-files.js'
import type { ModelRegistry, Pipeline } from '../models/pipeline.js'
import { createModelRegistry } from '../models/registry.js'
import { parseUpstreamSpec, UPSTREAM_BATCH_TASKS, UpstreamPipeline } from '../models/upstream-pipeline.js'
import { intFlag } from './common.js'

/** Parsed model flags. */
export interface ModelFlags {
  models?: string
  cacheDir?: string
  allowDownload?: boolean
  task?: string[]
  dtype?: string
  onnxThreads?: number
  modelThreads?: number
  gpuFallback?: 'error' | 'cpu'
  upstream?: string[]
  upstreamToken?: string[]
  upstreamConcurrency?: number
  upstreamBatch?: string[]
  upstreamBatchBytes?: number
  threads?: number
}

/** Adds the model flags to a command. */
export function addModelFlags(cmd: Command): Command {
  return cmd
    .option('--models <dir>', 'folder of Hugging Face models in Hub layout ({org}/{name}/config.json, onnx/model.onnx); also INFERENCE_STREAM_MODELS')
    .option('--cache-dir <dir>', 'where --allow-download puts models (default INFERENCE_STREAM_CACHE or ~/.cache/inference-stream/models)')
    .option('--allow-download', 'download models that are not on disk from the Hugging Face Hub (default: offline)')
    .option('--task <task...>', `task of a model whose files do not say it, as ID=TASK (run: TASK alone means --model's); one of ${TRANSFORMERS_TASKS.join(', ')}`)
    .option('--dtype <dtype>', 'ONNX precision to load: fp32, q8, fp16, ... (default: the best file the model folder has)')
    .option('--onnx-threads <n>', 'ONNX Runtime threads per inference (0: one per core, divided among --model-threads)', intFlag('onnx-threads', 0), 0)
    .option('--model-threads <n>', 'threads per Hugging Face model, each with its own copy, running batches side by side', intFlag('model-threads', 1), 1)
    .addOption(new Option('--gpu-fallback <mode>', 'a gpu URL on a machine without CUDA: error, or run on cpu').choices(['error', 'cpu']).default('error'))
    .option('--upstream <spec...>', 'serve a model id through an HF-compatible HTTP endpoint, as ID=URL (repeatable)')
    .option('--upstream-token <token...>', 'bearer token for upstreams: TOKEN for all, or ID=TOKEN; also INFERENCE_STREAM_UPSTREAM_TOKEN')
    .option('--upstream-concurrency <n>', 'requests in flight per upstream model', intFlag('upstream-concurrency', 1), 8)
    .option('--upstream-batch <n...>', 'most items per upstream request, N for all or ID=N; 0: one request per item (default 32 for tasks whose API takes a list, see docs/models.md)')
    .option('--upstream-batch-bytes <n>', 'largest body of a batched upstream request, in bytes', intFlag('upstream-batch-bytes', 1), 1024 * 1024)
}

/**
 * The registry the flags describe: builtins, upstream pipelines, and transformers.js for every
 * other Hub id. `defaultModel` is the model a bare `--task TASK` applies to (`run`, `bench`).
 */
export function registryFromFlags(o: ModelFlags, options: { defaultModel?: string; audioRoot?: string } = {}): ModelRegistry {
  const tasks: Record<string, string> = {}
  for (const spec of o.task ?? []) {
    const eq = spec.indexOf('=')
    const id = eq === -1 ? options.defaultModel : spec.slice(0, eq)
    const task = eq === -1 ? spec : spec.slice(eq + 1)
    if (id === undefined || id === '') throw new InvalidOptionError(`--task ${spec}: name the model, as ID=TASK`)
    if (normalizeTask(task) === undefined) throw new InvalidOptionError(`--task ${spec}: "${task}" is not a task this server runs (${TRANSFORMERS_TASKS.join(', ')})`)
    tasks[id] = task
  }
  const specs = (o.upstream ?? []).map((spec) => ({ spec, ...parseUpstreamSpec(spec) }))
  const tokens = upstreamTokens(o.upstreamToken ?? [], new Set(specs.map((s) => s.id)), process.env.INFERENCE_STREAM_UPSTREAM_TOKEN)
  const batches = upstreamBatches(o.upstreamBatch ?? [], new Set(specs.map((s) => s.id)))
  const models: Record<string, Pipeline> = {}
  for (const { spec, id, url } of specs) {
    if (models[id] !== undefined) throw new InvalidOptionError(`--upstream ${spec}: ${id} is given twice`)
    const n = batches.get(id) ?? batches.get('')
    models[id] = new UpstreamPipeline({
      id,
      url,
      token: tokens.get(id) ?? tokens.get(''),
      concurrency: o.upstreamConcurrency ?? 8,
      task: tasks[id],
      // An explicit N for all applies where the task allows a list; ID=N insists (an error otherwise).
      batch: n === undefined ? undefined : n === 0 ? false : batches.has(id) || Object.hasOwn(UPSTREAM_BATCH_TASKS, tasks[id] ?? '') ? n : false,
      maxBatchBytes: o.upstreamBatchBytes,
    })
  }
  return createModelRegistry({
    threads: o.threads ?? 1,
    models,
    transformers: {
      modelsDir: o.models ?? (process.env.INFERENCE_STREAM_MODELS || undefined),
      cacheDir: o.cacheDir,
      allowDownload: o.allowDownload ?? false,
      tasks,
      dtype: o.dtype,
      threads: o.onnxThreads ?? 0,
      modelThreads: o.modelThreads ?? 1,
      gpuFallback: o.gpuFallback ?? 'error',
      audioRoot: options.audioRoot,
    },
  })
}

/**
 * `ID=TOKEN` where ID is an upstream's id, else `TOKEN` for every upstream (key ''), so tokens
 * holding '=' (base64) pass whole. The env variable is the default for all.
 */
function upstreamTokens(flags: string[], ids: Set<string>, env: string | undefined): Map<string, string> {
  const tokens = new Map<string, string>()
  if (env) tokens.set('', env)
  for (const flag of flags) {
    const eq = flag.indexOf('=')
    if (eq > 0 && ids.has(flag.slice(0, eq))) tokens.set(flag.slice(0, eq), flag.slice(eq + 1))
    else tokens.set('', flag)
  }
  return tokens
}

/** `--upstream-batch`: `ID=N` for that upstream, else `N` for all (key ''). */
function upstreamBatches(flags: string[], ids: Set<string>): Map<string, number> {
  const batches = new Map<string, number>()
  for (const flag of flags) {
    const eq = flag.lastIndexOf('=')
    const id = eq > 0 ? flag.slice(0, eq) : ''
    const n = Number(flag.slice(eq + 1))
    if (id !== '' && !ids.has(id)) throw new InvalidOptionError(`--upstream-batch ${flag}: ${id} is not an --upstream id`)
    if (!Number.isInteger(n) || n < 0 || flag.slice(eq + 1).trim() === '') {
      throw new InvalidOptionError(`--upstream-batch ${flag}: expected N or ID=N, N an integer ≥ 0 (0: one request per item)`)
    }
    batches.set(id, n)
  }
  return batches
}

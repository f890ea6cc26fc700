/**
 * Where a Hugging Face model's files are on this machine, and what they say about it (task, ONNX
 * variants). Pure file-system code, no model runtime: the registry uses it to decide synchronously
 * whether an id can be served, and the transformers.js pipeline to load it.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'

/**
 * A Hub model id: `name` or `org/name`, each segment of `[A-Za-z0-9._-]`, not starting with `.` or
 * `-` and without `..`. Anything else (absolute paths, `../x`) is refused before it reaches the
 * file system, so an id can never name a file outside the model folders.
 */
export function isHubModelId(id: string): boolean {
  if (id.length === 0 || id.length > 200 || id.includes('..')) return false
  const parts = id.split('/')
  return parts.length <= 2 && parts.every((p) => /^[A-Za-z0-9_][A-Za-z0-9._-]*$/.test(p))
}

/** Where {@link resolveModelDir} looks, in order. */
export interface ModelSearchPaths {
  /** A models folder in Hub layout, `{dir}/{org}/{name}/config.json`. */
  modelsDir?: string
  /** transformers.js's download cache (same layout); downloads with `allowDownload` land here. */
  cacheDir: string
  /** The Python `huggingface_hub` cache, `models--{org}--{name}/snapshots/{sha}/`. */
  hubCacheDir: string
}

/** The default transformers.js cache: `$INFERENCE_STREAM_CACHE` or `~/.cache/inference-stream/models`. */
export function defaultCacheDir(): string {
  return process.env.INFERENCE_STREAM_CACHE || join(homedir(), '.cache', 'inference-stream', 'models')
}

/** The Python Hub cache: `$HF_HUB_CACHE`, `$HF_HOME/hub` or `~/.cache/huggingface/hub`. */
export function defaultHubCacheDir(): string {
  if (process.env.HF_HUB_CACHE) return process.env.HF_HUB_CACHE
  if (process.env.HF_HOME) return join(process.env.HF_HOME, 'hub')
  return join(homedir(), '.cache', 'huggingface', 'hub')
}

/** A model found on disk: its folder, or why none was found (the places looked at). */
export type ModelLocation = { dir: string; looked: string[] } | { dir: undefined; looked: string[] }

/**
 * The folder holding `id`'s `config.json`: the models folder, then the transformers.js cache, then
 * the Python Hub cache (the snapshot `refs/main` points at, else the newest snapshot). `looked`
 * lists each place tried, for the error that says where a missing model was looked for.
 */
export function resolveModelDir(id: string, paths: ModelSearchPaths): ModelLocation {
  const looked: string[] = []
  if (!isHubModelId(id)) return { dir: undefined, looked }
  const candidates: string[] = []
  if (paths.modelsDir !== undefined) candidates.push(join(paths.modelsDir, id))
  candidates.push(join(paths.cacheDir, id))
  for (const dir of candidates) {
    looked.push(dir)
    if (isFile(join(dir, 'config.json'))) return { dir, looked }
  }
  const repo = join(paths.hubCacheDir, `models--${id.replace('/', '--')}`)
  looked.push(repo)
  const snapshot = hubSnapshot(repo)
  if (snapshot !== undefined && isFile(join(snapshot, 'config.json'))) return { dir: snapshot, looked }
  return { dir: undefined, looked }
}

function hubSnapshot(repo: string): string | undefined {
  const snapshots = join(repo, 'snapshots')
  try {
    const ref = readFileSync(join(repo, 'refs', 'main'), 'utf8').trim()
    if (/^[0-9a-f]{7,64}$/.test(ref) && existsSync(join(snapshots, ref))) return join(snapshots, ref)
  } catch {
    // No refs/main: fall back to the newest snapshot.
  }
  try {
    const dirs = readdirSync(snapshots)
      .map((name) => ({ name, mtime: statSync(join(snapshots, name)).mtimeMs }))
      .sort((a, b) => b.mtime - a.mtime)
    return dirs.length > 0 ? join(snapshots, dirs[0].name) : undefined
  } catch {
    return undefined
  }
}

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile()
  } catch {
    return false
  }
}

/** Tasks this server runs through transformers.js, by Inference API name. */
export const TRANSFORMERS_TASKS = [
  'text-classification',
  'zero-shot-classification',
  'token-classification',
  'feature-extraction',
  'fill-mask',
  'automatic-speech-recognition',
] as const

/** One of {@link TRANSFORMERS_TASKS}. */
export type TransformersTask = (typeof TRANSFORMERS_TASKS)[number]

/** Aliases the Hub and transformers accept for the same tasks. */
const TASK_ALIASES: Record<string, TransformersTask> = {
  'sentiment-analysis': 'text-classification',
  ner: 'token-classification',
  'sentence-similarity': 'feature-extraction',
  embeddings: 'feature-extraction',
  asr: 'automatic-speech-recognition',
}

/** `task` as one of {@link TRANSFORMERS_TASKS}, or undefined when it is not one (aliases accepted). */
export function normalizeTask(task: string): TransformersTask | undefined {
  if ((TRANSFORMERS_TASKS as readonly string[]).includes(task)) return task as TransformersTask
  return TASK_ALIASES[task]
}

/** What a model folder says about the task, read from its files. */
export interface DetectedTask {
  /** The task, or undefined when the files do not tell. */
  task: string | undefined
  /** Where it came from: `README.md pipeline_tag`, `config.json architectures` ... */
  source: string
}

/**
 * The model's task, as the Hub decides it: `pipeline_tag` in the model card's YAML front matter
 * first; else from `config.json`: an `*ForSequenceClassification` whose labels include an
 * entailment label is zero-shot-classification (an NLI model, as `facebook/bart-large-mnli`),
 * other sequence classifiers text-classification, `*ForTokenClassification`
 * token-classification, `*ForMaskedLM` fill-mask, `*ForCTC` and Whisper
 * automatic-speech-recognition, a bare encoder (`BertModel`, sentence-transformers)
 * feature-extraction.
 */
export function detectTask(dir: string): DetectedTask {
  try {
    const card = readFileSync(join(dir, 'README.md'), 'utf8')
    const front = /^---\r?\n([\s\S]*?)\r?\n---/.exec(card)
    const tag = front && /^pipeline_tag:\s*["']?([\w-]+)["']?\s*$/m.exec(front[1])
    if (tag) return { task: tag[1], source: 'README.md pipeline_tag' }
  } catch {
    // No model card: config.json decides.
  }
  let config: unknown
  try {
    config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'))
  } catch {
    return { task: undefined, source: 'config.json (unreadable)' }
  }
  const detected = detectTaskFromConfig(config)
  if (detected.task === undefined && isFile(join(dir, 'modules.json'))) return { task: 'feature-extraction', source: 'modules.json (sentence-transformers)' }
  return detected
}

/** The task `config.json` implies (see {@link detectTask}). */
export function detectTaskFromConfig(config: unknown): DetectedTask {
  const c = (typeof config === 'object' && config !== null ? config : {}) as { architectures?: unknown; label2id?: unknown; id2label?: unknown }
  const archs = Array.isArray(c.architectures) ? c.architectures.filter((a): a is string => typeof a === 'string') : []
  const source = 'config.json architectures'
  for (const arch of archs) {
    if (arch.endsWith('ForSequenceClassification')) {
      const labels = Object.keys((c.label2id as object | undefined) ?? {}).concat(Object.values((c.id2label as object | undefined) ?? {}).map(String))
      const nli = labels.some((l) => l.toLowerCase().startsWith('entail'))
      return { task: nli ? 'zero-shot-classification' : 'text-classification', source }
    }
    if (arch.endsWith('ForTokenClassification')) return { task: 'token-classification', source }
    if (arch.endsWith('ForMaskedLM')) return { task: 'fill-mask', source }
    if (arch.endsWith('ForCTC') || arch.startsWith('WhisperFor')) return { task: 'automatic-speech-recognition', source }
    // A bare encoder (BertModel, XLMRobertaModel); not a generator's head (GPT2LMHeadModel).
    if (/Model$/.test(arch) && !/HeadModel$/.test(arch)) return { task: 'feature-extraction', source }
  }
  return { task: undefined, source: archs.length > 0 ? `config.json architectures ${archs.join(', ')}` : 'config.json (no architectures)' }
}

/**
 * ONNX precisions transformers.js can load, by the file it looks for in `onnx/`, best first for
 * a CPU: full precision, then the quantized variants a Hub repo (e.g. `Xenova/*`) usually ships.
 */
const DTYPE_FILES: Array<[dtype: string, file: string]> = [
  ['fp32', 'model.onnx'],
  ['q8', 'model_quantized.onnx'],
  ['int8', 'model_int8.onnx'],
  ['uint8', 'model_uint8.onnx'],
  ['fp16', 'model_fp16.onnx'],
  ['q4', 'model_q4.onnx'],
  ['bnb4', 'model_bnb4.onnx'],
  ['q4f16', 'model_q4f16.onnx'],
]

/**
 * The precision to load when none is configured: the first of {@link DTYPE_FILES} present in
 * `{dir}/onnx/`, or `undefined` when the folder has no ONNX file (transformers.js then names the
 * file it missed). Lets a folder with only `model_quantized.onnx` load without a `--dtype`.
 */
export function detectDtype(dir: string): string | undefined {
  for (const [dtype, file] of DTYPE_FILES) if (isFile(join(dir, 'onnx', file))) return dtype
  return undefined
}

/** Bytes of the ONNX weights that `dtype` loads (with external data files), for load-time estimates. */
export function onnxBytes(dir: string, dtype: string | undefined): number {
  const file = DTYPE_FILES.find(([d]) => d === dtype)?.[1] ?? 'model.onnx'
  let total = 0
  try {
    for (const name of readdirSync(join(dir, 'onnx'))) {
      if (name === file || name.startsWith(`${file}_data`) || name.startsWith(`${file}.data`)) total += statSync(join(dir, 'onnx', name)).size
    }
  } catch {
    // No onnx folder: nothing to estimate from.
  }
  return total
}

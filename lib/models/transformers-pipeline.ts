/**
 * A Hugging Face model served through `@huggingface/transformers` (ONNX Runtime for Node). The
 * model loads on first use (or `load()`), once; while it loads, `loadState()` says so with an
 * estimated time, which the server turns into stream status messages and HTTP 503s. A failed
 * load is remembered and reported to every batch, until the next `load()` tries again.
 */
import { existsSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { DeviceUnavailableError, ModelError, ModelInputError, ModelLoadError, ShuttingDownError } from '../errors.js'
import { readAudioInput } from './audio.js'
import { detectDtype, detectTask, detectTaskFromConfig, normalizeTask, onnxBytes, TRANSFORMERS_TASKS, type TransformersTask } from './model-files.js'
import type { Compute, ModelLoadState, Parameters, Pipeline } from './pipeline.js'
import {
  featureExtraction,
  fillMask,
  textClassification,
  tokenClassification,
  zeroShotClassification,
  type TextModel,
} from './transformers-tasks.js'

/** Options of one {@link TransformersPipeline}. */
export interface TransformersPipelineOptions {
  /** The model id served (as in the URL). */
  id: string
  /**
   * Inference API task (aliases such as `sentiment-analysis` accepted). Default: what the
   * model's files say (`README.md` `pipeline_tag`, else `config.json`'s architecture).
   */
  task?: string
  /**
   * The model folder (Hub layout: `config.json`, tokenizer files, `onnx/model*.onnx`), or
   * `undefined` to download `id` from the Hub into `cacheDir` (only with `allowDownload`).
   */
  dir: string | undefined
  /** Where downloads go (transformers.js's cache). */
  cacheDir: string
  /** Fetch from the Hub what the folder lacks. Default false. */
  allowDownload?: boolean
  /** The Hub to download from. Default `$HF_ENDPOINT` or `https://huggingface.co` (a mirror works). */
  hubUrl?: string
  /** `cpu` runs on ONNX Runtime's CPU provider, `gpu` on CUDA. Default `cpu`. */
  compute?: Compute
  /** ONNX precision (`fp32`, `q8`, `fp16`...); default the first the folder has, best first. */
  dtype?: string
  /** ONNX Runtime threads per inference; default 0, ONNX Runtime's own choice (one per core). */
  threads?: number
  /** Folder that relative audio paths of speech inputs resolve in; without it only audio bytes are taken. */
  audioRoot?: string
  /** Load speed assumed for the first `estimated_time`, in bytes per second. Default 100 MB/s. */
  loadBytesPerSecond?: number
}

/** The CUDA execution provider library that `onnxruntime-node`'s installer adds on CUDA machines. */
export function cudaProviderPath(): string | undefined {
  try {
    const require = createRequire(import.meta.url)
    const pkg = dirname(require.resolve('onnxruntime-node/package.json'))
    const lib = join(pkg, 'bin', 'napi-v6', process.platform, process.arch, 'libonnxruntime_providers_cuda.so')
    return lib
  } catch {
    return undefined
  }
}

/** Whether this machine can run ONNX models on a GPU (CUDA provider installed, Linux x64). */
export function gpuAvailable(): boolean {
  const lib = cudaProviderPath()
  return process.platform === 'linux' && process.arch === 'x64' && lib !== undefined && existsSync(lib)
}

/** Why `gpu` compute cannot run here, for the error a client gets. */
export function gpuUnavailableError(id: string): DeviceUnavailableError {
  return new DeviceUnavailableError(
    `Model ${id} cannot run on gpu here: ONNX Runtime's CUDA provider is not installed (${cudaProviderPath() ?? 'onnxruntime-node not found'}). ` +
      'On a machine with CUDA 12, install with ONNXRUNTIME_NODE_INSTALL=cuda12 npm install; or use the cpu URL, or start the server with --gpu-fallback cpu',
  )
}

type LoadedTransformers = typeof import('@huggingface/transformers')

interface Loaded {
  task: TransformersTask
  text?: TextModel
  /** transformers.js's own pipeline, for speech. */
  call?: (input: unknown, options?: Record<string, unknown>) => Promise<unknown>
  sampleRate?: number
  dispose(): Promise<void>
}

let transformers: Promise<LoadedTransformers> | undefined
/** The library, imported once on first use (the client entry and servers without such models never load it). */
async function importTransformers(): Promise<LoadedTransformers> {
  transformers ??= import('@huggingface/transformers').then((t) => {
    // Model files come from folders this server was given, or its own cache: never transformers.js's
    // default places inside node_modules.
    t.env.allowLocalModels = true
    return t
  })
  return transformers
}

/**
 * A model run by transformers.js. Text tasks do one tokenizer and one model call per batch (see
 * transformers-tasks.ts); speech runs each recording in turn, as transformers.js does.
 */
export class TransformersPipeline implements Pipeline {
  readonly id: string
  private knownTask: TransformersTask | undefined
  private readonly o: Required<Omit<TransformersPipelineOptions, 'dir' | 'dtype' | 'audioRoot' | 'task'>> & Pick<TransformersPipelineOptions, 'dir' | 'dtype' | 'audioRoot' | 'task'>
  private loading: Promise<Loaded> | undefined
  private loaded: Loaded | undefined
  private failed: Error | undefined
  private loadStarted = 0
  private estimate = 0
  private closed = false

  constructor(options: TransformersPipelineOptions) {
    this.id = options.id
    const defined = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as TransformersPipelineOptions
    this.o = { allowDownload: false, hubUrl: process.env.HF_ENDPOINT || 'https://huggingface.co', compute: 'cpu', threads: 0, loadBytesPerSecond: 100e6, ...defined }
    if (options.task !== undefined) this.knownTask = checkTask(options.id, options.task, 'given')
    else if (options.dir !== undefined) {
      const detected = detectTask(options.dir)
      // Not told by the files: decided (or refused with the reason) when the model loads.
      // A task this server cannot run fails the load (with the reason) rather than the constructor.
      if (detected.task !== undefined && normalizeTask(detected.task) !== undefined) this.knownTask = checkTask(options.id, detected.task, `from ${detected.source}`)
    }
  }

  /** The Inference API task; `unknown` until a download tells it. */
  get task(): string {
    return this.knownTask ?? 'unknown'
  }

  /** Where loading stands; `estimatedTime` counts down from a guess made from the ONNX file's size. */
  loadState(): ModelLoadState {
    if (this.loaded) return { state: 'ready' }
    if (this.failed) return { state: 'failed', error: this.failed }
    if (!this.loading) return { state: 'unloaded', estimatedTime: this.guessSeconds() }
    const left = this.estimate - (performance.now() - this.loadStarted) / 1000
    // Past the guess: say one more second rather than zero or a negative time.
    return { state: 'loading', estimatedTime: Math.max(1, Math.round(left * 10) / 10) }
  }

  private guessSeconds(): number {
    if (this.o.dir === undefined) return 20
    const bytes = onnxBytes(this.o.dir, this.o.dtype ?? detectDtype(this.o.dir))
    return Math.max(1, Math.round((1 + bytes / this.o.loadBytesPerSecond) * 10) / 10)
  }

  /** Loads the model (once); after a failure, a new call tries again. */
  async load(): Promise<void> {
    await this.loadOnce()
  }

  private loadOnce(): Promise<Loaded> {
    if (this.closed) return Promise.reject(new ShuttingDownError(`Model ${this.id} is closed`))
    if (this.loading && !this.failed) return this.loading
    this.failed = undefined
    this.loadStarted = performance.now()
    this.estimate = this.guessSeconds()
    const loading = this.doLoad().then(
      (l) => {
        if (this.closed) {
          void l.dispose()
          throw new ShuttingDownError(`Model ${this.id} is closed`)
        }
        this.loaded = l
        return l
      },
      (err: unknown) => {
        this.failed = err instanceof DeviceUnavailableError || err instanceof ModelLoadError ? err : new ModelLoadError(`Model ${this.id} failed to load: ${(err as Error)?.message ?? String(err)}`, { cause: err })
        throw this.failed
      },
    )
    // A load nobody awaits (started by a status check) must not be an unhandled rejection.
    loading.catch(() => {})
    this.loading = loading
    return loading
  }

  private async doLoad(): Promise<Loaded> {
    if (this.o.compute === 'gpu' && !gpuAvailable()) throw gpuUnavailableError(this.id)
    const t = await importTransformers()
    // Ids (downloads) are looked up locally under localModelPath first: the cache they download to.
    t.env.localModelPath = this.o.cacheDir
    t.env.allowRemoteModels = this.o.allowDownload
    t.env.remoteHost = this.o.hubUrl.endsWith('/') ? this.o.hubUrl : `${this.o.hubUrl}/`
    const source = this.o.dir ?? this.id
    const dtype = this.o.dtype ?? (this.o.dir !== undefined ? detectDtype(this.o.dir) : undefined) ?? 'fp32'
    const detected = this.o.dir !== undefined && this.o.task === undefined ? detectTask(this.o.dir) : undefined
    const task = this.knownTask ?? (detected?.task !== undefined ? checkTask(this.id, detected.task, `from ${detected.source}`) : await this.taskFromConfig(t, source))
    this.knownTask = task
    const options = {
      dtype: dtype as 'fp32',
      device: (this.o.compute === 'gpu' ? 'cuda' : 'cpu') as 'cpu',
      cache_dir: this.o.cacheDir,
      local_files_only: !this.o.allowDownload,
      session_options: this.o.threads > 0 ? { intraOpNumThreads: this.o.threads, interOpNumThreads: 1 } : {},
    }
    // transformers.js's task names; zero-shot loads the same sequence classifier as text-classification.
    const pipe = (await t.pipeline(task, source, options)) as unknown as {
      tokenizer?: TextModel['tokenizer']
      model: TextModel['model']
      processor?: { feature_extractor?: { config?: { sampling_rate?: number } } }
      dispose(): Promise<void>
      (input: unknown, options?: Record<string, unknown>): Promise<unknown>
    }
    if (task === 'automatic-speech-recognition') {
      return {
        task,
        call: (input, opts) => pipe(input, opts),
        sampleRate: pipe.processor?.feature_extractor?.config?.sampling_rate ?? 16000,
        dispose: () => pipe.dispose(),
      }
    }
    if (!pipe.tokenizer) throw new ModelLoadError(`Model ${this.id} has no tokenizer (tokenizer.json)`)
    const text: TextModel = { tokenizer: pipe.tokenizer, model: pipe.model, ...(this.o.dir ? sentenceTransformersPooling(this.o.dir) : {}) }
    return { task, text, dispose: () => pipe.dispose() }
  }

  /** The task from `config.json` (downloaded when allowed), or why it cannot be told. */
  private async taskFromConfig(t: LoadedTransformers, source: string): Promise<TransformersTask> {
    const config = await t.AutoConfig.from_pretrained(source, { cache_dir: this.o.cacheDir, local_files_only: !this.o.allowDownload })
    const detected = detectTaskFromConfig(config)
    if (detected.task === undefined) {
      throw new ModelLoadError(`Model ${this.id}: its task cannot be told from ${detected.source}; name it with --task ${this.id}=TASK (one of ${TRANSFORMERS_TASKS.join(', ')})`)
    }
    return checkTask(this.id, detected.task, `from ${detected.source}`)
  }

  async run(inputs: unknown[], parameters: Parameters): Promise<unknown[]> {
    const loaded = this.loaded ?? (await this.loadOnce())
    switch (loaded.task) {
      case 'text-classification':
        return textClassification(loaded.text as TextModel, inputs, parameters)
      case 'zero-shot-classification':
        return zeroShotClassification(loaded.text as TextModel, inputs, parameters)
      case 'token-classification':
        return tokenClassification(loaded.text as TextModel, inputs, parameters)
      case 'feature-extraction':
        return featureExtraction(loaded.text as TextModel, inputs, parameters)
      case 'fill-mask':
        return fillMask(loaded.text as TextModel, inputs, parameters)
      case 'automatic-speech-recognition':
        return this.speech(loaded, inputs, parameters)
    }
  }

  /**
   * Speech: each item's audio (base64 file bytes, or a path under `audioRoot`) decoded to mono at
   * the model's rate, then transcribed; `{text}` per item. A bad recording fails alone.
   */
  private async speech(loaded: Loaded, inputs: unknown[], parameters: Parameters): Promise<unknown[]> {
    const call = loaded.call as NonNullable<Loaded['call']>
    const options: Record<string, unknown> = {}
    for (const key of ['return_timestamps', 'chunk_length_s', 'stride_length_s', 'language', 'task']) {
      if (parameters[key] !== undefined) options[key] = parameters[key]
    }
    const out: unknown[] = []
    for (const input of inputs) {
      let samples: Float32Array
      try {
        samples = await readAudioInput(input, { sampleRate: loaded.sampleRate ?? 16000, root: this.o.audioRoot })
      } catch (err) {
        out.push(err instanceof Error ? err : new ModelInputError(String(err)))
        continue
      }
      // Shorter than one frame of a wav2vec2 model's feature encoder (25 ms): ONNX Runtime would throw.
      const minSamples = Math.ceil((loaded.sampleRate ?? 16000) * 0.025)
      if (samples.length < minSamples) {
        out.push(new ModelInputError(`automatic-speech-recognition needs at least 25 ms of audio (${minSamples} samples), got ${samples.length}`))
        continue
      }
      try {
        out.push(await call(samples, options))
      } catch (err) {
        // One recording the model cannot take fails alone.
        out.push(new ModelError(`Model ${this.id} failed on this recording: ${(err as Error)?.message ?? String(err)}`, { cause: err }))
      }
    }
    return out
  }

  async close(): Promise<void> {
    this.closed = true
    const loaded = this.loaded
    this.loaded = undefined
    if (loaded) await loaded.dispose()
  }
}

/** `task` as one this server runs, or the error naming the task and where it came from. */
function checkTask(id: string, task: string, from: string): TransformersTask {
  const t = normalizeTask(task)
  if (t === undefined) {
    throw new ModelLoadError(`Model ${id} has task ${JSON.stringify(task)} (${from}), which this server cannot run: it runs ${TRANSFORMERS_TASKS.join(', ')}`)
  }
  return t
}

/** Pooling of a sentence-transformers folder: `1_Pooling/config.json` and a `2_Normalize` module. */
function sentenceTransformersPooling(dir: string): Pick<TextModel, 'pooling' | 'normalize'> {
  try {
    const config = JSON.parse(readFileSync(join(dir, '1_Pooling', 'config.json'), 'utf8')) as Record<string, unknown>
    const pooling = config.pooling_mode_cls_token === true ? 'cls' : config.pooling_mode_mean_tokens === true ? 'mean' : 'none'
    let normalize = false
    try {
      const modules = JSON.parse(readFileSync(join(dir, 'modules.json'), 'utf8')) as Array<{ type?: string }>
      normalize = modules.some((m) => typeof m.type === 'string' && m.type.endsWith('Normalize'))
    } catch {
      // No modules.json: no normalization.
    }
    return { pooling, normalize }
  } catch {
    return {}
  }
}

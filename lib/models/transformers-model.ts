/**
 * A Hugging Face model run by `@huggingface/transformers` (ONNX Runtime for Node), inside the
 * worker thread that a {@link TransformersPipeline} starts for it (transformers-worker.ts): ONNX
 * Runtime's Node binding runs a session synchronously, so it must not run on the server's event
 * loop. The model loads once, on first use or `load()`; a failed load is remembered and
 * reported, until the next `load()` tries again.
 */
import { readFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import { DeviceUnavailableError, ModelError, ModelInputError, ModelLoadError, ShuttingDownError } from '../errors.js'
import { importOptional } from '../optional-deps.js'
import { readAudioInput } from './audio.js'
import { gpuAvailable, gpuUnavailableError } from './gpu.js'
import { detectDtype, detectTask, detectTaskFromConfig, normalizeTask, onnxBytes, TRANSFORMERS_TASKS, type TransformersTask } from './model-files.js'
import type { Compute, Parameters, Pipeline } from './pipeline.js'
import {
  featureExtraction,
  fillMask,
  textClassification,
  tokenClassification,
  zeroShotClassification,
  type TextModel,
} from './transformers-tasks.js'

/** Options of one {@link TransformersModel} (and of the {@link TransformersPipeline} that runs it in a thread). */
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
  /** ONNX Runtime threads per inference; default 0: the cores divided among the model's threads (`modelThreads`). */
  threads?: number
  /**
   * Threads running the model, each with its own copy (memory × n), each taking one batch at a
   * time: batches run side by side instead of one after the other. Default 1.
   */
  modelThreads?: number
  /** Folder that relative audio paths of speech inputs resolve in; without it only audio bytes are taken. */
  audioRoot?: string
  /** Load speed assumed for the first `estimated_time`, in bytes per second. Default 100 MB/s. */
  loadBytesPerSecond?: number
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
  transformers ??= importOptional<LoadedTransformers>('@huggingface/transformers', 'A Hugging Face model').then((t) => {
    // Model files come from folders this server was given, or its own cache: never transformers.js's
    // default places inside node_modules.
    t.env.allowLocalModels = true
    return t
  })
  // A missing package is not cached: installing it and retrying works without a restart.
  transformers.catch(() => (transformers = undefined))
  return transformers
}

/**
 * A model run by transformers.js, on the calling thread. Text tasks do one tokenizer and one model
 * call per batch (see transformers-tasks.ts); speech runs each recording in turn, as
 * transformers.js does.
 */
export class TransformersModel implements Pipeline {
  readonly id: string
  private knownTask: TransformersTask | undefined
  private readonly o: Required<Omit<TransformersPipelineOptions, 'dir' | 'dtype' | 'audioRoot' | 'task'>> & Pick<TransformersPipelineOptions, 'dir' | 'dtype' | 'audioRoot' | 'task'>
  private loading: Promise<Loaded> | undefined
  private loaded: Loaded | undefined
  private failed: Error | undefined
  private closed = false

  constructor(options: TransformersPipelineOptions) {
    this.id = options.id
    this.o = withDefaults(options)
    this.knownTask = initialTask(options)
  }

  /** The Inference API task; `unknown` until a download tells it. */
  get task(): string {
    return this.knownTask ?? 'unknown'
  }

  /** Loads the model (once); after a failure, a new call tries again. */
  async load(): Promise<void> {
    await this.loadOnce()
  }

  private loadOnce(): Promise<Loaded> {
    if (this.closed) return Promise.reject(new ShuttingDownError(`Model ${this.id} is closed`))
    if (this.loading && !this.failed) return this.loading
    this.failed = undefined
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
    // A load nobody awaits must not be an unhandled rejection.
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
      session_options: { intraOpNumThreads: onnxThreads(this.o.threads, this.o.modelThreads), interOpNumThreads: 1 },
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

/**
 * ONNX Runtime's intra-op threads for one session: `threads` when given (> 0), else the cores
 * shared among the model's threads. Said explicitly: left to ONNX Runtime (an empty
 * `session_options`), a session here ran batches of the MiniLM-shaped model 1.6× slower than with
 * one thread per core (benchmarks/model-threads.js).
 */
export function onnxThreads(threads: number, modelThreads: number): number {
  return threads > 0 ? threads : Math.max(1, Math.floor(availableParallelism() / Math.max(1, modelThreads)))
}

/** Options with their defaults (an option given as `undefined` takes its default). */
function withDefaults(options: TransformersPipelineOptions): TransformersModel['o'] {
  const defined = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as TransformersPipelineOptions
  return { allowDownload: false, hubUrl: process.env.HF_ENDPOINT || 'https://huggingface.co', compute: 'cpu', threads: 0, modelThreads: 1, loadBytesPerSecond: 100e6, ...defined }
}

/**
 * The task known before loading: given, or told by the folder's files. `undefined` when only a
 * download (or a load that fails with the reason) can tell; a task this server cannot run is
 * left to the load to refuse, not the constructor.
 */
export function initialTask(options: TransformersPipelineOptions): TransformersTask | undefined {
  if (options.task !== undefined) return checkTask(options.id, options.task, 'given')
  if (options.dir === undefined) return undefined
  const detected = detectTask(options.dir)
  if (detected.task !== undefined && normalizeTask(detected.task) !== undefined) return checkTask(options.id, detected.task, `from ${detected.source}`)
  return undefined
}

/** The first `estimated_time` of a load: 1 s plus the ONNX weights at `loadBytesPerSecond`; 20 s for a download. */
export function guessLoadSeconds(options: TransformersPipelineOptions): number {
  if (options.dir === undefined) return 20
  const bytes = onnxBytes(options.dir, options.dtype ?? detectDtype(options.dir))
  return Math.max(1, Math.round((1 + bytes / (options.loadBytesPerSecond ?? 100e6)) * 10) / 10)
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

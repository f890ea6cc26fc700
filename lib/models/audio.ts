/**
 * Audio inputs of automatic-speech-recognition models: turns what the classic Inference API sends
 * (base64 of a file, a file under the server's audio folder, file bytes, or samples) into the mono
 * Float32 samples at the model's sampling rate that `@huggingface/transformers` wants in Node,
 * where it cannot decode files itself (no AudioContext).
 *
 * Files are decoded by `audio-decode` (an optional package, WebAssembly: WAV, FLAC, MP3, OGG, M4A,
 * WEBM, ...); this module is the glue: where the bytes come from and their limits, format sniffing
 * for clear errors, mixing to mono and a streaming resampler. Every problem of an item's input is
 * a `ModelInputError` (`ERR_MODEL_INPUT`) whose message says what is wrong.
 */
import { open, realpath } from 'node:fs/promises'
import path from 'node:path'
import { AbortError, InferenceStreamError, InvalidOptionError, ModelError, ModelInputError } from '../errors.js'
import { importOptional } from '../optional-deps.js'
import { describeValue } from './describe-value.js'

/** Default sampling rate of `decodeAudio` and `readAudioInput`: 16 kHz, as wav2vec2 and whisper. */
export const DEFAULT_SAMPLE_RATE = 16_000
/** Default `maxBytes` of `readAudioInput`: 50 MiB of file bytes. */
export const DEFAULT_MAX_AUDIO_BYTES = 50 * 1024 * 1024
/** Default `maxSeconds`: one hour of audio. */
export const DEFAULT_MAX_AUDIO_SECONDS = 3600
/** Default `timeoutMs` of decoding one file. */
export const DEFAULT_DECODE_TIMEOUT_MS = 60_000

// ---------------------------------------------------------------------------------------------
// Format detection

/** What the first bytes of a file say it is. */
export interface SniffedFormat {
  /** Short id: `wav`, `flac`, `mp3`, `ogg`, ..., `png`, `text`, or `unknown`. */
  id: string
  /** Human name for messages, e.g. `MP3`, `OGG (Opus)`, `PNG image`. */
  name: string
  /** Whether it is an audio (or audio/video) container. */
  audio: boolean
}

function ascii(bytes: Uint8Array, start: number, length: number): string {
  let s = ''
  for (let i = start; i < start + length && i < bytes.length; i++) s += String.fromCharCode(bytes[i])
  return s
}

function startsWith(bytes: Uint8Array, prefix: readonly number[], at = 0): boolean {
  if (bytes.length < at + prefix.length) return false
  for (let i = 0; i < prefix.length; i++) if (bytes[at + i] !== prefix[i]) return false
  return true
}

function hexBytes(bytes: Uint8Array, count: number): string {
  return Array.from(bytes.subarray(0, count), (b) => b.toString(16).padStart(2, '0')).join(' ')
}

// Bytes that plain text (UTF-8) is made of: printable ASCII, tab, CR, LF, and any byte >= 0x80.
function looksLikeText(bytes: Uint8Array): boolean {
  const n = Math.min(bytes.length, 512)
  if (n === 0) return false
  for (let i = 0; i < n; i++) {
    const b = bytes[i]
    if (b < 0x20 && b !== 0x09 && b !== 0x0a && b !== 0x0d) return false
    if (b === 0x7f) return false
  }
  return true
}

/**
 * Tells a file's format from its first bytes (magic numbers): audio containers (WAV, FLAC, MP3,
 * AAC, OGG, WEBM/Matroska, MP4/M4A, AIFF, CAF, AMR, ASF/WMA, AU), a few common non-audio files
 * (images, PDF, ZIP, gzip, text), or `unknown`.
 */
export function sniffAudioFormat(bytes: Uint8Array): SniffedFormat {
  const head4 = ascii(bytes, 0, 4)
  if ((head4 === 'RIFF' || head4 === 'RF64') && bytes.length >= 12) {
    const form = ascii(bytes, 8, 4)
    if (form === 'WAVE') return { id: 'wav', name: 'WAV', audio: true }
    if (form === 'AVI ') return { id: 'avi', name: 'AVI', audio: true }
    if (form === 'WEBP') return { id: 'webp', name: 'WebP image', audio: false }
  }
  if (head4 === 'RIFX' && ascii(bytes, 8, 4) === 'WAVE') return { id: 'rifx', name: 'WAV (big-endian RIFX)', audio: true }
  if (head4 === 'fLaC') return { id: 'flac', name: 'FLAC', audio: true }
  if (head4 === 'OggS') {
    const codec = ascii(bytes, 28, 8)
    if (codec.startsWith('OpusHead')) return { id: 'ogg', name: 'OGG (Opus)', audio: true }
    if (codec.startsWith('\x01vorbis')) return { id: 'ogg', name: 'OGG (Vorbis)', audio: true }
    if (codec.startsWith('\x7fFLAC')) return { id: 'ogg', name: 'OGG (FLAC)', audio: true }
    if (codec.startsWith('Speex')) return { id: 'ogg', name: 'OGG (Speex)', audio: true }
    return { id: 'ogg', name: 'OGG', audio: true }
  }
  if (startsWith(bytes, [0x1a, 0x45, 0xdf, 0xa3])) {
    const head = ascii(bytes, 0, 64)
    return head.includes('webm') ? { id: 'webm', name: 'WEBM', audio: true } : { id: 'mkv', name: 'Matroska', audio: true }
  }
  if (ascii(bytes, 4, 4) === 'ftyp') return { id: 'mp4', name: 'MP4/M4A', audio: true }
  if (head4 === 'FORM' && /^AIF[FC]$/.test(ascii(bytes, 8, 4))) return { id: 'aiff', name: 'AIFF', audio: true }
  if (head4 === 'caff') return { id: 'caf', name: 'CAF', audio: true }
  if (ascii(bytes, 0, 5) === '#!AMR') return { id: 'amr', name: 'AMR', audio: true }
  if (head4 === '.snd') return { id: 'au', name: 'AU', audio: true }
  if (startsWith(bytes, [0x30, 0x26, 0xb2, 0x75, 0x8e, 0x66, 0xcf, 0x11])) return { id: 'asf', name: 'ASF/WMA', audio: true }
  if (ascii(bytes, 0, 3) === 'ID3') return { id: 'mp3', name: 'MP3', audio: true }
  if (bytes.length >= 2 && bytes[0] === 0xff && (bytes[1] & 0xe0) === 0xe0) {
    // MPEG audio frame sync: layer bits 00 are AAC in an ADTS stream, the others MPEG layers I-III.
    return ((bytes[1] >> 1) & 3) === 0 ? { id: 'aac', name: 'AAC (ADTS)', audio: true } : { id: 'mp3', name: 'MP3', audio: true }
  }
  if (startsWith(bytes, [0x89, 0x50, 0x4e, 0x47])) return { id: 'png', name: 'PNG image', audio: false }
  if (startsWith(bytes, [0xff, 0xd8, 0xff])) return { id: 'jpeg', name: 'JPEG image', audio: false }
  if (ascii(bytes, 0, 4) === 'GIF8') return { id: 'gif', name: 'GIF image', audio: false }
  if (ascii(bytes, 0, 5) === '%PDF-') return { id: 'pdf', name: 'PDF document', audio: false }
  if (startsWith(bytes, [0x50, 0x4b, 0x03, 0x04])) return { id: 'zip', name: 'ZIP archive', audio: false }
  if (startsWith(bytes, [0x1f, 0x8b])) return { id: 'gzip', name: 'gzip archive', audio: false }
  if (looksLikeText(bytes)) {
    const head = ascii(bytes, 0, Math.min(bytes.length, 512))
    if (/^[A-Za-z0-9+/]{16,}={0,2}\s*$/.test(head.slice(0, 64))) return { id: 'text', name: 'text that looks like base64 (encoded twice?)', audio: false }
    return { id: 'text', name: 'text', audio: false }
  }
  return { id: 'unknown', name: 'unknown', audio: false }
}

// ---------------------------------------------------------------------------------------------
// Channels and rates

/**
 * Mixes channels down to one by averaging them. One channel is returned as is (not copied); no
 * channel gives an empty array. Throws an `InvalidOptionError` when the channels differ in length.
 */
export function toMono(channels: readonly Float32Array[]): Float32Array {
  if (channels.length === 0) return new Float32Array(0)
  if (channels.length === 1) return channels[0]
  const n = channels[0].length
  for (const ch of channels) {
    if (ch.length !== n) throw new InvalidOptionError(`toMono: channels differ in length (${n} and ${ch.length})`)
  }
  const out = new Float32Array(n)
  for (const ch of channels) for (let i = 0; i < n; i++) out[i] += ch[i]
  const scale = 1 / channels.length
  for (let i = 0; i < n; i++) out[i] *= scale
  return out
}

// Windowed-sinc kernel: ZERO_CROSSINGS lobes each side, tabulated RESOLUTION times per lobe and
// linearly interpolated, under a Kaiser window: resampy's `kaiser_fast` filter. Kept over the
// maintained peers measured in benchmarks/resample.js (same accuracy class, faster here).
const ZERO_CROSSINGS = 16
const RESOLUTION = 512
const KAISER_BETA = 8.555
// Cutoff as a fraction of the lower Nyquist frequency, low enough that the transition band ends
// near Nyquist, so downsampling does not alias.
const ROLLOFF = 0.85

function besselI0(x: number): number {
  let sum = 1
  let term = 1
  const q = (x * x) / 4
  for (let k = 1; k < 50; k++) {
    term *= q / (k * k)
    sum += term
    if (term < sum * 1e-12) break
  }
  return sum
}

let kernelTable: Float64Array | undefined
function kernel(): Float64Array {
  if (kernelTable !== undefined) return kernelTable
  const n = ZERO_CROSSINGS * RESOLUTION
  const table = new Float64Array(n + 2) // the last entries are 0, so interpolation may read i + 1
  const i0beta = besselI0(KAISER_BETA)
  for (let i = 0; i <= n; i++) {
    const x = i / RESOLUTION
    const sinc = i === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x)
    const r = x / ZERO_CROSSINGS
    table[i] = (sinc * besselI0(KAISER_BETA * Math.sqrt(Math.max(0, 1 - r * r)))) / i0beta
  }
  table[n] = 0
  kernelTable = table
  return table
}

function checkRate(name: string, rate: unknown): number {
  if (typeof rate !== 'number' || !Number.isFinite(rate) || rate <= 0) {
    throw new InvalidOptionError(`${name} must be a positive number of samples per second, got ${describeValue(rate)}`)
  }
  return rate
}

function concatSamples(parts: readonly Float32Array[], length: number): Float32Array {
  if (parts.length === 1) return parts[0]
  const out = new Float32Array(length)
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}

/**
 * `resample` fed in pieces, so a long recording is never held at its source rate: `push` each
 * block of mono samples and keep what it returns, then `end()` for the rest. The concatenated
 * output equals `resample` of the concatenated input, sample for sample. Holds only the ~2 × 16
 * zero crossings of input the filter still needs.
 */
export class StreamResampler {
  private readonly step: number
  private readonly scale: number
  private readonly halfWidth: number
  private readonly tableStep: number
  private readonly table = kernel()
  private buf: Float32Array = new Float32Array(0) // input samples from absolute index `base`
  private base = 0
  private next = 0 // absolute index of the next output sample

  constructor(
    readonly fromRate: number,
    readonly toRate: number,
  ) {
    checkRate('fromRate', fromRate)
    checkRate('toRate', toRate)
    this.step = fromRate / toRate
    this.scale = Math.min(1, toRate / fromRate) * ROLLOFF // cutoff, in cycles per input half-sample
    this.halfWidth = ZERO_CROSSINGS / this.scale // input samples each side
    this.tableStep = this.scale * RESOLUTION
  }

  /** Adds input samples; returns the output samples whose whole filter window is now known. */
  push(samples: Float32Array): Float32Array {
    if (samples.length === 0) return new Float32Array(0)
    if (this.buf.length === 0) this.buf = samples
    else {
      const joined = new Float32Array(this.buf.length + samples.length)
      joined.set(this.buf)
      joined.set(samples, this.buf.length)
      this.buf = joined
    }
    return this.drain(false)
  }

  /** The input is complete: the last output samples (the total is `round(inputs × toRate / fromRate)`). */
  end(): Float32Array {
    return this.drain(true)
  }

  private drain(final: boolean): Float32Array {
    const n = this.base + this.buf.length // input samples seen
    // Final: the rounded output length. Otherwise every j whose window ends inside what is here
    // (floor(j × step + halfWidth) ≤ n − 1), so the result never depends on how input was split.
    let stop = final ? Math.round((n * this.toRate) / this.fromRate) : Math.ceil((n - this.halfWidth) / this.step)
    if (!final) while (stop > this.next && Math.floor((stop - 1) * this.step + this.halfWidth) > n - 1) stop--
    const count = Math.max(0, stop - this.next)
    const out = new Float32Array(count)
    const { table, step, halfWidth, tableStep, scale, buf, base } = this
    const last = ZERO_CROSSINGS * RESOLUTION
    for (let o = 0; o < count; o++) {
      const t = (this.next + o) * step
      const kMin = Math.max(0, Math.ceil(t - halfWidth))
      const kMax = Math.min(n - 1, Math.floor(t + halfWidth))
      let acc = 0
      for (let k = kMin; k <= kMax; k++) {
        const d = Math.abs(t - k) * tableStep
        const i = d | 0
        if (i >= last) continue
        acc += buf[k - base] * (table[i] + (d - i) * (table[i + 1] - table[i]))
      }
      out[o] = acc * scale
    }
    this.next += count
    // Drop the input no later output needs.
    const keepFrom = Math.min(n, Math.max(this.base, Math.ceil(this.next * step - halfWidth)))
    if (keepFrom > this.base) {
      this.buf = this.buf.slice(keepFrom - this.base)
      this.base = keepFrom
    }
    return out
  }
}

/**
 * Resamples mono samples from `fromRate` to `toRate` with band-limited (windowed-sinc, Kaiser
 * window, 16 zero crossings: resampy's `kaiser_fast`) interpolation; the cutoff is 0.85 × the
 * lower of the two Nyquist frequencies (6.8 kHz for 16 kHz output), so downsampling filters out
 * what would alias. The output has `round(samples.length × toRate / fromRate)` samples. Equal
 * rates return `samples` itself. Accuracy and speed against libsamplerate: benchmarks/resample.js.
 */
export function resample(samples: Float32Array, fromRate: number, toRate: number): Float32Array {
  checkRate('fromRate', fromRate)
  checkRate('toRate', toRate)
  if (fromRate === toRate) return samples
  const r = new StreamResampler(fromRate, toRate)
  const a = r.push(samples)
  const b = r.end()
  return concatSamples([a, b], a.length + b.length)
}

// ---------------------------------------------------------------------------------------------
// WAV containers

// audio-decode reads RIFF WAV whose chunks are all even-sized and whose fmt comes before data, and
// takes the sample width from bitsPerSample. Valid files it misreads (RF64, big-endian RIFX, an
// odd-sized chunk with its pad byte, data before fmt, 24-bit samples in 32-bit containers) are
// walked here instead: it gets a RIFF header of their fmt and data chunks, then the data chunk's
// bytes as they are in the file (RIFX's byte-swapped, block by block).
interface WavLayout {
  header: Uint8Array
  dataStart: number
  dataEnd: number
  /** Bytes per sample to reverse (RIFX), else 1. */
  swap: number
}

// The fmt fields (offset, size) to reverse in RIFX: code, channels, rate, byte rate, block align,
// bits, cbSize; WAVE_FORMAT_EXTENSIBLE's valid bits, channel mask and the sub-format's code.
const FMT_FIELDS = [[0, 2], [2, 2], [4, 4], [8, 4], [12, 2], [14, 2], [16, 2], [18, 2], [20, 4], [24, 4]] as const

// A chunk header at `pos`: an id of letters, digits, space or underscore and a size that fits in
// the file. Sample bytes pass both by chance very rarely.
function plausibleChunkAt(bytes: Uint8Array, view: DataView, pos: number, le: boolean): boolean {
  return pos + 8 <= bytes.length && /^[\w ]{4}$/.test(ascii(bytes, pos, 4)) && pos + 8 + view.getUint32(pos + 4, le) <= bytes.length
}

function wavLayout(bytes: Uint8Array, name: string): WavLayout {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const len = bytes.length
  const le = ascii(bytes, 0, 4) !== 'RIFX'
  let fmt: Uint8Array | undefined
  let data: [number, number] | undefined
  let ds64: number | undefined
  for (let pos = 12; pos + 8 <= len && (fmt === undefined || data === undefined); ) {
    const id = ascii(bytes, pos, 4)
    const size = view.getUint32(pos + 4, le)
    let end = pos + 8 + size
    if (id === 'data' && data === undefined) {
      // RF64 keeps the size in ds64. Streaming writers leave 0 or 0xFFFFFFFF, and truncated files
      // end early: then the samples go to the end of the file.
      if (size === 0xffffffff) end = ds64 === undefined ? len : pos + 8 + ds64
      if (end > len || (size === 0 && !plausibleChunkAt(bytes, view, end, le))) end = len
      data = [pos + 8, end]
    } else if (end > len) {
      break // a truncated chunk: nothing more to find
    } else if (id === 'fmt ' && fmt === undefined) {
      fmt = bytes.slice(pos + 8, end)
    } else if (id === 'ds64' && size >= 16) {
      ds64 = view.getUint32(pos + 16, true) + view.getUint32(pos + 20, true) * 2 ** 32
    }
    // Odd chunks are followed by a pad byte; some writers forget it, so it is skipped only when the
    // next chunk header is where the pad rule says (or neither place has one).
    if (size & 1 && (plausibleChunkAt(bytes, view, end + 1, le) || !plausibleChunkAt(bytes, view, end, le))) end++
    pos = end
  }
  if (fmt === undefined || fmt.length < 16) throw new ModelInputError(`${name} audio could not be decoded: no fmt chunk`)
  if (data === undefined) throw new ModelInputError(`${name} audio could not be decoded: no data chunk`)
  if (!le) for (const [at, size] of FMT_FIELDS) if (at + size <= fmt.length) fmt.subarray(at, at + size).reverse()
  const fv = new DataView(fmt.buffer)
  const code = fv.getUint16(0, true) === 0xfffe && fmt.length >= 26 ? fv.getUint16(24, true) : fv.getUint16(0, true)
  const container = fv.getUint16(12, true) / fv.getUint16(2, true) // bytes per sample
  const intOrFloat = (code === 1 || code === 3) && Number.isInteger(container)
  // Samples narrower than their container (24 bits in 32) are left-justified in it: read the container.
  if (code === 1 && intOrFloat && container <= 4 && container * 8 > fv.getUint16(14, true)) fv.setUint16(14, container * 8, true)
  const header = new Uint8Array(28 + fmt.length)
  const hv = new DataView(header.buffer)
  const dataSize = Math.min(data[1] - data[0], 0xffffffff)
  header.set(Buffer.from(`RIFF\0\0\0\0WAVEfmt `, 'latin1'))
  hv.setUint32(4, Math.min(20 + fmt.length + dataSize, 0xffffffff), true)
  hv.setUint32(16, fmt.length, true) // (odd: no pad byte, as audio-decode reads it)
  header.set(fmt, 20)
  header.set(Buffer.from('data', 'latin1'), 20 + fmt.length)
  hv.setUint32(24 + fmt.length, dataSize, true)
  return { header, dataStart: data[0], dataEnd: data[1], swap: !le && intOrFloat ? container : 1 }
}

// ---------------------------------------------------------------------------------------------
// MP3 frames

// Bitrates (kbit/s, index 1 to 14) of MPEG-1 layers I, II, III, then MPEG-2/2.5 layer I, II and III.
const MPEG_BITRATES = [
  [32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448],
  [32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384],
  [32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320],
  [32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256],
  [8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
]

// The length in bytes of the MPEG audio frame whose header is at `at`, or 0 when there is none
// (free-format frames, whose length no header says, count as none).
function mpegFrameLength(b: Uint8Array, at: number): number {
  if (at + 4 > b.length || b[at] !== 0xff || (b[at + 1] & 0xe0) !== 0xe0) return 0
  const version = (b[at + 1] >> 3) & 3 // 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5, 1: reserved
  const layer = 4 - ((b[at + 1] >> 1) & 3) // 4: reserved
  const index = b[at + 2] >> 4
  const rateIndex = (b[at + 2] >> 2) & 3
  if (version === 1 || layer === 4 || index === 0 || index === 15 || rateIndex === 3) return 0
  const kbps = MPEG_BITRATES[version === 3 ? layer - 1 : Math.min(layer, 2) + 2][index - 1]
  const rate = [44100, 48000, 32000][rateIndex] >> (3 - Math.max(version, 1)) // MPEG-2 halves it, 2.5 quarters
  const pad = (b[at + 2] >> 1) & 1
  if (layer === 1) return (Math.floor((12000 * kbps) / rate) + pad) * 4
  return Math.floor(((layer === 3 && version !== 3 ? 72000 : 144000) * kbps) / rate) + pad
}

/** Least share of an MP3's bytes (between its ID3 tags) that must be MPEG audio frames. */
const MIN_MPEG_FRAME_SHARE = 0.5

// An MP3 is a chain of frames, each header giving the next one's place. mpg123 decodes whatever
// it finds, so a file of junk after a valid header decodes to a little noise (frames falsely
// synced in the junk) and a valid file with a few damaged frames to nearly all of its audio. The
// rule: the bytes in chained frames of one stream (one version, layer and sampling rate; random
// bytes almost never chain two) must be at least half of the bytes between the ID3 tags.
function checkMpegFrames(b: Uint8Array): void {
  let start = 0
  if (ascii(b, 0, 3) === 'ID3' && b.length >= 10) {
    start = 10 + (b[5] & 0x10 ? 10 : 0) + (((b[6] & 0x7f) << 21) | ((b[7] & 0x7f) << 14) | ((b[8] & 0x7f) << 7) | (b[9] & 0x7f))
  }
  const end = b.length >= 128 && ascii(b, b.length - 128, 3) === 'TAG' ? b.length - 128 : b.length
  const stream = (at: number): number => ((b[at + 1] & 0xfe) << 2) | ((b[at + 2] >> 2) & 3)
  let key = -1
  let inFrames = 0
  for (let at = start; at < end; ) {
    const next = at + mpegFrameLength(b, at)
    const chained = next > at && (key === -1 || stream(at) === key) && (next >= end || (mpegFrameLength(b, next) > 0 && stream(next) === stream(at)))
    if (!chained) {
      at++
      continue
    }
    key = stream(at)
    inFrames += Math.min(next, end) - at
    at = next
  }
  const share = end > start ? inFrames / (end - start) : 0
  if (share < MIN_MPEG_FRAME_SHARE) {
    throw new ModelInputError(
      `MP3 audio could not be decoded (corrupt or truncated?): ${(share * 100).toFixed(0)}% of its ${Math.max(0, end - start)} bytes of audio are MPEG frames, under the ${MIN_MPEG_FRAME_SHARE * 100}% of a playable file`,
    )
  }
}

// ---------------------------------------------------------------------------------------------
// decodeAudio

/** Options of `decodeAudio`. */
export interface DecodeAudioOptions {
  /** Sampling rate of the result. Default 16000. */
  sampleRate?: number
  /** Longest audio accepted, in seconds of the result; decoding stops as soon as it is over. Default 3600. */
  maxSeconds?: number
  /** Longest decoding may take, in milliseconds (checked between blocks of 64 KiB). Default 60000. */
  timeoutMs?: number
  /** Aborts decoding (rejects with `AbortError`), checked between blocks. */
  signal?: AbortSignal
}

interface ResolvedDecodeOptions {
  sampleRate: number
  maxSeconds: number
  timeoutMs: number
  signal: AbortSignal | undefined
}

function resolveDecodeOptions(options: DecodeAudioOptions = {}): ResolvedDecodeOptions {
  // Defaults first, then each given option; an option given as undefined keeps its default.
  const o: ResolvedDecodeOptions = {
    sampleRate: options.sampleRate ?? DEFAULT_SAMPLE_RATE,
    maxSeconds: options.maxSeconds ?? DEFAULT_MAX_AUDIO_SECONDS,
    timeoutMs: options.timeoutMs ?? DEFAULT_DECODE_TIMEOUT_MS,
    signal: options.signal,
  }
  if (!Number.isInteger(o.sampleRate) || o.sampleRate < 1000 || o.sampleRate > 768_000) {
    throw new InvalidOptionError(`sampleRate must be an integer from 1000 to 768000, got ${describeValue(o.sampleRate)}`)
  }
  if (typeof o.maxSeconds !== 'number' || !(o.maxSeconds > 0)) {
    throw new InvalidOptionError(`maxSeconds must be a positive number, got ${describeValue(o.maxSeconds)}`)
  }
  if (typeof o.timeoutMs !== 'number' || !(o.timeoutMs > 0)) {
    throw new InvalidOptionError(`timeoutMs must be a positive number of milliseconds, got ${describeValue(o.timeoutMs)}`)
  }
  return o
}

function tooLong(seconds: number, max: number): ModelInputError {
  return new ModelInputError(`audio is longer than the ${max} seconds accepted (${seconds.toFixed(1)} s)`)
}

// What audio-decode is: a function of whole files, with one streaming decoder per format name.
interface StreamDecoder {
  (chunk?: Uint8Array): Promise<{ channelData: Float32Array[]; sampleRate: number }>
  free(): void
}
type AudioDecodeModule = { default: Record<string, (() => Promise<StreamDecoder>) | undefined> }

let audioDecode: Promise<AudioDecodeModule['default']> | undefined
function loadDecoder(): Promise<AudioDecodeModule['default']> {
  audioDecode ??= importOptional<AudioDecodeModule>('audio-decode', 'Decoding audio files').then((m) => m.default)
  // A failed import is tried again next time (the package may be installed meanwhile).
  audioDecode.catch(() => {
    audioDecode = undefined
  })
  return audioDecode
}

// Bytes handed to the decoder at a time: small enough that limits and aborts are checked often.
const DECODE_BLOCK = 64 * 1024

// bytes[start, end) in blocks of about DECODE_BLOCK, views of `bytes` (no copy); with `swap` > 1
// (big-endian samples of that many bytes) each block is a copy with every sample's bytes reversed.
function* blocksOf(bytes: Uint8Array, start = 0, end = bytes.length, swap = 1): Generator<Uint8Array> {
  const size = DECODE_BLOCK - (DECODE_BLOCK % swap)
  for (let at = start; at < end; at += size) {
    const block = bytes.subarray(at, Math.min(end, at + size))
    if (swap === 1) yield block
    else {
      const out = block.slice(0, block.length - (block.length % swap))
      for (let i = 0; i < out.length; i += swap) out.subarray(i, i + swap).reverse()
      yield out
    }
  }
}

// mpg123's WebAssembly prints each frame it cannot decode to console.error (the item's error says
// what is wrong instead). A decoder call decodes synchronously before its first await, so only its
// own lines fall in this window.
function quietly<T>(call: () => T): T {
  const error = console.error
  console.error = () => {}
  try {
    return call()
  } finally {
    console.error = error
  }
}

// Decodes block by block, mixing each block to mono and resampling it as it comes, so memory is
// the file's bytes, the result and the decoder's buffers, never the whole recording at its source
// rate and channel count.
async function decodeStreaming(blocks: Iterable<Uint8Array>, format: SniffedFormat & { decoder: string }, o: ResolvedDecodeOptions): Promise<Float32Array> {
  const library = await loadDecoder()
  const make = library[format.decoder]
  if (make === undefined) throw new ModelInputError(`${format.name} audio is not a format this server decodes`)
  const started = performance.now()
  const dec = await make()
  const parts: Float32Array[] = []
  let length = 0
  let sourceRate = 0
  let sourceSamples = 0
  let resampler: StreamResampler | undefined
  const take = (r: { channelData: Float32Array[]; sampleRate: number }): void => {
    if (r.channelData.length === 0 || r.channelData[0].length === 0) return
    if (sourceRate === 0) {
      sourceRate = r.sampleRate
      if (!(sourceRate > 0)) throw new ModelInputError(`${format.name}: the decoder found no sampling rate`)
      if (sourceRate !== o.sampleRate) resampler = new StreamResampler(sourceRate, o.sampleRate)
    } else if (r.sampleRate !== sourceRate) {
      throw new ModelInputError(`${format.name}: the sampling rate changes inside the file (${sourceRate} Hz, then ${r.sampleRate} Hz)`)
    }
    sourceSamples += r.channelData[0].length
    if (sourceSamples / sourceRate > o.maxSeconds) throw tooLong(sourceSamples / sourceRate, o.maxSeconds)
    const mono = toMono(r.channelData)
    const out = resampler === undefined ? mono.slice() : resampler.push(mono) // (the decoder may reuse its buffers)
    parts.push(out)
    length += out.length
  }
  try {
    for (const block of blocks) {
      if (o.signal?.aborted) throw new AbortError(undefined, { cause: o.signal.reason })
      if (performance.now() - started > o.timeoutMs) throw new ModelError(`decoding the ${format.name} input took over ${o.timeoutMs} ms; stopped`)
      take(await quietly(() => dec(block)))
    }
    take(await dec()) // the end: what the decoder still holds; frees it
  } catch (err) {
    dec.free()
    if (err instanceof InferenceStreamError) throw err
    throw new ModelInputError(`${format.name} audio could not be decoded (corrupt or truncated?): ${(err as Error)?.message ?? String(err)}`)
  }
  if (resampler !== undefined) {
    const rest = resampler.end()
    parts.push(rest)
    length += rest.length
  }
  if (sourceSamples === 0) throw new ModelInputError(`${format.name} audio could not be decoded: no samples in it (empty, corrupt or truncated?)`)
  return concatSamples(parts, length)
}

// The name of each sniffed format in audio-decode.
const DECODERS: Record<string, string> = {
  WAV: 'wav',
  'WAV (big-endian RIFX)': 'wav',
  FLAC: 'flac',
  MP3: 'mp3',
  'OGG (Opus)': 'opus',
  'OGG (Vorbis)': 'oga',
  'MP4/M4A': 'm4a',
  'AAC (ADTS)': 'aac',
  AIFF: 'aiff',
  CAF: 'caf',
  WEBM: 'webm',
  Matroska: 'mkv',
  AVI: 'avi',
  AMR: 'amr',
  'ASF/WMA': 'wma',
}

/**
 * Decodes an audio file's bytes into mono Float32 samples at `sampleRate` (default 16000), with
 * the `audio-decode` package (WebAssembly and JavaScript decoders, no native code): WAV (PCM,
 * float, A-law/µ-law, ADPCM; RIFF, RF64 and big-endian RIFX, whose chunks we walk), FLAC, MP3, OGG Vorbis and Opus, MP4/M4A and ADTS AAC, WEBM/Matroska,
 * AIFF, CAF, AMR, WMA. The file is fed in 64 KiB blocks; each decoded block is mixed to mono
 * (`toMono`) and resampled (`StreamResampler`) as it comes, so memory stays near the file's bytes
 * plus the result (docs/models.md, "Speech inputs"); `maxSeconds`, `timeoutMs` and `signal` are
 * checked between blocks.
 * Rejects with a `ModelInputError` naming what is wrong: bytes that are no audio
 * (`not an audio file: looks like PNG image`), a format with no decoder, a corrupt or truncated
 * file (an MP3 less than half MPEG frames), audio over `maxSeconds`; with a `ModelError` past `timeoutMs`; with a
 * `MissingDependencyError` when `audio-decode` is not installed.
 */
export async function decodeAudio(bytes: Uint8Array, options: DecodeAudioOptions = {}): Promise<Float32Array> {
  const o = resolveDecodeOptions(options)
  if (bytes.length === 0) throw new ModelInputError('audio is empty (0 bytes)')
  const format = sniffAudioFormat(bytes)
  if (!format.audio) {
    if (format.id === 'unknown') throw new ModelInputError(`not an audio file of a known format (first bytes ${hexBytes(bytes, 4)})`)
    throw new ModelInputError(`not an audio file: looks like ${format.name}`)
  }
  const decoder = DECODERS[format.name]
  if (decoder === undefined) throw new ModelInputError(`${format.name} audio is not a format this server decodes`)
  if (format.id === 'mp3') checkMpegFrames(bytes)
  let blocks: Iterable<Uint8Array> = blocksOf(bytes)
  if (decoder === 'wav') {
    const wav = wavLayout(bytes, format.name)
    blocks = (function* () {
      yield wav.header
      yield* blocksOf(bytes, wav.dataStart, wav.dataEnd, wav.swap)
    })()
  }
  return decodeStreaming(blocks, { ...format, decoder }, o)
}

// ---------------------------------------------------------------------------------------------
// readAudioInput

/** Options of `readAudioInput`. */
export interface ReadAudioInputOptions extends DecodeAudioOptions {
  /**
   * Folder that string inputs may name files in (bulk jobs over datasets of audio files). Without
   * it every string is base64. No default.
   */
  root?: string
  /** Most bytes of file accepted (decoded base64, file size, or given bytes). Default 50 MiB. */
  maxBytes?: number
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/
const BASE64URL = /^[A-Za-z0-9_-]*={0,2}$/
const DATA_URL = /^data:[^,]{0,200};base64,/

function quote(s: string): string {
  return JSON.stringify(s.length > 120 ? `${s.slice(0, 117)}...` : s)
}

// The base64 payload of a string, without a `data:` prefix or whitespace, or undefined if it is
// not base64 (Buffer.from would silently skip invalid characters).
function base64Payload(s: string): string | undefined {
  let b = s
  const m = DATA_URL.exec(b)
  if (m !== null) b = b.slice(m[0].length)
  if (/\s/.test(b)) b = b.replace(/\s+/g, '')
  if (b.length === 0 || b.length % 4 === 1) return undefined
  if (!BASE64.test(b) && !BASE64URL.test(b)) return undefined
  if (b.length % 4 !== 0 && b.endsWith('=')) return undefined
  return b
}

function base64Size(b: string): number {
  const pad = b.endsWith('==') ? 2 : b.endsWith('=') ? 1 : 0
  return Math.floor(((b.length - pad) * 3) / 4)
}

function isInside(root: string, target: string): boolean {
  const rel = path.relative(root, target)
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${path.sep}`) && !path.isAbsolute(rel))
}

// Reads `name` under `root`: refused when it leaves the folder (by `..`, an absolute path, or a
// symlink), missing, not a file, or over maxBytes. `undefined` when it does not exist and
// `quiet` (the caller then tries base64).
async function readUnderRoot(root: string, name: string, maxBytes: number, quiet: boolean): Promise<Uint8Array | undefined> {
  const what = `inputs ${quote(name)}`
  if (name.includes('\0') || name.length > 4096) {
    if (quiet) return undefined
    throw new ModelInputError(`${what} is not a valid file path`)
  }
  const rootReal = await realpath(root).catch((err: NodeJS.ErrnoException) => {
    throw new ModelError(`the audio root folder cannot be read (${err.code ?? err.message})`, { cause: err })
  })
  const target = path.resolve(rootReal, name)
  if (!isInside(rootReal, target)) {
    if (quiet) return undefined
    throw new ModelInputError(`${what} is outside the audio root folder; paths must stay inside it (refused)`)
  }
  let real: string
  try {
    real = await realpath(target)
  } catch (err) {
    if (quiet) return undefined
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new ModelInputError(`${what} is neither a file in the audio root folder nor base64 audio`)
    throw new ModelInputError(`${what} cannot be read (${code ?? 'error'})`)
  }
  if (!isInside(rootReal, real)) {
    // Exists, but through a symlink that leaves the folder: never read, whatever the mode.
    throw new ModelInputError(`${what} links outside the audio root folder (refused)`)
  }
  let handle
  try {
    handle = await open(real, 'r')
  } catch (err) {
    throw new ModelInputError(`${what} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
  }
  try {
    const stat = await handle.stat()
    if (!stat.isFile()) {
      if (quiet) return undefined
      throw new ModelInputError(`${what} is not a file in the audio root folder`)
    }
    if (stat.size > maxBytes) throw new ModelInputError(`${what} is ${stat.size} bytes, over the ${maxBytes} bytes accepted`)
    return await handle.readFile()
  } finally {
    await handle.close()
  }
}

async function stringBytes(s: string, root: string | undefined, maxBytes: number): Promise<Uint8Array> {
  if (s.length === 0) throw new ModelInputError('inputs is an empty string, expected base64 audio')
  if (root !== undefined) {
    const file = await readUnderRoot(root, s, maxBytes, true)
    if (file !== undefined) return file
  }
  const b64 = base64Payload(s)
  if (b64 === undefined) {
    if (root !== undefined) {
      // Not base64, so meant as a path: say why it is not one.
      return (await readUnderRoot(root, s, maxBytes, false)) as Uint8Array
    }
    throw new ModelInputError('inputs is a string that is not valid base64 audio (this server reads no file paths)')
  }
  const size = base64Size(b64)
  if (size > maxBytes) throw new ModelInputError(`inputs is ${size} bytes of audio once decoded from base64, over the ${maxBytes} bytes accepted`)
  return Buffer.from(b64, BASE64.test(b64) ? 'base64' : 'base64url')
}

function checkBytes(bytes: Uint8Array, maxBytes: number): Uint8Array {
  if (bytes.length > maxBytes) throw new ModelInputError(`inputs is ${bytes.length} bytes of audio, over the ${maxBytes} bytes accepted`)
  return bytes
}

function numericSamples(values: readonly unknown[] | Float32Array | Float64Array, where: string, maxSamples: number): Float32Array {
  if (values.length === 0) throw new ModelInputError(`${where} is an empty array of samples`)
  if (values.length > maxSamples) throw new ModelInputError(`${where} has ${values.length} samples, over the ${maxSamples} accepted`)
  if (values instanceof Float32Array) return values
  const out = new Float32Array(values.length)
  for (let i = 0; i < values.length; i++) {
    const v = values[i]
    if (typeof v !== 'number' || !Number.isFinite(v)) {
      throw new ModelInputError(`${where} must be audio samples (finite numbers), got ${describeValue(v)} at index ${i}`)
    }
    out[i] = v
  }
  return out
}

function describeInput(input: unknown): string {
  if (ArrayBuffer.isView(input)) return `${/^[AEIOU]/.test(input.constructor.name) ? 'an' : 'a'} ${input.constructor.name}`
  return describeValue(input)
}

const EXPECTED = 'base64 audio, a file path (with an audio root folder), audio file bytes, an array of samples, or {array, sampling_rate}'

/**
 * Turns one item's `inputs` for automatic speech recognition into mono Float32 samples at
 * `sampleRate` (default 16000). Accepts:
 * - a string: without `root`, base64 of an audio file (a `data:...;base64,` prefix is allowed);
 *   with `root`, first a path: if it names an existing file inside `root` (after resolving `..`
 *   and symlinks) that file is read; otherwise it must be base64. A string that is neither is
 *   refused with the reason it is no file: outside `root` (absolute, `..`, or a symlink out),
 *   missing, or not a file. Files outside `root` are never read.
 * - a Buffer, Uint8Array or ArrayBuffer: file bytes.
 * - an array of numbers, a Float32Array or a Float64Array: samples already at `sampleRate`.
 * - `{array | raw, sampling_rate}` (datasets' Audio feature decoded, transformers' pipeline input):
 *   samples at that rate, resampled; `{bytes, path}` (datasets' Audio feature in Parquet): the
 *   bytes, or when they are null the path as above.
 * File bytes are limited to `maxBytes` (default 50 MiB) and audio to `maxSeconds` (default 3600);
 * bytes are decoded by `decodeAudio`. Every problem is a `ModelInputError` saying what was wrong
 * with what was received; the result is never empty.
 */
export async function readAudioInput(input: unknown, options: ReadAudioInputOptions = {}): Promise<Float32Array> {
  const { root, maxBytes = DEFAULT_MAX_AUDIO_BYTES, ...decodeOptions } = options
  const o = resolveDecodeOptions(decodeOptions)
  if (!Number.isInteger(maxBytes) || maxBytes <= 0) throw new InvalidOptionError(`maxBytes must be a positive integer, got ${describeValue(maxBytes)}`)
  if (root !== undefined && (typeof root !== 'string' || root === '')) {
    throw new InvalidOptionError(`root must be a non-empty folder path, got ${describeValue(root)}`)
  }
  const maxSamples = Math.floor(o.maxSeconds * o.sampleRate)
  const samples = await readSamples(input, root, maxBytes, maxSamples, o)
  if (samples.length === 0) throw new ModelInputError('inputs holds no audio samples')
  return samples
}

async function readSamples(input: unknown, root: string | undefined, maxBytes: number, maxSamples: number, o: ResolvedDecodeOptions): Promise<Float32Array> {
  if (typeof input === 'string') return decodeAudio(await stringBytes(input, root, maxBytes), o)
  if (input instanceof Uint8Array) return decodeAudio(checkBytes(input, maxBytes), o)
  if (input instanceof ArrayBuffer) return decodeAudio(checkBytes(new Uint8Array(input), maxBytes), o)
  if (Array.isArray(input) || input instanceof Float32Array || input instanceof Float64Array) {
    return numericSamples(input, 'inputs', maxSamples)
  }
  if (input !== null && typeof input === 'object' && !ArrayBuffer.isView(input)) {
    const obj = input as Record<string, unknown>
    const array = obj.array ?? obj.raw
    if (array !== undefined && array !== null) {
      const key = obj.array !== undefined && obj.array !== null ? 'array' : 'raw'
      const rate = obj.sampling_rate
      if (typeof rate !== 'number' || !Number.isFinite(rate) || rate < 1000 || rate > 768_000) {
        throw new ModelInputError(`inputs.sampling_rate must be a number of samples per second (1000 to 768000), got ${describeValue(rate)}`)
      }
      if (!Array.isArray(array) && !(array instanceof Float32Array) && !(array instanceof Float64Array)) {
        throw new ModelInputError(`inputs.${key} must be an array of samples, got ${describeInput(array)}`)
      }
      const samples = numericSamples(array, `inputs.${key}`, Math.floor(o.maxSeconds * rate))
      return resample(samples, rate, o.sampleRate)
    }
    if ('bytes' in obj || 'path' in obj) {
      const { bytes, path: file } = obj
      if (bytes instanceof Uint8Array) return decodeAudio(checkBytes(bytes, maxBytes), o)
      if (typeof bytes === 'string' && bytes !== '') return decodeAudio(await stringBytes(bytes, undefined, maxBytes), o)
      if (typeof file === 'string' && file !== '') {
        if (root === undefined) throw new ModelInputError('inputs.path names a file, but this server has no audio root folder to read it from')
        return decodeAudio((await readUnderRoot(root, file, maxBytes, false)) as Uint8Array, o)
      }
      throw new ModelInputError(`inputs.bytes must be audio file bytes (or inputs.path a file), got ${describeInput(bytes)}`)
    }
  }
  throw new ModelInputError(`automatic-speech-recognition expects inputs to be ${EXPECTED}; got ${describeInput(input)}`)
}

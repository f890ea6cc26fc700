/**
 * Audio inputs of automatic-speech-recognition models: turns what the classic Inference API sends
 * (base64 of a file, a file under the server's audio folder, file bytes, or samples) into the mono
 * Float32 samples at the model's sampling rate that `@huggingface/transformers` wants in Node,
 * where it cannot decode files itself (no AudioContext).
 *
 * WAV is decoded here, with no dependency; any other container (FLAC, MP3, OGG, WEBM, MP4, ...)
 * goes through `ffmpeg` when the server has it on its PATH. Every problem of an item's input is a
 * `ModelInputError` (`ERR_MODEL_INPUT`) whose message says what is wrong.
 */
import { spawn } from 'node:child_process'
import { open, realpath, mkdtemp, writeFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { AbortError, InvalidOptionError, ModelError, ModelInputError } from '../errors.js'
import { describeValue } from './describe-value.js'

/** Default sampling rate of `decodeAudio` and `readAudioInput`: 16 kHz, as wav2vec2 and whisper. */
export const DEFAULT_SAMPLE_RATE = 16_000
/** Default `maxBytes` of `readAudioInput`: 50 MiB of file bytes. */
export const DEFAULT_MAX_AUDIO_BYTES = 50 * 1024 * 1024
/** Default `maxSeconds`: one hour of audio. */
export const DEFAULT_MAX_AUDIO_SECONDS = 3600
/** Default `timeoutMs` of one ffmpeg run. */
export const DEFAULT_FFMPEG_TIMEOUT_MS = 60_000

// ---------------------------------------------------------------------------------------------
// Format detection

/** What the first bytes of a file say it is. */
export interface SniffedFormat {
  /** Short id: `wav`, `flac`, `mp3`, `ogg`, ..., `png`, `text`, or `unknown`. */
  id: string
  /** Human name for messages, e.g. `MP3`, `OGG (Opus)`, `PNG image`. */
  name: string
  /** Whether it is an audio (or audio/video) container that ffmpeg may decode. */
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
// WAV

const WAV_FORMAT_NAMES: Record<number, string> = {
  0x0001: 'PCM',
  0x0002: 'MS ADPCM',
  0x0003: 'IEEE float',
  0x0006: 'A-law',
  0x0007: 'µ-law',
  0x0011: 'IMA ADPCM',
  0x0022: 'TrueSpeech',
  0x0031: 'GSM 6.10',
  0x0040: 'G.721 ADPCM',
  0x0050: 'MPEG',
  0x0055: 'MP3',
  0x00ff: 'AAC',
  0x0160: 'WMA v1',
  0x0161: 'WMA',
  0x0162: 'WMA Pro',
  0x0163: 'WMA Lossless',
  0x1610: 'HE-AAC',
  0x2000: 'AC-3',
  0x2001: 'DTS',
  0x674f: 'Vorbis',
  0x6750: 'Vorbis',
  0x6751: 'Vorbis',
  0x704f: 'Opus',
  0xf1ac: 'FLAC',
  0xfffe: 'WAVE_FORMAT_EXTENSIBLE',
}

function formatCode(code: number): string {
  const hex = `0x${code.toString(16).toUpperCase().padStart(4, '0')}`
  const name = WAV_FORMAT_NAMES[code]
  return name === undefined ? hex : `${hex} (${name})`
}

// Tail of every WAVE_FORMAT_EXTENSIBLE sub-format GUID built from a classic format code
// (KSDATAFORMAT_SUBTYPE_*: xxxxxxxx-0000-0010-8000-00aa00389b71).
const GUID_TAIL = [0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xaa, 0x00, 0x38, 0x9b, 0x71]

interface WavFmt {
  /** Format code, the sub-format's for WAVE_FORMAT_EXTENSIBLE. */
  format: number
  channels: number
  sampleRate: number
  blockAlign: number
  bitsPerSample: number
  extensible: boolean
}

interface WavLayout {
  fmt: WavFmt
  dataOffset: number
  dataLength: number
}

function wavError(message: string): ModelInputError {
  return new ModelInputError(`WAV: ${message}`)
}

// A chunk header at `pos`: an id of letters, digits, space or underscore ('fmt ', 'LIST',
// '_PMX') and a size that fits in the file. Random sample bytes pass both by chance very rarely.
function plausibleChunkAt(bytes: Uint8Array, pos: number): boolean {
  if (pos + 8 > bytes.length) return false
  for (let i = pos; i < pos + 4; i++) {
    const b = bytes[i]
    const ok = (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b === 0x20 || b === 0x5f
    if (!ok) return false
  }
  const size = bytes[pos + 4] | (bytes[pos + 5] << 8) | (bytes[pos + 6] << 16) | (bytes[pos + 7] * 2 ** 24)
  return pos + 8 + size <= bytes.length
}

function parseFmt(view: DataView, bytes: Uint8Array, body: number, size: number): WavFmt {
  if (size < 16) throw wavError(`fmt chunk is ${size} bytes, expected at least 16`)
  let format = view.getUint16(body, true)
  const channels = view.getUint16(body + 2, true)
  const sampleRate = view.getUint32(body + 4, true)
  const blockAlign = view.getUint16(body + 12, true)
  const bitsPerSample = view.getUint16(body + 14, true)
  const extensible = format === 0xfffe
  if (extensible) {
    if (size < 40 || view.getUint16(body + 16, true) < 22) {
      throw wavError('WAVE_FORMAT_EXTENSIBLE fmt chunk is too short for its sub-format')
    }
    format = view.getUint16(body + 24, true)
    if (view.getUint16(body + 26, true) !== 0 || !startsWith(bytes, GUID_TAIL, body + 28)) {
      throw wavError(`unsupported WAVE_FORMAT_EXTENSIBLE sub-format ${hexBytes(bytes.subarray(body + 24, body + 40), 16)}`)
    }
  }
  if (channels === 0) throw wavError('fmt chunk declares 0 channels')
  if (sampleRate === 0) throw wavError('fmt chunk declares a sample rate of 0')
  return { format, channels, sampleRate, blockAlign, bitsPerSample, extensible }
}

// Finds the fmt and data chunks. Chunks may come in any order; sizes are trusted only as far as
// the file goes, since streaming writers leave 0 or 0xFFFFFFFF in the data size and truncated
// uploads are common.
function parseWavLayout(bytes: Uint8Array): WavLayout {
  const riff = ascii(bytes, 0, 4)
  if (riff === 'RIFX' && ascii(bytes, 8, 4) === 'WAVE') throw wavError('big-endian RIFX files are not supported')
  if (bytes.length < 12 || (riff !== 'RIFF' && riff !== 'RF64') || ascii(bytes, 8, 4) !== 'WAVE') {
    const sniffed = sniffAudioFormat(bytes)
    const looks = sniffed.id === 'unknown' ? `first bytes ${hexBytes(bytes, 4) || 'none'}` : `looks like ${sniffed.name}`
    throw new ModelInputError(`not a RIFF/WAVE file (${looks})`)
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const len = bytes.length
  let fmt: WavFmt | undefined
  let data: { offset: number; length: number } | undefined
  let ds64DataSize: number | undefined
  let pos = 12
  while (pos + 8 <= len) {
    const id = ascii(bytes, pos, 4)
    const size = view.getUint32(pos + 4, true)
    const body = pos + 8
    let end = body + size
    if (id === 'data' && data === undefined) {
      // (a second data chunk is skipped like any other chunk: the first is the audio)
      let streaming = false
      if (size === 0xffffffff) {
        // RF64 keeps the real size in ds64; a plain streaming writer never set it.
        streaming = ds64DataSize === undefined || body + ds64DataSize > len
        if (!streaming) end = body + (ds64DataSize as number)
      } else if (end > len) {
        streaming = true // truncated file: what is there
      } else if (size === 0 && !plausibleChunkAt(bytes, body)) {
        streaming = body < len // a writer that never patched the size, with samples after it
      }
      if (streaming) end = len
      data = { offset: body, length: end - body }
      if (streaming) break
    } else {
      if (end > len) {
        if (id === 'fmt ') throw wavError('fmt chunk is truncated')
        break // a truncated metadata chunk at the end: nothing more to find
      }
      if (id === 'fmt ' && fmt === undefined) fmt = parseFmt(view, bytes, body, size)
      if (id === 'ds64' && size >= 16 && riff === 'RF64') {
        ds64DataSize = view.getUint32(body + 8, true) + view.getUint32(body + 12, true) * 2 ** 32
      }
    }
    // Odd chunks are followed by a pad byte; some writers forget it, so skip it only when the
    // next chunk header is where the pad rule says (or neither place has one).
    if (size & 1 && (plausibleChunkAt(bytes, end + 1) || !plausibleChunkAt(bytes, end))) end += 1
    pos = end
  }
  if (fmt === undefined) throw wavError('no fmt chunk')
  if (data === undefined) throw wavError('no data chunk')
  return { fmt, dataOffset: data.offset, dataLength: data.length }
}

type SampleReader = (view: DataView, offset: number) => number

// G.711 tables, decoded to 16-bit values as the ITU reference does, scaled to [-1, 1).
const MULAW = new Float32Array(256)
const ALAW = new Float32Array(256)
for (let i = 0; i < 256; i++) {
  const u = ~i & 0xff
  const mag = ((((u & 0x0f) << 3) + 0x84) << ((u >> 4) & 7)) - 0x84
  MULAW[i] = (u & 0x80 ? -mag : mag) / 32768
  const a = i ^ 0x55
  const exp = (a >> 4) & 7
  const mant = a & 0x0f
  const amag = exp === 0 ? (mant << 4) + 8 : ((mant << 4) + 0x108) << (exp - 1)
  ALAW[i] = (a & 0x80 ? amag : -amag) / 32768
}

// How to read one sample of this format, with its container size in bytes; a string says why not.
function sampleReader(fmt: WavFmt): { read: SampleReader; bytes: number } | string {
  if (![0x0001, 0x0003, 0x0006, 0x0007].includes(fmt.format)) {
    return `unsupported WAV format ${formatCode(fmt.format)}${fmt.extensible ? ' in WAVE_FORMAT_EXTENSIBLE' : ''}`
  }
  const container = Math.ceil(fmt.bitsPerSample / 8)
  // Samples narrower than their container are left-justified (the WAV rule), so reading the
  // container as a whole gives the right scale; blockAlign tells the container when it is wider.
  let width = container
  if (fmt.blockAlign !== 0 && fmt.blockAlign !== fmt.channels * container) {
    const perChannel = fmt.blockAlign / fmt.channels
    if (Number.isInteger(perChannel) && perChannel > container && perChannel <= 4 && fmt.format === 1) width = perChannel
    else return `inconsistent fmt chunk: block align ${fmt.blockAlign} for ${fmt.channels} channel(s) of ${fmt.bitsPerSample} bits`
  }
  switch (fmt.format) {
    case 0x0001:
      if (fmt.bitsPerSample === 0 || fmt.bitsPerSample > 32) return `unsupported PCM bit depth ${fmt.bitsPerSample}`
      if (width === 1) return { bytes: 1, read: (v, o) => (v.getUint8(o) - 128) / 128 }
      if (width === 2) return { bytes: 2, read: (v, o) => v.getInt16(o, true) / 32768 }
      if (width === 3) {
        return { bytes: 3, read: (v, o) => ((v.getInt8(o + 2) << 16) | (v.getUint8(o + 1) << 8) | v.getUint8(o)) / 8388608 }
      }
      return { bytes: 4, read: (v, o) => v.getInt32(o, true) / 2147483648 }
    case 0x0003:
      if (fmt.bitsPerSample === 32) return { bytes: 4, read: (v, o) => v.getFloat32(o, true) }
      if (fmt.bitsPerSample === 64) return { bytes: 8, read: (v, o) => v.getFloat64(o, true) }
      return `unsupported IEEE float bit depth ${fmt.bitsPerSample}`
    case 0x0006:
      if (fmt.bitsPerSample !== 8) return `unsupported A-law bit depth ${fmt.bitsPerSample}`
      return { bytes: 1, read: (v, o) => ALAW[v.getUint8(o)] }
    case 0x0007:
      if (fmt.bitsPerSample !== 8) return `unsupported µ-law bit depth ${fmt.bitsPerSample}`
      return { bytes: 1, read: (v, o) => MULAW[v.getUint8(o)] }
    default:
      throw new Error('unreachable: format checked above')
  }
}

function frameCount(layout: WavLayout, frameBytes: number): number {
  // A truncated last frame (an interrupted upload or writer) is dropped.
  return Math.floor(layout.dataLength / frameBytes)
}

function decodeLayout(bytes: Uint8Array, layout: WavLayout, reader: { read: SampleReader; bytes: number }): Float32Array[] {
  const { channels } = layout.fmt
  const frameBytes = reader.bytes * channels
  const frames = frameCount(layout, frameBytes)
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const out: Float32Array[] = []
  for (let c = 0; c < channels; c++) {
    const samples = new Float32Array(frames)
    const read = reader.read
    let offset = layout.dataOffset + c * reader.bytes
    for (let i = 0; i < frames; i++, offset += frameBytes) samples[i] = read(view, offset)
    out.push(samples)
  }
  return out
}

/**
 * Decodes a RIFF/WAVE file into one Float32Array per channel, samples in [-1, 1] (float files as
 * stored). Reads PCM 8-bit unsigned and 16/24/32-bit signed, IEEE float 32/64, A-law and µ-law,
 * plain or WAVE_FORMAT_EXTENSIBLE, RF64; chunks in any order, with or without odd-size padding.
 * A data chunk of size 0 or 0xFFFFFFFF (streaming writers) or longer than the file is read to the
 * end of the file; a truncated last sample frame is dropped.
 * Throws a `ModelInputError` naming the problem: `not a RIFF/WAVE file`,
 * `WAV: unsupported WAV format 0x0055 (MP3)`, `WAV: no data chunk`, ...
 */
export function decodeWav(bytes: Uint8Array): { sampleRate: number; channels: Float32Array[] } {
  const layout = parseWavLayout(bytes)
  const reader = sampleReader(layout.fmt)
  if (typeof reader === 'string') throw wavError(reader)
  return { sampleRate: layout.fmt.sampleRate, channels: decodeLayout(bytes, layout, reader) }
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
// linearly interpolated, under a Kaiser window: resampy's `kaiser_fast` filter.
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

/**
 * Resamples mono samples from `fromRate` to `toRate` with band-limited (windowed-sinc, Kaiser
 * window, 16 zero crossings: resampy's `kaiser_fast`) interpolation; the cutoff is 0.85 × the
 * lower of the two Nyquist frequencies (6.8 kHz for 16 kHz output), so downsampling filters out
 * what would alias. The output has
 * `round(samples.length × toRate / fromRate)` samples. Equal rates return `samples` itself.
 */
export function resample(samples: Float32Array, fromRate: number, toRate: number): Float32Array {
  checkRate('fromRate', fromRate)
  checkRate('toRate', toRate)
  if (fromRate === toRate) return samples
  const n = samples.length
  const outLength = Math.round((n * toRate) / fromRate)
  const out = new Float32Array(outLength)
  const table = kernel()
  const last = ZERO_CROSSINGS * RESOLUTION
  const scale = Math.min(1, toRate / fromRate) * ROLLOFF // cutoff, in cycles per input half-sample
  const halfWidth = ZERO_CROSSINGS / scale // input samples each side
  const step = fromRate / toRate
  const tableStep = scale * RESOLUTION
  for (let j = 0; j < outLength; j++) {
    const t = j * step
    const kMin = Math.max(0, Math.ceil(t - halfWidth))
    const kMax = Math.min(n - 1, Math.floor(t + halfWidth))
    let acc = 0
    for (let k = kMin; k <= kMax; k++) {
      const d = Math.abs(t - k) * tableStep
      const i = d | 0
      if (i >= last) continue
      const w = table[i] + (d - i) * (table[i + 1] - table[i])
      acc += samples[k] * w
    }
    out[j] = acc * scale
  }
  return out
}

// ---------------------------------------------------------------------------------------------
// decodeAudio

/** Options of `decodeAudio`. */
export interface DecodeAudioOptions {
  /** Sampling rate of the result. Default 16000. */
  sampleRate?: number
  /** Longest audio accepted, in seconds of the result. Default 3600. */
  maxSeconds?: number
  /** ffmpeg command (a name looked up on PATH, or a path). Default `ffmpeg`. */
  ffmpeg?: string
  /** Longest one ffmpeg run may take, in milliseconds; it is killed then. Default 60000. */
  timeoutMs?: number
  /** Aborts a running ffmpeg (rejects with `AbortError`). */
  signal?: AbortSignal
}

interface ResolvedDecodeOptions {
  sampleRate: number
  maxSeconds: number
  ffmpeg: string
  timeoutMs: number
  signal: AbortSignal | undefined
}

function resolveDecodeOptions(options: DecodeAudioOptions = {}): ResolvedDecodeOptions {
  // Defaults first, then each given option; an option given as undefined keeps its default.
  const o: ResolvedDecodeOptions = {
    sampleRate: options.sampleRate ?? DEFAULT_SAMPLE_RATE,
    maxSeconds: options.maxSeconds ?? DEFAULT_MAX_AUDIO_SECONDS,
    ffmpeg: options.ffmpeg ?? 'ffmpeg',
    timeoutMs: options.timeoutMs ?? DEFAULT_FFMPEG_TIMEOUT_MS,
    signal: options.signal,
  }
  if (!Number.isInteger(o.sampleRate) || o.sampleRate < 1000 || o.sampleRate > 768_000) {
    throw new InvalidOptionError(`sampleRate must be an integer from 1000 to 768000, got ${describeValue(o.sampleRate)}`)
  }
  if (typeof o.maxSeconds !== 'number' || !(o.maxSeconds > 0)) {
    throw new InvalidOptionError(`maxSeconds must be a positive number, got ${describeValue(o.maxSeconds)}`)
  }
  if (typeof o.ffmpeg !== 'string' || o.ffmpeg === '') {
    throw new InvalidOptionError(`ffmpeg must be a non-empty command name or path, got ${describeValue(o.ffmpeg)}`)
  }
  if (typeof o.timeoutMs !== 'number' || !(o.timeoutMs > 0)) {
    throw new InvalidOptionError(`timeoutMs must be a positive number of milliseconds, got ${describeValue(o.timeoutMs)}`)
  }
  return o
}

function tooLong(seconds: number, max: number): ModelInputError {
  return new ModelInputError(`audio is longer than the ${max} seconds accepted (${seconds.toFixed(1)} s)`)
}

/**
 * Decodes an audio file's bytes into mono Float32 samples at `sampleRate` (default 16000). WAV is
 * decoded natively (see `decodeWav`), mixed down with `toMono` and brought to the rate with
 * `resample`. Any other audio container (FLAC, MP3, OGG, WEBM, MP4, ...; told by its magic bytes,
 * also WAV files of a codec `decodeWav` does not read) is decoded by `ffmpeg` when it can be run,
 * its stdin and stdout piped, its output capped at `maxSeconds` and its run at `timeoutMs`.
 * Rejects with a `ModelInputError` naming the format when ffmpeg is not on the PATH, when the
 * bytes are not audio (`not an audio file: looks like a PNG image`), or when decoding fails; with a
 * `ModelError` when ffmpeg times out or cannot be started.
 */
export async function decodeAudio(bytes: Uint8Array, options: DecodeAudioOptions = {}): Promise<Float32Array> {
  const o = resolveDecodeOptions(options)
  if (bytes.length === 0) throw new ModelInputError('audio is empty (0 bytes)')
  const format = sniffAudioFormat(bytes)
  if (format.id === 'wav') {
    const layout = parseWavLayout(bytes)
    const reader = sampleReader(layout.fmt)
    if (typeof reader === 'string') {
      // A codec we do not read (ADPCM, MP3 in WAV, ...): ffmpeg may; a broken header it would not fix.
      if (!reader.startsWith('unsupported WAV format')) throw wavError(reader)
      return runFfmpeg(bytes, `WAV format ${formatCode(layout.fmt.format)}`, false, o)
    }
    const frames = frameCount(layout, reader.bytes * layout.fmt.channels)
    if (frames / layout.fmt.sampleRate > o.maxSeconds) throw tooLong(frames / layout.fmt.sampleRate, o.maxSeconds)
    return resample(toMono(decodeLayout(bytes, layout, reader)), layout.fmt.sampleRate, o.sampleRate)
  }
  if (format.audio) return runFfmpeg(bytes, format.name, format.id === 'mp4', o)
  if (format.id !== 'unknown') throw new ModelInputError(`not an audio file: looks like ${format.name}`)
  // No magic we know: ffmpeg probes many more formats (MPEG-TS, AC-3, raw streams).
  return runFfmpeg(bytes, `audio of an unrecognized format (first bytes ${hexBytes(bytes, 4)})`, false, o)
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1

function f32leToArray(chunks: Buffer[], total: number): Float32Array {
  const n = Math.floor(total / 4)
  const out = new Float32Array(n)
  const raw = new Uint8Array(out.buffer)
  let at = 0
  for (const chunk of chunks) {
    const take = Math.min(chunk.length, n * 4 - at)
    if (take <= 0) break
    raw.set(chunk.subarray(0, take), at)
    at += take
  }
  if (!LITTLE_ENDIAN) {
    const view = new DataView(out.buffer)
    for (let i = 0; i < n; i++) out[i] = view.getFloat32(i * 4, true)
  }
  return out
}

// Runs ffmpeg once. MP4 keeps its index (moov) at the end of many files, which ffmpeg cannot
// reach on a pipe, so those go through a temporary file instead of stdin.
async function runFfmpeg(bytes: Uint8Array, formatName: string, seekable: boolean, o: ResolvedDecodeOptions): Promise<Float32Array> {
  if (o.signal?.aborted) throw new AbortError(undefined, { cause: o.signal.reason })
  let tmp: string | undefined
  try {
    let input = 'pipe:0'
    if (seekable) {
      tmp = await mkdtemp(path.join(tmpdir(), 'inference-stream-audio-'))
      input = path.join(tmp, 'input')
      await writeFile(input, bytes)
    }
    return await spawnFfmpeg(bytes, formatName, input, o)
  } finally {
    if (tmp !== undefined) await rm(tmp, { recursive: true, force: true })
  }
}

function spawnFfmpeg(bytes: Uint8Array, formatName: string, input: string, o: ResolvedDecodeOptions): Promise<Float32Array> {
  const args = ['-hide_banner', '-loglevel', 'error', '-i', input, '-f', 'f32le', '-ac', '1', '-ar', String(o.sampleRate), 'pipe:1']
  const maxBytes = Math.ceil(o.maxSeconds * o.sampleRate) * 4
  return new Promise<Float32Array>((resolve, reject) => {
    const child = spawn(o.ffmpeg, args, { stdio: ['pipe', 'pipe', 'pipe'], windowsHide: true })
    const chunks: Buffer[] = []
    let total = 0
    let stderr = ''
    let settled = false
    const done = (err: Error | undefined, value?: Float32Array): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      o.signal?.removeEventListener('abort', onAbort)
      if (err !== undefined) {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
        reject(err)
      } else resolve(value as Float32Array)
    }
    const onAbort = (): void => done(new AbortError(undefined, { cause: o.signal?.reason }))
    const timer = setTimeout(() => {
      done(new ModelError(`ffmpeg did not finish decoding the ${formatName} input within ${o.timeoutMs} ms`))
    }, o.timeoutMs)
    o.signal?.addEventListener('abort', onAbort, { once: true })
    child.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') {
        done(
          new ModelInputError(
            `${formatName} needs ffmpeg on the server's PATH to be decoded, and it is not there; ` +
              'WAV audio works without it (send WAV, or install ffmpeg on the server)',
          ),
        )
      } else done(new ModelError(`cannot run ffmpeg to decode the ${formatName} input: ${err.message}`, { cause: err }))
    })
    // ffmpeg may exit before reading all its input (bad data): its exit status tells, not EPIPE.
    child.stdin.on('error', () => {})
    child.stdout.on('data', (chunk: Buffer) => {
      total += chunk.length
      if (total > maxBytes) {
        done(tooLong(total / 4 / o.sampleRate, o.maxSeconds))
        return
      }
      chunks.push(chunk)
    })
    child.stderr.setEncoding('utf8')
    child.stderr.on('data', (text: string) => {
      stderr = (stderr + text).slice(-2000) // the end says what went wrong; keep it bounded
    })
    child.on('close', (code, signal) => {
      if (code === 0) {
        done(undefined, f32leToArray(chunks, total))
        return
      }
      const why = stderr.trim().split('\n').filter(Boolean).pop()?.slice(0, 300) ?? (signal !== null ? `killed by ${signal}` : `exit code ${code}`)
      done(new ModelInputError(`ffmpeg could not decode the ${formatName} input: ${why}`))
    })
    if (input === 'pipe:0') child.stdin.end(bytes)
    else child.stdin.end()
  })
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

import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import libsamplerate from '@alexanderolsen/libsamplerate-js'
import t from 'tap'
import { InvalidOptionError, ModelError, ModelInputError } from '../lib/errors.js'
import { decodeAudio, readAudioInput, resample, sniffAudioFormat, StreamResampler, toMono } from '../lib/models/audio.js'
import { encodedBytes, encoderSkip } from './helpers/audio-files.js'

// ---------------------------------------------------------------------------------------------
// A small WAV encoder of our own, for every variant the decoder must read.

type Encoding = 'pcm8' | 'pcm16' | 'pcm24' | 'pcm32' | 'pcm24in32' | 'float32' | 'float64' | 'alaw' | 'mulaw'

interface Chunk {
  id: string
  body: Uint8Array
}

interface WavSpec {
  channels: Float32Array[]
  sampleRate: number
  encoding: Encoding
  extensible?: boolean
  /** Chunks before fmt, between fmt and data, after data. */
  before?: Chunk[]
  between?: Chunk[]
  after?: Chunk[]
  /** Put data before fmt. */
  dataFirst?: boolean
  /** Size written in the data chunk's header instead of the real one. */
  dataSize?: number
  /** Leave out the pad byte of odd chunks (a common writer bug). */
  noPad?: boolean
  /** Format code written instead of the encoding's. */
  formatCode?: number
  /** Raw data bytes instead of encoding `channels`. */
  rawData?: Uint8Array
}

const BITS: Record<Encoding, [code: number, bits: number, container: number]> = {
  pcm8: [1, 8, 1],
  pcm16: [1, 16, 2],
  pcm24: [1, 24, 3],
  pcm32: [1, 32, 4],
  pcm24in32: [1, 24, 4],
  float32: [3, 32, 4],
  float64: [3, 64, 8],
  alaw: [6, 8, 1],
  mulaw: [7, 8, 1],
}

const clamp = (v: number, lo: number, hi: number): number => Math.min(hi, Math.max(lo, v))

/** The value a sample takes after encoding with `enc` and decoding exactly. */
function quantized(x: number, enc: Encoding): number {
  switch (enc) {
    case 'pcm8':
      return (clamp(Math.round(x * 128) + 128, 0, 255) - 128) / 128
    case 'pcm16':
      return clamp(Math.round(x * 32768), -32768, 32767) / 32768
    case 'pcm24':
    case 'pcm24in32':
      return clamp(Math.round(x * 8388608), -8388608, 8388607) / 8388608
    case 'pcm32':
      return clamp(Math.round(x * 2147483648), -2147483648, 2147483647) / 2147483648
    default:
      return x
  }
}

function encodeSample(view: DataView, at: number, x: number, enc: Encoding): void {
  switch (enc) {
    case 'pcm8':
      view.setUint8(at, clamp(Math.round(x * 128) + 128, 0, 255))
      break
    case 'pcm16':
      view.setInt16(at, clamp(Math.round(x * 32768), -32768, 32767), true)
      break
    case 'pcm24': {
      const v = clamp(Math.round(x * 8388608), -8388608, 8388607)
      view.setUint8(at, v & 0xff)
      view.setUint8(at + 1, (v >> 8) & 0xff)
      view.setUint8(at + 2, (v >> 16) & 0xff)
      break
    }
    case 'pcm24in32':
      view.setInt32(at, clamp(Math.round(x * 8388608), -8388608, 8388607) * 256, true)
      break
    case 'pcm32':
      view.setInt32(at, clamp(Math.round(x * 2147483648), -2147483648, 2147483647), true)
      break
    case 'float32':
      view.setFloat32(at, x, true)
      break
    case 'float64':
      view.setFloat64(at, x, true)
      break
    default:
      throw new Error(`no encoder for ${enc}`)
  }
}

function chunk(id: string, body: Uint8Array, pad: boolean): Uint8Array {
  const out = new Uint8Array(8 + body.length + (pad && body.length % 2 === 1 ? 1 : 0))
  out.set(Buffer.from(id, 'latin1'), 0)
  new DataView(out.buffer).setUint32(4, body.length, true)
  out.set(body, 8)
  return out
}

function concat(parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts))
}

function encodeWav(spec: WavSpec): Uint8Array {
  const [code, bits, container] = BITS[spec.encoding]
  const nch = spec.channels.length
  const frames = spec.channels[0]?.length ?? 0
  const blockAlign = nch * container
  let data = spec.rawData
  if (data === undefined) {
    data = new Uint8Array(frames * blockAlign)
    const view = new DataView(data.buffer)
    for (let i = 0; i < frames; i++) for (let c = 0; c < nch; c++) encodeSample(view, i * blockAlign + c * container, spec.channels[c][i], spec.encoding)
  }
  const fmt = new Uint8Array(spec.extensible ? 40 : 16)
  const v = new DataView(fmt.buffer)
  v.setUint16(0, spec.extensible ? 0xfffe : (spec.formatCode ?? code), true)
  v.setUint16(2, nch, true)
  v.setUint32(4, spec.sampleRate, true)
  v.setUint32(8, spec.sampleRate * blockAlign, true)
  v.setUint16(12, blockAlign, true)
  v.setUint16(14, container * 8, true) // extensible and plain alike: the container size
  if (!spec.extensible) v.setUint16(14, spec.encoding === 'pcm24in32' ? 24 : container * 8, true)
  if (spec.extensible) {
    v.setUint16(16, 22, true)
    v.setUint16(18, bits, true) // valid bits
    v.setUint32(20, nch === 2 ? 3 : 4, true) // channel mask
    v.setUint16(24, spec.formatCode ?? code, true)
    fmt.set([0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xaa, 0x00, 0x38, 0x9b, 0x71], 26)
  }
  const pad = !spec.noPad
  const fmtChunk = chunk('fmt ', fmt, pad)
  const dataChunk = chunk('data', data, pad)
  if (spec.dataSize !== undefined) new DataView(dataChunk.buffer).setUint32(4, spec.dataSize, true)
  const middle = spec.dataFirst
    ? [dataChunk, ...(spec.between ?? []).map((c) => chunk(c.id, c.body, pad)), fmtChunk]
    : [fmtChunk, ...(spec.between ?? []).map((c) => chunk(c.id, c.body, pad)), dataChunk]
  const body = concat([
    Buffer.from('WAVE'),
    ...(spec.before ?? []).map((c) => chunk(c.id, c.body, pad)),
    ...middle,
    ...(spec.after ?? []).map((c) => chunk(c.id, c.body, pad)),
  ])
  const head = new Uint8Array(8)
  head.set(Buffer.from('RIFF'), 0)
  new DataView(head.buffer).setUint32(4, body.length, true)
  return concat([head, body])
}

function sine(freq: number, rate: number, length: number, amplitude = 0.9, phase = 0.3): Float32Array {
  const out = new Float32Array(length)
  for (let i = 0; i < length; i++) out[i] = amplitude * Math.sin((2 * Math.PI * freq * i) / rate + phase)
  return out
}

/** A test signal with the extremes: a sine, then -1, 0, a near-full-scale positive value. */
function testSignal(length = 200, freq = 440, rate = 8000): Float32Array {
  const s = sine(freq, rate, length)
  s[0] = -1
  s[1] = 0
  s[2] = 0.99
  s[3] = -0.5
  return s
}

function maxError(actual: Float32Array, expected: ArrayLike<number>): number {
  let worst = 0
  for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(actual[i] - expected[i]))
  return worst
}

function zeroCrossings(s: Float32Array): number {
  let n = 0
  for (let i = 1; i < s.length; i++) if ((s[i - 1] < 0 && s[i] >= 0) || (s[i - 1] >= 0 && s[i] < 0)) n++
  return n
}

function rms(s: Float32Array, from = 0, to = s.length): number {
  let sum = 0
  for (let i = from; i < to; i++) sum += s[i] * s[i]
  return Math.sqrt(sum / (to - from))
}

const label = (id: string): Uint8Array => new Uint8Array(Buffer.from(id))

const TOLERANCE: Record<Encoding, number> = {
  pcm8: 1 / 256 + 1e-7,
  pcm16: 1 / 65536 + 1e-7,
  pcm24: 1e-7,
  pcm24in32: 1e-7,
  pcm32: 1e-7,
  float32: 0,
  float64: 1e-7,
  alaw: 0,
  mulaw: 0,
}

// ---------------------------------------------------------------------------------------------
// decodeWav

// WAV is decoded by audio-decode now; these check what the server relies on through decodeAudio
// at the file's own rate (no resampling): depths, G.711, chunk layouts, and the errors.
const atRate = (bytes: Uint8Array, sampleRate = 8000): Promise<Float32Array> => decodeAudio(bytes, { sampleRate })

function monoOf(channels: Float32Array[], encoding: Encoding): number[] {
  return Array.from(channels[0], (_, i) => channels.reduce((sum, ch) => sum + quantized(ch[i], encoding), 0) / channels.length)
}

t.test('WAV: every PCM and float depth, mono and stereo, plain and extensible, mixed to mono', async (t) => {
  const left = testSignal()
  const right = sine(1000, 8000, 200, 0.5, 1)
  // pcm24in32: 24 valid bits in 32-bit containers (bitsPerSample 24 and blockAlign 4 plain;
  // bitsPerSample 32 and validBits 24 extensible), which audio-decode alone misreads.
  for (const encoding of ['pcm8', 'pcm16', 'pcm24', 'pcm24in32', 'pcm32', 'float32', 'float64'] as const) {
    for (const extensible of [false, true]) {
      for (const channels of [[left], [left, right]]) {
        const name = `${encoding}${extensible ? ' extensible' : ''} ${channels.length}ch`
        const out = await atRate(encodeWav({ channels, sampleRate: 8000, encoding, extensible }))
        t.equal(out.length, 200, `${name}: length`)
        // Within one quantization step of the exact value (audio-decode scales positive integers by
        // 1/(2^(bits-1) - 1), we wrote them with 2^(bits-1)).
        const step = { pcm8: 1 / 128, pcm16: 1 / 32768, pcm24: 2 ** -23, pcm24in32: 2 ** -23, pcm32: 2 ** -31, float32: 0, float64: 0 }[encoding]
        const err = maxError(out, monoOf(channels, encoding))
        t.ok(err <= step + 1e-7, `${name}: within ${step} (max error ${err})`)
      }
    }
  }
  const pcm16 = await atRate(encodeWav({ channels: [left], sampleRate: 8000, encoding: 'pcm16' }))
  t.equal(pcm16[0], -1)
  t.equal(pcm16[1], 0)
  t.equal(pcm16[3], -0.5)
})

t.test('WAV: A-law and µ-law with the G.711 values', async (t) => {
  const rawData = new Uint8Array([0xd5, 0x55, 0xaa, 0x2a])
  const alaw = await atRate(encodeWav({ channels: [new Float32Array(4)], sampleRate: 8000, encoding: 'alaw', rawData }))
  t.same(Array.from(alaw, (x) => x * 32768), [8, -8, 32256, -32256])
  const mu = new Uint8Array([0xff, 0x7f, 0x00, 0x80, 0xf0])
  const mulaw = await atRate(encodeWav({ channels: [new Float32Array(5)], sampleRate: 8000, encoding: 'mulaw', rawData: mu }))
  t.same(Array.from(mulaw, (x) => x * 32768), [0, 0, -32124, 32124, 120])
})

t.test('WAV: other chunks around fmt and data; streaming data sizes', async (t) => {
  const signal = testSignal(100)
  const expected = Array.from(signal, (x) => quantized(x, 'pcm16'))
  const list = { id: 'LIST', body: label('INFOISFT\x06\x00\x00\x00Lavf6\x00') } // even length: 18
  const oddList = { id: 'LIST', body: label('INFOISFT\x05\x00\x00\x00Lavf\x00') } // odd length: 17, then a pad byte
  const variants: [string, Partial<WavSpec>][] = [
    ['LIST before fmt', { before: [list] }],
    ['LIST and junk between fmt and data', { between: [list, { id: 'junk', body: new Uint8Array(4) }] }],
    ['chunks after data', { after: [list, { id: 'id3 ', body: new Uint8Array(10) }] }],
    ['odd LIST and its pad byte before fmt', { before: [oddList] }],
    ['odd LIST and odd junk between fmt and data', { between: [oddList, { id: 'junk', body: new Uint8Array(3) }] }],
    ['odd chunks without pad bytes (a writer bug)', { before: [oddList], between: [{ id: 'junk', body: new Uint8Array([1, 2, 3]) }], noPad: true }],
    ['data before fmt', { dataFirst: true, between: [oddList] }],
    ['data size 0xFFFFFFFF (streaming writer)', { dataSize: 0xffffffff }],
    ['data size 0 (streaming writer)', { dataSize: 0 }],
    ['data size past the end (truncated)', { dataSize: 100 * 2 + 1000 }],
  ]
  for (const [name, spec] of variants) {
    const out = await atRate(encodeWav({ channels: [signal], sampleRate: 8000, encoding: 'pcm16', ...spec }))
    t.equal(out.length, 100, `${name}: length`)
    t.ok(maxError(out, expected) < 1e-4, `${name}: samples`)
  }
  // 8-bit mono of an odd length: the data chunk itself has a pad byte, then a chunk follows.
  const odd = await atRate(encodeWav({ channels: [testSignal(101)], sampleRate: 8000, encoding: 'pcm8', after: [oddList] }))
  t.equal(odd.length, 101, 'odd 8-bit data, its pad byte and a chunk after it: length')
  t.ok(maxError(odd, Array.from(testSignal(101), (x) => quantized(x, 'pcm8'))) <= 1 / 128 + 1e-7, 'odd 8-bit data: samples')
  // A truncated last frame is dropped.
  const stereo = encodeWav({ channels: [signal, signal], sampleRate: 8000, encoding: 'pcm24' })
  t.equal((await atRate(stereo.subarray(0, stereo.length - 1))).length, 99)
})

t.test('WAV: RF64 takes the data size from ds64', async (t) => {
  const signal = testSignal(64)
  const fmtAndData = encodeWav({ channels: [signal], sampleRate: 8000, encoding: 'pcm16' }).subarray(12) // 'fmt ' chunk, then 'data'
  const ds64 = new Uint8Array(28)
  new DataView(ds64.buffer).setUint32(8, 64 * 2, true) // data size, low 32 bits; high bits 0
  new DataView(ds64.buffer).setUint32(16, 64, true) // sample count
  const bytes = concat([label('RF64'), new Uint8Array([0xff, 0xff, 0xff, 0xff]), label('WAVE'), chunk('ds64', ds64, true), fmtAndData, chunk('LIST', label('INFOtail'), true)])
  const dataSizeAt = 12 + 36 + 24 + 4
  t.equal(Buffer.from(bytes.subarray(dataSizeAt - 4, dataSizeAt)).toString('latin1'), 'data')
  new DataView(bytes.buffer).setUint32(dataSizeAt, 0xffffffff, true)
  const out = await atRate(bytes)
  t.equal(out.length, 64, 'the LIST chunk after the data is not read as samples')
  t.ok(maxError(out, Array.from(signal, (x) => quantized(x, 'pcm16'))) <= 1 / 32768 + 1e-7, 'samples')
})

// A little-endian WAV of encodeWav as big-endian RIFX: chunk sizes, fmt fields and samples swapped.
function toRifx(wav: Uint8Array, sampleBytes: number): Uint8Array {
  const out = wav.slice()
  const view = new DataView(out.buffer)
  const swap = (at: number, n: number): void => void out.subarray(at, at + n).reverse()
  out.set(label('RIFX'))
  swap(4, 4)
  for (let pos = 12; pos + 8 <= out.length; ) {
    const id = Buffer.from(out.subarray(pos, pos + 4)).toString('latin1')
    const size = view.getUint32(pos + 4, true)
    swap(pos + 4, 4)
    if (id === 'fmt ') for (const [at, n] of [[0, 2], [2, 2], [4, 4], [8, 4], [12, 2], [14, 2], [16, 2], [18, 2], [20, 4], [24, 4]]) if (at + n <= size) swap(pos + 8 + at, n)
    if (id === 'data') for (let at = pos + 8; at < pos + 8 + size; at += sampleBytes) swap(at, sampleBytes)
    pos += 8 + size + (size & 1)
  }
  return out
}

t.test('WAV: big-endian RIFX, every depth, gives the little-endian file\'s samples', async (t) => {
  const channels = [testSignal(), sine(1000, 8000, 200, 0.5, 1)]
  for (const [encoding, bytes] of [['pcm8', 1], ['pcm16', 2], ['pcm24', 3], ['pcm24in32', 4], ['pcm32', 4], ['float32', 4], ['float64', 8]] as const) {
    for (const extensible of [false, true]) {
      const wav = encodeWav({ channels, sampleRate: 8000, encoding, extensible, before: [{ id: 'LIST', body: new Uint8Array(5) }] })
      const rifx = toRifx(wav, bytes)
      t.equal(sniffAudioFormat(rifx).name, 'WAV (big-endian RIFX)')
      const [le, be] = [await atRate(wav), await atRate(rifx)]
      t.equal(be.length, 200, `${encoding}${extensible ? ' extensible' : ''}: length`)
      t.equal(maxError(be, le), 0, `${encoding}${extensible ? ' extensible' : ''}: the same samples`)
    }
  }
})

t.test('WAV: what cannot be decoded says so', async (t) => {
  const good = encodeWav({ channels: [testSignal(10)], sampleRate: 8000, encoding: 'pcm16' })
  const cases: [string, Uint8Array, RegExp][] = [
    ['no data', good.subarray(0, 12 + 24), /^WAV audio could not be decoded: no data chunk$/],
    ['no fmt', encodeWav({ channels: [testSignal(10)], sampleRate: 8000, encoding: 'pcm16', dataFirst: true }).subarray(0, 12 + 8 + 20), /^WAV audio could not be decoded: no fmt chunk$/],
    ['empty data', encodeWav({ channels: [new Float32Array(0)], sampleRate: 8000, encoding: 'pcm16', after: [{ id: 'LIST', body: new Uint8Array(40).fill(7) }] }), /^WAV audio could not be decoded: no samples in it/],
    ['MP3 in WAV', encodeWav({ channels: [testSignal(10)], sampleRate: 8000, encoding: 'pcm16', formatCode: 0x55 }), /^WAV audio could not be decoded \(corrupt or truncated\?\): Unsupported WAV format: 0x55$/],
    ['RIFX header only', concat([label('RIFX'), new Uint8Array(4), label('WAVE')]), /^WAV \(big-endian RIFX\) audio could not be decoded: no fmt chunk$/],
  ]
  for (const [name, bytes, message] of cases) await t.rejects(atRate(bytes), { name: 'ModelInputError', code: 'ERR_MODEL_INPUT', message }, name)
})

// ---------------------------------------------------------------------------------------------
// toMono, resample

t.test('toMono averages channels; one channel is returned as is', async (t) => {
  const a = new Float32Array([1, 0.5, -1])
  const b = new Float32Array([0, 0.5, 1])
  t.same(Array.from(toMono([a, b])), [0.5, 0.5, 0])
  t.equal(toMono([a]), a)
  t.equal(toMono([]).length, 0)
  t.throws(() => toMono([a, new Float32Array(2)]), InvalidOptionError)
})

t.test('resample keeps a sine frequency, amplitude and the length', async (t) => {
  for (const from of [44100, 8000, 22050, 48000]) {
    const input = sine(440, from, from) // one second
    const out = resample(input, from, 16000)
    t.equal(out.length, 16000, `${from} -> 16000: length`)
    const crossings = zeroCrossings(out)
    t.ok(Math.abs(crossings - 880) <= 2, `${from} -> 16000: ${crossings} zero crossings, 880 expected`)
    const level = rms(out, 200, 15800) / (0.9 / Math.SQRT2)
    t.ok(Math.abs(level - 1) < 0.01, `${from} -> 16000: amplitude kept (${level.toFixed(4)})`)
  }
  // Lengths round to the nearest sample.
  t.equal(resample(new Float32Array(441), 44100, 16000).length, 160)
  t.equal(resample(new Float32Array(1001), 8000, 16000).length, 2002)
  t.equal(resample(new Float32Array(0), 8000, 16000).length, 0)
  const same = new Float32Array(5)
  t.equal(resample(same, 16000, 16000), same)
  t.throws(() => resample(same, 0, 16000), { name: 'InvalidOptionError', message: /^fromRate must be a positive number/ })
  t.throws(() => resample(same, 8000, Number.NaN), { name: 'InvalidOptionError', message: /^toRate/ })
})

t.test('StreamResampler fed in pieces gives resample\'s samples exactly', async (t) => {
  const input = Float32Array.from(sine(440, 44100, 30000), (x, i) => x + 0.2 * Math.sin(i * 0.37))
  for (const [from, to] of [[44100, 16000], [8000, 16000], [48000, 16000]]) {
    const whole = resample(input, from, to)
    for (const piece of [1, 7, 1000, 4096]) {
      const r = new StreamResampler(from, to)
      const parts: number[] = []
      for (let i = 0; i < input.length; i += piece) parts.push(...r.push(input.subarray(i, i + piece)))
      parts.push(...r.end())
      t.equal(parts.length, whole.length, `${from} -> ${to} in pieces of ${piece}: length`)
      t.equal(maxError(Float32Array.from(parts), whole), 0, `${from} -> ${to} in pieces of ${piece}: samples`)
    }
  }
})

t.test('resample is band-limited: passband kept, what would alias is filtered out', async (t) => {
  const pass = resample(sine(3000, 44100, 44100), 44100, 16000)
  const passLevel = rms(pass, 200, 15800) / (0.9 / Math.SQRT2)
  t.ok(passLevel > 0.98 && passLevel < 1.02, `3 kHz kept (${passLevel.toFixed(4)})`)
  // 10 kHz is over the 8 kHz Nyquist of 16 kHz: plain interpolation folds it to 6 kHz.
  const alias = resample(sine(10000, 44100, 44100), 44100, 16000)
  const aliasLevel = rms(alias, 200, 15800) / (0.9 / Math.SQRT2)
  t.ok(aliasLevel < 0.01, `10 kHz removed (${aliasLevel.toFixed(5)} of its level left)`)
  // DC stays DC.
  const dc = resample(new Float32Array(8000).fill(0.25), 8000, 16000)
  t.ok(Math.abs(dc[8000] - 0.25) < 1e-3, `DC kept (${dc[8000]})`)
})

t.test('resample matches libsamplerate SINC_BEST (the maintained reference) on sine sweeps to 16 kHz', async (t) => {
  // A linear sweep from f0 to f1 Hz over 2 s, amplitude 0.5.
  const sweep = (f0: number, f1: number, rate: number): Float32Array =>
    Float32Array.from({ length: 2 * rate }, (_, i) => 0.5 * Math.sin(2 * Math.PI * (f0 * (i / rate) + ((f1 - f0) / 4) * (i / rate) ** 2)))
  // RMS of a (or a − b) over their overlap but 800 samples at each end, in dB of the sweep's RMS.
  const levelDb = (a: Float32Array, b?: Float32Array): number => {
    const n = Math.min(a.length, b?.length ?? a.length)
    let sum = 0
    for (let i = 800; i < n - 800; i++) sum += (a[i] - (b?.[i] ?? 0)) ** 2
    return 10 * Math.log10(sum / (n - 1600) / 0.125)
  }
  // Stated tolerances (measured: -98.8 to -100.1 dB, -69.5 dB, -103.8 dB): in the passband to
  // 5 kHz our output is libsamplerate's within -90 dB RMS, same delay (none); to 6 kHz, in our
  // roll-off (cutoff 0.85 × 8 kHz, Kaiser window), within -60 dB; a sweep from 9 to 20 kHz (all
  // above the 8 kHz Nyquist: what would alias) leaves under -90 dB in both.
  for (const from of [44100, 48000]) {
    for (const [f0, f1, bound] of [[100, 5000, -90], [100, 6000, -60], [9000, 20000, -90]]) {
      const input = sweep(f0, f1, from)
      const src = await libsamplerate.create(1, from, 16000, { converterType: libsamplerate.ConverterType.SRC_SINC_BEST_QUALITY })
      const reference = src.simple(input)
      src.destroy()
      const ours = resample(input, from, 16000)
      t.ok(Math.abs(ours.length - reference.length) <= 1, `${from} Hz: ${ours.length} samples, libsamplerate ${reference.length}`)
      if (f0 < 8000) {
        const diff = levelDb(ours, reference)
        t.ok(diff < bound, `${from} Hz, ${f0}-${f1} Hz: ours - SINC_BEST is ${diff.toFixed(1)} dB (< ${bound})`)
      } else {
        const [oursDb, bestDb] = [levelDb(ours), levelDb(reference)]
        t.ok(oursDb < bound && bestDb < bound, `${from} Hz, ${f0}-${f1} Hz: ${oursDb.toFixed(1)} dB left (SINC_BEST ${bestDb.toFixed(1)} dB; < ${bound})`)
      }
    }
  }
})

// ---------------------------------------------------------------------------------------------
// decodeAudio, format detection, ffmpeg

const MAGIC: [string, Uint8Array][] = [
  ['MP3', concat([label('ID3'), new Uint8Array([4, 0, 0, 0, 0, 0, 0]), new Uint8Array(100).fill(0x55)])],
  ['MP3', concat([new Uint8Array([0xff, 0xfb, 0x90, 0x64]), new Uint8Array(100)])],
  ['FLAC', concat([label('fLaC'), new Uint8Array([0, 0, 0, 34]), new Uint8Array(100)])],
  ['OGG (Opus)', concat([label('OggS'), new Uint8Array(24), label('OpusHead'), new Uint8Array(50)])],
  ['OGG (Vorbis)', concat([label('OggS'), new Uint8Array(24), label('\x01vorbis'), new Uint8Array(50)])],
  ['WEBM', concat([new Uint8Array([0x1a, 0x45, 0xdf, 0xa3, 0x9f, 0x42, 0x86, 0x81, 0x01]), label('B\x82\x84webm'), new Uint8Array(50)])],
  ['MP4/M4A', concat([new Uint8Array([0, 0, 0, 0x20]), label('ftypM4A '), new Uint8Array(50)])],
  ['AAC (ADTS)', concat([new Uint8Array([0xff, 0xf1, 0x50, 0x80]), new Uint8Array(50)])],
]

t.test('sniffAudioFormat names formats by their magic bytes', async (t) => {
  for (const [name, bytes] of MAGIC) t.equal(sniffAudioFormat(bytes).name, name)
  t.match(sniffAudioFormat(encodeWav({ channels: [testSignal(4)], sampleRate: 8000, encoding: 'pcm16' })), { id: 'wav', audio: true })
  t.match(sniffAudioFormat(new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])), { name: 'PNG image', audio: false })
  t.match(sniffAudioFormat(label('%PDF-1.7\n')), { name: 'PDF document', audio: false })
  t.match(sniffAudioFormat(new Uint8Array([0, 1, 2, 3, 250])), { id: 'unknown', audio: false })
})

t.test('decodeAudio decodes WAV to mono at the rate asked', async (t) => {
  const left = sine(440, 44100, 44100)
  const right = sine(440, 44100, 44100, 0.9, 0.3 + Math.PI) // opposite phase: mono is silence
  const stereo = encodeWav({ channels: [left, right], sampleRate: 44100, encoding: 'pcm16' })
  const silent = await decodeAudio(stereo)
  t.equal(silent.length, 16000, 'default sampleRate is 16000')
  t.ok(rms(silent) < 1e-4, 'channels averaged')
  const mono = await decodeAudio(encodeWav({ channels: [left, left], sampleRate: 44100, encoding: 'float32' }), { sampleRate: 8000 })
  t.equal(mono.length, 8000)
  t.ok(Math.abs(zeroCrossings(mono) - 880) <= 2)
  const native = encodeWav({ channels: [testSignal(100, 440, 16000)], sampleRate: 16000, encoding: 'float32' })
  t.same(Array.from(await decodeAudio(native)), Array.from(testSignal(100, 440, 16000)), 'no resampling at the same rate')
  await t.rejects(decodeAudio(native, { maxSeconds: 0.005 }), { name: 'ModelInputError', message: /^audio is longer than the 0\.005 seconds accepted/ })
  await t.rejects(decodeAudio(native, { sampleRate: 12.5 }), { name: 'InvalidOptionError', message: /^sampleRate must be an integer/ })
  await t.rejects(decodeAudio(native, { timeoutMs: -1 }), { name: 'InvalidOptionError', message: /^timeoutMs/ })
  t.same(Array.from(await decodeAudio(native, { sampleRate: undefined })).length, 100, 'undefined options keep their defaults')
})

t.test('decodeAudio refuses non-audio bytes, naming what they look like', async (t) => {
  const cases: [Uint8Array, RegExp][] = [
    [new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13]), /^not an audio file: looks like PNG image$/],
    [new Uint8Array([0xff, 0xd8, 0xff, 0xe0, 0, 16]), /^not an audio file: looks like JPEG image$/],
    [label('%PDF-1.4\n%âãÏÓ'), /^not an audio file: looks like PDF document$/],
    [label('{"inputs": "hello"}'), /^not an audio file: looks like text$/],
    [label(Buffer.from(encodeWav({ channels: [testSignal(40)], sampleRate: 8000, encoding: 'pcm16' })).toString('base64')), /^not an audio file: looks like text that looks like base64 \(encoded twice\?\)$/],
    [new Uint8Array(0), /^audio is empty \(0 bytes\)$/],
  ]
  for (const [bytes, message] of cases) await t.rejects(decodeAudio(bytes), { name: 'ModelInputError', code: 'ERR_MODEL_INPUT', message })
})

// ---------------------------------------------------------------------------------------------
// FLAC, MP3 and OGG, made by Debian's encoders from one WAV

// The reference: a 44.1 kHz stereo 16-bit WAV of two tones (440 Hz left, 1 kHz right), 1.5 s.
const TONE_RATE = 44100
const toneLeft = sine(440, TONE_RATE, TONE_RATE * 1.5, 0.5)
const toneRight = sine(1000, TONE_RATE, TONE_RATE * 1.5, 0.3, 1)
const toneWav = encodeWav({ channels: [toneLeft, toneRight], sampleRate: TONE_RATE, encoding: 'pcm16' })

/** The delay (in samples) of `x` against `ref` in [0, maxLag], by the best normalized correlation. */
function lagOf(x: Float32Array, ref: Float32Array, maxLag: number): number {
  let best = 0
  let bestScore = -Infinity
  for (let lag = 0; lag <= maxLag; lag++) {
    let dot = 0
    let norm = 0
    const n = Math.min(ref.length, x.length - lag)
    for (let i = 0; i < n; i++) {
      dot += x[i + lag] * ref[i]
      norm += x[i + lag] * x[i + lag]
    }
    const score = dot / Math.sqrt(norm || 1)
    if (score > bestScore) {
      bestScore = score
      best = lag
    }
  }
  return best
}

/** RMS of (x shifted by lag − ref) over their overlap, leaving 400 samples at each end, relative to ref's RMS. */
function relativeError(x: Float32Array, ref: Float32Array, lag: number): number {
  const n = Math.min(ref.length, x.length - lag)
  let err = 0
  let level = 0
  for (let i = 400; i < n - 400; i++) {
    err += (x[i + lag] - ref[i]) ** 2
    level += ref[i] ** 2
  }
  return Math.sqrt(err / level)
}

t.test('FLAC, MP3 and OGG of one tone decode to the WAV reference\'s samples, 16 kHz mono', { skip: encoderSkip() }, async (t) => {
  const dir = t.testdir({})
  const reference = await decodeAudio(toneWav)
  t.equal(reference.length, 24000, 'the WAV: 1.5 s at 16 kHz')
  // Mono is the average of the two tones.
  const expected = resample(toMono([toneLeft, toneRight].map((ch) => Float32Array.from(ch, (x) => quantized(x, 'pcm16')))), TONE_RATE, 16000)
  t.ok(maxError(reference, expected) < 1e-4, 'the WAV is the tones, mixed and resampled')
  // Stated tolerances: FLAC is lossless: its samples are the WAV's within one 16-bit step
  // (2^-15; the WAV decoder scales positive values by 1/32767, FLAC's by 1/32768). Vorbis (q5)
  // and MP3 (320 kbit/s) are lossy: within 2% (Vorbis) and 1% (MP3) RMS of the reference once
  // aligned (measured 0.9% and 0.01%; 5% at 128 kbit/s); both keep the length (mpg123 drops LAME's delay and padding
  // by its info tag; the alignment is still searched by correlation, not assumed).
  const flac = await decodeAudio(encodedBytes(dir, 'tone', toneWav, 'flac'))
  t.equal(flac.length, reference.length, 'FLAC: same length')
  t.ok(maxError(flac, reference) <= 2 ** -15, `FLAC: the same samples within 2^-15 (max error ${maxError(flac, reference)})`)
  const ogg = await decodeAudio(encodedBytes(dir, 'tone', toneWav, 'ogg'))
  t.equal(ogg.length, reference.length, 'OGG: same length')
  const oggLag = lagOf(ogg, reference, 50)
  t.equal(oggLag, 0, 'OGG: no delay')
  const oggError = relativeError(ogg, reference, 0)
  t.ok(oggError < 0.02, `OGG: ${(oggError * 100).toFixed(2)}% RMS error (< 2%)`)
  const mp3 = await decodeAudio(encodedBytes(dir, 'tone', toneWav, 'mp3'))
  const mp3Lag = lagOf(mp3, reference, 1200)
  t.ok(mp3.length >= reference.length + mp3Lag, `MP3: ${mp3.length} samples, the whole tone after a delay of ${mp3Lag}`)
  const mp3Error = relativeError(mp3, reference, mp3Lag)
  t.ok(mp3Error < 0.01, `MP3: ${(mp3Error * 100).toFixed(2)}% RMS error (< 1%)`)
  for (const [name, out] of [['FLAC', flac], ['OGG', ogg], ['MP3', mp3]] as const) {
    t.type(out, Float32Array, `${name}: mono Float32Array`)
  }
  // At another model rate the same holds.
  const at8k = await decodeAudio(readFileSync(path.join(dir, 'tone.flac')), { sampleRate: 8000 })
  t.ok(maxError(at8k, await decodeAudio(toneWav, { sampleRate: 8000 })) <= 2 ** -15, 'FLAC at 8 kHz: the WAV\'s samples')
})

t.test('a corrupt or truncated file fails with what is wrong; limits hold for every format', { skip: encoderSkip() }, async (t) => {
  const dir = t.testdir({})
  const flac = encodedBytes(dir, 'tone', toneWav, 'flac')
  const garbage = Buffer.concat([flac.subarray(0, 42), Buffer.alloc(20000, 0x5a)]) // the STREAMINFO header, then junk
  await t.rejects(decodeAudio(garbage), { name: 'ModelInputError', code: 'ERR_MODEL_INPUT', message: /^FLAC audio could not be decoded/ })
  await t.rejects(decodeAudio(flac.subarray(0, 3000)), { name: 'ModelInputError', message: /^FLAC audio could not be decoded/ }, 'truncated in its metadata')
  const half = await decodeAudio(flac.subarray(0, Math.floor(flac.length / 2)))
  t.ok(half.length > 0 && half.length < 24000, `cut in half: the ${half.length} samples that are there`)
  encodedBytes(dir, 'tone', toneWav, 'mp3')
  const ogg = encodedBytes(dir, 'tone', toneWav, 'ogg')
  await t.rejects(decodeAudio(ogg.subarray(0, 200)), { name: 'ModelInputError', message: /^OGG \(Vorbis\) audio could not be decoded/ })
  for (const format of ['flac', 'mp3', 'ogg'] as const) {
    const bytes = readFileSync(path.join(dir, `tone.${format}`))
    await t.rejects(decodeAudio(bytes, { maxSeconds: 0.5 }), { name: 'ModelInputError', message: /^audio is longer than the 0\.5 seconds accepted/ }, `${format}: maxSeconds`)
    const ac = new AbortController()
    ac.abort()
    await t.rejects(decodeAudio(bytes, { signal: ac.signal }), { name: 'AbortError', code: 'ABORT_ERR' }, `${format}: aborted`)
  }
  // A long file and a tiny time limit: stopped between blocks.
  const long = encodeWav({ channels: [sine(440, 44100, 44100 * 20)], sampleRate: 44100, encoding: 'pcm16' })
  await t.rejects(decodeAudio(long, { timeoutMs: 1 }), { name: 'ModelError', message: /^decoding the WAV input took over 1 ms; stopped$/ })
})

// Deterministic junk bytes (a linear congruential generator).
function junk(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length)
  for (let i = 0, x = seed; i < length; i++) out[i] = (x = (Math.imul(x, 1103515245) + 12345) >>> 0) >>> 24
  return out
}

t.test('MP3: a clearly corrupt file fails, one with some damaged frames decodes, mpg123 prints nothing', { skip: encoderSkip() }, async (t) => {
  const dir = t.testdir({})
  const mp3 = encodedBytes(dir, 'tone', toneWav, 'mp3')
  const id3 = concat([label('ID3'), new Uint8Array([3, 0, 0, 0, 0, 0, 20]), concat([label('TIT2'), new Uint8Array([0, 0, 0, 10, 0, 0, 0]), label('a title'), new Uint8Array(2)])])
  const corrupt: [string, Uint8Array, RegExp][] = [
    ['junk after the first frame header', concat([mp3.subarray(0, 4), junk(mp3.length - 4)]), /^MP3 audio could not be decoded \(corrupt or truncated\?\): [01]% of its \d+ bytes of audio are MPEG frames, under the 50% of a playable file$/],
    ['junk after the first two frames', concat([mp3.subarray(0, 2000), junk(mp3.length)]), /^MP3 audio could not be decoded \(corrupt or truncated\?\): \d% of its/],
    ['an ID3 tag, then junk', concat([id3, junk(40000, 7)]), /^MP3 audio could not be decoded \(corrupt or truncated\?\): 0% of its 40000 bytes/],
    ['an ID3 tag alone', id3, /^MP3 audio could not be decoded \(corrupt or truncated\?\): 0% of its 0 bytes/],
    ['truncated to its first frame header', mp3.subarray(0, 4), /^MP3 audio could not be decoded: no samples in it/],
  ]
  for (const [name, bytes, message] of corrupt) await t.rejects(decodeAudio(bytes), { name: 'ModelInputError', code: 'ERR_MODEL_INPUT', message }, name)
  // Damaged: 300 junk bytes at 5 places and 8000 inserted in the middle (about 14% of the file).
  const damaged = concat([mp3.subarray(0, 30000), junk(8000, 3), mp3.subarray(30000)])
  for (let k = 1; k <= 5; k++) damaged.set(junk(300, k + 10), k * 9000)
  const { default: audioDecode } = await import('audio-decode')
  const error = console.error
  let lines = 0
  console.error = () => void lines++
  try {
    const raw = await audioDecode(damaged)
    t.ok(lines > 0 && raw.channelData[0].length > 0, `audio-decode alone decodes it and prints ${lines} lines of mpg123 errors`)
    lines = 0
    const out = await decodeAudio(damaged)
    t.equal(lines, 0, 'decodeAudio prints none')
    const reference = await decodeAudio(mp3)
    t.ok(out.length > 0.8 * reference.length, `damaged: ${out.length} samples of ${reference.length}`)
  } finally {
    console.error = error
  }
})

t.test('formats without a decoder, and unknown bytes, say so', async (t) => {
  const cases: [Uint8Array, RegExp][] = [
    [concat([label('OggS'), new Uint8Array(24), label('\x7fFLAC'), new Uint8Array(50)]), /^OGG \(FLAC\) audio is not a format this server decodes$/],
    [concat([label('.snd'), new Uint8Array(40)]), /^AU audio is not a format this server decodes$/],
    [new Uint8Array([0, 1, 2, 3, 250, 251]), /^not an audio file of a known format \(first bytes 00 01 02 03\)$/],
  ]
  for (const [bytes, message] of cases) await t.rejects(decodeAudio(bytes), { name: 'ModelInputError', code: 'ERR_MODEL_INPUT', message })
})

// ---------------------------------------------------------------------------------------------
// readAudioInput

t.test('readAudioInput: strings are base64 without a root', async (t) => {
  const wav = encodeWav({ channels: [sine(440, 8000, 8000)], sampleRate: 8000, encoding: 'pcm16' })
  const b64 = Buffer.from(wav).toString('base64')
  const out = await readAudioInput(b64)
  t.type(out, Float32Array)
  t.equal(out.length, 16000)
  t.ok(Math.abs(zeroCrossings(out) - 880) <= 2)
  t.equal((await readAudioInput(`data:audio/wav;base64,${b64}`)).length, 16000, 'a data URL')
  t.equal((await readAudioInput(b64.replace(/(.{76})/g, '$1\n'))).length, 16000, 'MIME line breaks')
  t.equal((await readAudioInput(b64.replace(/=+$/, ''))).length, 16000, 'no padding')
  t.equal((await readAudioInput(Buffer.from(wav).toString('base64url'))).length, 16000, 'base64url')
  for (const bad of ['clips/a.wav', 'not base64!', `${b64}?`]) {
    await t.rejects(readAudioInput(bad), {
      name: 'ModelInputError',
      message: 'inputs is a string that is not valid base64 audio (this server reads no file paths)',
    })
  }
  await t.rejects(readAudioInput(''), { name: 'ModelInputError', message: /^inputs is an empty string/ })
  await t.rejects(readAudioInput(Buffer.from('hello there').toString('base64')), { name: 'ModelInputError', message: 'not an audio file: looks like text' })
  await t.rejects(readAudioInput(b64, { maxBytes: 1000 }), {
    name: 'ModelInputError',
    message: `inputs is ${wav.length} bytes of audio once decoded from base64, over the 1000 bytes accepted`,
  })
})

t.test('readAudioInput: with a root, strings are files inside it, else base64', async (t) => {
  const wav = encodeWav({ channels: [sine(440, 8000, 8000)], sampleRate: 8000, encoding: 'pcm16' })
  const dir = t.testdir({ root: { clips: { 'a.wav': Buffer.from(wav), abcd: Buffer.from(wav) }, empty: {} }, outside: { 'secret.wav': Buffer.from(wav) } })
  const root = path.join(dir, 'root')
  symlinkSync(path.join(dir, 'outside', 'secret.wav'), path.join(root, 'clips', 'link.wav'))
  symlinkSync(path.join(dir, 'outside'), path.join(root, 'outdir'))
  for (const name of ['clips/a.wav', './clips/a.wav', 'clips/../clips/a.wav', path.join(root, 'clips', 'a.wav'), 'clips/abcd']) {
    const out = await readAudioInput(name, { root })
    t.equal(out.length, 16000, name)
  }
  t.equal((await readAudioInput(Buffer.from(wav).toString('base64'), { root })).length, 16000, 'base64 still works')
  const refused: [string, string][] = [
    ['../outside/secret.wav', 'inputs "../outside/secret.wav" is outside the audio root folder; paths must stay inside it (refused)'],
    ['clips/../../outside/secret.wav', 'inputs "clips/../../outside/secret.wav" is outside the audio root folder; paths must stay inside it (refused)'],
    ['/etc/../etc/hosts.wav', 'inputs "/etc/../etc/hosts.wav" is outside the audio root folder; paths must stay inside it (refused)'],
    ['clips/link.wav', 'inputs "clips/link.wav" links outside the audio root folder (refused)'],
    ['outdir/secret.wav', 'inputs "outdir/secret.wav" links outside the audio root folder (refused)'],
    ['clips/missing.wav', 'inputs "clips/missing.wav" is neither a file in the audio root folder nor base64 audio'],
    ['clips', 'inputs "clips" is not a file in the audio root folder'],
    ['.', 'inputs "." is not a file in the audio root folder'],
  ]
  for (const [name, message] of refused) await t.rejects(readAudioInput(name, { root }), { name: 'ModelInputError', code: 'ERR_MODEL_INPUT', message }, name)
  // An existing file by its absolute path (long: the message shortens it).
  await t.rejects(readAudioInput(path.join(dir, 'outside', 'secret.wav'), { root }), {
    name: 'ModelInputError',
    message: /^inputs "\/.*(\.\.\.)?" is outside the audio root folder; paths must stay inside it \(refused\)$/,
  })
  await t.rejects(readAudioInput('clips/a.wav', { root, maxBytes: 100 }), {
    name: 'ModelInputError',
    message: `inputs "clips/a.wav" is ${wav.length} bytes, over the 100 bytes accepted`,
  })
  await t.rejects(readAudioInput('clips/a.wav', { root: path.join(dir, 'nope') }), { name: 'ModelError', message: /^the audio root folder cannot be read/ })
  await t.rejects(readAudioInput('a', { root: '' }), { name: 'InvalidOptionError', message: /^root must be/ })
})

t.test('readAudioInput: bytes, samples and objects', async (t) => {
  const wav = encodeWav({ channels: [sine(440, 8000, 800)], sampleRate: 8000, encoding: 'pcm8' })
  t.equal((await readAudioInput(Buffer.from(wav))).length, 1600, 'a Buffer')
  t.equal((await readAudioInput(new Uint8Array(wav))).length, 1600, 'a Uint8Array')
  t.equal((await readAudioInput(new Uint8Array(wav).buffer)).length, 1600, 'an ArrayBuffer')
  await t.rejects(readAudioInput(wav, { maxBytes: 500 }), { name: 'ModelInputError', message: `inputs is ${wav.length} bytes of audio, over the 500 bytes accepted` })

  t.same(Array.from(await readAudioInput([0.5, -0.5, 0])), [0.5, -0.5, 0], 'numbers are samples at the target rate')
  const f32 = new Float32Array([0.25, 0.5])
  t.equal(await readAudioInput(f32), f32)
  t.same(Array.from(await readAudioInput(new Float64Array([0.25, 0.5]))), [0.25, 0.5])
  await t.rejects(readAudioInput([0.1, Number.NaN]), { name: 'ModelInputError', message: 'inputs must be audio samples (finite numbers), got number NaN at index 1' })
  await t.rejects(readAudioInput([0.1, 'x']), { name: 'ModelInputError', message: 'inputs must be audio samples (finite numbers), got a string at index 1' })
  await t.rejects(readAudioInput([]), { name: 'ModelInputError', message: 'inputs is an empty array of samples' })
  await t.rejects(readAudioInput(new Array(20).fill(0), { maxSeconds: 0.001 }), { name: 'ModelInputError', message: 'inputs has 20 samples, over the 16 accepted' })

  const at8k = sine(440, 8000, 8000)
  const fromArray = await readAudioInput({ array: Array.from(at8k), sampling_rate: 8000 })
  t.equal(fromArray.length, 16000, '{array, sampling_rate} resampled')
  t.ok(Math.abs(zeroCrossings(fromArray) - 880) <= 2)
  t.equal((await readAudioInput({ raw: at8k, sampling_rate: 8000 })).length, 16000, '{raw, sampling_rate}')
  await t.rejects(readAudioInput({ array: [0.1] }), { name: 'ModelInputError', message: /^inputs\.sampling_rate must be a number/ })
  await t.rejects(readAudioInput({ array: 'x', sampling_rate: 8000 }), { name: 'ModelInputError', message: 'inputs.array must be an array of samples, got a string' })

  const dir = t.testdir({ clips: { 'b.wav': Buffer.from(wav) } })
  t.equal((await readAudioInput({ bytes: wav, path: 'whatever.wav' })).length, 1600, '{bytes, path}: the bytes')
  t.equal((await readAudioInput({ bytes: null, path: 'clips/b.wav' }, { root: dir })).length, 1600, '{bytes: null, path}: the file')
  await t.rejects(readAudioInput({ bytes: null, path: 'clips/b.wav' }), { name: 'ModelInputError', message: /no audio root folder/ })
  await t.rejects(readAudioInput({ bytes: null, path: '../b.wav' }, { root: dir }), { name: 'ModelInputError', message: /outside the audio root folder/ })

  const empty = encodeWav({ channels: [new Float32Array(0)], sampleRate: 8000, encoding: 'pcm16' })
  await t.rejects(readAudioInput(empty), { name: 'ModelInputError', message: 'WAV audio could not be decoded: no samples in it (empty, corrupt or truncated?)' })

  const wrong: [unknown, string][] = [
    [42, 'number 42'],
    [null, 'null'],
    [undefined, 'undefined'],
    [true, 'boolean true'],
    [{ foo: 1 }, 'an object'],
    [new Int16Array(4), 'an Int16Array'],
  ]
  for (const [input, got] of wrong) {
    await t.rejects(readAudioInput(input), {
      name: 'ModelInputError',
      code: 'ERR_MODEL_INPUT',
      message: `automatic-speech-recognition expects inputs to be base64 audio, a file path (with an audio root folder), audio file bytes, an array of samples, or {array, sampling_rate}; got ${got}`,
    })
  }
  t.ok(new ModelInputError('x') instanceof Error)
})

t.test('a stereo 24-bit extensible WAV at 48 kHz, as base64, comes out as 16 kHz mono', async (t) => {
  const dir = t.testdir({})
  mkdirSync(path.join(dir, 'sub'))
  const left = sine(440, 48000, 48000, 0.6)
  const wav = encodeWav({ channels: [left, left], sampleRate: 48000, encoding: 'pcm24', extensible: true, before: [{ id: 'LIST', body: new Uint8Array(6) }] })
  writeFileSync(path.join(dir, 'sub', 'x.wav'), wav)
  for (const input of [Buffer.from(wav).toString('base64'), 'sub/x.wav']) {
    const out = await readAudioInput(input, { root: dir })
    t.equal(out.length, 16000)
    t.ok(Math.abs(zeroCrossings(out) - 880) <= 2)
    t.ok(Math.abs(rms(out, 200, 15800) - 0.6 / Math.SQRT2) < 0.005)
  }
})

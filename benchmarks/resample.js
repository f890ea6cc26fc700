// Question: should decodeAudio resample with a maintained library instead of our windowed-sinc
// (resampy's kaiser_fast)? Compared side by side on the same inputs: libsamplerate (WebAssembly,
// @alexanderolsen/libsamplerate-js, SINC_MEDIUM and SINC_BEST) and wave-resampler (pure JS,
// its sinc mode), both dev dependencies.
//   npm run build && node benchmarks/resample.js        (about a minute on 2 cores)
// Fixture: sines at 44.1 kHz and 48 kHz -> 16 kHz, 2 s each. Accuracy: RMS error against the exact
// sine at 16 kHz for tones in the passband (100 Hz .. 6 kHz, the tail of a sweep), and the level
// left of tones above the 8 kHz Nyquist (9 .. 20 kHz: what would alias), in dB (lower is better).
// Speed: 60 s of 44.1 kHz audio to 16 kHz, median of 5 runs, as samples of input per second.
// Results: benchmarks/results/resample.{json,md}. test/audio.ts holds ours to SINC_BEST.
import { writeFileSync } from 'node:fs'
import libsamplerate from '@alexanderolsen/libsamplerate-js'
import waveResampler from 'wave-resampler'
import { resample } from '../dist/index.js'

const impls = { 'ours (kaiser_fast)': async (x, from, to) => resample(x, from, to) }
for (const [name, type] of [['libsamplerate SINC_MEDIUM', libsamplerate.ConverterType.SRC_SINC_MEDIUM_QUALITY], ['libsamplerate SINC_BEST', libsamplerate.ConverterType.SRC_SINC_BEST_QUALITY]]) {
  impls[name] = async (x, from, to) => {
    const src = await libsamplerate.create(1, from, to, { converterType: type })
    try {
      return src.simple(x)
    } finally {
      src.destroy()
    }
  }
}
impls['wave-resampler sinc'] = async (x, from, to) => Float32Array.from(waveResampler.resample(x, from, to, { method: 'sinc' }))

const sine = (f, rate, n, phase = 0.3) => Float32Array.from({ length: n }, (_, i) => 0.5 * Math.sin((2 * Math.PI * f * i) / rate + phase))
function rmsOf(x, from, to) {
  let s = 0
  for (let i = from; i < to; i++) s += x[i] * x[i]
  return Math.sqrt(s / (to - from))
}
// Best alignment within ±64 samples (libraries differ in their delay), then the RMS error in dB of the tone's level.
function errorDb(out, expected) {
  let best = Infinity
  for (let lag = -64; lag <= 64; lag++) {
    let e = 0
    let n = 0
    for (let i = 1000; i < expected.length - 1000; i++) {
      const j = i + lag
      if (j < 0 || j >= out.length) continue
      e += (out[j] - expected[i]) ** 2
      n++
    }
    best = Math.min(best, Math.sqrt(e / n))
  }
  return 20 * Math.log10(best / (0.5 / Math.SQRT2))
}

const rows = []
for (const [name, fn] of Object.entries(impls)) {
  const row = { name }
  for (const from of [44100, 48000]) {
    let worstPass = -Infinity
    for (const f of [100, 440, 1000, 2000, 3000, 4000, 5000, 6000]) {
      const out = await fn(sine(f, from, from * 2), from, 16000)
      worstPass = Math.max(worstPass, errorDb(out, sine(f, 16000, 32000)))
    }
    let worstAlias = -Infinity
    for (const f of [9000, 10000, 12000, 15000, 20000]) {
      const out = await fn(sine(f, from, from * 2), from, 16000)
      worstAlias = Math.max(worstAlias, 20 * Math.log10(rmsOf(out, 1000, out.length - 1000) / (0.5 / Math.SQRT2)))
    }
    row[`passband error dB ${from}`] = Number(worstPass.toFixed(1))
    row[`aliasing dB ${from}`] = Number(worstAlias.toFixed(1))
  }
  const long = sine(440, 44100, 44100 * 60)
  const times = []
  for (let r = 0; r < 5; r++) {
    const t0 = performance.now()
    await fn(long, 44100, 16000)
    times.push(performance.now() - t0)
  }
  times.sort((a, b) => a - b)
  row['ms for 60 s'] = Math.round(times[2])
  row['M input samples/s'] = Number((long.length / times[2] / 1000).toFixed(1))
  rows.push(row)
  console.log(JSON.stringify(row))
}
const cols = Object.keys(rows[0])
const md = [`| ${cols.join(' | ')} |`, `|${cols.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${cols.map((c) => r[c] ?? '–').join(' | ')} |`)].join('\n')
writeFileSync(new URL('./results/resample.json', import.meta.url), `${JSON.stringify({ node: process.version, rows }, null, 2)}\n`)
writeFileSync(new URL('./results/resample.md', import.meta.url), `# resample\n\n\`node benchmarks/resample.js\` (Node ${process.version}, 2 shared cores)\n\n${md}\n`)

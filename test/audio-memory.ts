// Decoding a 10-minute FLAC (44.1 kHz mono, made by `flac` at test time) to 16 kHz stays within the
// memory bound docs/models.md states: the process grows by at most 3 × the result + 64 MiB over
// the file's bytes (block-by-block decoding, mixing and resampling; the whole recording is never
// held at its source rate). Run in a child process so the RSS is this decode's alone.
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import t from 'tap'
import { wav } from './fixtures/tiny-models.js'
import { encodeAudio, encoderSkip } from './helpers/audio-files.js'

t.test('a 10-minute FLAC decodes within the stated memory bound', { skip: encoderSkip() }, async (t) => {
  const dir = t.testdir({})
  const rate = 44100
  const samples = new Float32Array(rate * 600)
  for (let i = 0; i < samples.length; i++) samples[i] = 0.4 * Math.sin((2 * Math.PI * 440 * i) / rate) + 0.1 * Math.sin(i * 0.0123)
  const file = encodeAudio(dir, 'ten-minutes', wav(samples, rate), 'flac')
  const child = spawnSync(process.execPath, [join(import.meta.dirname, 'fixtures', 'decode-memory-child.js'), file], { encoding: 'utf8' })
  t.equal(child.status, 0, child.stderr)
  const m = JSON.parse(child.stdout) as { fileBytes: number; samples: number; ms: number; before: number; peak: number }
  t.equal(m.samples, 16000 * 600, '10 minutes at 16 kHz')
  const resultBytes = m.samples * 4
  const bound = 3 * resultBytes + 64 * 1024 * 1024
  const growth = m.peak - m.before
  const mib = (n: number): string => (n / 1048576).toFixed(1)
  t.ok(growth <= bound, `grew ${mib(growth)} MiB for a ${mib(resultBytes)} MiB result (bound ${mib(bound)} MiB; file ${mib(m.fileBytes)} MiB, ${m.ms} ms)`)
  t.comment(`peak RSS growth ${mib(growth)} MiB, result ${mib(resultBytes)} MiB, FLAC ${mib(m.fileBytes)} MiB, ${m.ms} ms`)
})

/**
 * Audio files of the tests, made at test time with Debian's encoders (`flac`, `lame`, `oggenc`
 * from vorbis-tools; .ci/run installs them). With CI=true the tests that need them run and fail
 * when one is missing; elsewhere they are skipped, saying which tool is absent.
 */
import { spawnSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

/** The file formats the tests encode, and the command of each. */
export const ENCODERS = {
  flac: (wav: string, out: string) => ['flac', '--silent', '--force', '-o', out, wav],
  mp3: (wav: string, out: string) => ['lame', '--quiet', '-b', '320', wav, out],
  ogg: (wav: string, out: string) => ['oggenc', '--quiet', '-q', '5', '-o', out, wav],
} as const

/** An encoded format. */
export type EncodedFormat = keyof typeof ENCODERS

function onPath(tool: string): boolean {
  return spawnSync(tool, ['--version'], { stdio: 'ignore' }).error === undefined
}

/** The encoders that are not on the PATH. */
export function missingEncoders(): string[] {
  return ['flac', 'lame', 'oggenc'].filter((tool) => !onPath(tool))
}

/** `skip` for a test that needs the encoders: false in CI (it must run), else the reason when one is missing. */
export function encoderSkip(): string | false {
  if (process.env.CI === 'true') return false
  const missing = missingEncoders()
  return missing.length === 0 ? false : `${missing.join(', ')} not on the PATH (apt-get install flac lame vorbis-tools; with CI=true these tests run and fail instead)`
}

/** Writes `wavBytes` as `name.wav` in `dir` and encodes it to `format`: the encoded file's path. */
export function encodeAudio(dir: string, name: string, wavBytes: Uint8Array, format: EncodedFormat): string {
  const wav = join(dir, `${name}.wav`)
  writeFileSync(wav, wavBytes)
  const out = join(dir, `${name}.${format}`)
  const [cmd, ...args] = ENCODERS[format](wav, out)
  const r = spawnSync(cmd, args, { encoding: 'utf8' })
  if (r.error !== undefined || r.status !== 0) throw new Error(`${cmd} failed: ${r.error?.message ?? r.stderr}`)
  return out
}

/** The bytes of `encodeAudio`'s file. */
export function encodedBytes(dir: string, name: string, wavBytes: Uint8Array, format: EncodedFormat): Buffer {
  return readFileSync(encodeAudio(dir, name, wavBytes, format))
}

/**
 * A PATH without any folder that has `ffmpeg` in it: what a test gives a server's child process
 * (or sets for itself) to show a decode needs no ffmpeg.
 */
export function pathWithoutFfmpeg(path = process.env.PATH ?? ''): string {
  return path
    .split(':')
    .filter((dir) => dir !== '' && spawnSync('test', ['-x', join(dir, 'ffmpeg')]).status !== 0)
    .join(':')
}

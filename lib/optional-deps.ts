/**
 * The optional packages: heavy or native parts that only some uses need, so a plain install stays
 * small and needs nothing but the npm registry (docs/install.md). Each is an optional peer
 * dependency, imported on first use; a missing one is a MissingDependencyError saying what to
 * install.
 */
import { createRequire } from 'node:module'
import { MissingDependencyError } from './errors.js'

/** Each optional package: the version range this release works with, and what needs it. */
export const OPTIONAL_DEPENDENCIES = {
  '@huggingface/transformers': { range: '^4.3.2', neededFor: 'Hugging Face Hub models (run by transformers.js)' },
  'better-sqlite3': { range: '^12.11.1', neededFor: 'the durable state and bulk jobs (serve --data-dir)' },
  ioredis: { range: '^6.0.0', neededFor: 'state shared by several processes on Redis' },
  'audio-decode': { range: '^3.12.0', neededFor: 'decoding audio files for speech models' },
} as const

/** Name of an optional package. */
export type OptionalDependency = keyof typeof OPTIONAL_DEPENDENCIES

const require = createRequire(import.meta.url)

/** The error for a missing optional package, naming what asked for it (`what`) and how to add it. */
export function missingDependency(name: OptionalDependency, what: string, cause?: unknown): MissingDependencyError {
  const dep = OPTIONAL_DEPENDENCIES[name]
  return new MissingDependencyError(
    `${what} needs the optional package ${name} (${dep.neededFor}), which is not installed: run \`npm install ${name}@${dep.range}\``,
    name,
    { cause },
  )
}

/** Whether an optional package can be found from this library (without loading it). */
export function hasDependency(name: OptionalDependency): boolean {
  try {
    import.meta.resolve(name)
    return true
  } catch {
    return false
  }
}

// A failed import of `name` itself (not of something it needs, which is a broken install to report as is).
function isNotFound(err: unknown, name: string): boolean {
  const e = err as { code?: string; message?: string }
  return (e?.code === 'ERR_MODULE_NOT_FOUND' || e?.code === 'MODULE_NOT_FOUND') && typeof e.message === 'string' && e.message.includes(`'${name}'`)
}

/** Loads a CommonJS optional package synchronously (better-sqlite3, ioredis), or throws MissingDependencyError. */
export function requireOptional<T>(name: OptionalDependency, what: string): T {
  try {
    return require(name) as T
  } catch (err) {
    if (isNotFound(err, name)) throw missingDependency(name, what, err)
    throw err
  }
}

/** Imports an optional package (transformers.js, audio-decode), or rejects with MissingDependencyError. */
export async function importOptional<T>(name: OptionalDependency, what: string): Promise<T> {
  try {
    return (await import(name)) as T
  } catch (err) {
    if (isNotFound(err, name)) throw missingDependency(name, what, err)
    throw err
  }
}

#!/usr/bin/env node
// Entry of the `inference-stream` command. Each subcommand lives in its own file.
import { readFileSync } from 'node:fs'
import { Command, CommanderError } from 'commander'
import { InferenceStreamError } from '../errors.js'
import { benchCommand } from './bench.js'
import { bulkCommand } from './bulk.js'
import { tuneHeapGrowth } from './heap.js'
import { runCommand } from './run.js'
import { serveCommand } from './serve.js'
import { workerCommand } from './worker.js'

// Peak memory: V8 would otherwise grow the heap to 4× what is alive on a large machine (./heap.ts).
tuneHeapGrowth()

const program = new Command()
  .name('inference-stream')
  .description('Fast, safe batch inference over Node streams: server and tools')
  .version(packageVersion(), '-V, --version', 'print the version')
  .showHelpAfterError()
  .exitOverride()

// The package's version, from its package.json (dist/cli/ and lib/cli/ are both two levels down).
function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version
  } catch {
    return 'unknown'
  }
}

program.addCommand(runCommand())
program.addCommand(serveCommand())
program.addCommand(workerCommand())
program.addCommand(benchCommand())
program.addCommand(bulkCommand())
// Commands made apart from the program do not inherit its exit override: give it to every one
// (and theirs), so a usage error anywhere exits 2 rather than commander's 1.
const override = (c: Command): void => {
  c.exitOverride()
  for (const sub of c.commands) override(sub)
}
override(program)

// The command whose action runs: its flags name the library options its errors may mention.
let active: Command | undefined
program.hook('preAction', (_program, actionCommand) => {
  active = actionCommand
})

// Library options that a flag of another name sets.
const FLAG_OF: Record<string, string> = { tokens: 'token', url: 'endpoint', datasetsDir: 'datasets' }

/**
 * A message in the terms of the command line: `Option "maxBatch"` (or `options.threads`) of the
 * library becomes the flag that sets it (`--max-batch`), where the running command has one.
 */
function inFlagTerms(message: string): string {
  if (!active) return message
  const flags = new Map(active.options.map((o) => [o.attributeName(), o.long]))
  const flag = (name: string): string | undefined => flags.get(name) ?? flags.get(FLAG_OF[name] ?? '')
  return message
    .replace(/Option "(\w+)"(?: \((--[\w-]+)\))?/g, (whole, name: string, given?: string) => given ?? flag(name) ?? whole)
    .replace(/\boptions\.(\w+)/g, (whole, name: string) => flag(name) ?? whole)
}

try {
  await program.parseAsync(process.argv)
} catch (err) {
  if (err instanceof CommanderError) {
    // Help and version exit 0; usage errors (already printed by commander) exit 2, as the docs say.
    process.exit(err.exitCode === 0 ? 0 : 2)
  }
  if (err instanceof InferenceStreamError) {
    process.stderr.write(`inference-stream: ${inFlagTerms(err.message)} (${err.code})\n`)
    process.exit(2)
  }
  // Anything else is a bug or an environment problem: one line, the stack only with DEBUG set.
  const e = err as Error & { code?: string }
  process.stderr.write(`inference-stream: ${e?.message ?? String(err)}${e?.code ? ` (${e.code})` : ''}\n`)
  if (process.env.DEBUG) process.stderr.write(`${e?.stack}\n`)
  process.exit(1)
}

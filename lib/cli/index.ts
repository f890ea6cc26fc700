#!/usr/bin/env node
// Entry of the `inference-stream` command. Each subcommand lives in its own file.
import { Command, CommanderError } from 'commander'
import { InferenceStreamError } from '../errors.js'
import { benchCommand } from './bench.js'
import { bulkCommand } from './bulk.js'
import { runCommand } from './run.js'
import { serveCommand } from './serve.js'

const program = new Command()
  .name('inference-stream')
  .description('Fast, safe batch inference over Node streams: server and tools')
  .showHelpAfterError()
  .exitOverride()

program.addCommand(runCommand())
program.addCommand(serveCommand())
program.addCommand(benchCommand())
program.addCommand(bulkCommand())

try {
  await program.parseAsync(process.argv)
} catch (err) {
  if (err instanceof CommanderError) {
    // Help and version exit 0; usage errors were already printed by commander.
    process.exit(err.exitCode)
  }
  if (err instanceof InferenceStreamError) {
    process.stderr.write(`inference-stream: ${err.message} (${err.code})\n`)
    process.exit(2)
  }
  // Anything else is a bug or an environment problem: one line, the stack only with DEBUG set.
  const e = err as Error & { code?: string }
  process.stderr.write(`inference-stream: ${e?.message ?? String(err)}${e?.code ? ` (${e.code})` : ''}\n`)
  if (process.env.DEBUG) process.stderr.write(`${e?.stack}\n`)
  process.exit(1)
}

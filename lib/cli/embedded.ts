import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import type { ModelRegistry } from '../models/pipeline.js'
import { createModelRegistry } from '../models/registry.js'
import type { ServerOptions } from '../server/options.js'
import { createServer, type InferenceServer } from '../server/server.js'

/** A server started in this process for a CLI command that was given no `--endpoint`. */
export interface EmbeddedServer {
  server: InferenceServer
  url: string
  token: string
  close(): Promise<void>
}

/**
 * Starts the embedded default: an in-process server on a free loopback port with the built-in
 * models and a random token, so `run` and `bench` work offline with no setup.
 */
export async function startEmbedded(options: { threads?: number; logger?: Logger; registry?: ModelRegistry; server?: Pick<ServerOptions, 'workers' | 'maxBatch' | 'maxWaitMs' | 'batching'> } = {}): Promise<EmbeddedServer> {
  const token = randomBytes(12).toString('hex')
  const registry = options.registry ?? createModelRegistry({ threads: options.threads ?? 1 })
  const server = createServer({ ...options.server, tokens: [token], registry, logger: options.logger })
  const url = await server.listen(0, '127.0.0.1')
  return {
    server,
    url,
    token,
    async close() {
      await server.close()
      await registry.close()
    },
  }
}

import type { Test } from 'tap'
import { createServer, type InferenceServer } from '../../lib/server/server.js'
import type { ServerOptions } from '../../lib/server/options.js'

/** Starts a real server on port 0 and closes it when the test ends. */
export async function startServer(t: Test, options: ServerOptions = {}): Promise<InferenceServer> {
  const server = createServer(options)
  await server.listen(0)
  t.teardown(() => server.close())
  return server
}

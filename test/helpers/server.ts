import { once } from 'node:events'
import type http from 'node:http'
import type { AddressInfo } from 'node:net'
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

/** Listens with a plain `http.Server` (a stand-in upstream) on port 0 of loopback, closed in teardown; resolves its base URL. */
export async function listen(t: Test, server: http.Server): Promise<string> {
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => {
    server.closeAllConnections()
    return new Promise<void>((r) => server.close(() => r()))
  })
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

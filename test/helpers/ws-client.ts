// A small real `ws` client for tests: records every message (v1 array frames flattened) and
// waits for conditions with a deadline, so a failing test fails instead of hanging.
import WebSocket from 'ws'
import { SUBPROTOCOL_V1, type ServerMessage } from '../../lib/protocol.js'

export interface TestClient {
  ws: WebSocket
  messages: ServerMessage[]
  frames: number
  closed: Promise<{ code: number; reason: string }>
  send(msg: unknown, opts?: { binary?: boolean }): void
  sendRaw(data: string | Buffer, opts?: { binary?: boolean }): void
  results(): Map<string, unknown>
  waitFor(pred: () => boolean, what: string, timeoutMs?: number): Promise<void>
  close(): Promise<void>
}

export async function connect(
  url: string,
  opts: { token?: string | null; v1?: boolean; binaryAuth?: boolean } = {},
): Promise<TestClient> {
  const ws = new WebSocket(url, opts.v1 ? [SUBPROTOCOL_V1] : [])
  const messages: ServerMessage[] = []
  const client: TestClient = {
    ws,
    messages,
    frames: 0,
    closed: new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() }))),
    send(msg, o = {}) {
      const text = JSON.stringify(msg)
      ws.send(o.binary ? Buffer.from(text) : text, { binary: !!o.binary })
    },
    sendRaw(data, o = {}) {
      ws.send(data, { binary: !!o.binary })
    },
    results() {
      const m = new Map<string, unknown>()
      for (const msg of messages) if (msg.type === 'results') m.set(msg.id, msg.outputs)
      return m
    },
    async waitFor(pred, what, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs
      while (!pred()) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
        await new Promise((r) => setTimeout(r, 5))
      }
    },
    async close() {
      if (ws.readyState === WebSocket.CLOSED) return
      ws.close()
      await client.closed
    },
  }
  ws.on('message', (data) => {
    client.frames++
    const v = JSON.parse(data.toString())
    if (Array.isArray(v)) messages.push(...v)
    else messages.push(v)
  })
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve())
    ws.once('error', reject)
  })
  if (opts.token !== null) {
    const bearer = `Bearer ${opts.token ?? 'test-token'}`
    ws.send(opts.binaryAuth ? Buffer.from(bearer) : bearer, { binary: !!opts.binaryAuth })
  }
  return client
}

/** Counts `results` messages with a given id. */
export function countResults(client: TestClient, id: string): number {
  let n = 0
  for (const m of client.messages) if (m.type === 'results' && m.id === id) n++
  return n
}

import { createHash, timingSafeEqual } from 'node:crypto'
import type http from 'node:http'
import type { IncomingMessage } from 'node:http'
import { AuthenticationError } from '../errors.js'
import { parseBearer } from '../protocol.js'
import { ANONYMOUS_TOKEN, type Tenant, type Tenants } from './tenants.js'

export { ANONYMOUS_TOKEN }

/**
 * The tenant of an HTTP request (`Authorization: Bearer <token>`). On an open server (no token
 * configured) any bearer (or none: {@link ANONYMOUS_TOKEN}) is accepted; the server only serves
 * loopback clients then.
 */
export function tenantOf(req: http.IncomingMessage, tenants: Tenants): Tenant | AuthenticationError {
  const header = req.headers.authorization
  let bearer: string | undefined
  if (header !== undefined) {
    try {
      bearer = parseBearer(header)
    } catch {
      bearer = undefined
    }
  }
  if (tenants.open) return tenants.ofRequest(bearer) as Tenant
  let err: AuthenticationError
  if (header === undefined) err = new AuthenticationError('Missing "Authorization: Bearer <token>" header')
  else if (bearer === undefined) err = new AuthenticationError('Authorization header must be "Bearer <token>"')
  else {
    const tenant = tenants.authenticate(bearer)
    if (tenant) return tenant
    err = new AuthenticationError('Invalid token')
  }
  tenants.refused(err.message, req.socket.remoteAddress, `${req.method ?? 'GET'} ${routeOf(req.url)}`)
  return err
}

/** A request's path without its query, for logs (a query may hold anything). */
export function routeOf(url: string | undefined): string {
  const path = (url ?? '/').split('?')[0]
  return path.length > 200 ? `${path.slice(0, 200)}...` : path
}

/** A request body: the bytes, or why there are none. */
export type BodyRead = Buffer | 'too-large' | 'aborted'

/** Sends a JSON body. */
export function sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  sendBody(res, status, Buffer.from(JSON.stringify(body)), headers)
}

/** Sends a body already serialized as JSON. */
export function sendBody(res: http.ServerResponse, status: number, body: Buffer, headers: Record<string, string>): void {
  if (res.writableEnded || res.destroyed) return
  res.writeHead(status, { ...headers, 'content-type': 'application/json', 'content-length': body.length })
  res.end(body)
}

/**
 * Reads a request body of at most `max` bytes. `too-large` as soon as it is over (the rest is not
 * kept: memory stays within `max`), `aborted` when the client went away first.
 */
export function readBody(req: http.IncomingMessage, max: number): Promise<BodyRead> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    let size = 0
    const finish = (result: BodyRead): void => {
      req.off('data', onData)
      req.off('end', onEnd)
      req.off('error', onAbort)
      req.off('close', onAbort)
      resolve(result)
    }
    const onData = (chunk: Buffer): void => {
      size += chunk.length
      if (size > max) {
        chunks.length = 0
        // Keep the socket flowing (discarding) so the 413 can be written and read by the client.
        req.resume()
        finish('too-large')
        return
      }
      chunks.push(chunk)
    }
    const onEnd = (): void => finish(Buffer.concat(chunks, size))
    const onAbort = (): void => finish('aborted')
    req.on('data', onData)
    req.on('end', onEnd)
    req.on('error', onAbort)
    req.on('close', onAbort)
  })
}

/** Whether a socket address is on this machine (127.0.0.0/8, ::1, IPv4-mapped loopback). */
export function isLoopback(address: string | undefined): boolean {
  if (!address) return false
  return address === '::1' || address.startsWith('127.') || address.startsWith('::ffff:127.')
}

/**
 * `/metrics` shows every tenant's bill: the operator's metrics token, or a loopback client when
 * none is set. Compared as digests in constant time.
 */
export function metricsAllowed(req: IncomingMessage, expected: string | undefined): boolean {
  if (expected === undefined) return isLoopback(req.socket.remoteAddress)
  const m = /^Bearer[ \t]+(\S+)\s*$/i.exec(req.headers.authorization ?? '')
  if (!m) return false
  const digest = (s: string): Buffer => createHash('sha256').update(s).digest()
  return timingSafeEqual(digest(m[1]), digest(expected))
}

/**
 * Answers `GET /metrics`: the registry's text for the operator (see {@link metricsAllowed}), else
 * 401 naming how to get in.
 */
export function serveMetrics(req: IncomingMessage, res: http.ServerResponse, registry: { metrics(): Promise<string>; contentType: string }, token: string | undefined): void {
  const json = (status: number, body: unknown): void => {
    res.writeHead(status, { 'content-type': 'application/json' })
    res.end(JSON.stringify(body))
  }
  if (!metricsAllowed(req, token)) {
    res.setHeader('www-authenticate', 'Bearer')
    return json(401, { error: 'The metrics are for the operator: send "Authorization: Bearer <metrics token>" (--metrics-token), or scrape from this machine', code: 'ERR_AUTHENTICATION' })
  }
  registry.metrics().then(
    (text) => {
      res.writeHead(200, { 'content-type': registry.contentType })
      res.end(text)
    },
    (err: Error) => json(500, { error: err.message }),
  )
}

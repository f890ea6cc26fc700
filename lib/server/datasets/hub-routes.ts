/**
 * The Hub-style read API of output datasets (docs/protocol.md, "Output datasets"), answered as the
 * Hugging Face Hub answers its clients (`@huggingface/hub`, `huggingface_hub`, `datasets` with
 * `HF_ENDPOINT`): info, revision info, refs, commits and tree listings (paged by a `Link: <…>;
 * rel="next"` header), paths-info, file downloads at a revision (`resolve`, HEAD and GET, byte
 * ranges), `whoami-v2`, and `git clone` over git's dumb HTTP protocol at the Hub's URL shape
 * (`http://HOST/datasets/{id}`). Errors are `{"error", "code"}` with the Hub's `x-error-code` on
 * 404s and `x-error-message` (what a client reads of a HEAD, which has no body).
 */
import { createHash } from 'node:crypto'
import type http from 'node:http'
import type { Logger } from 'pino'
import {
  AuthenticationError,
  InferenceStreamError,
  InvalidDatasetNameError,
  InvalidDatasetPathError,
  InvalidPayloadError,
  LimitExceededError,
  RevisionNotFoundError,
  toWireError,
} from '../../errors.js'
import type { Tenant, Tenants } from '../tenants.js'
import { readBody, routeOf } from '../http-util.js'
import { httpStatusOf } from '../http-status.js'
import { sendFile, sendGitFile } from './hub-files.js'
import { DEFAULT_BRANCH } from './output-datasets.js'
import type { DatasetLocation } from './tenant-spaces.js'

/** What {@link handleHubRoutes} needs of its server. */
export interface HubRoutesContext {
  /**
   * The server's tenants. A request's tenant comes from its token (`Authorization: Bearer <token>`,
   * or the password of HTTP basic auth as git sends it). On an open server (no tokens configured,
   * loopback clients only) any token is a tenant of its own, and no token the anonymous one.
   */
  tenants: Tenants
  /**
   * Where the dataset a tenant asks for by id lives. Another tenant's dataset must never be found:
   * the answer is then exactly that of a dataset that does not exist.
   */
  locate: (tenant: Tenant, id: string) => Promise<DatasetLocation>
  /** pino logger for failures. Default: none. */
  logger?: Logger
}

/** Bounds of the paged and posted routes (docs/protocol.md, "Output datasets"). */
export const HUB_LIMITS = {
  /** Tree entries per page without `expand` (the Hub's page), and at most with `limit`. */
  treePage: 1000,
  /** Tree entries per page with `expand=true` (each costs a walk of the history). */
  treePageExpanded: 50,
  /** Commits per page without `limit`. */
  commitsPage: 100,
  /** Commits per page at most. */
  commitsPageMax: 1000,
  /** Paths of one paths-info request. */
  paths: 1000,
  /** Bytes of a paths-info body. */
  pathsBody: 1024 * 1024,
} as const

// A name is one or two segments (validated later, for a clear 400); greedy, so `a/b/refs` is
// `a/b`'s refs, and backtracking finds `a` in `a/commits/main`.
const NAME = '([^/]+(?:/[^/]+)?)'
const API_REFS = new RegExp(`^/api/datasets/${NAME}/refs$`)
const API_COMMITS = new RegExp(`^/api/datasets/${NAME}/commits/(.+)$`)
const API_REVISION = new RegExp(`^/api/datasets/${NAME}/revision/(.+)$`)
const API_TREE = new RegExp(`^/api/datasets/${NAME}/tree/([^/]+)(?:/(.+?))?/?$`)
const API_PATHS_INFO = new RegExp(`^/api/datasets/${NAME}/paths-info/([^/]+)$`)
const API_INFO = /^\/api\/datasets\/(.+)$/
const WHOAMI = '/api/whoami-v2'
const RESOLVE = new RegExp(`^/datasets/${NAME}/resolve/([^/]+)/(.+)$`)
// Only the files a dumb-HTTP client fetches, by strict shape: nothing else of the git directory
// (config, hooks, temporary objects) is served, and no path can climb out of it.
const GIT_FILE = new RegExp(
  `^/datasets/${NAME}/(HEAD|info/refs|objects/info/packs|objects/info/(?:http-)?alternates|` +
    `objects/[0-9a-f]{2}/[0-9a-f]{38}|objects/pack/pack-[0-9a-f]{40}\\.(?:pack|idx))$`,
)

/**
 * Handles a request for the output dataset routes and returns true; returns false (so the server
 * goes on routing) for any other path, or a method the path does not take (GET and HEAD; POST for
 * paths-info).
 * @param path the request path without its query string, as received (still URL-encoded).
 */
export function handleHubRoutes(req: http.IncomingMessage, res: http.ServerResponse, path: string, ctx: HubRoutesContext): boolean {
  const route = matchRoute(path, req.method ?? 'GET')
  if (!route) return false
  serve(req, res, route, ctx).catch((err: unknown) => {
    if (!(err instanceof InferenceStreamError)) ctx.logger?.error({ err }, 'Output dataset request failed')
    if (!res.headersSent) sendError(req, res, err)
    else res.destroy()
  })
  return true
}

type Route =
  | { kind: 'whoami' }
  | { kind: 'info'; name: string; revision: string }
  | { kind: 'refs'; name: string }
  | { kind: 'commits'; name: string; revision: string }
  | { kind: 'tree'; name: string; revision: string; dir: string }
  | { kind: 'paths-info'; name: string; revision: string }
  | { kind: 'resolve'; name: string; revision: string; file: string }
  | { kind: 'git'; name: string; file: string }

// Raw (encoded) captures; decoded in serve() so bad encoding is answered, not thrown here.
function matchRoute(path: string, method: string): Route | undefined {
  let m: RegExpExecArray | null
  if (method === 'POST') {
    if ((m = API_PATHS_INFO.exec(path))) return { kind: 'paths-info', name: m[1], revision: m[2] }
    return undefined
  }
  if (method !== 'GET' && method !== 'HEAD') return undefined
  if (path === WHOAMI) return { kind: 'whoami' }
  if ((m = API_REFS.exec(path))) return { kind: 'refs', name: m[1] }
  if ((m = API_COMMITS.exec(path))) return { kind: 'commits', name: m[1], revision: m[2] }
  if ((m = API_REVISION.exec(path))) return { kind: 'info', name: m[1], revision: m[2] }
  if ((m = API_TREE.exec(path))) return { kind: 'tree', name: m[1], revision: m[2], dir: m[3] ?? '' }
  if ((m = API_INFO.exec(path))) return { kind: 'info', name: m[1], revision: encodeURIComponent(DEFAULT_BRANCH) }
  if ((m = GIT_FILE.exec(path))) return { kind: 'git', name: m[1].replace(/\.git$/, ''), file: m[2] }
  if ((m = RESOLVE.exec(path))) return { kind: 'resolve', name: m[1], revision: m[2], file: m[3] }
  return undefined
}

async function serve(req: http.IncomingMessage, res: http.ServerResponse, route: Route, ctx: HubRoutesContext): Promise<void> {
  const tenant = authenticate(req, res, ctx.tenants)
  if (route.kind === 'whoami') return sendJson(req, res, 200, whoami(tenant))
  const id = decode(route.name, (m) => new InvalidDatasetNameError(`Dataset name is not valid URL encoding: ${m}`))
  const { outputs, name, id: publicId } = await ctx.locate(tenant, id)
  const query = new URL(req.url ?? '/', 'http://x').searchParams
  switch (route.kind) {
    case 'info': {
      const info = await outputs.info(name, decodeRevision(route.revision))
      const slash = publicId.indexOf('/')
      // The Hub's fields its clients read beside sha and siblings; `_id` is stable per id.
      return sendJson(req, res, 200, {
        _id: objectId(`dataset\0${publicId}`),
        ...info,
        id: publicId,
        ...(slash > 0 ? { author: publicId.slice(0, slash) } : {}),
        disabled: false,
        gated: false,
        downloads: 0,
        likes: 0,
        tags: [],
      })
    }
    case 'refs': {
      const refs = await outputs.refs(name)
      return sendJson(req, res, 200, flag(query, 'include_prs') ? { ...refs, pullRequests: [] } : refs)
    }
    case 'commits': {
      const limit = intParam(query, 'limit', HUB_LIMITS.commitsPage, 1, HUB_LIMITS.commitsPageMax)
      const page = intParam(query, 'p', 0, 0, Number.MAX_SAFE_INTEGER)
      const commits = await outputs.commits(name, decodeRevision(route.revision), { skip: page * limit, limit: limit + 1 })
      if (commits.length > limit) setNextLink(req, res, query, { p: String(page + 1), limit: String(limit) })
      return sendJson(req, res, 200, commits.slice(0, limit))
    }
    case 'tree': {
      const expand = flag(query, 'expand')
      const max = expand ? HUB_LIMITS.treePageExpanded : HUB_LIMITS.treePage
      const cursor = query.get('cursor')
      const page = await outputs.tree(name, decodeRevision(route.revision), {
        path: decodePath(route.dir),
        recursive: flag(query, 'recursive'),
        expand,
        limit: intParam(query, 'limit', max, 1, max),
        after: cursor === null ? undefined : Buffer.from(cursor, 'base64url').toString('utf8'),
      })
      if (page.next !== undefined) setNextLink(req, res, query, { cursor: Buffer.from(page.next).toString('base64url') })
      return sendJson(req, res, 200, page.entries)
    }
    case 'paths-info': {
      const { paths, expand } = await readPathsInfoBody(req)
      return sendJson(req, res, 200, (await outputs.pathsInfo(name, decodeRevision(route.revision), paths, { expand })).entries)
    }
    case 'resolve':
      return sendFile(req, res, outputs, name, decodeRevision(route.revision), decodePath(route.file), ctx.logger)
    case 'git':
      return sendGitFile(req, res, outputs, name, route.file)
  }
}

/** The tenant of a request, or AuthenticationError (with the headers that make git send credentials). */
function authenticate(req: http.IncomingMessage, res: http.ServerResponse, tenants: Tenants): Tenant {
  const token = tokenOf(req.headers.authorization)
  // A header of another scheme ('') is a token that matches nothing; on an open server, none.
  const tenant = tenants.ofRequest(token || undefined)
  if (tenant) return tenant
  // Basic is what makes git retry with the credentials of its URL (`http://user:TOKEN@host/...`).
  res.setHeader('www-authenticate', ['Bearer realm="inference-stream"', 'Basic realm="inference-stream"'])
  // The Hub's words for a wrong token: huggingface_hub then says the token is wrong, not that the
  // repository does not exist (which is what it makes of any other 401 on a repository route).
  if (token !== undefined) res.setHeader('x-error-message', 'Invalid credentials in Authorization header')
  const err = new AuthenticationError(token === undefined ? 'Missing "Authorization: Bearer <token>" header' : 'Invalid token')
  // git asks without credentials first, then with them: its first 401 is not worth a line.
  if (token !== undefined) tenants.refused(err.message, req.socket.remoteAddress, `${req.method ?? 'GET'} ${routeOf(req.url)}`)
  throw err
}

/** The Hub's `whoami-v2` answer for a tenant: a user named as the tenant, the namespace of its datasets. */
function whoami(tenant: Tenant): Record<string, unknown> {
  return {
    type: 'user',
    id: objectId(`user\0${tenant.name}`),
    name: tenant.name,
    fullname: tenant.name,
    email: null,
    emailVerified: false,
    isPro: false,
    canPay: false,
    avatarUrl: '',
    periodEnd: null,
    orgs: [],
    auth: { type: 'access_token', accessToken: { displayName: tenant.name, role: 'read' } },
  }
}

/** A stable 24-hex-digit id (the shape of the Hub's `_id`s) of a text. */
function objectId(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 24)
}

/** paths-info's body: JSON `{"paths": [...], "expand"?}` (@huggingface/hub) or a form `paths=a&paths=b&expand=false` (huggingface_hub). */
async function readPathsInfoBody(req: http.IncomingMessage): Promise<{ paths: string[]; expand: boolean }> {
  const body = await readBody(req, HUB_LIMITS.pathsBody)
  if (body === 'too-large') throw new LimitExceededError(`A paths-info body is at most ${HUB_LIMITS.pathsBody} bytes`)
  if (body === 'aborted') throw new InvalidPayloadError('The request body was cut')
  let paths: unknown
  let expand: unknown
  if (/^application\/json\b/i.test(req.headers['content-type'] ?? '')) {
    let json: unknown
    try {
      json = JSON.parse(body.toString('utf8'))
    } catch {
      throw new InvalidPayloadError('paths-info: the body is not JSON')
    }
    paths = (json as { paths?: unknown } | null)?.paths
    expand = (json as { expand?: unknown } | null)?.expand === true
  } else {
    const form = new URLSearchParams(body.toString('utf8'))
    paths = form.getAll('paths')
    expand = flag(form, 'expand')
  }
  if (typeof paths === 'string') paths = [paths]
  if (!Array.isArray(paths) || paths.some((p) => typeof p !== 'string')) throw new InvalidPayloadError('paths-info: "paths" must be a list of file or folder paths')
  if (paths.length > HUB_LIMITS.paths) throw new LimitExceededError(`paths-info: at most ${HUB_LIMITS.paths} paths a request (got ${paths.length})`)
  // Folders may be asked with a trailing slash; the root is not an entry.
  const clean = (paths as string[]).map((p) => p.replace(/^\/+|\/+$/g, '')).filter((p) => p !== '')
  return { paths: clean, expand: expand === true }
}

// Booleans as the clients send them: `true` (JS, httpx), `True` (requests), `1`.
function flag(query: URLSearchParams, key: string): boolean {
  return /^(?:true|1)$/i.test(query.get(key) ?? '')
}

function intParam(query: URLSearchParams, key: string, fallback: number, min: number, max: number): number {
  const raw = query.get(key)
  if (raw === null || raw === '') return fallback
  const n = Number(raw)
  if (!Number.isSafeInteger(n) || n < min) throw new InvalidPayloadError(`Query parameter "${key}" must be an integer of at least ${min}, not ${JSON.stringify(raw)}`)
  return Math.min(n, max)
}

/**
 * `Link: <URL>; rel="next"`: the same request with `next` set, as an absolute URL (the clients
 * fetch it as is). Its origin is the one the client used: the `Host` header, and
 * `x-forwarded-proto` from a proxy that ends TLS.
 */
function setNextLink(req: http.IncomingMessage, res: http.ServerResponse, query: URLSearchParams, next: Record<string, string>): void {
  const forwarded = String(req.headers['x-forwarded-proto'] ?? '').split(',')[0].trim()
  const proto = forwarded === 'https' || forwarded === 'http' ? forwarded : 'encrypted' in req.socket ? 'https' : 'http'
  const params = new URLSearchParams(query)
  for (const [k, v] of Object.entries(next)) params.set(k, v)
  const path = (req.url ?? '/').split('?')[0]
  res.setHeader('link', `<${proto}://${req.headers.host ?? 'localhost'}${path}?${params}>; rel="next"`)
}

/** The token of an Authorization header: Bearer, or HTTP basic's password (its user name when the password is empty). */
function tokenOf(header: string | undefined): string | undefined {
  if (header === undefined) return undefined
  const bearer = /^Bearer[ \t]+(\S+)\s*$/i.exec(header)
  if (bearer) return bearer[1]
  const basic = /^Basic[ \t]+([A-Za-z0-9+/=]+)\s*$/i.exec(header)
  if (basic) {
    const text = Buffer.from(basic[1], 'base64').toString('utf8')
    const colon = text.indexOf(':')
    const user = colon < 0 ? text : text.slice(0, colon)
    const password = colon < 0 ? '' : text.slice(colon + 1)
    return password || user || ''
  }
  // A header of another scheme is a token that matches nothing, not an absent one.
  return ''
}

function decode(raw: string, error: (message: string) => InferenceStreamError): string {
  try {
    return decodeURIComponent(raw)
  } catch {
    throw error(JSON.stringify(raw))
  }
}

// Revisions come URL-encoded as one segment (`refs%2Fpr%2F1`), as huggingface_hub sends them.
function decodeRevision(raw: string): string {
  return decode(raw, (m) => new RevisionNotFoundError(`Revision ${m} is not valid URL encoding`))
}

// Paths come plain (`data/x`) or as one encoded segment (`data%2Fx`, huggingface_hub's tree).
function decodePath(raw: string): string {
  return decode(raw, (m) => new InvalidDatasetPathError(`File path is not valid URL encoding: ${m}`))
}

// The Hub's `X-Error-Code` of the not-found errors, which its clients read.
const HUB_CODES: Readonly<Record<string, string>> = {
  ERR_DATASET_NOT_FOUND: 'RepoNotFound',
  ERR_REVISION_NOT_FOUND: 'RevisionNotFound',
  ERR_ENTRY_NOT_FOUND: 'EntryNotFound',
}

function sendError(req: http.IncomingMessage, res: http.ServerResponse, err: unknown): void {
  const known = err instanceof InferenceStreamError
  const status = known ? httpStatusOf(err.code) : 500
  const body = toWireError(err)
  if (status === 500 && !known) {
    body.error = 'Internal error while reading the output dataset'
    delete body.code
  }
  const hubCode = known ? HUB_CODES[err.code] : undefined
  if (hubCode) res.setHeader('x-error-code', hubCode)
  // A HEAD answer has no body: clients read the message here. Header values are ASCII.
  if (!res.hasHeader('x-error-message')) res.setHeader('x-error-message', body.error.replace(/[^\x20-\x7e]/g, '?').slice(0, 1000))
  sendJson(req, res, status, body)
}

function sendJson(req: http.IncomingMessage, res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) })
  res.end(req.method === 'HEAD' ? undefined : text)
}

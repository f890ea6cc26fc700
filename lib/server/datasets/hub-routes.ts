/**
 * The Hub-style read API of output datasets (docs/protocol.md, "Output datasets"): info, refs,
 * commits, file downloads at a revision, and `git clone` over git's dumb HTTP protocol at the
 * Hub's URL shape (`http://HOST/datasets/{name}`). GET and HEAD only; every answer but a file is
 * JSON, errors `{"error", "code"}` with the Hub's `x-error-code` header on 404s.
 */
import { createReadStream, promises as fsp } from 'node:fs'
import type http from 'node:http'
import { extname, join, posix, sep } from 'node:path'
import { pipeline } from 'node:stream'
import type { Logger } from 'pino'
import {
  AuthenticationError,
  DatasetNotFoundError,
  EntryNotFoundError,
  InferenceStreamError,
  InvalidDatasetNameError,
  InvalidDatasetPathError,
  RevisionNotFoundError,
  toWireError,
} from '../../errors.js'
import type { Tenants } from '../tenants.js'
import { routeOf } from '../http-util.js'
import { httpStatusOf } from '../http-status.js'
import { DEFAULT_BRANCH, type OutputDatasets } from './output-datasets.js'

/** What {@link handleHubRoutes} needs of its server. */
export interface HubRoutesContext {
  /**
   * The server's tenants. A request's tenant comes from its token (`Authorization: Bearer <token>`,
   * or the password of HTTP basic auth as git sends it). On an open server (no tokens configured,
   * loopback clients only) any token is a tenant of its own, and no token the anonymous one.
   */
  tenants: Tenants
  /**
   * The output datasets a tenant (by id) reads `name` from. Another tenant's dataset must not be
   * among them: the answer is then exactly that of a dataset that does not exist.
   */
  outputs: (tenant: string, name: string) => Promise<OutputDatasets>
  /** pino logger for failures. Default: none. */
  logger?: Logger
}

// A name is one or two segments (validated later, for a clear 400); greedy, so `a/b/refs` is
// `a/b`'s refs, and backtracking finds `a` in `a/commits/main`.
const NAME = '([^/]+(?:/[^/]+)?)'
const API_REFS = new RegExp(`^/api/datasets/${NAME}/refs$`)
const API_COMMITS = new RegExp(`^/api/datasets/${NAME}/commits/(.+)$`)
const API_REVISION = new RegExp(`^/api/datasets/${NAME}/revision/(.+)$`)
const API_INFO = /^\/api\/datasets\/(.+)$/
const RESOLVE = new RegExp(`^/datasets/${NAME}/resolve/([^/]+)/(.+)$`)
// Only the files a dumb-HTTP client fetches, by strict shape: nothing else of the git directory
// (config, hooks, temporary objects) is served, and no path can climb out of it.
const GIT_FILE = new RegExp(
  `^/datasets/${NAME}/(HEAD|info/refs|objects/info/packs|objects/info/(?:http-)?alternates|` +
    `objects/[0-9a-f]{2}/[0-9a-f]{38}|objects/pack/pack-[0-9a-f]{40}\\.(?:pack|idx))$`,
)

const NO_CACHE = {
  expires: 'Fri, 01 Jan 1980 00:00:00 GMT',
  pragma: 'no-cache',
  'cache-control': 'no-cache, max-age=0, must-revalidate',
}
// Objects and packs are named by their content, so they never change (as git http-backend says).
const CACHE_FOREVER = { 'cache-control': 'public, max-age=31536000, immutable' }

const CONTENT_TYPES: Record<string, string> = {
  '.parquet': 'application/vnd.apache.parquet',
  '.json': 'application/json',
  '.jsonl': 'application/jsonl',
  '.ndjson': 'application/x-ndjson',
  '.csv': 'text/csv; charset=utf-8',
  '.tsv': 'text/tab-separated-values; charset=utf-8',
  '.md': 'text/markdown; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.yaml': 'text/yaml; charset=utf-8',
  '.yml': 'text/yaml; charset=utf-8',
}

/**
 * Handles a request for the output dataset routes and returns true; returns false (so the server
 * goes on routing) for any other path or a method other than GET and HEAD.
 * @param path the request path without its query string, as received (still URL-encoded).
 */
export function handleHubRoutes(req: http.IncomingMessage, res: http.ServerResponse, path: string, ctx: HubRoutesContext): boolean {
  if (req.method !== 'GET' && req.method !== 'HEAD') return false
  const route = matchRoute(path)
  if (!route) return false
  serve(req, res, route, ctx).catch((err: unknown) => {
    if (!(err instanceof InferenceStreamError)) ctx.logger?.error({ err }, 'Output dataset request failed')
    if (!res.headersSent) sendError(req, res, err)
    else res.destroy()
  })
  return true
}

type Route =
  | { kind: 'info'; name: string; revision: string }
  | { kind: 'refs'; name: string }
  | { kind: 'commits'; name: string; revision: string }
  | { kind: 'resolve'; name: string; revision: string; file: string }
  | { kind: 'git'; name: string; file: string }

// Raw (encoded) captures; decoded in serve() so bad encoding is answered, not thrown here.
function matchRoute(path: string): Route | undefined {
  let m: RegExpExecArray | null
  if ((m = API_REFS.exec(path))) return { kind: 'refs', name: m[1] }
  if ((m = API_COMMITS.exec(path))) return { kind: 'commits', name: m[1], revision: m[2] }
  if ((m = API_REVISION.exec(path))) return { kind: 'info', name: m[1], revision: m[2] }
  if ((m = API_INFO.exec(path))) return { kind: 'info', name: m[1], revision: encodeURIComponent(DEFAULT_BRANCH) }
  if ((m = GIT_FILE.exec(path))) return { kind: 'git', name: m[1].replace(/\.git$/, ''), file: m[2] }
  if ((m = RESOLVE.exec(path))) return { kind: 'resolve', name: m[1], revision: m[2], file: m[3] }
  return undefined
}

async function serve(req: http.IncomingMessage, res: http.ServerResponse, route: Route, ctx: HubRoutesContext): Promise<void> {
  const token = tokenOf(req.headers.authorization)
  // A header of another scheme ('') is a token that matches nothing; on an open server, none.
  const tenant = ctx.tenants.ofRequest(token || undefined)
  if (!tenant) {
    // Basic is what makes git retry with the credentials of its URL (`http://user:TOKEN@host/...`).
    res.setHeader('www-authenticate', ['Bearer realm="inference-stream"', 'Basic realm="inference-stream"'])
    const err = new AuthenticationError(token === undefined ? 'Missing "Authorization: Bearer <token>" header' : 'Invalid token')
    // git asks without credentials first, then with them: its first 401 is not worth a line.
    if (token !== undefined) ctx.tenants.refused(err.message, req.socket.remoteAddress, `${req.method ?? 'GET'} ${routeOf(req.url)}`)
    throw err
  }
  const name = decode(route.name, (m) => new InvalidDatasetNameError(`Dataset name is not valid URL encoding: ${m}`))
  const outputs = await ctx.outputs(tenant.id, name)
  switch (route.kind) {
    case 'info':
      return sendJson(req, res, 200, await outputs.info(name, decodeRevision(route.revision)))
    case 'refs':
      return sendJson(req, res, 200, await outputs.refs(name))
    case 'commits':
      return sendJson(req, res, 200, await outputs.commits(name, decodeRevision(route.revision)))
    case 'resolve':
      return sendFile(req, res, ctx, outputs, name, decodeRevision(route.revision), route.file)
    case 'git':
      return sendGitFile(req, res, outputs, name, route.file)
  }
}

async function sendFile(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  ctx: HubRoutesContext,
  outputs: OutputDatasets,
  name: string,
  revision: string,
  rawPath: string,
): Promise<void> {
  const path = decode(rawPath, (m) => new InvalidDatasetPathError(`File path is not valid URL encoding: ${m}`))
  const file = await outputs.openFile(name, revision, path)
  const etag = `"${file.blobId}"`
  const base = posix.basename(file.path)
  const headers: http.OutgoingHttpHeaders = {
    'content-type': CONTENT_TYPES[extname(base).toLowerCase()] ?? 'application/octet-stream',
    'content-length': file.size,
    etag,
    // As the Hub: clients (huggingface_hub) read the resolved commit from this header.
    'x-repo-commit': file.commit,
    'content-disposition': `inline; filename*=UTF-8''${encodeURIComponent(base)}`,
  }
  if (req.headers['if-none-match'] === etag) {
    delete headers['content-length']
    res.writeHead(304, headers)
    res.end()
    return
  }
  res.writeHead(200, headers)
  if (req.method === 'HEAD') {
    res.end()
    return
  }
  pipeline(file.createReadStream(), res, (err) => {
    if (err && err.code !== 'ERR_STREAM_PREMATURE_CLOSE') ctx.logger?.error({ err, name, path }, 'Output dataset download failed')
  })
}

async function sendGitFile(req: http.IncomingMessage, res: http.ServerResponse, outputs: OutputDatasets, name: string, file: string): Promise<void> {
  const gitdir = outputs.gitdir(name)
  if (!(await outputs.exists(name))) throw new DatasetNotFoundError(`Dataset ${name} does not exist`)
  const full = join(gitdir, ...file.split('/'))
  // GIT_FILE admits no `..`; this is the belt to those braces.
  if (!full.startsWith(gitdir + sep)) throw new EntryNotFoundError(`No ${file} in dataset ${name}`)
  let handle: fsp.FileHandle
  try {
    handle = await fsp.open(full, 'r')
  } catch (err) {
    // A 404 is part of the protocol: a missing loose object makes git look in objects/info/packs.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new EntryNotFoundError(`No ${file} in dataset ${name}`)
    throw err
  }
  let size: number
  try {
    const st = await handle.stat()
    if (!st.isFile()) throw new EntryNotFoundError(`No ${file} in dataset ${name}`)
    size = st.size
  } catch (err) {
    await handle.close()
    throw err
  }
  const immutable = file.startsWith('objects/') && !file.startsWith('objects/info/')
  res.writeHead(200, {
    // text/plain on info/refs (never application/x-git-upload-pack-advertisement) is what tells
    // git that this is a dumb server, so it fetches HEAD and the objects one by one.
    'content-type': gitContentType(file),
    'content-length': size,
    ...(immutable ? CACHE_FOREVER : NO_CACHE),
  })
  if (req.method === 'HEAD') {
    await handle.close()
    res.end()
    return
  }
  // The opened handle is streamed, so a concurrent rename of info/refs cannot change what is sent.
  pipeline(createReadStream('', { fd: handle.fd, autoClose: false }), res, () => {
    void handle.close()
  })
}

function gitContentType(file: string): string {
  if (file.endsWith('.pack')) return 'application/x-git-packed-objects'
  if (file.endsWith('.idx')) return 'application/x-git-packed-objects-toc'
  if (/^objects\/[0-9a-f]{2}\//.test(file)) return 'application/x-git-loose-object'
  return 'text/plain; charset=utf-8'
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

// The Hub's `X-Error-Code` of the not-found errors, which its clients read.
const HUB_CODES: Readonly<Record<string, string>> = {
  ERR_DATASET_NOT_FOUND: 'RepoNotFound',
  ERR_REVISION_NOT_FOUND: 'RevisionNotFound',
  ERR_ENTRY_NOT_FOUND: 'EntryNotFound',
}

function statusOf(err: unknown): { status: number; hubCode?: string } {
  if (!(err instanceof InferenceStreamError)) return { status: 500 }
  return { status: httpStatusOf(err.code), hubCode: HUB_CODES[err.code] }
}

function sendError(req: http.IncomingMessage, res: http.ServerResponse, err: unknown): void {
  const { status, hubCode } = statusOf(err)
  const body = toWireError(err)
  if (status === 500 && !(err instanceof InferenceStreamError)) {
    body.error = 'Internal error while reading the output dataset'
    delete body.code
  }
  if (hubCode) res.setHeader('x-error-code', hubCode)
  sendJson(req, res, status, body)
}

function sendJson(req: http.IncomingMessage, res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) })
  res.end(req.method === 'HEAD' ? undefined : text)
}

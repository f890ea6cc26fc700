/**
 * Tenants: who owns what the server keeps. A token belongs to a tenant — by default one tenant per
 * token; a token file may group several tokens under one tenant name. State (results, dedupe,
 * the bill, jobs, datasets) is keyed by the tenant's id, a keyed hash (HMAC-SHA256 under the
 * server's secret), never by a raw token: a stolen database or Redis dump names no token.
 */
import { createHmac, randomBytes } from 'node:crypto'
import { mkdirSync, openSync, readFileSync, writeSync, closeSync, linkSync, renameSync, unlinkSync } from 'node:fs'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { InvalidOptionError } from '../errors.js'

/** A tenant as the server knows it. */
export interface Tenant {
  /** 32 hex digits: HMAC-SHA256 of the tenant under the server's secret. Keys every stored thing. */
  readonly id: string
  /**
   * A name safe to show (logs, metrics labels, namespaces): the token file's tenant name, or
   * `t-` and the first 12 hex digits of the id for a tenant of one token.
   */
  readonly name: string
}

/** Options of {@link Tenants}. */
export interface TenantsOptions {
  /** Accepted tokens, each its own tenant. */
  tokens?: readonly string[]
  /** Named tenants: name → its tokens. Names: `[A-Za-z0-9._-]`, 1 to 64 characters. */
  tenants?: Readonly<Record<string, readonly string[]>>
  /** Key of the tenant ids (at least 16 bytes). Default: random, for this process only. */
  secret?: Buffer
  /** Where refused credentials are logged (info), see {@link Tenants.refused}. Default: nowhere. */
  logger?: Logger
}

/** Refusal lines logged a minute at most; the rest are counted in the next line. */
const REFUSALS_LOGGED_PER_MINUTE = 20

/** The token of a request that sent none, on a server with no tokens configured (loopback only). */
export const ANONYMOUS_TOKEN = 'anonymous'

const TENANT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/
// Bound on the tenants remembered for an open server (any token accepted, from loopback).
const MAX_OPEN_TENANTS = 10_000

/**
 * The server's tenants and their tokens. Token checks hash the presented token with the secret
 * and look the digest up: the time taken does not depend on how much of a real token an attacker
 * guessed (the digest of a near miss shares nothing with the real one).
 */
export class Tenants {
  private readonly secret: Buffer
  private readonly byDigest = new Map<string, Tenant>()
  private readonly names = new Map<string, string>()
  /** No token configured: any token is accepted (the server then lets only loopback clients in). */
  readonly open: boolean
  /** Tenants configured (0 on an open server, where any token is a tenant of its own). */
  readonly count: number

  private readonly logger: Logger | undefined
  private refusalWindow = 0
  private refusalLines = 0
  private refusalsUnlogged = 0

  constructor(options: TenantsOptions = {}) {
    this.logger = options.logger
    this.secret = options.secret ?? randomBytes(32)
    if (!Buffer.isBuffer(this.secret) || this.secret.length < 16) throw new InvalidOptionError('Option "tenantSecret" must be a Buffer of at least 16 bytes')
    for (const token of options.tokens ?? []) {
      checkToken(token)
      if (this.byDigest.has(this.digest(token))) continue
      this.add(token, this.defaultTenant(token))
    }
    for (const [name, tokens] of Object.entries(options.tenants ?? {})) {
      if (!TENANT_NAME.test(name)) throw new InvalidOptionError(`Tenant name ${JSON.stringify(name)} must be 1-64 of [A-Za-z0-9._-], starting with a letter or digit`)
      if (!Array.isArray(tokens) || tokens.length === 0) throw new InvalidOptionError(`Tenant "${name}" must have at least one token`)
      const tenant = { id: this.hash(`name\0${name}`), name }
      for (const token of tokens) {
        checkToken(token)
        const prior = this.byDigest.get(this.digest(token))
        if (prior && prior.name !== name) throw new InvalidOptionError(`A token of tenant "${name}" is also given to ${prior.name.startsWith('t-') ? 'a tenant of its own' : `tenant "${prior.name}"`}`)
        this.add(token, tenant)
      }
    }
    this.open = this.byDigest.size === 0
    this.count = new Set([...this.byDigest.values()].map((t) => t.id)).size
  }

  /**
   * The tenant of a request that sent `token`, or none: on an open server any token, and no token
   * at all ({@link ANONYMOUS_TOKEN}); else only an accepted token.
   */
  ofRequest(token: string | undefined): Tenant | undefined {
    if (this.open) return this.authenticate(token ?? ANONYMOUS_TOKEN)
    return token === undefined ? undefined : this.authenticate(token)
  }

  /**
   * Logs a refused request (info): what was wrong, from where, on which route. The token itself is
   * never logged. At most {@link REFUSALS_LOGGED_PER_MINUTE} lines a minute, so that guessing
   * tokens cannot flood the log: the next line logged says how many were left out.
   */
  refused(reason: string, remote: string | undefined, route: string): void {
    if (!this.logger) return
    const now = Date.now()
    if (now - this.refusalWindow >= 60_000) {
      this.refusalWindow = now
      this.refusalLines = 0
    }
    if (this.refusalLines >= REFUSALS_LOGGED_PER_MINUTE) {
      this.refusalsUnlogged++
      return
    }
    this.refusalLines++
    const unlogged = this.refusalsUnlogged
    this.refusalsUnlogged = 0
    this.logger.info({ remote, route, ...(unlogged > 0 ? { notLogged: unlogged } : {}) }, `refused: ${reason}`)
  }

  /** The tenant of a token, or undefined when the token is not accepted. */
  authenticate(token: string): Tenant | undefined {
    const found = this.byDigest.get(this.digest(token))
    if (found || !this.open) return found
    // Open server: every token is a tenant of its own (remembered within a bound, for names).
    const tenant = this.defaultTenant(token)
    if (!this.sawSecond && this.names.size > 0 && !this.names.has(tenant.id)) this.sawSecond = true
    if (this.names.size >= MAX_OPEN_TENANTS) this.names.clear()
    this.names.set(tenant.id, tenant.name)
    return tenant
  }

  private sawSecond = false

  /**
   * Whether the server serves several tenants: two or more configured, or, on an open server, a
   * second token seen since start (sticky).
   */
  get several(): boolean {
    return this.sawSecond || this.count > 1
  }

  /** The name of a tenant id, or the id's short form for one the server has not seen. */
  nameOf(id: string): string {
    return this.names.get(id) ?? `t-${id.slice(0, 12)}`
  }

  /** The tenant a token would have with no token file entry: its own. */
  defaultTenant(token: string): Tenant {
    const id = this.hash(`token\0${token}`)
    return { id, name: `t-${id.slice(0, 12)}` }
  }

  private add(token: string, tenant: Tenant): void {
    this.byDigest.set(this.digest(token), tenant)
    this.names.set(tenant.id, tenant.name)
  }

  private digest(token: string): string {
    return createHmac('sha256', this.secret).update(`lookup\0${token}`).digest('base64')
  }

  private hash(text: string): string {
    return createHmac('sha256', this.secret).update(text).digest('hex').slice(0, 32)
  }
}

function checkToken(token: unknown): void {
  if (typeof token !== 'string' || !/^\S+$/.test(token)) throw new InvalidOptionError('Tokens must be non-empty strings without spaces')
}

/**
 * The secret of a data folder: `<dir>/secret.key` (32 random bytes, mode 0600), created on first
 * use. Tenant ids are stable across restarts only with the same secret, so it lives beside the
 * state it keys.
 */
export function dataDirSecret(dir: string): Buffer {
  const file = join(dir, 'secret.key')
  try {
    const s = readFileSync(file)
    if (s.length >= 16) return s
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  const tmp = `${file}.${process.pid}.tmp`
  const fd = openSync(tmp, 'w', 0o600)
  try {
    writeSync(fd, randomBytes(32))
  } finally {
    closeSync(fd)
  }
  try {
    // Two servers starting at once on one folder (front-ends of a cluster): the first link wins
    // and both read the winner's. A link never replaces a file, where a rename would: the second
    // rename replaced the secret the first server had already read, and the two made different
    // tenant ids for one token.
    linkSync(tmp, file)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code !== 'EEXIST') {
      // A file system without hard links: the rename, as before.
      if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP') {
        unlinkSync(tmp)
        throw err
      }
      try {
        renameSync(tmp, file)
      } catch (e) {
        unlinkSync(tmp)
        throw e
      }
      return readFileSync(file)
    }
  }
  unlinkSync(tmp)
  return readFileSync(file)
}

/**
 * Parses a token file: one entry a line, `#` comments and blank lines skipped. A line is either a
 * bare token (a tenant of its own) or `tenant: token` (several lines may name one tenant).
 * @throws InvalidOptionError naming the line that is wrong.
 */
export function parseTokenFile(text: string, file = 'token file'): { tokens: string[]; tenants: Record<string, string[]> } {
  const tokens: string[] = []
  const tenants: Record<string, string[]> = {}
  const lines = text.split(/\r?\n/)
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim()
    if (line === '' || line.startsWith('#')) continue
    const m = /^([^\s:]+)\s*:\s*(\S+)$/.exec(line)
    if (m) {
      if (!TENANT_NAME.test(m[1])) throw new InvalidOptionError(`${file} line ${i + 1}: tenant name "${m[1]}" must be 1-64 of [A-Za-z0-9._-]`)
      ;(tenants[m[1]] ??= []).push(m[2])
    } else if (/^\S+$/.test(line)) {
      tokens.push(line)
    } else {
      throw new InvalidOptionError(`${file} line ${i + 1}: expected "TOKEN" or "TENANT: TOKEN"`)
    }
  }
  return { tokens, tenants }
}

import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import { RedisStateBackend, type RedisStateBackendOptions } from '../../lib/server/state/redis-backend.js'
import { RedisKeys } from '../../lib/server/state/redis-keys.js'

/** The Redis the tests use: REDIS_URL, or the local default. */
export const REDIS_URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379'

/**
 * Whether the tests' Redis answers. With CI=true the Redis tests must run, never skip: this then
 * resolves true and the tests fail on their own if Redis is not there.
 */
export async function redisReachable(): Promise<boolean> {
  if (process.env.CI === 'true') return true
  const c = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 1000 })
  c.on('error', () => {})
  try {
    await c.connect()
    await c.ping()
    return true
  } catch {
    return false
  } finally {
    c.disconnect()
  }
}

/** Why the Redis tests are skipped (outside CI, no Redis). */
export const REDIS_SKIP = `no Redis at ${REDIS_URL} (set REDIS_URL; with CI=true these tests run and fail instead)`

/**
 * Key prefixes for one test file: each backend gets its own (`<random>:<n>:`) unless one is given,
 * and `cleanup()` deletes every key under the file's random root.
 */
export class RedisTestSpace {
  readonly root = `is-test:${randomBytes(6).toString('hex')}:`
  private n = 0

  /** A fresh prefix under the root. */
  prefix(): string {
    return `${this.root}${++this.n}:`
  }

  backend(options: Omit<RedisStateBackendOptions, 'url'> & { url?: string }): RedisStateBackend {
    return new RedisStateBackend({ url: REDIS_URL, prefix: this.prefix(), ...options })
  }

  /** Keys under the root now (SCAN). */
  async keys(prefix = this.root): Promise<string[]> {
    const c = new Redis(REDIS_URL)
    try {
      const out: string[] = []
      let cursor = '0'
      do {
        const [next, batch] = await c.scan(cursor, 'MATCH', new RedisKeys(prefix).pattern(), 'COUNT', 1000)
        cursor = next
        out.push(...batch)
      } while (cursor !== '0')
      return out
    } finally {
      c.disconnect()
    }
  }

  /** A backend whose `close()` also deletes its keys (for tests that only close what they make). */
  disposable(options: Omit<RedisStateBackendOptions, 'url'>): RedisStateBackend {
    const b = this.backend(options)
    const close = b.close.bind(b)
    b.close = async () => {
      await close()
      await this.cleanup(b.prefix)
    }
    return b
  }

  /** Deletes every key of this file's backends (or of one prefix). */
  async cleanup(prefix = this.root): Promise<void> {
    const keys = await this.keys(prefix)
    if (keys.length === 0) return
    const c = new Redis(REDIS_URL)
    try {
      for (let i = 0; i < keys.length; i += 500) await c.del(...keys.slice(i, i + 500))
    } finally {
      c.disconnect()
    }
  }
}

import { MemoryStateBackend } from '../../lib/server/state/memory-backend.js'
import { SqliteStateBackend } from '../../lib/server/state/sqlite-backend.js'
import type { StateBackend } from '../../lib/server/state/state-backend.js'
import { redisReachable, RedisTestSpace } from './redis.js'

/** Retention limits for servers built on a given backend in tests. */
const LIMITS = { maxRetained: 10_000, retentionMs: 600_000 }

// Redis: a key prefix of its own per backend, deleted when it closes; left out (outside CI only) when no Redis answers.
const redis = (await redisReachable()) ? new RedisTestSpace() : undefined

/**
 * Every state backend, for server-level tests that must hold on each (tenant isolation): a test
 * loops over this list, and a new backend is one more line here.
 */
export const STATE_BACKENDS: ReadonlyArray<{ name: string; make: () => StateBackend }> = [
  { name: 'memory', make: () => new MemoryStateBackend(LIMITS) },
  { name: 'sqlite', make: () => new SqliteStateBackend({ path: ':memory:', ...LIMITS }) },
  ...(redis ? [{ name: 'redis', make: () => redis.disposable(LIMITS) }] : []),
]

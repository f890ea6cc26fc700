import t from 'tap'
import { RedisStateBackend } from '../lib/server/state/redis-backend.js'
import { redisReachable, REDIS_SKIP, RedisTestSpace } from './helpers/redis.js'
import { stateContract } from './helpers/state-contract.js'

const space = new RedisTestSpace()

if (!(await redisReachable())) {
  t.comment(REDIS_SKIP)
  t.pass('skipped: ' + REDIS_SKIP)
} else {
  t.teardown(() => space.cleanup())

  // The state layer's contract on the Redis backend: a fresh key prefix per backend; a restart
  // closes the backend and opens a new one on the same prefix (the state lives in Redis).
  stateContract(t, async (limits) => space.backend(limits), {
    reopen: async (b, limits) => {
      await b.close()
      return space.backend({ ...limits, prefix: (b as RedisStateBackend).prefix })
    },
  })
}

// Worker processes of one cluster add up for one tenant (issue 14): the lease cap per tenant is the
// shared state's count of the tenant's leases in the whole cluster, so a worker must not cap it at
// its own `workers` — two workers of one batch each run a tenant's two batches at once.
import t from 'tap'
import { groupKey } from '../lib/server/queue/work-queue.js'
import type { SubmitItem } from '../lib/server/state/state-backend.js'
import { ownerKey } from '../lib/server/store/result-store.js'
import { createModelRegistry } from '../lib/models/registry.js'
import type { Pipeline } from '../lib/models/pipeline.js'
import { createWorker } from '../lib/server/worker.js'
import { REDIS_SKIP, redisReachable, RedisTestSpace } from './helpers/redis.js'
import { until } from './helpers/until.js'

const space = new RedisTestSpace()
const reachable = await redisReachable()
if (reachable) t.teardown(() => space.cleanup())

function item(tenant: string, id: string): SubmitItem {
  const model = 'test/gate'
  return {
    tenant,
    owner: ownerKey(tenant, model),
    id,
    model,
    compute: 'cpu',
    inputs: id,
    group: groupKey(model, 'cpu', undefined),
    fingerprint: JSON.stringify(id),
    bytes: id.length + 2,
    route: { node: 'front-end' },
  }
}

t.test('two worker processes of one batch at a time run one tenant\'s two batches at once', { skip: reachable ? false : REDIS_SKIP }, async (t) => {
  const prefix = space.prefix()
  const limits = { maxRetained: 10_000, retentionMs: 600_000 }
  const front = space.backend({ ...limits, prefix })
  let running = 0
  let peak = 0
  let open!: () => void
  const gate = new Promise<void>((resolve) => (open = resolve))
  // A model that holds its batch until the test opens the gate, counting batches running at once.
  const model: Pipeline = {
    id: 'test/gate',
    task: 'echo',
    async run(inputs) {
      running++
      peak = Math.max(peak, running)
      await gate
      running--
      return inputs
    },
  }
  const states = [space.backend({ ...limits, prefix }), space.backend({ ...limits, prefix })]
  const workers = states.map((state, k) => createWorker({ state, registry: createModelRegistry({ models: [model] }), workers: 1, maxBatch: 4, nodeId: `w${k}` }))
  t.teardown(async () => {
    open()
    await Promise.all(workers.map((w) => w.close()))
    await Promise.all([front, ...states].map((s) => s.close()))
  })
  const outcomes = await front.submit(Array.from({ length: 8 }, (_, i) => item('tenant-a', String(i))))
  t.same(outcomes.map((o) => o.status), Array(8).fill('queued'))
  // Before the fix the second worker waited for ever: the tenant's one lease was the whole cluster's cap.
  await until(() => peak === 2, 'two batches running at once', 10_000).catch(() => {})
  t.equal(peak, 2, 'both workers hold a batch of the one tenant')
  t.same(workers.map((w) => w.busy), [1, 1])
  open()
  await until(async () => (await front.billedTo(ownerKey('tenant-a', 'test/gate'))) === 8, 'every item billed', 10_000)
  t.equal(await front.billedTo(ownerKey('tenant-a', 'test/gate')), 8, 'every item finished and billed once')
})

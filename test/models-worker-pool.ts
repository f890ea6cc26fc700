import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import t from 'tap'
import { InvalidOptionError, ModelError, ModelInputError, OverloadedError, ShuttingDownError } from '../lib/errors.js'
import { WorkerPool } from '../lib/models/worker-pool.js'

// A worker entry with models that misbehave on purpose. It is plain JS written to a tap fixture dir
// and imports the real thread side of the protocol, so the pool is tested against serveTasks().
const protocolUrl = new URL('../lib/models/worker-protocol.js', import.meta.url).href
const errorsUrl = new URL('../lib/errors.js', import.meta.url).href
const fixtureWorker = `
import { threadId, workerData } from 'node:worker_threads'
import { serveTasks } from ${JSON.stringify(protocolUrl)}
import { ModelInputError } from ${JSON.stringify(errorsUrl)}

const busy = (ms) => { const end = Date.now() + ms; while (Date.now() < end); }
serveTasks({
  upper: (inputs) => inputs.map((x) => typeof x === 'string' ? x.toUpperCase() : new ModelInputError('upper expects a string')),
  oops: (inputs) => inputs.map((x, i) => i === 0 ? new TypeError('item broke') : x),
  slow: (inputs, parameters) => { busy(parameters.ms ?? 50); return inputs.map(() => threadId) },
  fail: () => { throw new Error('the batch failed') },
  short: () => [],
  exit: () => process.exit(3),
  uncaught: (inputs) => { setImmediate(() => { throw new Error('boom') }); return new Promise(() => {}) },
  data: (inputs) => inputs.map(() => workerData),
  hang: () => { for (;;); },
})
`
const dir = t.testdir({ 'fixture-worker.mjs': fixtureWorker })
const file = pathToFileURL(join(dir, 'fixture-worker.mjs'))

function pool(t: { teardown: (fn: () => unknown) => void }, options: Partial<ConstructorParameters<typeof WorkerPool>[0]> = {}): WorkerPool {
  const p = new WorkerPool({ file, ...options })
  t.teardown(() => p.close())
  return p
}

t.test('options are checked', async (t) => {
  t.throws(() => new WorkerPool({ file: '' }), new InvalidOptionError('options.file must be a file: URL or a path to the worker entry file'))
  t.throws(() => new WorkerPool({ file, threads: 0 }), new InvalidOptionError('options.threads must be a positive integer, got 0'))
  t.throws(() => new WorkerPool({ file, maxQueue: 1.5 }), { code: 'ERR_INVALID_OPTION', message: 'options.maxQueue must be a non-negative integer, got 1.5' })
})

// Thread startup is slow under a TypeScript loader, so the subtests that do not crash threads
// share one pool (one thread).
const shared = new WorkerPool({ file, workerData: { hello: 'thread' } })
t.teardown(() => shared.close())

t.test('per-item results and errors cross the thread boundary', async (t) => {
  const p = shared
  t.equal(p.threads, 0, 'no thread before the first task')
  const out = await p.run('upper', ['a', 7, 'b'], {})
  t.equal(out[0], 'A')
  t.equal(out[2], 'B')
  t.type(out[1], ModelInputError)
  t.match(out[1], { code: 'ERR_MODEL_INPUT', message: 'upper expects a string' })
  const [broken, fine] = await p.run('oops', ['x', 'y'], {})
  t.type(broken, ModelError, 'an unexpected per-item error is a ModelError')
  t.match(broken, { code: 'ERR_MODEL', message: 'item broke' })
  t.equal(fine, 'y')
  t.same(await p.run('data', [1], {}), [{ hello: 'thread' }], 'workerData reaches the thread')
  t.equal(p.threads, 1)
})

t.test('a failed batch rejects with ModelError; the thread keeps serving', async (t) => {
  const p = shared
  await t.rejects(p.run('fail', [1], {}), new ModelError('Model fail failed: the batch failed'))
  await t.rejects(p.run('short', [1, 2], {}), { code: 'ERR_MODEL', message: 'Model short failed: Model short returned 0 results for 2 items' })
  await t.rejects(p.run('nope', [1], {}), { code: 'ERR_MODEL', message: 'Model nope failed: Model nope is not served by this worker' })
  await t.rejects(p.run('upper', [() => 1], {}), { code: 'ERR_MODEL', message: /^Cannot send the batch to a worker thread/ }, 'uncloneable inputs')
  t.same(await p.run('upper', ['ok'], {}), ['OK'])
  t.equal(p.threads, 1)
})

t.test('a crashed thread fails its task and is replaced', async (t) => {
  const p = pool(t)
  await t.rejects(p.run('exit', [1], {}), { name: 'ModelError', code: 'ERR_MODEL', message: 'Worker thread running exit crashed: exited with code 3' })
  t.equal(p.threads, 0, 'the dead thread is gone; with nothing queued none is started yet')
  // A task queued behind a crash starts on a replacement at once.
  const crash = p.run('uncaught', [1], {})
  const queued = p.run('slow', [1, 2], { ms: 0 })
  await t.rejects(crash, { name: 'ModelError', code: 'ERR_MODEL', message: 'Worker thread running uncaught crashed: boom' })
  const [a, b] = (await queued) as number[]
  t.equal(a, b)
  t.equal(p.threads, 1, 'replaced, not added')
  t.same(await p.run('upper', ['still here'], {}), ['STILL HERE'])
})

t.test('threads run tasks in parallel; the queue is bounded', async (t) => {
  const p = pool(t, { threads: 2, maxQueue: 2 })
  // Start both threads first: thread startup (slow under a TypeScript loader) is not what is timed.
  await Promise.all([p.run('upper', ['a'], {}), p.run('upper', ['b'], {})])
  t.equal(p.threads, 2)
  const started = performance.now()
  const runs = [1, 2, 3, 4].map(() => p.run('slow', [0], { ms: 300 }))
  t.equal(p.running, 2)
  t.equal(p.queued, 2)
  await t.rejects(p.run('upper', ['x'], {}), new OverloadedError('Worker pool queue is full (2 tasks waiting)'))
  const ids = (await Promise.all(runs)).map(([id]) => id)
  t.equal(new Set(ids).size, 2, 'both threads were used')
  const elapsed = performance.now() - started
  t.ok(elapsed < 1000, `two at a time, not one (${elapsed.toFixed(0)} ms)`)
  t.equal(p.running, 0)
})

t.test('abort: a queued task leaves the queue, a running one has its thread replaced', async (t) => {
  const p = shared
  const reason = new Error('client gone')
  const running = new AbortController()
  const queued = new AbortController()
  const first = p.run('slow', [0], { ms: 300 }, running.signal)
  const second = p.run('upper', ['never'], {}, queued.signal)
  const third = p.run('upper', ['third'], {})
  queued.abort(reason)
  t.equal(p.queued, 1, 'removed from the queue')
  await t.rejects(second, reason)
  const started = performance.now()
  running.abort(reason)
  await t.rejects(first, reason)
  t.ok(performance.now() - started < 100, 'rejected without waiting for the thread')
  t.same(await third, ['THIRD'], 'a replacement thread serves the queue')
  t.equal(p.threads, 1, 'still one thread')
  await t.rejects(p.run('upper', ['x'], {}, AbortSignal.abort(reason)), reason, 'already aborted')
})

t.test('abort: a model stuck forever in its thread is terminated and replaced', async (t) => {
  const p = pool(t, { threads: 1 })
  const [before] = (await p.run('slow', [0], { ms: 0 })) as number[]
  const ac = new AbortController()
  const stuck = p.run('hang', [0], {}, ac.signal)
  await new Promise((r) => setTimeout(r, 50))
  t.equal(p.running, 1, 'the stuck batch holds the thread')
  const reason = new Error('batch timed out')
  ac.abort(reason)
  await t.rejects(stuck, reason)
  t.equal(p.running, 0, 'its thread is gone')
  const started = performance.now()
  const [after] = (await p.run('slow', [0], { ms: 0 })) as number[]
  t.not(after, before, 'a new thread answers')
  t.ok(performance.now() - started < 5000, 'at once, not after the stuck batch')
  t.equal(p.threads, 1, 'the stuck thread was not kept alongside')
})

t.test('close rejects pending work and refuses new work', async (t) => {
  const p = new WorkerPool({ file })
  const running = p.run('slow', [0], { ms: 300 })
  const queued = p.run('upper', ['x'], {})
  const closing = p.close()
  t.equal(p.close(), closing, 'idempotent')
  await t.rejects(running, new ShuttingDownError('Worker pool is closed'))
  await t.rejects(queued, ShuttingDownError)
  await closing
  t.equal(p.threads, 0)
  await t.rejects(p.run('upper', ['x'], {}), { name: 'ShuttingDownError', code: 'ERR_SHUTTING_DOWN' })
})

t.test('the process exits with an idle pool that was never closed', async (t) => {
  // A child with this process's loader flags (so it can import the TypeScript sources) uses a pool
  // and simply ends: a thread left ref'ed would keep it alive until the timeout kills it. (A closed
  // pool is covered by this very file: tap would time out if close() left a thread behind.)
  const poolUrl = new URL('../lib/models/worker-pool.js', import.meta.url).href
  const dir = t.testdir({
    'child.mjs': `
      import { WorkerPool } from ${JSON.stringify(poolUrl)}
      const pool = new WorkerPool({ file: new URL(${JSON.stringify(file.href)}) })
      console.log(JSON.stringify(await pool.run('upper', ['a'], {})), pool.threads)
    `,
  })
  const child = spawnSync(process.execPath, [...process.execArgv, join(dir, 'child.mjs')], { encoding: 'utf8', timeout: 60_000 })
  t.equal(child.signal, null, 'exited on its own')
  t.equal(child.status, 0, child.stderr)
  t.equal(child.stdout.trim(), '["A"] 1')
})

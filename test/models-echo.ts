import t from 'tap'
import { ModelInputError } from '../lib/errors.js'
import { createEchoPipeline, EchoPipeline, MAX_ECHO_DELAY_MS } from '../lib/models/builtin-echo.js'

t.test('returns every item inputs unchanged, in order', async (t) => {
  const echo = createEchoPipeline()
  t.equal(echo.id, 'builtin/echo')
  t.equal(echo.task, 'echo')
  const obj = { a: [1, 2, { b: null }] }
  const inputs = ['text', 42, obj, ['x', 'y'], null]
  const outputs = await echo.run(inputs, {})
  t.same(outputs, inputs)
  t.equal(outputs[2], obj, 'same reference, not a copy')
  t.not(outputs, inputs, 'a new array: the caller may keep its batch')
  t.same(await echo.run([], {}), [])
})

t.test('delay_ms sleeps once per batch', async (t) => {
  const echo = new EchoPipeline()
  const started = performance.now()
  // 1 s per batch against 4 s per item: bounds a loaded machine keeps.
  const outputs = await echo.run(['a', 'b', 'c', 'd'], { delay_ms: 1000 })
  const elapsed = performance.now() - started
  t.same(outputs, ['a', 'b', 'c', 'd'])
  t.ok(elapsed >= 990, `slept (${elapsed.toFixed(0)} ms)`)
  t.ok(elapsed < 3000, `once per batch, not per item (${elapsed.toFixed(0)} ms)`)
  t.same(await echo.run(['x'], { delay_ms: 0 }), ['x'], 'zero is valid')
})

t.test('a bad delay_ms fails every item with ModelInputError, without sleeping', async (t) => {
  const echo = new EchoPipeline()
  t.equal(MAX_ECHO_DELAY_MS, 10_000, "the cap: one payload must not park a worker for long")
  // Each value that could be read as a delay is seconds long, so "did not sleep" has a bound a
  // loaded machine keeps (2 s), not milliseconds.
  for (const delay of [-1, Infinity, Number.NaN, '5000', null, {}, MAX_ECHO_DELAY_MS + 1]) {
    const started = performance.now()
    const outputs = await echo.run(['a', 'b'], { delay_ms: delay })
    t.equal(outputs.length, 2)
    for (const out of outputs) {
      t.type(out, ModelInputError, `delay_ms ${String(delay)}`)
      t.match(out, { code: 'ERR_MODEL_INPUT', name: 'ModelInputError', message: /^parameters\.delay_ms must be a finite number of milliseconds between 0 and 10000, got / })
    }
    t.ok(performance.now() - started < 2000, 'did not sleep')
  }
  const [out] = await echo.run(['a'], { delay_ms: '10' })
  t.equal((out as Error).message, 'parameters.delay_ms must be a finite number of milliseconds between 0 and 10000, got a string')
})

t.test('abort clears the timer and rejects with the signal reason', async (t) => {
  const echo = new EchoPipeline()
  const controller = new AbortController()
  const reason = new Error('shutting down')
  const started = performance.now()
  const run = echo.run(['a'], { delay_ms: 10_000 }, controller.signal)
  setTimeout(() => controller.abort(reason), 20)
  await t.rejects(run, reason)
  t.ok(performance.now() - started < 1000, 'did not wait for the delay')
  await t.rejects(echo.run(['a'], {}, AbortSignal.abort(reason)), reason, 'already aborted')
  // A pending 10 s timer would keep the process alive: tap's timeout would catch a leak.
})

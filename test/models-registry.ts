import t from 'tap'
import { InvalidOptionError, ShuttingDownError } from '../lib/errors.js'
import type { Pipeline } from '../lib/models/pipeline.js'
import { BUILTIN_MODEL_IDS, createModelRegistry } from '../lib/models/registry.js'

function fakePipeline(id: string, onClose?: () => void): Pipeline {
  return { id, task: 'fake', run: async (inputs) => inputs.map(() => id), close: async () => onClose?.() }
}

t.test('serves the builtins and extra models', async (t) => {
  const registry = createModelRegistry({ models: [fakePipeline('me/fake')] })
  t.teardown(() => registry.close())
  t.same(registry.list(), ['builtin/echo', 'builtin/sentiment', 'builtin/ner', 'me/fake'])
  t.same(BUILTIN_MODEL_IDS, ['builtin/echo', 'builtin/sentiment', 'builtin/ner'])
  t.equal(registry.get('builtin/echo')?.task, 'echo')
  t.equal(registry.get('builtin/sentiment')?.task, 'text-classification')
  t.equal(registry.get('builtin/ner')?.task, 'token-classification')
  t.equal(registry.get('builtin/sentiment'), registry.get('builtin/sentiment'), 'one pipeline per id')
  t.same(await registry.get('me/fake')!.run([1, 2], {}), ['me/fake', 'me/fake'])
  t.equal(registry.get('nope/nothing'), undefined)
  t.same(await registry.get('builtin/echo')!.run(['x'], {}), ['x'])
})

t.test('a record of models serves each under its key; extra models win over builtins', async (t) => {
  const mine = fakePipeline('whatever')
  const registry = createModelRegistry({ models: { 'builtin/echo': mine, alias: mine }, builtins: true })
  t.teardown(() => registry.close())
  t.equal(registry.get('builtin/echo'), mine)
  t.equal(registry.get('alias'), mine)
  t.same(registry.list(), ['builtin/echo', 'builtin/sentiment', 'builtin/ner', 'alias'])
  const bare = createModelRegistry({ builtins: false })
  t.same(bare.list(), [])
  t.equal(bare.get('builtin/sentiment'), undefined)
  await bare.close()
})

t.test('options are checked', async (t) => {
  t.throws(() => createModelRegistry({ threads: 0 }), new InvalidOptionError('options.threads must be a positive integer, got 0'))
  t.throws(() => createModelRegistry({ maxQueue: -1 }), { code: 'ERR_INVALID_OPTION', message: 'options.maxQueue must be a non-negative integer, got -1' })
  t.throws(() => createModelRegistry({ models: [{ id: 'x' } as unknown as Pipeline] }), { message: 'options.models["x"] must be a Pipeline (an object with run())' })
  t.throws(() => createModelRegistry({ models: [{ run: async () => [] } as unknown as Pipeline] }), { message: 'options.models entries must have a non-empty string id' })
  t.throws(() => createModelRegistry({ builtins: 'yes' as unknown as boolean }), { message: 'options.builtins must be a boolean, got string' })
})

t.test('close closes every pipeline once and stops the wink threads', async (t) => {
  let closed = 0
  const registry = createModelRegistry({ models: [fakePipeline('a', () => closed++)] })
  const sentiment = registry.get('builtin/sentiment')!
  t.same(await sentiment.run([], {}), [], 'an empty batch needs no thread')
  const [out] = (await sentiment.run(['What a lovely day!'], {})) as Array<Array<Array<{ label: string }>>>
  t.equal(out![0]![0]!.label, 'POSITIVE')
  const closing = registry.close()
  t.equal(registry.close(), closing, 'idempotent')
  await closing
  t.equal(closed, 1)
  await t.rejects(sentiment.run(['again'], {}), new ShuttingDownError('Model registry is closed'))
  await t.rejects(registry.get('builtin/ner')!.run(['again'], {}), new ShuttingDownError('Model registry is closed'), 'no pool is started after close')
})

t.test('a failing close() of one model does not stop the others', async (t) => {
  let closed = 0
  const failing: Pipeline = { ...fakePipeline('bad'), close: async () => { throw new Error('cannot close') } }
  const registry = createModelRegistry({ models: [failing, fakePipeline('good', () => closed++)] })
  await t.rejects(registry.close(), { message: 'cannot close' })
  t.equal(closed, 1)
})

// Finding Hugging Face model folders and reading what they say (model-files.ts), and the token
// aggregation strategies (token-aggregation.ts): pure code, tested directly.
import { mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { detectDtype, detectTask, isHubModelId, normalizeTask, onnxBytes, resolveModelDir } from '../lib/models/model-files.js'
import { aggregateTokens, alignTokens, type TokenPrediction } from '../lib/models/token-aggregation.js'

const root = mkdtempSync(join(tmpdir(), 'is-model-files-'))
t.teardown(() => rmSync(root, { recursive: true, force: true }))

function folder(dir: string, files: Record<string, string>): string {
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(join(dir, name, '..'), { recursive: true })
    writeFileSync(join(dir, name), text)
  }
  return dir
}

t.test('isHubModelId: org/name of safe characters only', async (t) => {
  for (const ok of ['bert-base-uncased', 'Xenova/bart-large-mnli', 'org/model.v2', 'a_b/c-d']) t.ok(isHubModelId(ok), ok)
  for (const bad of ['', '../x', 'a/../b', '/abs', 'a/b/c', 'a//b', '.hidden/x', 'a/-x', 'a b/c', 'a/b\n']) t.notOk(isHubModelId(bad), JSON.stringify(bad))
})

t.test('resolveModelDir: models folder, then the cache, then the Python Hub cache (refs/main, else the newest snapshot)', async (t) => {
  const models = join(root, 'models')
  const cache = join(root, 'cache')
  const hub = join(root, 'hub')
  const paths = { modelsDir: models, cacheDir: cache, hubCacheDir: hub }
  folder(join(models, 'org', 'a'), { 'config.json': '{}' })
  folder(join(cache, 'org', 'a'), { 'config.json': '{}' })
  folder(join(cache, 'org', 'b'), { 'config.json': '{}' })
  const repo = join(hub, 'models--org--c')
  folder(join(repo, 'snapshots', 'aaaaaaa'), { 'config.json': '{}' })
  folder(join(repo, 'snapshots', 'bbbbbbb'), { 'config.json': '{}' })
  folder(repo, { 'refs/main': 'aaaaaaa\n' })
  const old = new Date(Date.now() - 60_000)
  utimesSync(join(repo, 'snapshots', 'aaaaaaa'), old, old)
  const repoD = join(hub, 'models--d')
  folder(join(repoD, 'snapshots', 'old1111'), { 'config.json': '{}' })
  folder(join(repoD, 'snapshots', 'new2222'), { 'config.json': '{}' })
  utimesSync(join(repoD, 'snapshots', 'old1111'), old, old)

  t.equal(resolveModelDir('org/a', paths).dir, join(models, 'org', 'a'), 'the models folder wins')
  t.equal(resolveModelDir('org/b', paths).dir, join(cache, 'org', 'b'))
  t.equal(resolveModelDir('org/c', paths).dir, join(repo, 'snapshots', 'aaaaaaa'), 'refs/main, not the newest')
  t.equal(resolveModelDir('d', paths).dir, join(repoD, 'snapshots', 'new2222'), 'no refs: the newest snapshot')
  const missing = resolveModelDir('org/x', paths)
  t.equal(missing.dir, undefined)
  t.same(missing.looked, [join(models, 'org', 'x'), join(cache, 'org', 'x'), join(hub, 'models--org--x')])
  t.same(resolveModelDir('../etc', paths), { dir: undefined, looked: [] }, 'a bad id looks nowhere')
})

t.test('detectTask: the card\'s pipeline_tag, else config.json architectures', async (t) => {
  const dir = (name: string, files: Record<string, string>): string => folder(join(root, 'task', name), files)
  const cfg = (c: unknown): string => JSON.stringify(c)
  t.equal(detectTask(dir('card', { 'README.md': '---\nlicense: mit\npipeline_tag: fill-mask\n---\n# x', 'config.json': cfg({ architectures: ['BertForSequenceClassification'] }) })).task, 'fill-mask')
  t.equal(detectTask(dir('seq', { 'config.json': cfg({ architectures: ['DistilBertForSequenceClassification'], id2label: { 0: 'NEGATIVE', 1: 'POSITIVE' } }) })).task, 'text-classification')
  t.equal(detectTask(dir('nli', { 'config.json': cfg({ architectures: ['BartForSequenceClassification'], label2id: { contradiction: 0, neutral: 1, entailment: 2 } }) })).task, 'zero-shot-classification')
  t.equal(detectTask(dir('tok', { 'config.json': cfg({ architectures: ['BertForTokenClassification'] }) })).task, 'token-classification')
  t.equal(detectTask(dir('mlm', { 'config.json': cfg({ architectures: ['RobertaForMaskedLM'] }) })).task, 'fill-mask')
  t.equal(detectTask(dir('ctc', { 'config.json': cfg({ architectures: ['Wav2Vec2ForCTC'] }) })).task, 'automatic-speech-recognition')
  t.equal(detectTask(dir('whisper', { 'config.json': cfg({ architectures: ['WhisperForConditionalGeneration'] }) })).task, 'automatic-speech-recognition')
  t.equal(detectTask(dir('enc', { 'config.json': cfg({ architectures: ['BertModel'] }) })).task, 'feature-extraction')
  t.equal(detectTask(dir('st', { 'config.json': cfg({}), 'modules.json': '[]' })).task, 'feature-extraction')
  const gen = detectTask(dir('gen', { 'config.json': cfg({ architectures: ['GPT2LMHeadModel'] }) }))
  t.equal(gen.task, undefined)
  t.match(gen.source, /GPT2LMHeadModel/)
  t.equal(normalizeTask('sentiment-analysis'), 'text-classification')
  t.equal(normalizeTask('ner'), 'token-classification')
  t.equal(normalizeTask('text-generation'), undefined)
})

t.test('detectDtype and onnxBytes: the best ONNX file present, and its size with external data', async (t) => {
  const q = folder(join(root, 'dtype', 'q'), { 'onnx/model_quantized.onnx': 'x'.repeat(10), 'onnx/model_fp16.onnx': 'x' })
  t.equal(detectDtype(q), 'q8')
  const f = folder(join(root, 'dtype', 'f'), { 'onnx/model.onnx': 'x'.repeat(100), 'onnx/model.onnx_data': 'x'.repeat(1000), 'onnx/model_quantized.onnx': 'x' })
  t.equal(detectDtype(f), 'fp32')
  t.equal(onnxBytes(f, 'fp32'), 1100)
  t.equal(onnxBytes(f, 'q8'), 1)
  t.equal(detectDtype(join(root, 'dtype', 'none')), undefined)
})

t.test('aggregateTokens: none, simple, first, average, max as transformers\' Python pipeline', async (t) => {
  const labels = ['O', 'B-PER', 'I-PER', 'B-LOC', 'I-LOC']
  const tok = (index: number, id: number, scores: number[], start: number, end: number, subword = false): TokenPrediction => ({ index, id, scores, start, end, subword })
  // "Ann Jacksonville": Ann=B-PER; jack(B-PER .6) ##son(I-PER .5) ##ville(I-LOC .9)
  const tokens = [
    tok(1, 10, [0.05, 0.9, 0.02, 0.02, 0.01], 0, 3),
    tok(2, 11, [0.1, 0.6, 0.1, 0.1, 0.1], 4, 8),
    tok(3, 12, [0.1, 0.1, 0.5, 0.1, 0.2], 8, 11, true),
    tok(4, 13, [0.02, 0.02, 0.02, 0.04, 0.9], 11, 16, true),
  ]
  const words: Record<number, string> = { 10: 'ann', 11: 'jack', 12: '##son', 13: '##ville' }
  const ctx = { labels, ignoreLabels: ['O'], decode: (ids: number[]) => ids.map((i) => words[i]).join(' ').replace(/ ##/g, '') }
  const show = (s: 'none' | 'simple' | 'first' | 'average' | 'max'): string[] =>
    aggregateTokens(tokens, s, ctx).map((e) => ('entity_group' in e ? `${e.entity_group}:${e.word}:${e.start}-${e.end}` : `${e.entity}:${e.word}`))
  t.same(show('none'), ['B-PER:ann', 'B-PER:jack', 'I-PER:##son', 'I-LOC:##ville'])
  t.same(show('simple'), ['PER:ann:0-3', 'PER:jackson:4-11', 'LOC:##ville:11-16'])
  t.same(show('first'), ['PER:ann:0-3', 'PER:jacksonville:4-16'])
  t.same(show('max'), ['PER:ann:0-3', 'LOC:jacksonville:4-16'])
  // mean over the word: O .073, B-PER .233, I-PER .207, B-LOC .08, I-LOC .403
  t.same(show('average'), ['PER:ann:0-3', 'LOC:jacksonville:4-16'])
  const avg = aggregateTokens(tokens, 'average', ctx)[1] as { score: number }
  t.ok(Math.abs(avg.score - (0.1 + 0.2 + 0.9) / 3) < 1e-9, 'score: the mean of the winning label')
})

t.test('alignTokens: offsets ignoring case and accents; sub-words are tokens right after a non-space', async (t) => {
  t.same(alignTokens('Héllo Jackson!', ['hello', 'jack', 'son', '!']), [
    { start: 0, end: 5, subword: false },
    { start: 6, end: 10, subword: false },
    { start: 10, end: 13, subword: true },
    { start: 13, end: 14, subword: true },
  ])
  t.same(alignTokens('abc', ['zzz', 'abc']), [{ start: null, end: null, subword: false }, { start: 0, end: 3, subword: false }], 'not found: null, the search goes on')
})

import { appendFileSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { CheckpointJournal, inputHash } from '../lib/client/checkpoint-journal.js'

const header = { model: '/bulk/stream/cpu/builtin/echo', parameters: '' }
const dir = mkdtempSync(join(tmpdir(), 'is-journal-'))
let n = 0
const fresh = (): string => join(dir, `j${n++}.ckpt`)

t.test('a new journal: group-committed sent ids and results, read back after reopen', async (t) => {
  const path = fresh()
  const j = await CheckpointJournal.open(path, header, { runId: 'run1', commitIntervalMs: 5 })
  t.equal(j.runId, 'run1')
  const commits: [string[], string[]][] = []
  j.onCommit = (s, r) => commits.push([s, r])
  j.appendSent('a', inputHash('A'))
  j.appendSent('b', inputHash('B'))
  j.appendResult('a', [[{ label: 'POSITIVE', score: 0.9 }]])
  await j.commit()
  t.same(commits, [[['a', 'b'], ['a']]], 'one group, one commit')
  t.same(await j.readResult('a'), [[{ label: 'POSITIVE', score: 0.9 }]])
  await j.close()

  const again = await CheckpointJournal.open(path, header)
  t.equal(again.runId, 'run1', 'the run id survives')
  t.ok(again.hasResult('a'))
  t.notOk(again.hasResult('b'))
  t.equal(again.sentHash('b'), inputHash('B'))
  t.equal(again.sentHash('a'), inputHash('A'), 'a result keeps its input hash')
  t.equal(again.unansweredCount, 1)
  t.same(await again.readResult('a'), [[{ label: 'POSITIVE', score: 0.9 }]])
  await again.close()
})

t.test('a torn last line (killed mid-write) is dropped; appends continue cleanly', async (t) => {
  const path = fresh()
  const j = await CheckpointJournal.open(path, header, { runId: 'r' })
  j.appendSent('x', 'h')
  j.appendResult('x', 'out')
  await j.close()
  appendFileSync(path, '{"r":"y","h":"h","o":"trunc')
  const k = await CheckpointJournal.open(path, header)
  t.ok(k.hasResult('x'))
  t.notOk(k.hasResult('y'))
  k.appendSent('z', 'h')
  k.appendResult('z', { ok: true })
  await k.close()
  const lines = readFileSync(path, 'utf8').trim().split('\n')
  for (const l of lines) t.doesNotThrow(() => JSON.parse(l), l)
  const m = await CheckpointJournal.open(path, header)
  t.same(await m.readResult('z'), { ok: true })
  await m.close()
})

t.test('damage before the last line, a foreign file, another model or parameters: refused', async (t) => {
  const path = fresh()
  const j = await CheckpointJournal.open(path, header, { runId: 'r' })
  j.appendSent('x', 'h')
  await j.close()
  await t.rejects(CheckpointJournal.open(path, { ...header, model: '/bulk/stream/cpu/builtin/sentiment' }), {
    code: 'ERR_CHECKPOINT',
    message: /was written for model builtin\/echo, not builtin\/sentiment;/,
  })
  await t.rejects(CheckpointJournal.open(path, { ...header, parameters: '{"k":1}' }), { code: 'ERR_CHECKPOINT', message: /parameters/ })
  await t.rejects(CheckpointJournal.open(path, { ...header, fingerprint: { input: 'other.csv' } }), { code: 'ERR_CHECKPOINT', message: /another input/ })
  const damaged = fresh()
  writeFileSync(damaged, readFileSync(path, 'utf8') + 'garbage\n{"s":[["y","h"]]}\n')
  await t.rejects(CheckpointJournal.open(damaged, header), { code: 'ERR_CHECKPOINT', message: /damaged/ })
  const foreign = fresh()
  writeFileSync(foreign, '{"hello":1}\n')
  await t.rejects(CheckpointJournal.open(foreign, header), { code: 'ERR_CHECKPOINT', message: /not an inference-stream checkpoint/ })
})

t.test('compaction drops sent entries that have results and keeps the rest readable', async (t) => {
  const path = fresh()
  const j = await CheckpointJournal.open(path, header, { runId: 'r' })
  for (let i = 0; i < 5000; i++) j.appendSent(`id-${i}`, inputHash(i))
  await j.commit()
  for (let i = 0; i < 4990; i++) j.appendResult(`id-${i}`, i)
  await j.commit()
  t.ok(j.wantsCompaction)
  const before = statSync(path).size
  await j.compact()
  const after = statSync(path).size
  t.ok(after < before, `compacted ${before} -> ${after} bytes`)
  j.appendResult('id-4995', 4995)
  await j.close()
  const k = await CheckpointJournal.open(path, header)
  t.equal(k.resultCount, 4991)
  t.equal(k.unansweredCount, 9)
  t.same(await k.readResult('id-1234'), 1234)
  t.same(await k.readResult('id-4995'), 4995)
  t.equal(k.sentHash('id-7'), inputHash(7))
  await k.close()
})

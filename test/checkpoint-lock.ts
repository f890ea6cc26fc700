import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { CheckpointLockedError } from '../lib/errors.js'
import { acquireCheckpointLock } from '../lib/client/checkpoint-lock.js'
import { CheckpointJournal } from '../lib/client/checkpoint-journal.js'
import { cliProcess } from './helpers/cli.js'

const header = { model: '/bulk/stream/cpu/builtin/echo', parameters: '' }

t.test('a held lock refuses a second holder at once; release frees it', async (t) => {
  const cp = join(mkdtempSync(join(tmpdir(), 'is-lock-')), 'run.ckpt')
  const lock = await acquireCheckpointLock(cp)
  t.match(JSON.parse(readFileSync(`${cp}.lock`, 'utf8')), { pid: process.pid, host: hostname() })
  await t.rejects(acquireCheckpointLock(cp), { constructor: CheckpointLockedError, code: 'ERR_CHECKPOINT_LOCKED', message: new RegExp(`in use by another run \\(pid ${process.pid}`) })
  await lock.release()
  t.notOk(existsSync(`${cp}.lock`))
  const again = await acquireCheckpointLock(cp)
  await again.release()
})

t.test('a lock left by a dead process (SIGKILL) is taken over; a torn one too', async (t) => {
  const cp = join(mkdtempSync(join(tmpdir(), 'is-lock-')), 'run.ckpt')
  const dead = spawnSync(process.execPath, ['-e', '0']).pid as number
  writeFileSync(`${cp}.lock`, JSON.stringify({ pid: dead, host: hostname(), started: 'then' }))
  const lock = await acquireCheckpointLock(cp)
  t.match(JSON.parse(readFileSync(`${cp}.lock`, 'utf8')), { pid: process.pid })
  await lock.release()
  writeFileSync(`${cp}.lock`, '')
  await (await acquireCheckpointLock(cp)).release()
  // Another host's lock (a shared folder) is never guessed stale.
  writeFileSync(`${cp}.lock`, JSON.stringify({ pid: dead, host: 'elsewhere', started: 'then' }))
  await t.rejects(acquireCheckpointLock(cp), { code: 'ERR_CHECKPOINT_LOCKED', message: /on elsewhere/ })
})

t.test('CheckpointJournal holds the lock while open', async (t) => {
  const cp = join(mkdtempSync(join(tmpdir(), 'is-lock-')), 'run.ckpt')
  const j = await CheckpointJournal.open(cp, header)
  await t.rejects(CheckpointJournal.open(cp, header), { code: 'ERR_CHECKPOINT_LOCKED' })
  await j.close()
  t.notOk(existsSync(`${cp}.lock`), 'released on close')
  const k = await CheckpointJournal.open(cp, header)
  await k.close()
  // A refused open (another model) leaves no lock behind.
  await t.rejects(CheckpointJournal.open(cp, { ...header, model: 'other' }), { code: 'ERR_CHECKPOINT' })
  t.notOk(existsSync(`${cp}.lock`))
})

t.test('CLI: a second run on a checkpoint in use stops at once (exit 1); the first finishes whole', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'is-lock-cli-'))
  const input = join(dir, 'in.csv')
  writeFileSync(input, `text\n${Array.from({ length: 400 }, (_, i) => `row ${i}`).join('\n')}\n`)
  const out = join(dir, 'out.jsonl')
  const args = ['run', input, '-m', 'builtin/echo', '-c', 'text', '-o', out, '--checkpoint', '--parameters', '{"delay_ms":100}', '--max-in-flight', '4', '--no-progress']
  const first = cliProcess(args)
  t.teardown(() => first.child.kill('SIGKILL'))
  const deadline = Date.now() + 90_000 // not-stuck bound: a CLI started from source under the TS loader on a loaded machine
  while (!existsSync(`${out}.ckpt.lock`) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
  t.ok(existsSync(`${out}.ckpt.lock`), 'the first run holds the lock')
  const started = Date.now()
  const second = cliProcess(args)
  const code = (await second.exited).code
  t.equal(code, 1, second.err() + second.out())
  t.match(second.err(), /Checkpoint .*out\.jsonl\.ckpt is in use by another run \(pid \d+.*\(ERR_CHECKPOINT_LOCKED\)/)
  t.equal(first.child.exitCode, null, 'refused while the first run still runs')
  t.ok(Date.now() - started < 15_000, 'refused at once')
  t.equal((await first.exited).code, 0, first.err())
  const rows = readFileSync(out, 'utf8').trim().split('\n')
  t.equal(rows.length, 400, 'the first run wrote every row once')
  t.notOk(existsSync(`${out}.ckpt.lock`), 'released at the end')
})

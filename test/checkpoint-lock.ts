import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { CheckpointLockedError } from '../lib/errors.js'
import { acquireCheckpointLock } from '../lib/client/checkpoint-lock.js'
import { CheckpointJournal } from '../lib/client/checkpoint-journal.js'

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

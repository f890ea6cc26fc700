import { hostname } from 'node:os'
import { open, readFile, unlink } from 'node:fs/promises'
import { CheckpointError, CheckpointLockedError } from '../errors.js'

/** A held checkpoint lock: `release()` removes it (idempotent). */
export interface CheckpointLock {
  /** The lock file, `<checkpoint>.lock`. */
  readonly path: string
  release(): Promise<void>
}

interface LockInfo {
  pid: number
  host: string
  started: string
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    // EPERM: it exists but belongs to another user — still alive.
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * Takes the lock of a checkpoint: creates `<checkpoint>.lock` exclusively (O_EXCL) with this
 * process's pid. A lock left by a process that is gone (killed with SIGKILL) is taken over; one
 * held by a live process on this host fails at once with {@link CheckpointLockedError}, so two
 * runs never race on one journal and its output. A lock from another host (shared folder) is
 * honoured as held: delete it by hand if that run is known to be dead.
 */
export async function acquireCheckpointLock(checkpoint: string): Promise<CheckpointLock> {
  const path = `${checkpoint}.lock`
  const info: LockInfo = { pid: process.pid, host: hostname(), started: new Date().toISOString() }
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fh = await open(path, 'wx', 0o600)
      try {
        await fh.writeFile(`${JSON.stringify(info)}\n`)
      } finally {
        await fh.close()
      }
      let released = false
      return {
        path,
        async release() {
          if (released) return
          released = true
          await unlink(path).catch(() => {})
        },
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new CheckpointError(`Cannot lock checkpoint ${checkpoint}: ${(err as Error).message}`, { cause: err })
      }
    }
    let held: Partial<LockInfo> = {}
    try {
      held = JSON.parse(await readFile(path, 'utf8')) as Partial<LockInfo>
    } catch {
      // Empty or torn: its writer died between create and write. Stale.
    }
    const sameHost = held.host === undefined || held.host === info.host
    if (typeof held.pid === 'number' && (!sameHost || alive(held.pid))) {
      throw new CheckpointLockedError(
        `Checkpoint ${checkpoint} is in use by another run (pid ${held.pid}${sameHost ? '' : ` on ${held.host}`}, since ${held.started ?? '?'}); ` +
          `wait for it to finish, or use another output or --checkpoint path`,
      )
    }
    // Stale: the process that held it is gone. Remove and try again (another starter may win).
    await unlink(path).catch(() => {})
  }
  throw new CheckpointLockedError(`Checkpoint ${checkpoint} is being locked by another run at the same moment`)
}

import type { WorkerInfo } from './state-backend.js'

/**
 * `StateBackend.announceWorker` / `workersOnline` of a backend that lives in one process (memory,
 * SQLite): the workers (`createWorker`) of this process, each until its announcement runs out.
 */
export class LocalWorkers {
  private readonly byNode = new Map<string, { info: WorkerInfo; until: number }>()

  announce(info: WorkerInfo, ttlMs: number): void {
    if (ttlMs <= 0) this.byNode.delete(info.node)
    else this.byNode.set(info.node, { info, until: Date.now() + ttlMs })
  }

  online(): WorkerInfo[] {
    const now = Date.now()
    const out: WorkerInfo[] = []
    for (const [node, w] of this.byNode) {
      if (w.until < now) this.byNode.delete(node)
      else out.push(w.info)
    }
    return out
  }
}

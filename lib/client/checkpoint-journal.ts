import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { open, rename, type FileHandle } from 'node:fs/promises'
import { createInterface } from 'node:readline'
import { CheckpointError } from '../errors.js'
import { acquireCheckpointLock, type CheckpointLock } from './checkpoint-lock.js'

/** What a checkpoint belongs to; a resume with other values is refused. */
export interface JournalHeader {
  /**
   * What the run streams to: `/bulk/stream/{compute}/{model}`. Never the server: a checkpoint may
   * be resumed against other endpoints, several, in any order (the resume query asks the server
   * which ids it knows; servers sharing their state know the same ones).
   */
  model: string
  /** Stable key of the constant parameters. */
  parameters: string
  /** Anything else the caller wants checked (e.g. the CLI's input file and column). */
  fingerprint?: Record<string, unknown>
}

interface StoredHeader extends JournalHeader {
  'inference-stream-checkpoint': 1
  runId: string
  created: string
}

/** Options of {@link CheckpointJournal.open}. */
export interface JournalOptions {
  /** Most time a sent id or a result waits before its group is written and fsynced, in ms; appends made while a group is being written go in the next group. Default 5. */
  commitIntervalMs?: number
  /** Entries that trigger a commit at once. Default 512. */
  commitEntries?: number
  /** Run id for a new checkpoint. Default: random. */
  runId?: string
  /**
   * Take `<path>.lock` while the journal is open (released by `close()`), so a second run on the
   * same checkpoint fails at once with `CheckpointLockedError`. Default true; false when the
   * caller holds the lock itself (the CLI takes it before it touches the output).
   */
  lock?: boolean
  /** How a refused resume names each fingerprint key (`CheckpointOptions.fingerprintNames`). Default: the key. */
  fingerprintNames?: Record<string, string>
}

// Read-write without O_APPEND (positional writes must land where asked); created when missing.
async function openReadWrite(path: string): Promise<FileHandle> {
  try {
    return await open(path, 'r+')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    return open(path, 'w+')
  }
}

// `/bulk/stream/cpu/org/name` as users name it: `org/name` (on `gpu`: `org/name (gpu)`).
function modelName(path: string): string {
  const m = /\/bulk\/stream\/(cpu|gpu)\/(.+)$/.exec(path)
  if (!m) return path
  let id = m[2]
  try {
    id = decodeURIComponent(id)
  } catch {
    // kept as it is
  }
  return m[1] === 'cpu' ? id : `${id} (${m[1]})`
}

// The `/bulk/stream/...` part of a stream path: checkpoints written before the header dropped a
// base URL's path prefix (`/prefix/bulk/stream/cpu/m`) still match.
function streamPart(path: string): string {
  const at = path.indexOf('/bulk/stream/')
  return at < 0 ? path : path.slice(at)
}

/** Short hash of a payload's inputs: lets a resume check that an id still means the same input. */
export function inputHash(inputs: unknown): string {
  return createHash('sha1').update(JSON.stringify(inputs) ?? 'undefined').digest('base64url').slice(0, 12)
}

/**
 * The checkpoint journal of one run: an append-only JSON-lines file with a header, the ids sent
 * (write-ahead: an id is on disk before it goes on the wire) and the results received. Appends are
 * group-committed (one write and one fdatasync per group); `onCommit` learns which entries became
 * durable so the stream can send them, or ack them. Results are indexed by file offset, not kept
 * in memory. `compact()` rewrites the file without the sent entries that have results.
 *
 * Lines: header `{"inference-stream-checkpoint":1,...}`; sent `{"s":[[id,hash],...]}`;
 * result `{"r":id,"h":hash,"o":outputs}`. A torn last line (the process was killed mid-write) is ignored.
 */
export class CheckpointJournal {
  /** Run id of the checkpoint: default ids are `${runId}-${seq}`, so they match on resume. */
  readonly runId: string
  private readonly results = new Map<string, { offset: number; length: number; hash: string }>()
  private readonly sent = new Map<string, string>()
  private fh: FileHandle
  private size: number
  private sentBytes = 0
  private pending: string[] = []
  private pendingSent: string[] = []
  private pendingResults: string[] = []
  private pendingHashes: string[] = []
  private timer: NodeJS.Timeout | undefined
  private committing: Promise<void> | undefined
  private closed = false
  private readonly commitIntervalMs: number
  private readonly commitEntries: number
  private failure: Error | undefined
  private lock: CheckpointLock | undefined
  /** Called after each commit with the ids whose sent / result entries are now durable. */
  onCommit: (sentIds: string[], resultIds: string[]) => void = () => {}
  /** Called once if a write fails; the journal is unusable after. */
  onError: (err: Error) => void = () => {}

  private constructor(
    readonly path: string,
    fh: FileHandle,
    size: number,
    runId: string,
    options: JournalOptions,
  ) {
    this.fh = fh
    this.size = size
    this.runId = runId
    this.commitIntervalMs = options.commitIntervalMs ?? 5
    this.commitEntries = options.commitEntries ?? 512
  }

  /**
   * Opens (or creates) the checkpoint at `path` for a run described by `header`.
   * @throws {CheckpointError} when the file belongs to another model or parameters, or is damaged.
   */
  static async open(path: string, header: JournalHeader, options: JournalOptions = {}): Promise<CheckpointJournal> {
    const lock = options.lock === false ? undefined : await acquireCheckpointLock(path)
    try {
      const journal = await CheckpointJournal.openLocked(path, header, options)
      journal.lock = lock
      return journal
    } catch (err) {
      await lock?.release()
      throw err
    }
  }

  private static async openLocked(path: string, header: JournalHeader, options: JournalOptions): Promise<CheckpointJournal> {
    let fh: FileHandle
    try {
      fh = await openReadWrite(path)
    } catch (err) {
      throw new CheckpointError(`Cannot open checkpoint ${path}: ${(err as Error).message}`, { cause: err })
    }
    const size = (await fh.stat()).size
    if (size === 0) {
      const runId = options.runId ?? createHash('sha1').update(`${Date.now()}-${Math.random()}`).digest('hex').slice(0, 10)
      const stored: StoredHeader = { 'inference-stream-checkpoint': 1, runId, created: new Date().toISOString(), ...header }
      const line = `${JSON.stringify(stored)}\n`
      await fh.write(line)
      await fh.datasync()
      return new CheckpointJournal(path, fh, Buffer.byteLength(line), runId, options)
    }
    const j = await CheckpointJournal.load(path, fh, header, options)
    return j
  }

  private static async load(path: string, fh: FileHandle, header: JournalHeader, options: JournalOptions): Promise<CheckpointJournal> {
    const lines = createInterface({ input: createReadStream(path), crlfDelay: Infinity })
    let offset = 0
    let stored: StoredHeader | undefined
    let journal: CheckpointJournal | undefined
    let torn: { offset: number; text: string } | undefined
    for await (const text of lines) {
      const length = Buffer.byteLength(text) + 1
      if (torn) {
        await fh.close()
        throw new CheckpointError(`Checkpoint ${path} is damaged: line at byte ${torn.offset} is not JSON`)
      }
      let v: Record<string, unknown>
      try {
        v = JSON.parse(text)
      } catch {
        torn = { offset, text }
        offset += length
        continue
      }
      if (!stored) {
        if (v['inference-stream-checkpoint'] !== 1) {
          await fh.close()
          throw new CheckpointError(`${path} is not an inference-stream checkpoint`)
        }
        stored = v as unknown as StoredHeader
        const mismatch = CheckpointJournal.compare(stored, header, options.fingerprintNames)
        if (mismatch) {
          await fh.close()
          throw new CheckpointError(`Checkpoint ${path} was written for ${mismatch}; use another checkpoint path or delete it to start over`)
        }
        journal = new CheckpointJournal(path, fh, 0, stored.runId, options)
      } else if (Array.isArray(v.s)) {
        for (const [id, hash] of v.s as [string, string][]) journal!.sent.set(id, hash)
        journal!.sentBytes += length
      } else if (typeof v.r === 'string') {
        journal!.results.set(v.r, { offset, length: length - 1, hash: typeof v.h === 'string' ? v.h : '' })
      }
      offset += length
    }
    if (!journal) {
      await fh.close()
      throw new CheckpointError(`Checkpoint ${path} has no header`)
    }
    if (torn) {
      // The process died mid-write: drop the torn tail so appends start on a clean line.
      await fh.truncate(torn.offset)
      offset = torn.offset
    }
    journal.size = offset
    return journal
  }

  private static compare(stored: StoredHeader, header: JournalHeader, names: Record<string, string> = {}): string | undefined {
    if (streamPart(stored.model) !== streamPart(header.model)) return `model ${modelName(stored.model)}, not ${modelName(header.model)}`
    if (stored.parameters !== header.parameters) return `parameters ${stored.parameters || '{}'}, not ${header.parameters || '{}'}`
    // Each value that differs, under the caller's own name for it (the CLI's are its flags).
    const a = stored.fingerprint ?? {}
    const b = header.fingerprint ?? {}
    const show = (v: unknown): string => (v === undefined || v === null ? 'none' : JSON.stringify(v))
    const differ = [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((k) => JSON.stringify(a[k] ?? null) !== JSON.stringify(b[k] ?? null))
    if (differ.length > 0) return `another input: ${differ.map((k) => `${names[k] ?? k} ${show(a[k])}, not ${show(b[k])}`).join('; ')}`
    return undefined
  }

  /** Results journaled. */
  get resultCount(): number {
    return this.results.size
  }

  /** Ids journaled as sent and without a result. */
  get unansweredCount(): number {
    let n = 0
    for (const id of this.sent.keys()) if (!this.results.has(id)) n++
    return n
  }

  /** Whether a result of `id` is journaled. */
  hasResult(id: string): boolean {
    return this.results.has(id)
  }

  /** The input hash `id` was sent with, when it was sent or has a result. */
  sentHash(id: string): string | undefined {
    return this.sent.get(id) ?? this.results.get(id)?.hash
  }

  /** Reads a journaled result's outputs back from the file. */
  async readResult(id: string): Promise<unknown> {
    const at = this.results.get(id)
    if (!at) throw new CheckpointError(`No result of ${id} in checkpoint ${this.path}`)
    const buf = Buffer.allocUnsafe(at.length)
    await this.fh.read(buf, 0, at.length, at.offset)
    return (JSON.parse(buf.toString('utf8')) as { o: unknown }).o
  }

  /** Journals that `id` (with inputs hash `hash`) is about to be sent; durable at the next commit. */
  appendSent(id: string, hash: string): void {
    this.sent.set(id, hash)
    this.pendingSent.push(id)
    this.schedule()
  }

  /** Journals a result; durable at the next commit. */
  appendResult(id: string, outputs: unknown): void {
    const hash = this.sent.get(id) ?? ''
    this.pending.push(JSON.stringify({ r: id, h: hash, o: outputs }))
    this.pendingResults.push(id)
    this.pendingHashes.push(hash)
    this.schedule()
  }

  private schedule(): void {
    if (this.closed || this.failure) return
    if (this.pendingSent.length + this.pendingResults.length >= this.commitEntries) {
      if (this.timer) clearTimeout(this.timer)
      this.timer = undefined
      void this.commit()
    } else if (!this.timer && !this.committing) {
      this.timer = setTimeout(() => {
        this.timer = undefined
        void this.commit()
      }, this.commitIntervalMs)
    }
  }

  /** Writes and fsyncs everything appended so far (one group). Resolves when durable. */
  async commit(): Promise<void> {
    while (this.committing) await this.committing
    if (this.pendingSent.length === 0 && this.pendingResults.length === 0) return
    const sentIds = this.pendingSent
    const resultIds = this.pendingResults
    const resultLines = this.pending
    const hashes = this.pendingHashes
    this.pendingSent = []
    this.pendingResults = []
    this.pending = []
    this.pendingHashes = []
    this.committing = (async () => {
      let text = ''
      if (sentIds.length > 0) {
        const line = `${JSON.stringify({ s: sentIds.map((id) => [id, this.sent.get(id)]) })}\n`
        this.sentBytes += Buffer.byteLength(line)
        text += line
      }
      let offset = this.size + Buffer.byteLength(text)
      for (let i = 0; i < resultLines.length; i++) {
        const length = Buffer.byteLength(resultLines[i])
        this.results.set(resultIds[i], { offset, length, hash: hashes[i] })
        offset += length + 1
        text += `${resultLines[i]}\n`
      }
      await this.fh.write(text, this.size)
      await this.fh.datasync()
      this.size = offset
    })()
    try {
      await this.committing
    } catch (err) {
      this.failure = new CheckpointError(`Writing checkpoint ${this.path} failed: ${(err as Error).message}`, { cause: err })
      this.onError(this.failure)
      throw this.failure
    } finally {
      this.committing = undefined
    }
    this.onCommit(sentIds, resultIds)
    // Appends made while this group was being written start their own group.
    if (this.pendingSent.length + this.pendingResults.length > 0) this.schedule()
  }

  /** Whether compaction would pay during a run (sent entries are over a third of the file). */
  get wantsCompaction(): boolean {
    return this.sentBytes > 64 * 1024 && this.sentBytes * 3 > this.size
  }

  /** Whether a finished run should compact (sent entries are over 5% of the file). */
  get wantsFinalCompaction(): boolean {
    return this.sentBytes * 20 > this.size
  }

  /**
   * Rewrites the file as header, results, and the sent ids still unanswered (temp file, fsync,
   * rename), so the journal stays about the size of the results.
   */
  async compact(): Promise<void> {
    await this.commit()
    while (this.committing) await this.committing
    // Commits wait for the rewrite: they would write to the file being replaced.
    const rewrite = this.rewrite()
    this.committing = rewrite.catch(() => {})
    try {
      await rewrite
    } finally {
      this.committing = undefined
    }
    if (this.pendingSent.length + this.pendingResults.length > 0) this.schedule()
  }

  private async rewrite(): Promise<void> {
    const tmp = `${this.path}.compact`
    const out = await open(tmp, 'w')
    try {
      const headerLine = await this.readHeaderLine()
      let size = 0
      const chunks: string[] = []
      const flush = async (): Promise<void> => {
        if (chunks.length === 0) return
        const text = chunks.join('')
        chunks.length = 0
        await out.write(text)
      }
      chunks.push(headerLine)
      size += Buffer.byteLength(headerLine)
      const moved = new Map<string, { offset: number; length: number; hash: string }>()
      for (const [id, at] of this.results) {
        const buf = Buffer.allocUnsafe(at.length)
        await this.fh.read(buf, 0, at.length, at.offset)
        moved.set(id, { offset: size, length: at.length, hash: at.hash })
        chunks.push(`${buf.toString('utf8')}\n`)
        size += at.length + 1
        if (chunks.length >= 1024) await flush()
      }
      const open_: [string, string][] = []
      for (const [id, hash] of this.sent) if (!this.results.has(id)) open_.push([id, hash])
      let sentBytes = 0
      if (open_.length > 0) {
        const line = `${JSON.stringify({ s: open_ })}\n`
        chunks.push(line)
        size += Buffer.byteLength(line)
        sentBytes = Buffer.byteLength(line)
      }
      await flush()
      await out.datasync()
      await out.close()
      await rename(tmp, this.path)
      await this.fh.close()
      this.fh = await openReadWrite(this.path)
      for (const [id, at] of moved) this.results.set(id, at)
      // Sent ids with results are implied by the results; keep only the unanswered ones.
      for (const id of [...this.sent.keys()]) if (this.results.has(id)) this.sent.delete(id)
      this.size = size
      this.sentBytes = sentBytes
    } catch (err) {
      await out.close().catch(() => {})
      throw new CheckpointError(`Compacting checkpoint ${this.path} failed: ${(err as Error).message}`, { cause: err })
    }
  }

  private async readHeaderLine(): Promise<string> {
    const buf = Buffer.allocUnsafe(Math.min(this.size, 64 * 1024))
    await this.fh.read(buf, 0, buf.length, 0)
    const nl = buf.indexOf(10)
    return buf.subarray(0, nl + 1).toString('utf8')
  }

  /** Commits what is pending and closes the file. */
  async close(): Promise<void> {
    if (this.closed) return
    if (this.timer) clearTimeout(this.timer)
    this.timer = undefined
    if (!this.failure) await this.commit().catch(() => {})
    this.closed = true
    try {
      await this.fh.close()
    } finally {
      await this.lock?.release()
    }
  }
}

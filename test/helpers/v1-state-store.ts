import Database from 'better-sqlite3'

/** The state store's schema version 1 (0.1.0), by hand: every column of an item in `items`. */
export const STATE_V1_SQL = `
CREATE TABLE items (
  row INTEGER PRIMARY KEY, owner TEXT NOT NULL, id TEXT NOT NULL, tenant TEXT NOT NULL, model TEXT NOT NULL,
  compute TEXT NOT NULL, grp TEXT NOT NULL, parameters TEXT, fingerprint TEXT, bytes INTEGER NOT NULL,
  node TEXT NOT NULL, sink TEXT, retain INTEGER NOT NULL, enqueued_at INTEGER NOT NULL, pos INTEGER NOT NULL,
  deliveries INTEGER NOT NULL, state INTEGER NOT NULL, inputs TEXT, outputs TEXT, done_at INTEGER, done_seq INTEGER
);
CREATE TABLE leases (id TEXT PRIMARY KEY, consumer TEXT NOT NULL, tenant TEXT NOT NULL, expires_at INTEGER NOT NULL, rows TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE ledger (owner TEXT NOT NULL, tenant TEXT NOT NULL, model TEXT NOT NULL, items INTEGER NOT NULL, PRIMARY KEY (owner, tenant, model)) WITHOUT ROWID;
PRAGMA application_id = ${0x49537374};
PRAGMA user_version = 1;
`

/** One row of a v1 `items` table: pending (state 0, inputs) or done (state 1 undelivered, 2 delivered; outputs). */
export interface V1Item {
  row: number
  owner: string
  tenant: string
  id: string
  model?: string
  grp?: string
  parameters?: string | null
  fingerprint?: string | null
  node?: string
  sink?: string | null
  pos: number
  deliveries?: number
  state: 0 | 1 | 2
  inputs?: string | null
  outputs?: string | null
  doneSeq?: number | null
}

/** Writes a v1 state file (WAL, as v1 wrote it) with these items, leases and ledger rows. */
export function writeV1StateStore(
  path: string,
  items: V1Item[],
  leases: Array<{ id: string; consumer: string; tenant: string; expiresAt: number; rows: number[] }> = [],
  ledger: Array<[owner: string, tenant: string, model: string, items: number]> = [],
): void {
  const db = new Database(path)
  db.pragma('journal_mode = WAL')
  db.exec(STATE_V1_SQL)
  const insert = db.prepare(
    `INSERT INTO items (row, owner, id, tenant, model, compute, grp, parameters, fingerprint, bytes, node, sink, retain, enqueued_at, pos, deliveries, state, inputs, outputs, done_at, done_seq)
     VALUES (?, ?, ?, ?, ?, 'cpu', ?, ?, ?, 8, ?, ?, 0, 1, ?, ?, ?, ?, ?, ?, ?)`,
  )
  for (const i of items) {
    const done = i.state !== 0
    insert.run(
      i.row, i.owner, i.id, i.tenant, i.model ?? 'builtin/echo', i.grp ?? 'builtin/echo\ncpu\n{}', i.parameters ?? null, i.fingerprint ?? null,
      i.node ?? 'n', i.sink ?? null, i.pos, i.deliveries ?? 0, i.state, i.inputs ?? null, i.outputs ?? null, done ? 2 : null, done ? (i.doneSeq ?? i.row) : null,
    )
  }
  for (const l of leases) db.prepare('INSERT INTO leases VALUES (?, ?, ?, ?, ?)').run(l.id, l.consumer, l.tenant, l.expiresAt, JSON.stringify(l.rows))
  for (const b of ledger) db.prepare('INSERT INTO ledger VALUES (?, ?, ?, ?)').run(...b)
  db.close()
}

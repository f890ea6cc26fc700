import Database from 'better-sqlite3'

/** The schema version 1 of jobs.sqlite, by hand: raw tokens in jobs.token and bills.token. */
export const V1_SQL = `
CREATE TABLE jobs (
  id TEXT PRIMARY KEY, token TEXT NOT NULL, bulk_name TEXT NOT NULL, model TEXT NOT NULL, compute TEXT NOT NULL,
  dataset_name TEXT NOT NULL, dataset_config TEXT NOT NULL, dataset_split TEXT NOT NULL, dataset_column TEXT NOT NULL,
  parameters TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
  total INTEGER, processed INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0,
  start_time REAL NOT NULL, end_time REAL, error TEXT, revision TEXT, created_at REAL NOT NULL
);
CREATE INDEX jobs_state ON jobs (state);
CREATE TABLE results (
  job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE, idx INTEGER NOT NULL, outputs TEXT NOT NULL, error TEXT,
  PRIMARY KEY (job_id, idx)
) WITHOUT ROWID;
CREATE TABLE bills (token TEXT PRIMARY KEY, rows INTEGER NOT NULL) WITHOUT ROWID;
PRAGMA user_version = 1;
`

/** Writes a v1 jobs.sqlite (WAL, as v1 wrote it) holding one completed job per [jobId, token, bulkName]. */
export function writeV1JobStore(path: string, jobs: [id: string, token: string, bulkName: string][]): void {
  const db = new Database(path)
  db.pragma('journal_mode = WAL')
  db.exec(V1_SQL)
  const insert = db.prepare(
    `INSERT INTO jobs VALUES (?, ?, ?, 'builtin/echo', 'cpu', 'reviews', 'default', 'train', 'text', 'null', 'completed', 2, 2, 0, 1, 2, NULL, NULL, 1)`,
  )
  const bill = db.prepare('INSERT INTO bills VALUES (?, 2) ON CONFLICT (token) DO UPDATE SET rows = rows + 2')
  for (const [id, token, bulkName] of jobs) {
    insert.run(id, token, bulkName)
    bill.run(token)
  }
  db.close()
}

import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { SqliteStateBackend } from '../lib/server/state/sqlite-backend.js'
import { stateContract } from './helpers/state-contract.js'

const dir = mkdtempSync(join(tmpdir(), 'is-state-sqlite-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))
let n = 0

// The state layer's contract on the SQLite backend: a fresh file per backend.
stateContract(t, async (limits) => new SqliteStateBackend({ path: join(dir, `s${++n}.sqlite`), ...limits }))

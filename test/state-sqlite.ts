import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { SqliteStateBackend } from '../lib/server/state/sqlite-backend.js'
import { stateContract } from './helpers/state-contract.js'

const dir = mkdtempSync(join(tmpdir(), 'is-state-sqlite-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))
let n = 0

// The state layer's contract on the SQLite backend: a fresh file per backend; a restart closes
// the backend and opens its file again.
stateContract(t, async (limits) => new SqliteStateBackend({ path: join(dir, `s${++n}.sqlite`), ...limits }), {
  reopen: async (b, limits) => {
    await b.close()
    return new SqliteStateBackend({ path: (b as SqliteStateBackend).path, ...limits })
  },
})

import { readFileSync } from 'node:fs'
import t from 'tap'
import * as errors from '../lib/errors.js'
import { httpStatusOf } from '../lib/server/http-status.js'

// docs/errors.md and lib/errors.ts must list the same codes, each with its class.
const doc = readFileSync(new URL('../docs/errors.md', import.meta.url), 'utf8')
const documented = new Map<string, string>()
for (const m of doc.matchAll(/^\| `((?:ERR_[A-Z_]+)|ABORT_ERR)` \| `(\w+)` \|/gm)) documented.set(m[1], m[2])

const classes = Object.entries(errors).filter(
  ([, v]) => typeof v === 'function' && (v === errors.InferenceStreamError || v.prototype instanceof errors.InferenceStreamError),
) as [string, new (message: string) => errors.InferenceStreamError][]

t.test('every error class has a name, a stable code, and a row in docs/errors.md', async (t) => {
  t.ok(classes.length >= 10)
  const codes = new Set<string>()
  for (const [name, Cls] of classes) {
    const err = new Cls('some message')
    t.equal(err.name, name, `${name}.name`)
    t.equal(err.message, 'some message')
    t.ok(err instanceof errors.InferenceStreamError && err instanceof Error)
    t.match(err.code, /^(ERR_[A-Z_]+|ABORT_ERR)$/)
    t.equal(documented.get(err.code), name, `${err.code} documented with class ${name}`)
    codes.add(err.code)
  }
  for (const code of documented.keys()) t.ok(codes.has(code), `${code} in docs/errors.md exists in lib/errors.ts`)
})

t.test('toWireError keeps the message and code', async (t) => {
  t.same(errors.toWireError(new errors.ModelInputError('bad')), { error: 'bad', code: 'ERR_MODEL_INPUT' })
  t.same(errors.toWireError(new Error('x')), { error: 'x', code: 'ERR_MODEL' })
  t.same(errors.toWireError('y'), { error: 'y', code: 'ERR_MODEL' })
})

t.test('docs/errors.md gives each code the HTTP status the server answers with', async (t) => {
  const table = doc.slice(doc.indexOf('| code | status |'))
  const rows = [...table.matchAll(/^\| ((?:`ERR_[A-Z_]+`(?:, )?)+) \| (\d{3})/gm)]
  t.ok(rows.length >= 8)
  const listed = new Set<string>()
  for (const [, codes, status] of rows) {
    for (const [, code] of codes.matchAll(/`(ERR_[A-Z_]+)`/g)) {
      t.equal(httpStatusOf(code), Number(status), code)
      listed.add(code)
    }
  }
  for (const [, Cls] of classes) {
    const code = new Cls('x').code
    if (!listed.has(code)) t.equal(httpStatusOf(code), 500, `${code} is not in the table: a 500`)
  }
})

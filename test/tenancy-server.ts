// Tenants at the server's door: token files naming tenants, tokens compared as keyed digests,
// /metrics for the operator only, a cap on open connections, and results owned by the tenant.
import net from 'node:net'
import t from 'tap'
import { Tenants, parseTokenFile, dataDirSecret } from '../lib/server/tenants.js'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect } from './helpers/ws-client.js'
import { STATE_BACKENDS } from './helpers/backends.js'
import { startServer } from './helpers/server.js'
import { until } from './helpers/until.js'

t.test('Tenants: one per token by default, named ones share, ids are keyed hashes', async (t) => {
  const secret = Buffer.alloc(32, 7)
  const ts = new Tenants({ tokens: ['solo'], tenants: { acme: ['a1', 'a2'] }, secret })
  t.equal(ts.open, false)
  const solo = ts.authenticate('solo')
  t.ok(solo)
  t.match(solo!.id, /^[0-9a-f]{32}$/)
  t.equal(solo!.name, `t-${solo!.id.slice(0, 12)}`)
  t.notMatch(solo!.id + solo!.name, /solo/, 'the token is not in its id or name')
  t.same(ts.authenticate('a1'), ts.authenticate('a2'), 'tokens of one tenant give one tenant')
  t.equal(ts.authenticate('a1')!.name, 'acme')
  t.equal(ts.authenticate('nope'), undefined)
  t.equal(ts.authenticate('a1 '), undefined)
  // Another secret gives other ids: the id says nothing without the key.
  t.not(new Tenants({ tokens: ['solo'], secret: Buffer.alloc(32, 8) }).authenticate('solo')!.id, solo!.id)
  t.equal(new Tenants({ tokens: ['solo'], secret }).authenticate('solo')!.id, solo!.id, 'stable under one secret')
  t.throws(() => new Tenants({ tokens: ['x'], tenants: { acme: ['x'] } }), { code: 'ERR_INVALID_OPTION', message: /also given to a tenant of its own/ })
  t.throws(() => new Tenants({ tenants: { 'bad name': ['x'] } }), { code: 'ERR_INVALID_OPTION', message: /Tenant name "bad name"/ })
  const open = new Tenants()
  t.equal(open.open, true)
  t.equal(open.several, false)
  open.authenticate('p')
  open.authenticate('p')
  t.equal(open.several, false, 'one token seen: one tenant')
  t.not(open.authenticate('p')!.id, open.authenticate('q')!.id, 'open server: each token its own tenant')
  t.equal(open.several, true, 'a second token makes it a server of several tenants')
  t.equal(new Tenants({ tokens: ['x'] }).several, false)
  t.equal(new Tenants({ tenants: { acme: ['x', 'y'] } }).several, false, 'one named tenant of two tokens is one tenant')
  t.equal(new Tenants({ tokens: ['x', 'y'] }).several, true)
})

t.test('parseTokenFile names the bad line', async (t) => {
  t.same(parseTokenFile('# c\n\nbare\nacme: a1\n acme :a2 \n'), { tokens: ['bare'], tenants: { acme: ['a1', 'a2'] } })
  t.throws(() => parseTokenFile('ok\na b c\n', 'tokens.txt'), { code: 'ERR_INVALID_OPTION', message: 'tokens.txt line 2: expected "TOKEN" or "TENANT: TOKEN"' })
  t.throws(() => parseTokenFile('-bad-: x\n'), { message: /line 1: tenant name "-bad-"/ })
})

t.test('dataDirSecret: created once, 0600, stable', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'is-secret-'))
  const a = dataDirSecret(dir)
  t.equal(a.length, 32)
  t.equal(statSync(join(dir, 'secret.key')).mode & 0o777, 0o600)
  t.same(dataDirSecret(dir), a)
})

t.test('dataDirSecret: two processes creating it at once on a fresh folder read one secret', async (t) => {
  // Front-ends of a cluster started together on one data folder: each must make the same tenant
  // ids. Two processes, 30 fresh folders, each folder's secret asked by both at the same instant.
  const dirs = Array.from({ length: 30 }, () => mkdtempSync(join(tmpdir(), 'is-secret-race-')))
  t.teardown(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })))
  const module = fileURLToPath(new URL('../lib/server/tenants.js', import.meta.url))
  const code = `
    import { dataDirSecret } from ${JSON.stringify(module)}
    const dirs = ${JSON.stringify(dirs)}
    process.stdout.write('ready\\n')
    let line = ''
    for await (const chunk of process.stdin) { line += chunk; if (line.includes('\\n')) break }
    const start = Number(line)
    const out = []
    for (let k = 0; k < dirs.length; k++) {
      while (Date.now() < start + k * 20) {}
      out.push(dataDirSecret(dirs[k]).toString('hex'))
    }
    process.stdout.write(JSON.stringify(out) + '\\n')
    process.exit(0)
  `
  const children = [0, 1].map(() => {
    const child = spawn(process.execPath, [...process.execArgv, '--input-type=module', '-e', code], { stdio: ['pipe', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    t.teardown(() => void child.kill('SIGKILL'))
    return { child, out: () => out }
  })
  await until(() => children.every((c) => c.out().startsWith('ready\n')), 'both processes loaded', 120_000)
  const start = Date.now() + 200
  for (const c of children) c.child.stdin.end(`${start}\n`)
  await Promise.all(children.map((c) => once(c.child, 'exit')))
  const [a, b] = children.map((c) => JSON.parse(c.out().split('\n')[1]) as string[])
  t.equal(a.length, dirs.length)
  t.same(a.filter((s, k) => s !== b[k]), [], 'the same secret in both, for every folder')
  t.same(dirs.map((d) => readFileSync(join(d, 'secret.key')).toString('hex')), a, 'the one on disk')
})

for (const backend of STATE_BACKENDS) t.test(`${backend.name}: results belong to the tenant: another token of it gets them, another tenant never`, async (t) => {
  const state = backend.make()
  const server = await startServer(t, { tenants: { acme: ['a1', 'a2'] }, tokens: ['other'], state })
  t.teardown(async () => {
    await server.close()
    await state.close()
  })
  const url = server.streamUrl('builtin/echo')
  const a1 = await connect(url, { token: 'a1', v1: true })
  // Sent and left before the results could be read: they wait in the store for the tenant.
  a1.send([{ id: 'x', inputs: 'acme data' }, { id: 'y', inputs: 'more' }])
  await until(async () => (await server.counts('a1', 'builtin/echo')).done === 2, 'done')
  await a1.close()
  const other = await connect(url, { token: 'other', v1: true })
  other.send({ type: 'resume', ids: ['x', 'y'] })
  await other.waitFor(() => other.messages.some((m) => m.type === 'resume'), 'resume answer')
  t.same((other.messages.find((m) => m.type === 'resume') as { unknown: string[] }).unknown, ['x', 'y'], 'another tenant knows nothing of them')
  t.equal(other.results().size, 0)
  const a2 = await connect(url, { token: 'a2', v1: true })
  a2.send({ type: 'resume', ids: ['x', 'y'] })
  await a2.waitFor(() => a2.results().has('x') && a2.results().has('y'), 'results')
  t.equal(a2.results().get('x'), 'acme data')
  t.equal(await server.billed('a1'), 2)
  t.equal(await server.billed('a2'), 2, 'one bill per tenant')
  t.equal(await server.billed('other'), 0)
  await Promise.all([a2.close(), other.close()])
})

t.test('/metrics: the operator token, not a tenant token', async (t) => {
  const server = await startServer(t, { tokens: ['tenant'], metricsToken: 'ops-secret' })
  for (const auth of [undefined, 'Bearer tenant', 'Bearer ops-secre', 'Basic b3BzLXNlY3JldA==']) {
    const res = await fetch(`${server.url}/metrics`, { headers: auth ? { authorization: auth } : {} })
    t.equal(res.status, 401, `refused with ${auth ?? 'no header'}`)
    t.match(await res.json(), { code: 'ERR_AUTHENTICATION' })
  }
  const ok = await fetch(`${server.url}/metrics`, { headers: { authorization: 'Bearer ops-secret' } })
  t.equal(ok.status, 200)
  t.match(await ok.text(), /inference_stream_queue_items/)
  // Without a metrics token the operator scrapes from the machine itself (these tests are loopback).
  const local = await startServer(t, { tokens: ['tenant'] })
  t.equal((await fetch(`${local.url}/metrics`)).status, 200)
})

t.test('maxConnections: one over the cap gets a 503 and is closed; room comes back', async (t) => {
  const server = await startServer(t, { tokens: ['k'], maxConnections: 3 })
  const { port } = server.http.address() as net.AddressInfo
  const open = (): Promise<net.Socket> => new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => resolve(s))
    s.on('error', reject)
  })
  const held = [await open(), await open(), await open()]
  await new Promise((r) => setTimeout(r, 50))
  const extra = await open()
  const answer = await new Promise<string>((resolve) => {
    let text = ''
    extra.on('data', (d) => (text += d))
    extra.on('close', () => resolve(text))
  })
  t.match(answer, /^HTTP\/1\.1 503/)
  t.match(answer, /Too many open connections \(limit 3\)/)
  held[0].destroy()
  await new Promise((r) => setTimeout(r, 50))
  const res = await fetch(`${server.url}/health`, { headers: { connection: 'close' } })
  t.equal(res.status, 200, 'a slot freed is usable again')
  for (const s of held) s.destroy()
})

t.test('maxStreamsPerTenant: one stream over a tenant\'s limit is refused; other tenants are not counted', async (t) => {
  const server = await startServer(t, { tenants: { acme: ['a1', 'a2'] }, tokens: ['other'], maxStreamsPerTenant: 2 })
  const url = server.streamUrl('builtin/echo')
  const s1 = await connect(url, { token: 'a1' })
  const s2 = await connect(url, { token: 'a2' })
  await s1.waitFor(() => s1.messages.length > 0, 'connected')
  await s2.waitFor(() => s2.messages.length > 0, 'connected')
  const s3 = await connect(url, { token: 'a1' })
  t.equal((await s3.closed).code, 1008)
  t.match(s3.messages[0], { type: 'status', code: 'ERR_OVERLOADED', message: /already has 2 open streams/ })
  const o = await connect(url, { token: 'other' })
  o.send({ id: '1', inputs: 'x' })
  await o.waitFor(() => o.results().has('1'), 'another tenant is served')
  await s1.close()
  await new Promise((r) => setTimeout(r, 50))
  const s4 = await connect(url, { token: 'a1' })
  s4.send({ id: 'y', inputs: 'y' })
  await s4.waitFor(() => s4.results().has('y'), 'a freed slot is usable')
  await Promise.all([s2.close(), s4.close(), o.close()])
})

t.test('the HTTP result cache is per tenant: another tenant\'s identical request is not a hit', async (t) => {
  const server = await startServer(t, { tokens: ['a', 'b'] })
  const post = (token: string) =>
    fetch(`${server.url}/models/builtin/echo`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: JSON.stringify({ inputs: 'secret text' }) })
  t.equal((await post('a')).headers.get('x-compute-type'), 'cpu')
  t.equal((await post('a')).headers.get('x-compute-type'), 'cache', 'a hit for the same tenant')
  const b = await post('b')
  t.equal(b.headers.get('x-compute-type'), 'cpu', 'not a hit for another tenant')
  t.same(await b.json(), 'secret text')
  t.equal(await server.billed('a'), 1)
  t.equal(await server.billed('b'), 1)
})

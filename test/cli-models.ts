// The model flags of the CLI: `run --models DIR` with a generated transformers.js model on the
// embedded server, a missing model as a usage error naming where it was looked for, and
// `serve --upstream` forwarding to a second `serve` process.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { makeTinyModels } from './fixtures/tiny-models.js'
import { cliProcess } from './helpers/cli.js'

const root = mkdtempSync(join(tmpdir(), 'is-cli-models-'))
const models = join(root, 'models')
await makeTinyModels(models)
t.teardown(() => rmSync(root, { recursive: true, force: true }))
// Only the generated folder may be found: the machine's caches are pointed at empty places.
const env = { INFERENCE_STREAM_CACHE: join(root, 'cache'), HF_HUB_CACHE: join(root, 'hub') }

t.test('run --models: a CSV through tiny/sentiment and tiny/nli (--task, --parameters)', async (t) => {
  const input = join(root, 'in.csv')
  writeFileSync(input, 'text\nI love this great product\nthis is terrible and awful\nthe weather is sunny\n')
  const out = join(root, 'out.jsonl')
  const p = cliProcess(['run', input, '--model', 'tiny/sentiment', '--models', models, '-o', out, '--no-progress'], env)
  const { code } = await p.exited
  t.equal(code, 0, p.err())
  const rows = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l))
  t.same(rows.map((r) => r.label), ['POSITIVE', 'NEGATIVE', 'POSITIVE'])

  // tiny/nli is zero-shot by its files; --task makes it a plain three-label classifier.
  const out2 = join(root, 'out2.jsonl')
  const q = cliProcess(['run', input, '--model', 'tiny/nli', '--task', 'text-classification', '--models', models, '-o', out2, '--no-progress'], env)
  t.equal((await q.exited).code, 0, q.err())
  const rows2 = readFileSync(out2, 'utf8').trim().split('\n').map((l) => JSON.parse(l))
  t.same(rows2[0].outputs[0].map((l: { label: string }) => l.label).sort(), ['contradiction', 'entailment', 'neutral'])
})

t.test('run with a model that is nowhere: exit 2, the message names the folders', async (t) => {
  const input = join(root, 'in2.csv')
  writeFileSync(input, 'text\nhello\n')
  const p = cliProcess(['run', input, '--model', 'org/nowhere', '--models', models, '-o', join(root, 'x.jsonl'), '--no-progress'], env)
  t.equal((await p.exited).code, 2)
  t.match(p.err(), /org\/nowhere does not exist here: looked for org\/nowhere\/config\.json in .*models\/org\/nowhere/)
  t.match(p.err(), /--allow-download/)
  const bad = cliProcess(['run', input, '--model', 'tiny/x', '--task', 'text-generation', '-o', join(root, 'y.jsonl')], env)
  t.equal((await bad.exited).code, 2)
  t.match(bad.err(), /not a task this server runs/)
})

async function listening(p: ReturnType<typeof cliProcess>): Promise<string> {
  const deadline = Date.now() + 60_000
  for (;;) {
    const m = /listening on (\S+)/.exec(p.out())
    if (m) return m[1]
    if (Date.now() > deadline) throw new Error(`server did not start: ${p.err()}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

t.test('serve --upstream: a second server forwards a model id to the first, with its token', async (t) => {
  const a = cliProcess(['serve', '--port', '0', '--token', 'upstream-secret', '--log-level', 'warn'], env)
  t.teardown(() => a.child.kill('SIGKILL'))
  const urlA = await listening(a)
  const b = cliProcess(
    ['serve', '--port', '0', '--token', 'front', '--log-level', 'warn', '--upstream', `remote/sentiment=${urlA}/models/builtin/sentiment`, '--upstream-token', 'upstream-secret'],
    env,
  )
  t.teardown(() => b.child.kill('SIGKILL'))
  const urlB = await listening(b)
  const ask = async (url: string, model: string, token: string): Promise<{ status: number; body: unknown }> => {
    const res = await fetch(`${url}/models/${model}`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: JSON.stringify({ inputs: 'I love it', options: { use_cache: false } }) })
    return { status: res.status, body: await res.json() }
  }
  const direct = await ask(urlA, 'builtin/sentiment', 'upstream-secret')
  const forwarded = await ask(urlB, 'remote/sentiment', 'front')
  t.equal(forwarded.status, 200)
  t.same(forwarded.body, direct.body)
  const health = (await (await fetch(`${urlB}/health`)).json()) as { models: string[] }
  t.ok(health.models.includes('remote/sentiment'))
})

// Every fenced code block of README.md and docs/*.md runs as written (issue 11, point 1): a new
// user copies a block, it works. Needs dist/ (built by `npm test` before tap).
//
// Rules (README, "Development", says them in short):
// - ```js / ```javascript / ```mjs: the block is a whole program. It is written to a .mjs file in a
//   temporary project whose node_modules/inference-stream links to this checkout (so
//   `import … from 'inference-stream'` gets dist/; `@huggingface/hub` and `hyparquet`, dev
//   dependencies, are linked too), and run with node in that folder: it must exit 0
//   within 60 s (a program that leaves a server open never exits, and fails).
// - ```ts / ```typescript: type-checked first (strict, against dist/'s .d.ts, all TS blocks in one
//   program), then run as above once TypeScript's transpileModule has stripped the types (there is
//   no tsx here, and Node 20 cannot strip types itself).
// - ```sh / ```bash / ```shell / ```console: the block runs as one bash script (`set -e -o
//   pipefail`) in the same folder, which holds a copy of examples/ and links to dist/ and test/
//   (the commands are written for a checkout), with `inference-stream` on PATH (a wrapper of
//   node dist/cli/index.js, as README says the installed command is).
//   In ```console only `$ ` lines (and their `> ` continuations) are commands; the rest is output.
//   Exported variables and the working directory carry over to the doc's next block, as in one
//   terminal. `npm run X [-- args]` runs package.json's script X there; `npm install`, `npm ci` and
//   `npm test` are skipped (they are what runs this test); curl fails on an HTTP error status
//   (--fail-with-body). A comment line right under a command that shows JSON (`# {…}`, `# […]`)
//   is that command's output: it must match, `…` standing for any text.
// - Servers: a `serve` command (`inference-stream serve`, `node dist/cli/index.js serve`,
//   `npm run serve`) runs in the background until its "listening on" line, serves the doc's later
//   blocks, and is stopped when the doc is done (a later `serve` on the same port replaces it). A
//   foreground `serve` with commands after it in its block fails the block: a user's terminal would
//   hang there; write `&`. Ports are made free ones: every port a doc's `serve --port N` names, and
//   8080 (serve's default), is replaced by a free port throughout that doc's code, and a `serve`
//   without `--port` gets `--port` with the free port for 8080. The ports of `inference-stream
//   serve|worker --port N` anywhere in a command (e.g. after `nohup`, which the test does not run
//   in the background for you: the block does, and may stop it itself with its pid) are made free
//   ones too.
// - Not runnable here (output, frames, protocol transcripts, data, or a need this machine lacks:
//   the Hub, a GPU, a Python package): an HTML comment on the line just before the fence,
//   `<!-- not-run: reason -->`. Such a block is reported as skipped with its reason.
// - Needs Redis: `<!-- needs: redis -->` on the line just before the fence. The block runs when the
//   tests' Redis answers (REDIS_URL, else redis://127.0.0.1:6379; always with CI=true, as the other
//   Redis tests: test/helpers/redis.ts) and is skipped otherwise; REDIS_URL reaches the block's
//   shell. Mark every block of a walk-through that needs it.
// - Blocks without a language, and ```json / ```text / ```txt / ```http / ```yaml / ```csv / ```tsv,
//   are data and are not run (```json must parse unless it has an ellipsis). A block without a
//   language that starts like a command (`$ `, `inference-stream`, `node`, `npm`, `curl`, `git`)
//   fails: give it a language. A block of any other language fails unless it is marked.
//
// Docs run two at a time (the blocks of one doc in order); every block is a subtest named
// `file:line` (the line of its opening fence). DOCS_BLOCKS=README.md,docs/io.md runs only those
// docs; DOCS_BLOCKS_VERBOSE=1 shows the output of passing blocks too.
import { spawn } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync, chmodSync } from 'node:fs'
import { createServer as createNetServer, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import ts from 'typescript'
import { REDIS_SKIP, redisReachable } from './helpers/redis.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const JS_TIMEOUT_MS = 60_000
const SH_TIMEOUT_MS = 120_000
const DOC_CONCURRENCY = 2

const LANGS: Record<string, 'js' | 'ts' | 'sh' | 'console' | 'data'> = {
  js: 'js', javascript: 'js', mjs: 'js',
  ts: 'ts', typescript: 'ts',
  sh: 'sh', bash: 'sh', shell: 'sh',
  console: 'console',
  '': 'data', json: 'data', text: 'data', txt: 'data', http: 'data', yaml: 'data', csv: 'data', tsv: 'data',
}
const COMMAND_START = /^(\$ |inference-stream\b|node |npm |npx |curl |git )/
const SERVE = /^\s*(?:inference-stream|npx\s+inference-stream|node\s+\S*dist\/cli\/index\.js|npm\s+run\s+cli\s+--)\s+serve\b|^\s*npm\s+run\s+serve\b/
// A command naming a server's or a worker's port anywhere in it (`nohup inference-stream worker --port N &`).
const PORTED = /(?:^|[\s;&|(])(?:inference-stream|node\s+\S*dist\/cli\/index\.js)\s+(?:serve|worker)\b/
const NEEDS = ['redis'] as const
let redisAnswer: Promise<boolean> | undefined
/** Whether the tests' Redis answers (asked once, when a block first needs it). */
const redisOk = (): Promise<boolean> => (redisAnswer ??= redisReachable())

interface Block {
  file: string
  line: number // the opening fence, 1-based
  lang: string
  kind: (typeof LANGS)[string] | 'unknown'
  code: string
  notRun?: string
  /** `<!-- needs: redis -->`: run only where that answers. */
  needs?: string
}

interface Outcome {
  block: Block
  status: 'pass' | 'fail' | 'skip' | 'data'
  message: string
  output?: string
  ms?: number
}

// ---------------------------------------------------------------------------------------------
// Extraction

export function extractBlocks(file: string, text: string): Block[] {
  const lines = text.split('\n')
  const blocks: Block[] = []
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)(`{3,}|~{3,})\s*([\w+-]*)[^`]*$/.exec(lines[i]!)
    if (!open) continue
    const [, indent, fence, info] = open
    const body: string[] = []
    let j = i + 1
    for (; j < lines.length; j++) {
      const close = new RegExp(`^\\s*${fence![0]}{${fence!.length},}\\s*$`)
      if (close.test(lines[j]!)) break
      body.push(lines[j]!.startsWith(indent!) ? lines[j]!.slice(indent!.length) : lines[j]!.trimStart())
    }
    const lang = info!.toLowerCase()
    const marker = i > 0 ? /^\s*<!--\s*not-run:\s*(.*?)\s*-->\s*$/.exec(lines[i - 1]!) : null
    const needs = i > 0 ? /^\s*<!--\s*needs:\s*(.*?)\s*-->\s*$/.exec(lines[i - 1]!) : null
    blocks.push({ file, line: i + 1, lang, kind: LANGS[lang] ?? 'unknown', code: body.join('\n'), notRun: marker ? marker[1] || '(no reason given)' : undefined, needs: needs ? needs[1] : undefined })
    i = j
  }
  return blocks
}

/** The outcome of a block that is not run (marked, data, or not runnable), else undefined. */
export function classify(b: Block): Outcome | undefined {
  if (b.notRun !== undefined) return { block: b, status: 'skip', message: b.notRun }
  if (b.needs !== undefined && !(NEEDS as readonly string[]).includes(b.needs)) {
    return { block: b, status: 'fail', message: `<!-- needs: ${b.needs} --> names nothing this test knows (${NEEDS.join(', ')})` }
  }
  if (b.kind === 'unknown') {
    return { block: b, status: 'fail', message: `language "${b.lang}" is neither run by this test nor data: mark it <!-- not-run: reason --> or teach the test` }
  }
  if (b.kind !== 'data') return undefined
  const first = b.code.split('\n').find((l) => l.trim()) ?? ''
  if (b.lang === '' && COMMAND_START.test(first)) {
    return { block: b, status: 'fail', message: `a block without a language that starts like a command (${JSON.stringify(first.slice(0, 40))}): give it a language (sh, console) and make it run, or mark it <!-- not-run: reason -->` }
  }
  if (b.lang === 'json' && !/…|\.\.\./.test(b.code)) {
    try { JSON.parse(b.code) } catch (err) { return { block: b, status: 'fail', message: `json block does not parse: ${(err as Error).message}` } }
  }
  return { block: b, status: 'data', message: `data (${b.lang || 'no language'}), not run` }
}

// ---------------------------------------------------------------------------------------------
// Ports

async function freePorts(n: number): Promise<number[]> {
  // All held open at once, so no two are the same.
  const servers: Server[] = []
  try {
    for (let i = 0; i < n; i++) {
      const s = createNetServer()
      await new Promise<void>((resolve, reject) => s.once('error', reject).listen(0, '127.0.0.1', resolve))
      servers.push(s)
    }
    return servers.map((s) => (s.address() as { port: number }).port)
  } finally {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))))
  }
}

/** Ports a doc's servers use: 8080 (serve's default) and every `serve … --port N`. */
export function docPorts(blocks: Block[]): number[] {
  const ports = new Set<number>([8080])
  for (const b of blocks) {
    if (b.notRun || (b.kind !== 'sh' && b.kind !== 'console')) continue
    for (const cmd of commands(b)) {
      const m = (SERVE.test(cmd.text) || PORTED.test(cmd.text)) && /--port[= ](\d+)/.exec(cmd.text)
      if (m && Number(m[1]) !== 0) ports.add(Number(m[1]))
    }
  }
  return [...ports]
}

export function substitutePorts(code: string, map: Map<number, number>): string {
  for (const [from, to] of map) code = code.replace(new RegExp(`(?<![\\w.])${from}(?!\\d)`, 'g'), String(to))
  return code
}

// ---------------------------------------------------------------------------------------------
// Shell blocks

interface Command { first: number; last: number; text: string } // body line indexes, 0-based

/** The block's body as bash sees it (console output lines blanked) and its logical commands. */
export function shellLines(b: Block, code = b.code): string[] {
  const lines = code.split('\n')
  if (b.kind !== 'console') return lines
  let inCommand = false
  return lines.map((l) => {
    if (l.startsWith('$ ')) { inCommand = true; return l.slice(2) }
    if (inCommand && l.startsWith('> ')) return l.slice(2)
    inCommand = false
    return ''
  })
}

export function commands(b: Block, code = b.code): Command[] {
  const lines = shellLines(b, code)
  const out: Command[] = []
  for (let i = 0; i < lines.length; i++) {
    if (!lines[i]!.trim() || lines[i]!.trim().startsWith('#')) continue
    const first = i
    let text = lines[i]!
    while (text.endsWith('\\') && i + 1 < lines.length) text = text.slice(0, -1) + ' ' + lines[++i]!
    out.push({ first, last: i, text })
  }
  return out
}

const stripComment = (cmd: string) => cmd.replace(/\s+#\s.*$/, '').trim()

function prelude(dir: string, fenceLine: number): string[] {
  const pkg = join(root, 'package.json')
  return [
    `__T=${q(dir)}`,
    `[ -f "$__T/env" ] && { source "$__T/env" 2>/dev/null || true; }`,
    `[ -f "$__T/cwd" ] && cd "$(cat "$__T/cwd")"`,
    `npm() {`,
    `  case "$1" in`,
    `    install|i|ci|test|t) echo "docs-test: 'npm $*' skipped: it is what runs this test" >&2 ;;`,
    `    run|run-script) shift; local s; s=$(node -p "require(${JSON.stringify(pkg).replace(/"/g, "'")}).scripts[process.argv[1]] ?? ''" "$1"); [ -n "$s" ] || { echo "npm: no script '$1'" >&2; return 1; }; shift; [ "\${1-}" = "--" ] && shift; eval "$s \\"\\$@\\"" ;;`,
    `    *) echo "docs-test: no mapping for 'npm $*'" >&2; return 1 ;;`,
    `  esac`,
    `}`,
    `curl() { command curl --fail-with-body "$@"; }`,
    `export -f npm curl`,
    `__stop_port() {`,
    `  [ -f "$__T/servers" ] || return 0`,
    `  local port pid i`,
    `  while read -r port pid; do`,
    `    [ "$port" = "$1" ] && kill -0 -- "-$pid" 2>/dev/null || continue`,
    `    echo "docs-test: stopping the doc's earlier server on port $1" >&2`,
    `    kill -TERM -- "-$pid" 2>/dev/null || true`,
    `    for i in $(seq 100); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done`,
    `    kill -KILL -- "-$pid" 2>/dev/null || true`,
    `  done < "$__T/servers"`,
    `}`,
    `__serve() {`,
    `  __stop_port "$1"`,
    `  local log="$2.log" pid i`,
    // In this shell (its variables, exported or not), as a job of its own process group (set -m).
    `  : > "$log"`,
    `  set -m`,
    `  eval "$(cat "$2")" > "$log" 2>&1 < /dev/null &`,
    `  pid=$!`,
    `  set +m`,
    `  echo "$1 $pid" >> "$__T/servers"`,
    `  for i in $(seq 300); do`,
    `    if grep -q 'listening on' "$log"; then echo "docs-test: server $(grep -m1 'listening on' "$log")"; return 0; fi`,
    `    if ! kill -0 "$pid" 2>/dev/null; then echo "docs-test: the server exited:" >&2; cat "$log" >&2; return 1; fi`,
    `    sleep 0.1`,
    `  done`,
    `  echo "docs-test: the server did not print 'listening on' within 30 s:" >&2; cat "$log" >&2; return 1`,
    `}`,
    `set -e -o pipefail`,
    // LINENO - (prelude lines) + fence line = the doc's line of the failed command.
    `trap 'echo "docs-test: exit status $? at line $((LINENO - __PRELUDE_LINES__ + ${fenceLine})): $BASH_COMMAND" >&2' ERR`,
  ]
}

/** The bash script of a block, one script line per body line (so errors name the doc's line). */
interface Expected { file: string; line: number; pattern: string }

/**
 * The bash script of a block, one script line per body line (so errors name the doc's line).
 * `expected` gets the output a `# {…}` / `# […]` comment line right under a command shows.
 */
function shellScript(b: Block, code: string, dir: string, id: string, servePort: number, problems: string[], expected: Expected[]): string {
  const lines = shellLines(b, code)
  const cmds = commands(b, code)
  cmds.forEach((c, k) => {
    const shown = /^#\s*([[{].*)$/.exec(lines[c.last + 1]?.trim() ?? '')
    if (shown && !SERVE.test(c.text)) {
      const file = join(dir, `${id}-out-${c.first}.txt`)
      expected.push({ file, line: b.line + 2 + c.last, pattern: shown[1]! })
      lines[c.last] = `${stripComment(lines[c.last]!)} > ${q(file)}; cat ${q(file)}`
    }
    if (!SERVE.test(c.text)) return
    let cmd = stripComment(c.text)
    const background = cmd.endsWith('&')
    cmd = cmd.replace(/&$/, '').trim()
    if (!background && k < cmds.length - 1) {
      problems.push(`line ${b.line + 1 + c.first}: \`${cmd}\` runs in the foreground and the commands after it would never run (end it with &)`)
    }
    let port = servePort
    const m = /--port[= ](\d+)/.exec(cmd)
    if (m) port = Number(m[1])
    else cmd = cmd.replace(/\bserve\b/, `serve --port ${servePort}`)
    const file = join(dir, `${id}-serve-${c.first}.sh`)
    writeFileSync(file, `${cmd}\n`)
    lines[c.first] = `__serve ${port} ${q(file)}`
    for (let i = c.first + 1; i <= c.last; i++) lines[i] = ''
  })
  const pre = prelude(dir, b.line)
  pre[pre.length - 1] = pre[pre.length - 1]!.replace('__PRELUDE_LINES__', String(pre.length))
  return [...pre, ...lines, `export -p > "$__T/env"`, `pwd > "$__T/cwd"`, ''].join('\n')
}

const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`

// ---------------------------------------------------------------------------------------------
// TypeScript blocks: one program for all of them, so the check costs one load of the .d.ts files.

function typeCheck(blocks: Block[]): Map<Block, string[]> {
  const errors = new Map<Block, string[]>()
  if (blocks.length === 0) return errors
  const dir = mkdtempSync(join(tmpdir(), 'docs-ts-'))
  try {
    writeFileSync(join(dir, 'package.json'), '{ "private": true, "type": "module" }\n')
    mkdirSync(join(dir, 'node_modules'))
    symlinkSync(root, join(dir, 'node_modules', 'inference-stream'), 'dir')
    linkReaders(dir)
    const files = new Map(blocks.map((b) => [join(dir, `${b.file.replace(/\W/g, '_')}-${b.line}.mts`), b]))
    for (const [path, b] of files) writeFileSync(path, b.code)
    const program = ts.createProgram([...files.keys()], {
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
      target: ts.ScriptTarget.ES2022,
      lib: ['lib.es2023.d.ts'],
      types: ['node'],
      typeRoots: [join(root, 'node_modules', '@types')],
      strict: true,
      skipLibCheck: true,
      noEmit: true,
    })
    for (const d of ts.getPreEmitDiagnostics(program)) {
      const b = d.file && files.get(d.file.fileName)
      const text = ts.flattenDiagnosticMessageText(d.messageText, '\n')
      if (!b) { for (const b of blocks) errors.set(b, [...(errors.get(b) ?? []), `TS${d.code}: ${text}`]); continue }
      const line = d.start === undefined ? 0 : d.file!.getLineAndCharacterOfPosition(d.start).line
      errors.set(b, [...(errors.get(b) ?? []), `line ${b.line + 1 + line}: TS${d.code}: ${text}`])
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
  return errors
}

// ---------------------------------------------------------------------------------------------
// Processes

// Process groups started here and not yet known gone: killed when this process ends, however it
// ends. A group leaves the set once it is dead, so a reused pid is never signalled.
const groups = new Set<number>()
const killAll = () => { for (const g of groups) killGroup(g, 'SIGKILL') }
process.on('exit', killAll)
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(sig, () => { killAll(); process.kill(process.pid, sig) })

interface Ran { pid: number; code: number | null; signal: string | null; output: string; timedOut: boolean; ms: number }

function runProcess(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv, timeoutMs: number, keepGroup: boolean): Promise<Ran> {
  const start = Date.now()
  const child = spawn(cmd, args, { cwd, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] })
  groups.add(child.pid!)
  let output = ''
  child.stdout.on('data', (d) => { output += d })
  child.stderr.on('data', (d) => { output += d })
  return new Promise((resolve) => {
    let timedOut = false
    const timer = setTimeout(() => { timedOut = true; killGroup(child.pid!, 'SIGKILL') }, timeoutMs)
    child.on('error', (err) => { output += String(err) })
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      if (!keepGroup) { killGroup(child.pid!, 'SIGKILL'); groups.delete(child.pid!) }
      // Output still in the pipes; a background process of the block may hold them open.
      const done = () => resolve({ pid: child.pid!, code, signal, output, timedOut, ms: Date.now() - start })
      const late = setTimeout(done, 1000)
      child.on('close', () => { clearTimeout(late); done() })
    })
  })
}

function killGroup(pgid: number, signal: NodeJS.Signals | 0): boolean {
  try { process.kill(-pgid, signal); return true } catch { return false }
}

/** SIGTERM (a server shuts down gracefully), SIGKILL after 10 s. */
async function stopGroups(pgids: number[]): Promise<void> {
  const alive = pgids.filter((g) => killGroup(g, 'SIGTERM'))
  const deadline = Date.now() + 10_000
  while (alive.some((g) => killGroup(g, 0)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100))
  for (const g of alive) killGroup(g, 'SIGKILL')
  for (const g of pgids) groups.delete(g)
}

const tail = (s: string, n = 40) => s.trimEnd().split('\n').slice(-n).join('\n')

// ---------------------------------------------------------------------------------------------
// A doc

// The Hub's JavaScript client and a Parquet reader (dev dependencies) are importable by blocks, as
// by a user who installed them to read output datasets (docs/bulk.md, "Reading outputs").
const READERS = ['@huggingface', 'hyparquet']

function linkReaders(dir: string): void {
  for (const name of READERS) {
    if (existsSync(join(root, 'node_modules', name))) symlinkSync(join(root, 'node_modules', name), join(dir, 'node_modules', name), 'dir')
  }
}

function sandbox(): string {
  const dir = mkdtempSync(join(tmpdir(), 'docs-blocks-'))
  writeFileSync(join(dir, 'package.json'), '{ "name": "docs-sandbox", "private": true, "type": "module" }\n')
  mkdirSync(join(dir, 'node_modules'))
  symlinkSync(root, join(dir, 'node_modules', 'inference-stream'), 'dir')
  linkReaders(dir)
  cpSync(join(root, 'examples'), join(dir, 'examples'), { recursive: true, filter: (src) => !src.startsWith(join(root, 'examples', 'output')) })
  symlinkSync(join(root, 'dist'), join(dir, 'dist'), 'dir')
  symlinkSync(join(root, 'test'), join(dir, 'test'), 'dir')
  mkdirSync(join(dir, '.bin'))
  const wrapper = join(dir, '.bin', 'inference-stream')
  writeFileSync(wrapper, `#!/bin/sh\nexec ${q(process.execPath)} ${q(join(root, 'dist', 'cli', 'index.js'))} "$@"\n`)
  chmodSync(wrapper, 0o755)
  return dir
}

function blockEnv(dir: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) {
    // Nothing of this run's own configuration leaks into a new user's shell.
    if (/^(INFERENCE_STREAM_|TAP|NODE_OPTIONS$|NODE_V8_COVERAGE$|npm_)/.test(k)) continue
    env[k] = v
  }
  env.PATH = `${join(dir, '.bin')}:${dirname(process.execPath)}:${process.env.PATH ?? '/usr/bin:/bin'}`
  env.GIT_TERMINAL_PROMPT = '0'
  env.NO_COLOR = '1'
  return env
}

async function runDoc(file: string, blocks: Block[], ports: number[], typeErrors: Map<Block, string[]>): Promise<Outcome[]> {
  const outcomes: Outcome[] = []
  const portMap = new Map(docPorts(blocks).map((p, i) => [p, ports[i]!]))
  if (portMap.size > ports.length) throw new Error(`${file}: more ports than reserved`)
  const dir = sandbox()
  const state = join(dir, '.docs-test')
  mkdirSync(state)
  const env = blockEnv(dir)
  const pgids: number[] = []
  try {
    for (const b of blocks) {
      const settled = classify(b)
      if (settled) { outcomes.push(settled); continue }
      if (b.needs === 'redis' && !(await redisOk())) { outcomes.push({ block: b, status: 'skip', message: `needs redis: ${REDIS_SKIP}` }); continue }
      const code = substitutePorts(b.code, portMap)
      const id = `line-${b.line}`
      if (b.kind === 'js' || b.kind === 'ts') {
        const js = b.kind === 'ts'
          ? ts.transpileModule(code, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } }).outputText
          : code
        const path = join(state, `${id}.mjs`)
        writeFileSync(path, js)
        // Run from the project folder, as `node script.mjs` would be: the .mjs sits in .docs-test/,
        // which resolves node_modules from the folder above.
        const r = await runProcess(process.execPath, [path], dir, env, JS_TIMEOUT_MS, false)
        outcomes.push(judge(b, r, JS_TIMEOUT_MS, typeErrors.get(b) ?? []))
      } else {
        const problems: string[] = []
        const expected: Expected[] = []
        const script = shellScript(b, code, state, id, portMap.get(8080)!, problems, expected)
        const path = join(state, `${id}.sh`)
        writeFileSync(path, script)
        const r = await runProcess('bash', [path], dir, env, SH_TIMEOUT_MS, true)
        pgids.push(r.pid, ...readServers(state))
        for (const e of expected) {
          const got = existsSync(e.file) ? readFileSync(e.file, 'utf8').trim() : undefined
          if (got !== undefined && !shownOutput(e.pattern).test(got)) problems.push(`line ${e.line} shows the output ${e.pattern} but the command printed ${got}`)
        }
        outcomes.push(judge(b, r, SH_TIMEOUT_MS, problems))
      }
    }
  } finally {
    await stopGroups([...new Set([...pgids, ...readServers(state)].filter((p) => p > 0))])
    rmSync(dir, { recursive: true, force: true })
  }
  return outcomes
}

function readServers(state: string): number[] {
  const file = join(state, 'servers')
  if (!existsSync(file)) return []
  const pgids = readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => Number(l.split(' ')[1]))
  for (const g of pgids) groups.add(g)
  return pgids
}

/** A shown output as a pattern: `…` stands for any text (the rest of a number, more items). */
export function shownOutput(shown: string): RegExp {
  return new RegExp(`^${shown.split('…').map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('[^]*?')}$`)
}

function judge(b: Block, r: Ran, timeoutMs: number, problems: string[]): Outcome {
  const base = { block: b, output: tail(r.output), ms: r.ms }
  if (r.timedOut) return { ...base, status: 'fail', message: `did not exit within ${timeoutMs / 1000} s (a server or a handle left open?)` }
  if (r.code !== 0) return { ...base, status: 'fail', message: `exit ${r.code ?? r.signal}` }
  if (problems.length) return { ...base, status: 'fail', message: problems.join('; ') }
  return { ...base, status: 'pass', message: `ran in ${(r.ms / 1000).toFixed(1)} s` }
}

// ---------------------------------------------------------------------------------------------

t.test('the rules, on a sample doc', async (t) => {
  const sample = [
    '# Doc', // 1
    '```js', // 2
    "console.log('hi')",
    '```',
    '<!-- not-run: needs a GPU -->', // 5
    '```sh',
    'inference-stream serve --gpu',
    '```',
    '```', // 9
    'plain output',
    '```',
    '```', // 12
    '$ inference-stream serve &',
    '```',
    '```json', // 15
    '{"a": 1,}',
    '```',
    '```python', // 18
    'print(1)',
    '```',
    '- a list', // 21
    '  ```console',
    '  $ echo a \\',
    '  > b',
    '  a b',
    '  ```',
  ].join('\n')
  const blocks = extractBlocks('x.md', sample)
  t.same(blocks.map((b) => [b.line, b.lang, b.kind, b.notRun]), [
    [2, 'js', 'js', undefined], [6, 'sh', 'sh', 'needs a GPU'], [9, '', 'data', undefined], [12, '', 'data', undefined],
    [15, 'json', 'data', undefined], [18, 'python', 'unknown', undefined], [22, 'console', 'console', undefined],
  ])
  t.same(blocks.map((b) => classify(b)?.status), [undefined, 'skip', 'data', 'fail', 'fail', 'fail', undefined])
  t.same(shellLines(blocks[6]!), ['echo a \\', 'b', ''], 'console: $ and > lines are commands, the rest output')
  t.same(commands(blocks[6]!).map((c) => [c.first, c.last]), [[0, 1]])
  t.ok(shownOutput('[[{"label":"POSITIVE","score":0.864…}]]').test('[[{"label":"POSITIVE","score":0.8641271}]]'))
  t.notOk(shownOutput('{"a":1…}').test('{"b":1}'))
  t.same(docPorts(extractBlocks('y.md', '```sh\ninference-stream serve --port 8765 &\ncurl localhost:8765\n```')), [8080, 8765])
  t.same(
    docPorts(extractBlocks('z.md', '```sh\nnohup inference-stream serve --redis $R --port 8081 > a.log 2>&1 &\nnohup inference-stream worker --port 9101 > w.log &\necho --port 7000\n```')),
    [8080, 8081, 9101],
    'the ports of serve and worker anywhere in a command, not of other commands',
  )
  const needs = extractBlocks('n.md', '<!-- needs: redis -->\n```sh\necho hi\n```\n<!-- needs: a GPU -->\n```sh\necho hi\n```')
  t.same(needs.map((b) => [b.needs, classify(b)?.status]), [['redis', undefined], ['a GPU', 'fail']], 'needs: redis runs where Redis answers; other needs are unknown')
  t.equal(substitutePorts('curl localhost:8080/x --port 8080 18080 80801', new Map([[8080, 4000]])), 'curl localhost:4000/x --port 4000 18080 80801')
})

const only = process.env.DOCS_BLOCKS?.split(',').filter(Boolean)
const docs = ['README.md', ...readdirSync(join(root, 'docs')).filter((f) => f.endsWith('.md')).sort().map((f) => `docs/${f}`)]
  .filter((f) => !only || only.includes(f))
const byDoc = docs.map((file) => ({ file, blocks: extractBlocks(file, readFileSync(join(root, file), 'utf8')) }))

t.ok(existsSync(join(root, 'dist', 'index.js')), 'dist/ is built (npx tsc -p tsconfig.build.json)')

const typeCheckStart = Date.now()
const typeErrors = typeCheck(byDoc.flatMap((d) => d.blocks.filter((b) => b.kind === 'ts' && b.notRun === undefined)))
const reserved = await freePorts(byDoc.reduce((n, d) => n + docPorts(d.blocks).length, 0))
const started = Date.now()
t.comment(`type check of the TypeScript blocks: ${((started - typeCheckStart) / 1000).toFixed(1)} s`)
const results = new Map<string, Outcome[]>()
{
  let next = 0
  let offset = 0
  const portsOf = byDoc.map((d) => { const p = reserved.slice(offset, offset + docPorts(d.blocks).length); offset += p.length; return p })
  await Promise.all(Array.from({ length: DOC_CONCURRENCY }, async () => {
    while (next < byDoc.length) {
      const k = next++
      const d = byDoc[k]!
      try {
        results.set(d.file, await runDoc(d.file, d.blocks, portsOf[k]!, typeErrors))
      } catch (err) {
        results.set(d.file, d.blocks.map((block) => ({ block, status: 'fail' as const, message: `the doc's run failed: ${(err as Error).stack}` })))
      }
    }
  }))
}
t.comment(`docs ran in ${((Date.now() - started) / 1000).toFixed(1)} s`)

for (const d of byDoc) {
  for (const o of results.get(d.file)!) {
    const name = `${o.block.file}:${o.block.line} (${o.block.lang || 'no language'})`
    if (o.status === 'skip') { t.test(name, { skip: o.block.notRun !== undefined ? `not-run: ${o.message}` : o.message }, async () => {}); continue }
    t.test(name, async (t) => {
      if (o.status === 'fail') t.fail(o.message, { output: o.output, at: null, stack: '', source: '' })
      else if (process.env.DOCS_BLOCKS_VERBOSE && o.output) t.pass(o.message, { diagnostic: true, output: o.output })
      else t.pass(o.message)
    })
  }
}

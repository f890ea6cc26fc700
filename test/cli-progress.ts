import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { BarFitter, formatBar, formatLine, ProgressMeter, type ProgressState } from '../lib/cli/progress.js'
import { CLI, cliProcess } from './helpers/cli.js'

const dir = mkdtempSync(join(tmpdir(), 'is-progress-'))

function state(over: Partial<ProgressState> = {}): ProgressState {
  return {
    label: 'customer-reviews-2024.csv',
    done: 123456,
    total: 200000,
    counting: false,
    rate: 812.4,
    failed: 3,
    skipped: 2,
    reconnects: 1,
    phase: 'running',
    phaseSeconds: 0,
    waitingFor: 'server',
    ...over,
  }
}

// Counters for ProgressMeter.update.
function counters(done: number, over: Partial<Parameters<ProgressMeter['update']>[1]> = {}) {
  return { done, processed: done, total: 1000, counting: false, failed: 0, skipped: 0, reconnects: 0, inFlight: 8, reconnecting: 0, finishing: false, label: 'x.csv', ...over }
}

t.test('formatBar fits the terminal: the bar graphic goes first; counts, rate, ETA and failures stay', async (t) => {
  const wide = formatBar(state(), 200)
  t.match(wide, /^customer-reviews-2024\.csv \[█+░+\] 123456\/200000 61% \| 812 rows\/s \| eta 1m34s \| 3 failed \| 2 malformed \| 1 reconnects$/)
  t.equal(wide.match(/\[(.*)\]/)![1].length, 30, 'a 30-column bar when there is room')
  const at80 = formatBar(state(), 80)
  t.ok(at80.length <= 79, `80 columns: ${at80.length} characters`)
  t.match(at80, /123456\/200000/)
  t.match(at80, /812 rows\/s/)
  t.match(at80, /eta 1m34s/)
  t.match(at80, /3 failed/)
  const at60 = formatBar(state(), 60)
  t.ok(at60.length <= 59, `60 columns: ${at60.length} characters: ${at60}`)
  t.notMatch(at60, /[█░]/, 'no bar graphic at 60 columns')
  t.match(at60, /123456\/200000 \| 812 rows\/s \| eta 1m34s \| 3 failed/)
  // The short label of a common run keeps its bar at 80 columns.
  const short = formatBar(state({ label: 'reviews.csv', done: 1234, total: 5000, failed: 0, skipped: 0, reconnects: 0 }), 80)
  t.match(short, /^reviews\.csv \[█+░+\] 1234\/5000 24% \| 812 rows\/s \| eta 5s \| 0 failed$/)
  t.ok(short.length <= 79)
  for (const columns of [20, 30, 40, 50, 60, 70, 80, 100, 140]) {
    for (const s of [state(), state({ phase: 'stalled', phaseSeconds: 102, rate: 0.2 }), state({ phase: 'finishing', phaseSeconds: 3 }), state({ total: undefined, counting: true })]) {
      const line = formatBar(s, columns)
      t.ok([...line].length <= columns - 1, `${columns} columns, ${s.phase}: ${line}`)
      if (columns >= 40) t.match(line, /3 failed/, `${columns} columns, ${s.phase}: failures kept`)
    }
  }
  t.match(formatBar(state({ phase: 'stalled', phaseSeconds: 102, rate: 0.2 }), 60), /stalled (for )?1m42s \((waiting for )?server\) \| 3 failed/)
  t.match(formatBar(state({ total: undefined, counting: true }), 80), /123456\/… \|/, 'the total while it is counted')
})

t.test('BarFitter keeps a layout while it fits: the bar does not jump as numbers change width', async (t) => {
  const fitter = new BarFitter()
  const frame = (rate: number): ProgressState => state({ label: 'reviews.csv', done: 1234, total: 5000, failed: 0, skipped: 0, reconnects: 0, rate })
  const bars = [1234, 9.9, 1234, 9.9, 1234].map((rate) => fitter.fit(frame(rate), 80)).map((line) => t.ok(line.length <= 79) && /\[(.*)\]/.exec(line)![1].length)
  t.same(bars, [17, 15, 15, 15, 15], 'stateless, the widths would be 17, 15, 17, 15, 17')
  t.same([1234, 9.9].map((rate) => /\[(.*)\]/.exec(formatBar(frame(rate), 80))![1].length), [17, 15])
  t.match(fitter.fit(frame(1234), 120), /\[.{30}\]/, 'a wider terminal: the richest layout again')
})

t.test('formatLine: rate and ETA while running, the phase instead when stalled or writing', async (t) => {
  t.equal(formatLine(state({ label: 'a.csv' })), 'a.csv: 123456/200000 rows (61%), 812 rows/s, eta 1m34s, 3 failed, 2 malformed skipped, 1 reconnects')
  t.equal(formatLine(state({ label: 'a.csv', phase: 'stalled', phaseSeconds: 42, rate: 0.2, skipped: 0, reconnects: 0 })), 'a.csv: 123456/200000 rows (61%), stalled for 42s (waiting for server), 3 failed, 0 reconnects')
  t.equal(formatLine(state({ label: 'a.csv', done: 200000, phase: 'finishing', phaseSeconds: 4, skipped: 0, reconnects: 0 })), 'a.csv: 200000/200000 rows (100%), writing output… 4s, 3 failed, 0 reconnects')
  t.equal(formatLine(state({ label: 'a.csv', phase: 'stalled', phaseSeconds: 7, waitingFor: 'reconnect (attempt 3)', skipped: 0 })), 'a.csv: 123456/200000 rows (61%), stalled for 7s (waiting for reconnect (attempt 3)), 3 failed, 1 reconnects')
})

t.test('ProgressMeter: a recent-window rate of this run\'s rows; stalls told from slow rows', async (t) => {
  const m = new ProgressMeter(0, { windowMs: 10_000, stallAfterMs: 5_000 })
  t.equal(m.update(500, counters(0)).rate, undefined, 'no rate before a second')
  // 100 rows/s for 20 s.
  let s = m.update(1000, counters(100))
  for (let t2 = 2000; t2 <= 20_000; t2 += 1000) s = m.update(t2, counters(t2 / 10))
  t.equal(s.rate, 100)
  t.equal(s.phase, 'running')
  // Then nothing: the rate falls within the window, and after 5 s it is a stall, not an ETA.
  s = m.update(24_000, counters(2000))
  t.equal(s.phase, 'running')
  t.ok(s.rate! < 100 && s.rate! > 0)
  s = m.update(25_000, counters(2000))
  t.equal(s.phase, 'stalled')
  t.equal(s.phaseSeconds, 5)
  t.equal(s.waitingFor, 'server')
  s = m.update(62_000, counters(2000, { inFlight: 0 }))
  t.equal(s.phaseSeconds, 42)
  t.equal(s.waitingFor, 'input', 'nothing in flight: waiting for the input')
  s = m.update(63_000, counters(2000, { reconnecting: 3 }))
  t.equal(s.waitingFor, 'reconnect (attempt 3)')
  t.equal(s.rate, 0, 'the window rate, not the run average (which would still say ~32 rows/s)')
  s = m.update(64_000, counters(2001))
  t.equal(s.phase, 'running', 'a row ends the stall')

  // A slow model (one row every 8 s) is not stalled between rows: ten gaps are allowed.
  const slow = new ProgressMeter(0, { windowMs: 60_000, stallAfterMs: 5_000 })
  let r = slow.update(1000, counters(0))
  for (let i = 1; i <= 6; i++) r = slow.update(i * 8000, counters(i))
  t.equal(r.phase, 'running')
  r = slow.update(6 * 8000 + 7000, counters(6))
  t.equal(r.phase, 'running', '7 s after the last row of a 0.125 rows/s run')
  r = slow.update(6 * 8000 + 81_000, counters(6))
  t.equal(r.phase, 'stalled', 'but 81 s is')

  // Rows replayed from a checkpoint are done, not speed.
  const resumed = new ProgressMeter(0, { windowMs: 20_000 })
  resumed.update(200, counters(1200, { processed: 0 }))
  const first = resumed.update(1000, counters(1210, { processed: 10 }))
  t.equal(first.rate, 10)
  t.equal(first.done, 1210)
  // Waiting for the first row, and writing the output at the end.
  const w = new ProgressMeter(0)
  t.equal(w.update(6000, counters(0)).phase, 'waiting')
  const f = w.update(7000, counters(1000, { finishing: true }))
  t.equal(f.phase, 'finishing')
  t.equal(w.update(10_000, counters(1000, { finishing: true })).phaseSeconds, 3)
})

// Progress lines of a plain (non-TTY) run: "label: done/total rows ...".
function progressLines(stderr: string, label: string): string[] {
  return stderr.split('\n').filter((l) => l.startsWith(`${label}: `))
}

t.test('run: the total counts CSV records, not lines (quoted multi-line texts), and the last line reaches it', async (t) => {
  const input = join(dir, 'multiline.csv')
  const rows = ['id,text']
  for (let i = 0; i < 300; i++) rows.push(`${i},"line one of ${i}\nline two, ""quoted""\nline three"`)
  writeFileSync(input, `${rows.join('\n')}\n`)
  const p = cliProcess(['run', input, '-m', 'builtin/echo', '--parameters', '{"delay_ms":5}', '--max-in-flight', '16', '-o', join(dir, 'multiline.jsonl'), '--progress-interval', '100'])
  t.equal((await p.exited).code, 0, p.err())
  const lines = progressLines(p.err(), 'multiline.csv')
  t.ok(lines.length >= 2, `${lines.length} progress lines`)
  t.ok(lines.every((l) => /: \d+\/(300|…) rows/.test(l)), `every total is 300 (the file has ${rows.length * 3 - 2} lines)`)
  t.match(lines[lines.length - 1], /: 300\/300 rows \(100%\), writing output…/, 'the last line: everything done, the output being written')
})

t.test('run: a stall says so (no absurd ETA); the end says "writing output…"', async (t) => {
  const input = join(dir, 'stall.csv')
  const rows = ['id,text,params']
  for (let i = 0; i < 60; i++) rows.push(`${i},row ${i},"{""delay_ms"":${i === 30 ? 8000 : 0}}"`)
  writeFileSync(input, `${rows.join('\n')}\n`)
  const p = cliProcess(['run', input, '-m', 'builtin/echo', '--parameters-column', 'params', '--max-in-flight', '4', '-o', join(dir, 'stall.jsonl'), '--progress-interval', '500'])
  t.equal((await p.exited).code, 0, p.err())
  const lines = progressLines(p.err(), 'stall.csv')
  t.ok(lines.some((l) => /^stall\.csv: 30\/60 rows \(50%\), stalled for [5-9]s \(waiting for server\), 0 failed, 0 reconnects$/.test(l)), lines.join('\n'))
  t.notOk(lines.some((l) => /eta \d+h/.test(l)), 'no ETA in hours')
  t.match(lines[lines.length - 1], /^stall\.csv: 60\/60 rows \(100%\), writing output… \d+s, 0 failed/)
})

t.test('run: a resumed run says so at start and does not count replayed rows as speed', async (t) => {
  const input = join(dir, 'resume.csv')
  const out = join(dir, 'resume.jsonl')
  const rows = ['id,text']
  for (let i = 0; i < 3000; i++) rows.push(`${i},row ${i}`)
  writeFileSync(input, `${rows.join('\n')}\n`)
  const common = ['run', input, '-m', 'builtin/echo', '--parameters', '{"delay_ms":20}', '-o', out, '--checkpoint']
  // Fast first run, interrupted once it has written a few hundred rows (its checkpoint holds them).
  const first = cliProcess([...common, '--max-in-flight', '64', '--progress-interval', '100'])
  const doneSoFar = (): number => Math.max(0, ...progressLines(first.err(), 'resume.csv').map((l) => Number(/: (\d+)\//.exec(l)?.[1] ?? 0)))
  const deadline = Date.now() + 120_000
  while (Date.now() < deadline && first.child.exitCode === null && doneSoFar() < 300) await new Promise((r) => setTimeout(r, 20))
  first.child.kill('SIGINT')
  t.equal((await first.exited).code, 130, 'the first run was interrupted mid-way')
  // Slow second run: one row in flight, 20 ms a row: at most ~50 rows/s of its own.
  const second = cliProcess([...common, '--max-in-flight', '1', '--progress-interval', '500'])
  const rated = (): number => progressLines(second.err(), 'resume.csv').filter((l) => / rows\/s/.test(l) && !/…/.test(l)).length
  const until = Date.now() + 120_000
  while (Date.now() < until && second.child.exitCode === null && rated() < 4) await new Promise((r) => setTimeout(r, 50))
  second.child.kill('SIGINT')
  t.equal((await second.exited).code, 130, second.err())
  const err = second.err()
  const m = /^inference-stream: resuming from .*resume\.jsonl\.ckpt: (\d+) rows already done \(replayed from the checkpoint(; \d+ sent earlier without an answer: the server is asked about them, and those it does not know are sent again)?\); continuing with the rest$/m.exec(err)
  t.ok(m, err)
  const replayed = Number(m?.[1])
  t.ok(replayed >= 300 && replayed < 3000, `${replayed} rows replayed`)
  t.ok(err.indexOf('resuming from') < err.indexOf('resume.csv: '), 'said before the first progress line')
  const lines = progressLines(err, 'resume.csv')
  const rates = lines.map((l) => /, ([\d.]+) rows\/s/.exec(l)).filter((x) => x !== null).map((x) => Number(x![1]))
  t.ok(rates.length >= 2, lines.join('\n'))
  t.ok(rates.every((r) => r < 100), `rates of this run only (${rates.join(', ')}), not the ${replayed} replayed rows`)
  t.ok(lines.some((l) => new RegExp(`: (\\d+)/3000 rows`).exec(l) && Number(/: (\d+)\//.exec(l)![1]) >= replayed), 'done counts the replayed rows')
})

// Runs the CLI on a pseudo-terminal `columns` wide (util-linux `script`); returns what it drew.
function onTerminal(args: string[], columns: number): Promise<{ code: number | null; screen: string }> {
  const quote = (s: string): string => `'${s.replace(/'/g, "'\\''")}'`
  const command = `stty cols ${columns} rows 24; exec ${[process.execPath, CLI, ...args].map(quote).join(' ')}`
  const child = spawn('script', ['-qefc', command, '/dev/null'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let screen = ''
  child.stdout.on('data', (d) => (screen += d))
  child.stderr.on('data', (d) => (screen += d))
  return new Promise((resolve) => child.on('exit', (code) => resolve({ code, screen })))
}

const hasScript = spawnSync('script', ['--version']).status === 0

t.test('run on a terminal: the bar is redrawn within 60 and 80 columns, ETA and failures kept', { skip: hasScript ? false : 'no util-linux script(1) for a pseudo-terminal' }, async (t) => {
  const input = join(dir, 'tty.csv')
  const rows = ['id,text']
  for (let i = 0; i < 400; i++) rows.push(`${i},"row ${i}\nsecond line"`)
  writeFileSync(input, `${rows.join('\n')}\n`)
  const runs = [60, 80].map((columns) =>
    onTerminal(['run', input, '-m', 'builtin/echo', '--parameters', '{"delay_ms":50}', '--max-in-flight', '4', '-o', join(dir, `tty-${columns}.jsonl`)], columns).then((r) => ({ columns, ...r })),
  )
  for (const { columns, code, screen } of await Promise.all(runs)) {
    t.equal(code, 0, screen)
    // Each redraw: \r, the line, erase to the end of the line.
    const frames = screen.split('\r').map((f) => f.replace(/\x1b\[K[\s\S]*$/, '')).filter((f) => /\d+\/(400|…)/.test(f))
    t.ok(frames.length >= 3, `${columns} columns: ${frames.length} frames`)
    for (const f of frames) t.ok([...f].length < columns, `${columns} columns: ${JSON.stringify(f)}`)
    t.ok(frames.every((f) => /\| \d+ failed/.test(f)), `${columns} columns: failures on every frame`)
    t.ok(frames.some((f) => /rows\/s \| eta \d+s/.test(f)), `${columns} columns: rate and ETA`)
    t.ok(frames.some((f) => / 400\/400 .*\| done \|/.test(f)), `${columns} columns: the last frame`)
    if (columns === 80) t.ok(frames.some((f) => /\[[█░]+\]/.test(f)), 'a bar graphic at 80 columns')
    else t.notOk(frames.some((f) => /\d rows\/s/.test(f) && /[█░]/.test(f)), 'no bar graphic beside a rate and an ETA at 60 columns')
  }
})

import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { Command } from 'commander'
import { InferenceStream } from '../client/inference-stream.js'
import { InvalidOptionError } from '../errors.js'
import { endpointFlag, intFlag, intListFlag, jsonObjectFlag } from './common.js'
import { ANONYMOUS_TOKEN } from '../server/http-util.js'
import { startEmbedded, type EmbeddedServer } from './embedded.js'
import { addModelFlags, registryFromFlags } from './model-flags.js'

/** One measured level of `bench`. */
export interface BenchRow {
  inFlight: number
  items: number
  seconds: number
  itemsPerSecond: number
  p50: number
  p95: number
  p99: number
  failed: number
}

const SAMPLE_TEXTS = [
  'I love this product, it works perfectly.',
  'Terrible quality, it broke after two days.',
  'The package arrived on Tuesday.',
  'Great value for the money and fast shipping.',
  'Customer service never answered my emails.',
]

/**
 * Measures one model or endpoint: `items` records through an InferenceStream at each in-flight
 * level, items/s and round-trip latency percentiles (ms).
 */
export async function benchLevels(o: {
  url: string
  token: string
  model: string
  items: number
  levels: number[]
  inputs: string[]
  parameters?: Record<string, unknown>
  protocol: 'v1' | 'legacy'
}): Promise<BenchRow[]> {
  const rows: BenchRow[] = []
  for (const inFlight of o.levels) {
    const stream = new InferenceStream<number>({
      url: o.url,
      model: o.model,
      token: o.token,
      maxInFlight: inFlight,
      parameters: o.parameters,
      protocol: o.protocol,
      includeRecord: false,
      input: (i) => ({ inputs: o.inputs[i % o.inputs.length] }),
    })
    const started = performance.now()
    await pipeline(
      Readable.from((function* () { for (let i = 0; i < o.items; i++) yield i })()),
      stream,
      new Writable({ objectMode: true, write: (_r, _e, cb) => cb() }),
    )
    const seconds = (performance.now() - started) / 1000
    const l = stream.latency
    rows.push({
      inFlight,
      items: o.items,
      seconds,
      itemsPerSecond: o.items / seconds,
      p50: l.percentile(50),
      p95: l.percentile(95),
      p99: l.percentile(99),
      failed: stream.stats.failed,
    })
  }
  return rows
}

/** `inference-stream bench`: throughput and latency of a model or endpoint. */
export function benchCommand(): Command {
  return addModelFlags(new Command('bench'))
    .description('Measure a model or endpoint: items/s and latency percentiles at several in-flight levels')
    .requiredOption('-m, --model <id>', 'model id, e.g. builtin/sentiment')
    .option('--endpoint <url>', 'server URL (default: an embedded server in this process)', endpointFlag)
    .option('--token <token>', 'bearer token for --endpoint (or INFERENCE_STREAM_TOKEN)')
    .option('-n, --items <n>', 'items per level', intFlag('items', 1), 5000)
    .option('--in-flight <list>', 'in-flight levels to measure', intListFlag('in-flight'), [1, 16, 256])
    .option('--input <text...>', 'input texts to cycle through (default: short product reviews)')
    .option('--parameters <json>', 'parameters for every item', jsonObjectFlag('parameters'))
    .option('--legacy', 'use the original protocol (one payload per frame, no acks)')
    .option('--threads <n>', 'worker threads of the embedded server\'s CPU models', intFlag('threads', 1), 1)
    .option('--json', 'print the rows as JSON')
    .addHelpText(
      'after',
      `
Examples:
  $ inference-stream bench --model builtin/sentiment
  $ inference-stream bench --model builtin/echo --items 50000 --in-flight 1,64,1024
  $ inference-stream bench --model org/model --endpoint http://gpu-box:8080 --token $TOKEN --json`,
    )
    .action(async (o) => {
      let embedded: EmbeddedServer | undefined
      let url: string = o.endpoint
      let token: string | undefined = o.token ?? process.env.INFERENCE_STREAM_TOKEN
      if (!url) {
        embedded = await startEmbedded({ registry: registryFromFlags(o, { defaultModel: o.model }) })
        url = embedded.url
        token = embedded.token
      } else if (!token) {
        // A server without tokens (loopback) takes any; one with tokens answers that one is needed.
        token = ANONYMOUS_TOKEN
      }
      try {
        const rows = await benchLevels({
          url,
          token: token as string,
          model: o.model,
          items: o.items,
          levels: o.inFlight,
          inputs: o.input ?? SAMPLE_TEXTS,
          parameters: o.parameters,
          protocol: o.legacy ? 'legacy' : 'v1',
        })
        if (o.json) process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`)
        else {
          process.stdout.write(`${o.model} @ ${embedded ? 'embedded server' : url}, ${o.items} items per level\n\n`)
          process.stdout.write('| in-flight | items/s | p50 ms | p95 ms | p99 ms | failed |\n|--:|--:|--:|--:|--:|--:|\n')
          for (const r of rows) {
            process.stdout.write(`| ${r.inFlight} | ${r.itemsPerSecond.toFixed(0)} | ${r.p50.toFixed(1)} | ${r.p95.toFixed(1)} | ${r.p99.toFixed(1)} | ${r.failed} |\n`)
          }
        }
      } finally {
        await embedded?.close()
      }
    })
}

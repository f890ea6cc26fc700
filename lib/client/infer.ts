import { Readable, pipeline } from 'node:stream'
import { InferenceStream, type InferenceResult } from './inference-stream.js'
import type { InferenceStreamOptions } from './options.js'

/**
 * The async-iterable form of {@link InferenceStream}, for scripts that do not use streams:
 * yields one result per record of `source` (in input order unless `ordered: false`).
 * Breaking out of the loop closes the connection.
 *
 * @example
 * for await (const r of infer(['I love it', 'meh'], { url, model: 'builtin/sentiment', token })) console.log(r.outputs)
 */
export async function* infer<R>(
  source: Iterable<R> | AsyncIterable<R>,
  options: InferenceStreamOptions<R>,
): AsyncGenerator<InferenceResult<R>, void, undefined> {
  const stream = new InferenceStream<R>(options)
  const input = Readable.from(source, { objectMode: true })
  // pipeline() carries a source error into the stream (and so into this loop) and cleans up both.
  pipeline(input, stream, () => {})
  try {
    for await (const result of stream) yield result as InferenceResult<R>
  } finally {
    input.destroy()
    stream.destroy()
  }
}

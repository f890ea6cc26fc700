import { StringDecoder } from 'node:string_decoder'

/**
 * The text of a byte (or string) stream, chunk by chunk: UTF-8 decoded across chunk boundaries,
 * a leading BOM dropped, and the decoder's last bytes yielded at the end (possibly '').
 */
export async function* textChunks(input: AsyncIterable<unknown>): AsyncGenerator<string> {
  const decoder = new StringDecoder('utf8')
  let first = true
  for await (const chunk of input) {
    let text = typeof chunk === 'string' ? chunk : decoder.write(chunk as Buffer)
    if (first && text.length > 0) {
      first = false
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1)
    }
    yield text
  }
  yield decoder.end()
}

#!/usr/bin/env node
// The async-iterable form, for scripts that do not use streams: infer() yields one result per
// input, in order.
//
//   node examples/async-iterable.js
import { createServer, infer } from 'inference-stream'

const server = createServer()
const url = await server.listen(0)

const texts = ['I love this kettle, it boils in a minute.', 'The strap broke on day two.', 'It arrived on Tuesday.']
for await (const r of infer(texts, { url, model: 'builtin/sentiment', token: 'anything-on-loopback' })) {
  const [top] = r.outputs[0]
  console.log(`${top.label.padEnd(8)} ${top.score.toFixed(3)}  ${r.record}`)
}
for await (const r of infer(['Order 12 cost $25.50, arrived on 5 June 2026 at 10:30 am; write to help@shop.example.'], { url, model: 'builtin/ner', token: 'x' })) {
  console.log(r.outputs.map((e) => `${e.entity_group}: ${e.word}`).join(', '))
}
await server.close()

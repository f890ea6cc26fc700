import { createModelRegistry } from './models/registry.js'
const texts = [
  'I love this movie, the acting is wonderful and the story is great!',
  'This was a terrible, awful experience and the staff were rude.',
  'The package arrived on Tuesday; it works as described, nothing special.',
  'Not bad at all, but the battery life could be better for the price.',
]
const r = createModelRegistry({ threads: 1 })
const sentiment = r.get('builtin/sentiment')
await sentiment.run(texts, {}) // warm: thread start + model load
for (const batch of [1, 32, 256]) {
  const items = Array.from({ length: batch }, (_, i) => texts[i % texts.length])
  let done = 0
  const start = performance.now()
  // Keep 4 batches in flight so the thread never waits for the main thread.
  const loop = async () => { while (performance.now() - start < 3000) { await sentiment.run(items, {}); done += batch } }
  await Promise.all([loop(), loop(), loop(), loop()])
  const secs = (performance.now() - start) / 1000
  console.log(`batch ${batch}: ${(done / secs).toFixed(0)} items/s`)
}
const ner = r.get('builtin/ner')
{
  const items = Array.from({ length: 256 }, (_, i) => texts[i % texts.length] + ' Call me on 12 March 2021 at 5pm.')
  let done = 0; const start = performance.now()
  const loop = async () => { while (performance.now() - start < 3000) { await ner.run(items, {}); done += 256 } }
  await Promise.all([loop(), loop(), loop(), loop()])
  console.log(`ner batch 256: ${(done / ((performance.now() - start) / 1000)).toFixed(0)} items/s`)
}
await r.close()

import { createModelRegistry } from './models/registry.js'
const t0 = performance.now()
const r = createModelRegistry()
const s = await r.get('builtin/sentiment').run(['I love it', ['bad', 'fine'], 3], {})
console.log('first batch incl. thread start', (performance.now() - t0).toFixed(0), 'ms')
console.log(JSON.stringify(s.slice(0, 2)), s[2].constructor.name, s[2].message)
console.log(JSON.stringify(await r.get('builtin/ner').run(['Meet me on 3 May 2024 at noon, mail a@b.org'], {})))
// leave the registry open: the process must still exit

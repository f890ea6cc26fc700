import t from 'tap'
import { ResultCache } from '../lib/server/result-cache.js'

const b = (s: string): Buffer => Buffer.from(s)

t.test('LRU by entries: a get refreshes, the least recently used goes first', async (t) => {
  const c = new ResultCache({ maxEntries: 2, maxBytes: 1000 })
  c.set('a', b('1'))
  c.set('b', b('2'))
  t.same(c.get('a'), b('1'))
  c.set('c', b('3'))
  t.equal(c.get('b'), undefined, 'b was the least recently used')
  t.same(c.get('a'), b('1'))
  t.same(c.get('c'), b('3'))
  t.equal(c.size, 2)
  t.equal(c.bytes, 2)
})

t.test('bounded by bytes; a replaced entry is counted once; a body over the bound is not kept', async (t) => {
  const c = new ResultCache({ maxEntries: 100, maxBytes: 10 })
  c.set('a', b('aaaa'))
  c.set('b', b('bbbb'))
  c.set('a', b('AAAA'))
  t.equal(c.bytes, 8)
  c.set('c', b('cccc'))
  t.equal(c.get('b'), undefined, 'evicted to stay within 10 bytes')
  t.equal(c.bytes, 8)
  c.set('big', b('x'.repeat(11)))
  t.equal(c.get('big'), undefined)
  t.equal(c.size, 2, 'nothing evicted for it')
  c.set('a', b('x'.repeat(11)))
  t.equal(c.get('a'), undefined, 'a replacement too large drops the old entry')
  c.delete('c')
  c.delete('nothing')
  t.equal(c.size, 0)
  t.equal(c.bytes, 0)
  c.set('d', b('d'))
  c.clear()
  t.equal(c.size, 0)
  t.equal(c.bytes, 0)
})

t.test('maxEntries 0 or maxBytes 0 disables it', async (t) => {
  for (const opts of [{ maxEntries: 0, maxBytes: 100 }, { maxEntries: 10, maxBytes: 0 }]) {
    const c = new ResultCache(opts)
    t.notOk(c.enabled)
    c.set('a', b('1'))
    t.equal(c.get('a'), undefined)
    t.equal(c.size, 0)
  }
})

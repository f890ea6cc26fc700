/** mulberry32: a small seeded PRNG, so a failing random schedule can be replayed by its seed. */
export { prng } from '../fixtures/prng.js'

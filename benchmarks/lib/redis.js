// Redis helpers the benchmarks share (scale-out.js, state-backends.js): the server's own CPU and
// command stats, and removing a run's keys.

/** Redis's own CPU seconds, commands processed and per-command stats (INFO). */
export async function redisInfo(redis) {
  const text = await redis.info('all')
  const field = (name) => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(text)?.[1] ?? NaN)
  const commands = {}
  for (const m of text.matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm)) commands[m[1]] = { calls: Number(m[2]), usec: Number(m[3]) }
  return { cpuSec: field('used_cpu_user') + field('used_cpu_sys'), commandsProcessed: field('total_commands_processed'), commands, version: /^redis_version:(\S+)/m.exec(text)?.[1] ?? null }
}

/** Deletes every key of `prefix` (SCAN + DEL); resolves how many there were. */
export async function deleteKeys(redis, prefix) {
  const pattern = `${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`
  let deleted = 0
  let cursor = '0'
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000)
    cursor = next
    if (keys.length > 0) deleted += await redis.del(...keys)
  } while (cursor !== '0')
  return deleted
}

import {randomBytes} from 'node:crypto'

import {type Redis} from 'ioredis'

/**
 * Data sets for the tests of snapshots, backups and moves: every type and encoding Redis
 * 7.0 writes, with the awkward values (scores that lose precision in text, integers that
 * are stored as integers, binary bytes, expiry times in milliseconds), in several
 * databases. Each key's encoding is checked as it is made, so a change of Redis's
 * defaults cannot quietly shrink what the tests cover.
 */

/** The databases `populateEveryType` fills, and the expiry it gives its keys with a TTL (absolute, ms). */
export const EVERY_TYPE_DBS = [0, 1, 5, 15]
export const EXPIRE_AT_MS = Date.now() + 3_600_000 + 123

/** Scores a text format would round: the RDB keeps them as binary doubles. */
export const AWKWARD_SCORES = ['0.1', '1e-300', 'inf', '-inf', '9007199254740993', '-0', '3.141592653589793']

async function expectEncoding(client: Redis, key: string, encoding: string): Promise<void> {
  const actual = await client.object('ENCODING', key)
  if (actual !== encoding) throw new Error(`test data: ${key} is ${String(actual)}, not ${encoding}: did Redis's defaults change?`)
}

/**
 * Every type in every encoding, in db `db` of the client's server (the client is left on
 * that db). Returns the number of keys made. Needs --enable-debug-command for the plain
 * quicklist node.
 */
export async function populateEveryType(client: Redis, db: number): Promise<number> {
  await client.select(db)
  const p = `db${db}:`
  let keys = 0
  const made = async (key: string, encoding: string) => {
    await expectEncoding(client, key, encoding)
    keys++
  }

  // Strings: short text, integers (stored as integers in the RDB), empty, compressible, random binary, large.
  await client.set(`${p}str:text`, 'hello world')
  await made(`${p}str:text`, 'embstr')
  for (const [name, value] of [
    ['int8', '-7'],
    ['int16', '1234'],
    ['int32', '-2000000000'],
    ['int64', '9007199254740993'],
  ]) {
    await client.set(`${p}str:${name}`, value)
    await made(`${p}str:${name}`, 'int')
  }
  await client.set(`${p}str:empty`, '')
  await made(`${p}str:empty`, 'embstr')
  await client.set(`${p}str:compressible`, 'abc'.repeat(2000))
  await made(`${p}str:compressible`, 'raw')
  await client.set(`${p}str:random`, randomBytes(20_000))
  await made(`${p}str:random`, 'raw')
  await client.set(`${p}str:ttl`, 'expires', 'PXAT', EXPIRE_AT_MS)
  await made(`${p}str:ttl`, 'embstr')
  // Integer-looking key names are stored as integers too.
  await client.set(`12345${db}`, 'integer key')
  await made(`12345${db}`, 'embstr')

  // Lists: one listpack node; many nodes; a plain node for a large element.
  await client.rpush(`${p}list:small`, 'a', 'b', '3', '-4', randomBytes(20))
  await made(`${p}list:small`, 'quicklist')
  await client.config('SET', 'list-max-listpack-size', '4')
  await client.rpush(`${p}list:nodes`, ...Array.from({length: 50}, (_, i) => `element ${i}`))
  await client.config('SET', 'list-max-listpack-size', '-2')
  await made(`${p}list:nodes`, 'quicklist')
  await client.call('DEBUG', 'QUICKLIST-PACKED-THRESHOLD', '100')
  await client.rpush(`${p}list:plain`, 'small', 'x'.repeat(500), randomBytes(300), 'tail')
  await client.call('DEBUG', 'QUICKLIST-PACKED-THRESHOLD', String(2 ** 30))
  await made(`${p}list:plain`, 'quicklist')
  await client.rpush(`${p}list:ttl`, 'a')
  await client.pexpireat(`${p}list:ttl`, EXPIRE_AT_MS)
  await made(`${p}list:ttl`, 'quicklist')

  // Sets: integers (intset), strings and many integers (hashtable).
  await client.sadd(`${p}set:ints`, 1, -2, 300000, 2 ** 40)
  await made(`${p}set:ints`, 'intset')
  await client.sadd(`${p}set:strings`, 'a', 'b', randomBytes(10))
  await made(`${p}set:strings`, 'hashtable')
  await client.sadd(`${p}set:many`, ...Array.from({length: 600}, (_, i) => i))
  await made(`${p}set:many`, 'hashtable')

  // Sorted sets, listpack and skiplist, with the scores text would round.
  const members = AWKWARD_SCORES.flatMap((score, i) => [score, `m${i}`])
  await client.zadd(`${p}zset:listpack`, ...members)
  await made(`${p}zset:listpack`, 'listpack')
  await client.zadd(`${p}zset:skiplist`, ...members, '1.5', 'y'.repeat(100))
  await made(`${p}zset:skiplist`, 'skiplist')
  await client.zadd(`${p}zset:ttl`, 1, 'one')
  await client.pexpireat(`${p}zset:ttl`, EXPIRE_AT_MS)
  await made(`${p}zset:ttl`, 'listpack')

  // Hashes: listpack, and a hash table (a long value).
  await client.hset(`${p}hash:listpack`, 'f1', 'v1', 'n', '42', 'bin', randomBytes(16))
  await made(`${p}hash:listpack`, 'listpack')
  await client.hset(`${p}hash:table`, 'f1', 'v1', 'long', 'z'.repeat(100))
  await made(`${p}hash:table`, 'hashtable')
  await client.hset(`${p}hash:many`, Object.fromEntries(Array.from({length: 600}, (_, i) => [`field${i}`, i])))
  await made(`${p}hash:many`, 'hashtable')

  // Streams: several listpack nodes, deletions, consumer groups with pending entries, an empty one.
  const stream = `${p}stream`
  for (let i = 1; i <= 250; i++) await client.xadd(stream, `${1000 + i}-${i % 3}`, 'field', `value ${i}`, 'n', i)
  await client.xdel(stream, '1005-2', '1010-1', '1100-1')
  await client.xgroup('CREATE', stream, 'group1', '0')
  await client.xreadgroup('GROUP', 'group1', 'alice', 'COUNT', 10, 'STREAMS', stream, '>')
  await client.xreadgroup('GROUP', 'group1', 'bob', 'COUNT', 5, 'STREAMS', stream, '>')
  await client.xack(stream, 'group1', '1001-1', '1003-0')
  await client.xgroup('CREATE', stream, 'group2', '$')
  await client.xgroup('CREATECONSUMER', stream, 'group2', 'carol')
  await made(stream, 'stream')
  await client.xgroup('CREATE', `${p}stream:empty`, 'group', '$', 'MKSTREAM')
  await made(`${p}stream:empty`, 'stream')
  return keys
}

/** Every key of db `db`, with its absolute expiry (-1: none). */
export async function keysOf(client: Redis, db: number): Promise<Map<string, number>> {
  await client.select(db)
  const out = new Map<string, number>()
  for (const key of await client.keys('*')) out.set(key, await client.pexpiretime(key))
  return out
}

import {randomBytes} from 'node:crypto'
import {readdirSync} from 'node:fs'
import {join} from 'node:path'

import type {Redis} from 'ioredis'

/**
 * Data for the backup and restore tests: every type Redis has, keys with and without an
 * expiry, and (on request) a value larger than one S3 multipart part; and the exact
 * comparison of two databases, key by key.
 */
export const BIG_VALUE_BYTES = 6 * 1024 * 1024

export async function fillDatabase(client: Redis, db: number, options: {keys?: number; big?: boolean} = {}): Promise<void> {
  const p = client.pipeline().select(db)
  for (let i = 0; i < (options.keys ?? 200); i++) p.set(`str:${db}:${i}`, `value ${db}/${i} ${'x'.repeat(i % 50)}`)
  p.set(Buffer.from([0xff, 0x00, 0x10, db]), Buffer.from([0, 1, 2, 254, 255]))
  p.hset(`hash:${db}`, 'a', '1', 'b', 'two', 'c', '3.5')
  p.hset(`bighash:${db}`, Object.fromEntries(Array.from({length: 600}, (_, i) => [`f${i}`, `v${i}`])))
  p.rpush(`list:${db}`, 'a', 'b', 'c', 'a')
  p.rpush(`biglist:${db}`, ...Array.from({length: 800}, (_, i) => `e${i}`))
  p.sadd(`set:${db}`, 'x', 'y', 'z')
  p.sadd(`intset:${db}`, '1', '2', '3')
  p.zadd(`zset:${db}`, 1, 'one', 2.5, 'two-and-a-half', -3, 'minus-three')
  p.xadd(`stream:${db}`, '1-1', 'field', 'value', 'n', String(db))
  p.xadd(`stream:${db}`, '2-1', 'field', 'other')
  p.xgroup('CREATE', `stream:${db}`, 'readers', '0')
  p.set(`ttl:${db}:hour`, 'expires in an hour', 'PX', 3_600_000)
  p.hset(`ttl:${db}:hash`, 'k', 'v')
  p.pexpire(`ttl:${db}:hash`, 7_200_000)
  // Random bytes: RDB compresses values, and this one must stay larger than an S3 part once stored.
  if (options.big) p.set(`big:${db}`, randomBytes(BIG_VALUE_BYTES))
  p.select(0)
  const replies = (await p.exec()) ?? []
  const failed = replies.find(([error]) => error)
  if (failed) throw failed[0]
}

/**
 * Every key of db `fromDb` on `a` and `toDb` on `b`: its type, its content (in an order
 * that does not depend on how the server iterates a hash table: a set or a hash reloaded
 * from a snapshot dumps its members in another order) and its absolute expiry. The keys
 * that differ.
 */
export async function differences(a: Redis, fromDb: number, b: Redis, toDb: number): Promise<string[]> {
  const read = async (client: Redis, db: number) => {
    await client.select(db)
    const out = new Map<string, string>()
    for (const key of await client.keysBuffer('*'))
      out.set(key.toString('base64'), `${await contentOf(client, key)} expires ${await client.call('PEXPIRETIME', key)}`)
    await client.select(0)
    return out
  }
  const [left, right] = [await read(a, fromDb), await read(b, toDb)]
  const differ: string[] = []
  for (const [key, value] of left) if (right.get(key) !== value) differ.push(Buffer.from(key, 'base64').toString())
  for (const key of right.keys()) if (!left.has(key)) differ.push(`${Buffer.from(key, 'base64').toString()} (only on the target)`)
  return differ
}

async function contentOf(client: Redis, key: Buffer): Promise<string> {
  const b64 = (items: Buffer[]) => items.map((item) => item.toString('base64'))
  const type = await client.type(key)
  switch (type) {
    case 'string': {
      return `string ${(await client.getBuffer(key))!.toString('base64')}`
    }
    case 'list': {
      return `list ${b64(await client.lrangeBuffer(key, 0, -1)).join(',')}`
    }
    case 'set': {
      return `set ${b64(await client.smembersBuffer(key))
        .sort()
        .join(',')}`
    }
    case 'hash': {
      const flat = b64((await client.callBuffer('HGETALL', key)) as Buffer[])
      const pairs = Array.from({length: flat.length / 2}, (_, i) => `${flat[2 * i]}=${flat[2 * i + 1]}`)
      return `hash ${pairs.sort().join(',')}`
    }
    case 'zset': {
      return `zset ${(await client.zrange(key, '0', '-1', 'WITHSCORES')).join(',')}`
    }
    case 'stream': {
      const groups = (await client.call('XINFO', 'GROUPS', key)) as unknown[]
      return `stream ${JSON.stringify(await client.xrange(key, '-', '+'))} groups ${JSON.stringify(groups)}`
    }
    default: {
      throw new Error(`no comparison for type ${type} (key ${key.toString()})`)
    }
  }
}

/** The files of one backup folder in a local destination. */
export function backupFiles(root: string, id: string): string[] {
  return readdirSync(join(root, ...id.split('/'))).sort()
}

import type {Redis} from 'ioredis'

import type {ScriptedRedis} from '../fleet/connect.js'

import {ExitCode, ShardctlError} from '../errors.js'

/**
 * One database copied key by key from a loaded snapshot to a live instance, as DUMP
 * payloads restored with RESTORE … ABSTTL: values exactly as they were (Redis's own
 * serialization), expiry times as absolute moments, so a key expires when it would
 * have; a key whose moment has passed is not brought back. SCAN pages of the source
 * (which holds still: nothing writes to it) are dumped and restored pipelined, a few
 * batches in flight, bounded by keys and by bytes.
 */
export interface CopyOptions {
  /** Keys per SCAN page and per pipeline. */
  batch: number
  /** Payload bytes in flight at most (a batch of large values is sent alone). */
  maxBytesInFlight: number
  /** Keys to keep aside for the comparison afterwards. */
  sample: number
  onKeys?: (copied: number) => void
}

export interface CopyResult {
  /** Keys restored on the target. */
  copied: number
  /** Of them, keys without an expiry time. */
  persistent: number
  /** Keys SCAN showed whose expiry time had come: not brought back. */
  expired: number
  /** Restored keys whose expiry time had come by the moment given to expiringBy. */
  expiringBy: (at: number) => number
  sample: Buffer[]
}

export const DEFAULT_COPY: CopyOptions = {batch: 1000, maxBytesInFlight: 64 * 1024 * 1024, sample: 100}

/**
 * `source` (the temporary server, with the scripts of src/lua) and `target` are connections
 * of their own, already on the databases to copy from and to.
 */
export async function copyDatabase(source: ScriptedRedis, target: Redis, options: CopyOptions = DEFAULT_COPY): Promise<CopyResult> {
  let copied = 0
  let persistent = 0
  let expired = 0
  let seen = 0
  const sample: Buffer[] = []
  // Expiry moments of restored keys, by the minute: enough to know how many may be gone by any moment.
  const expiries = new Map<number, number>()
  const inFlight: {bytes: number; done: Promise<void>}[] = []
  let bytesInFlight = 0
  const settle = async () => {
    const oldest = inFlight.shift()!
    await oldest.done
    bytesInFlight -= oldest.bytes
  }
  let cursor = '0'
  do {
    const [next, keys] = await source.scanBuffer(cursor, 'COUNT', options.batch)
    cursor = String(next)
    if (keys.length === 0) continue
    const read = await source.dumpKeysBuffer(keys.length, ...keys)
    const restore = target.pipeline()
    const now = Date.now()
    let bytes = 0
    let restored = 0
    keys.forEach((key, i) => {
      const payload = read[2 * i] as Buffer | null
      const expireAt = Number(read[2 * i + 1])
      // Gone (expired, on a replica: reads no longer see it), or its moment has passed.
      if (payload === null || expireAt === -2 || (expireAt > 0 && expireAt <= now)) {
        expired++
        return
      }
      restore.restore(key, expireAt > 0 ? expireAt : 0, payload, 'ABSTTL')
      bytes += payload.length
      restored++
      if (expireAt > 0) {
        const minute = Math.floor(expireAt / 60_000)
        expiries.set(minute, (expiries.get(minute) ?? 0) + 1)
      } else persistent++
      // Reservoir sampling: every key as likely as any other to be compared afterwards.
      seen++
      if (sample.length < options.sample) sample.push(key)
      else {
        const j = Math.floor(Math.random() * seen)
        if (j < options.sample) sample[j] = key
      }
    })
    if (restored === 0) continue
    const done = restore.exec().then((results) => {
      const failed = (results ?? []).find(([error]) => error)
      if (failed) throw restoreRefused(failed[0] as Error)
      copied += restored
      options.onKeys?.(copied)
    })
    // Never an unhandled rejection: it is awaited in order below.
    done.catch(() => undefined)
    inFlight.push({bytes, done})
    bytesInFlight += bytes
    while (inFlight.length > 0 && (inFlight.length >= 4 || bytesInFlight > options.maxBytesInFlight)) await settle()
  } while (cursor !== '0')
  while (inFlight.length > 0) await settle()
  return {
    copied,
    persistent,
    expired,
    sample,
    expiringBy: (at) => [...expiries].filter(([minute]) => minute * 60_000 <= at).reduce((sum, [, n]) => sum + n, 0),
  }
}

function restoreRefused(error: Error): ShardctlError {
  if (/BUSYKEY/.test(error.message))
    return new ShardctlError(`the target database took a write during the restore: ${error.message.split('\n')[0]}`, {
      code: 'ERESTORE',
      exitCode: ExitCode.unhealthy,
      hint: 'something else writes there: stop it, empty the database (or use --replace) and restore again',
    })
  return new ShardctlError(`the target refused a key: ${error.message.split('\n')[0]}`, {code: 'ERESTORE', exitCode: ExitCode.unexpected})
}

/**
 * Keys of the sample compared between the source and the target: the same value (the
 * same DUMP payload, or — when the two servers' versions serialize differently — the
 * same content read by type) and the same expiry moment. A key that expired on either
 * side meanwhile is passed over. Returns the keys that differ, and how many were compared.
 */
export async function compareSample(source: ScriptedRedis, target: Redis, keys: Buffer[]): Promise<{compared: number; differ: string[]}> {
  if (keys.length === 0) return {compared: 0, differ: []}
  const there = source.dumpKeysBuffer(keys.length, ...keys)
  const check = target.pipeline()
  for (const key of keys) check.dumpBuffer(key).call('PEXPIRETIME', key)
  const [a, b] = await Promise.all([there, check.exec()])
  const failed = (b ?? []).find(([error]) => error)
  if (failed) throw failed[0]
  const differ: string[] = []
  let compared = 0
  for (const [i, key] of keys.entries()) {
    const payload = a[2 * i] as Buffer | null
    const expireAt = Number(a[2 * i + 1])
    const [, copy] = b![2 * i] as [Error | null, Buffer | null]
    const [, copyExpireAt] = b![2 * i + 1] as [Error | null, number]
    if (payload === null || copy === null || expireAt === -2 || copyExpireAt === -2) continue
    compared++
    if (expireAt !== Number(copyExpireAt) || !(payload.equals(copy) || (await sameContent(source, target, key))))
      differ.push(key.toString())
  }
  return {compared, differ}
}

/** A value read by its type, in an order that does not depend on the server's encoding. */
async function contentOf(client: Redis, key: Buffer): Promise<string> {
  const type = await client.type(key)
  const sorted = (items: Buffer[]) => items.map((b) => b.toString('base64')).sort()
  switch (type) {
    case 'string': {
      return `string:${(await client.getBuffer(key))?.toString('base64')}`
    }
    case 'list': {
      return `list:${(await client.lrangeBuffer(key, 0, -1)).map((b) => b.toString('base64')).join(',')}`
    }
    case 'set': {
      return `set:${sorted(await client.smembersBuffer(key)).join(',')}`
    }
    case 'hash': {
      const flat = (await client.callBuffer('HGETALL', key)) as Buffer[]
      const pairs: string[] = []
      for (let i = 0; i < flat.length; i += 2) pairs.push(`${flat[i].toString('base64')}=${flat[i + 1].toString('base64')}`)
      return `hash:${pairs.sort().join(',')}`
    }
    case 'zset': {
      return `zset:${((await client.callBuffer('ZRANGE', key, '0', '-1', 'WITHSCORES')) as Buffer[]).map((b) => b.toString('base64')).join(',')}`
    }
    case 'stream': {
      return `stream:${JSON.stringify(await client.callBuffer('XRANGE', key, '-', '+'), (_k, v: unknown) => (Buffer.isBuffer(v) ? v.toString('base64') : v))}`
    }
    default: {
      // A module's type: its own serialization is all there is to compare.
      return `${type}:${(await client.dumpBuffer(key))?.subarray(0, -10).toString('base64')}`
    }
  }
}

async function sameContent(source: Redis, target: Redis, key: Buffer): Promise<boolean> {
  const [a, b] = await Promise.all([contentOf(source, key), contentOf(target, key)])
  return a === b
}

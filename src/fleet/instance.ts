import type {Redis} from 'ioredis'

import {instanceKey} from '../registry/address.js'
import {parseInfo, parseKeyspace} from './info.js'

/**
 * The instance's `databases` setting. CONFIG may be renamed or forbidden by ACLs:
 * then find the highest database SELECT accepts, by bisection on a dedicated step.
 */
export async function databaseCount(client: Redis, instance: {host: string; port: number}): Promise<number> {
  try {
    const reply = await client.config('GET', 'databases')
    if (reply.length === 2) return Number(reply[1])
  } catch {
    // fall through to probing with SELECT
  }
  const probe = client.duplicate()
  try {
    await probe.connect()
    let lo = 1
    let hi = 1 << 20
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1
      const ok = await probe.select(mid - 1).then(
        () => true,
        () => false,
      )
      if (ok) lo = mid
      else hi = mid - 1
    }
    return lo
  } catch (error) {
    throw new Error(`cannot read the databases setting of ${instanceKey(instance)}: ${(error as Error).message}`)
  } finally {
    probe.disconnect()
  }
}

/** Empty one database of an instance over a pooled connection, which is left on db 0. */
export async function flushDb(client: Redis, db: number): Promise<void> {
  const replies = await client.multi().select(db).flushdb('ASYNC').select(0).exec()
  const failed = replies?.find(([error]) => error)
  if (failed) throw failed[0]
}

/** Keys per database, from INFO keyspace. */
export async function keysPerDb(client: Redis): Promise<Map<number, number>> {
  return parseKeyspace(parseInfo(await client.info('keyspace')))
}

/**
 * The settings a new instance copies from the one it takes shards from; its fencing
 * (min-replicas-*) only when it will have replicas of its own, or it would refuse writes.
 */
export async function copiedSettings(client: Redis, options: {withReplicas: boolean}): Promise<string[]> {
  const args: string[] = []
  const names = ['databases', 'maxmemory', 'maxmemory-policy', 'appendonly', 'appendfsync', 'save']
  if (options.withReplicas) names.push('min-replicas-to-write', 'min-replicas-max-lag')
  for (const name of names) {
    try {
      const reply = await client.config('GET', name)
      if (reply.length === 2) args.push(`--${name}`, reply[1])
    } catch {
      // CONFIG may be renamed away: the new instance keeps redis-server's default
    }
  }
  return args
}

/** Up to about `count` key names of one database (one SCAN page), over a pooled connection left on db 0. */
export async function sampleKeys(client: Redis, db: number, count = 100): Promise<string[]> {
  const replies = await client.pipeline().select(db).scan('0', 'COUNT', String(count)).select(0).exec()
  const failed = replies?.find(([error]) => error)
  if (failed) throw failed[0]
  const [, page] = replies![1] as [null, [string, string[]]]
  return page[1].slice(0, count)
}

import type {Redis} from 'ioredis'

import {instanceKey} from '../registry/address.js'

/**
 * The instance's `databases` setting. CONFIG may be renamed or forbidden by ACLs:
 * then find the highest database SELECT accepts, by bisection on a dedicated step.
 */
export async function databaseCount(client: Redis, instance: {host: string; port: number}): Promise<number> {
  try {
    const reply = (await client.config('GET', 'databases')) as string[]
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

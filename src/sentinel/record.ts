import {corruptRegistryError} from '../errors.js'
import {type Endpoint, parseSentinelAddress} from '../registry/address.js'
import type {Change, Registry} from '../registry/registry.js'
import type {MonitorSettings} from './sentinel.js'

/**
 * What the registry records of Sentinel, so that every operator and every follower
 * finds it: one hash, P._sentinel (a name no shard id can take), with
 *
 *   sentinels     JSON ["host:port", ...]          the Sentinels the fleet is handed to
 *   settings      JSON {quorum, downAfterMs, ...}  what sentinel:register gave them
 *   group:<name>  JSON GroupRecord                 one replication group (an instance
 *                                                  that is master of shards, with its replicas)
 *
 * Each group field is compared and set whole in the same atomic step as the routing
 * change it goes with: several followers, or a follower and an operator, change it once.
 */

export interface GroupRecord {
  /** The master instance (host:port, as the registry names it) the registry routes the group's shards to. */
  master: string
  /** The config epoch Sentinel had for the name when the registry last followed it. */
  epoch: number
  /**
   * Taken out of Sentinel's hands for an operation (a graceful promote, a split's
   * cut-over): the follower leaves it alone, sentinel:register (or the operation when
   * it ends) hands it back.
   */
  released?: Release
  /** Former masters a failover removed from the shards: named again as replicas once they replicate the new master. */
  rejoin?: string[]
}

/** Who released a group (user@host), for which operation (promote, split), and when. Records of older versions have no `for`, and the operation in `by`. */
export interface Release {
  by: string
  for?: string
  at: string
}

/** A release in words: "alice@ops1 for a promote". */
export function describeRelease(release: Release): string {
  return release.for === undefined ? release.by : `${release.by} for a ${release.for}`
}

/** The operation a group was released for. */
export function releasedFor(release: Release | undefined): string | undefined {
  return release && (release.for ?? release.by)
}

export interface SentinelRecord {
  sentinels: Endpoint[]
  settings?: MonitorSettings
  groups: Map<string, GroupRecord>
  /** Each group field exactly as stored: what a change compares against. */
  stored: Map<string, string>
}

export const groupField = (name: string) => `group:${name}`

export async function readRecord(registry: Registry): Promise<SentinelRecord | undefined> {
  const key = registry.keys.sentinel
  const fields = await registry.guard(key, 'a hash', () => registry.client.hgetall(key))
  if (Object.keys(fields).length === 0) return undefined
  try {
    const sentinels = (JSON.parse(fields.sentinels ?? '[]') as string[]).map((s) => parseSentinelAddress(s))
    const settings = fields.settings ? (JSON.parse(fields.settings) as MonitorSettings) : undefined
    const groups = new Map<string, GroupRecord>()
    const stored = new Map<string, string>()
    for (const [field, value] of Object.entries(fields)) {
      if (!field.startsWith('group:')) continue
      const group = JSON.parse(value) as GroupRecord
      if (typeof group.master !== 'string' || typeof group.epoch !== 'number') throw new Error(`${field} has no master or epoch`)
      groups.set(field.slice('group:'.length), group)
      stored.set(field.slice('group:'.length), value)
    }
    return {sentinels, settings, groups, stored}
  } catch (error) {
    throw corruptRegistryError(`${key} is not what sentinel:register writes: ${(error as Error).message}`)
  }
}

/** Set a group's record in `change`, only while it still holds what it held when read (undefined: absent). */
export function setGroup(change: Change, registry: Registry, name: string, before: string | undefined, after: GroupRecord): Change {
  return change
    .expectField(registry.keys.sentinel, groupField(name), before)
    .hset(registry.keys.sentinel, {[groupField(name)]: JSON.stringify(after)})
}

/** The group whose master is `instance`, if the registry records one. */
export function groupOf(record: SentinelRecord | undefined, instance: string): {name: string; group: GroupRecord} | undefined {
  for (const [name, group] of record?.groups ?? []) if (group.master === instance) return {name, group}
  return undefined
}

import {usageError} from '../errors.js'
import {instanceKey} from '../registry/address.js'
import {compareIds} from '../registry/registry.js'
import type {Shard} from '../registry/schema.js'
import type {SentinelRecord} from './record.js'

/**
 * Replication groups as Sentinel sees them: Sentinel monitors instances, not
 * databases, so a group is an instance that is the master of shards, with the
 * instances that replicate it. One Sentinel name per group moves all of its shards.
 */
export interface ReplicationGroup {
  /** The master instance, host:port. */
  master: string
  /** Read replicas then persistence replicas, instance keys. */
  replicas: string[]
  shards: string[]
}

/**
 * The groups of the registry. Shards on one instance must name the same replica
 * instances: Sentinel moves them all together, to one replica, so a shard that
 * lists others would be routed to an instance that does not hold it.
 */
export function replicationGroups(shards: Shard[]): ReplicationGroup[] {
  const byMaster = new Map<string, Shard[]>()
  for (const shard of shards) {
    const key = instanceKey(shard.master)
    byMaster.set(key, [...(byMaster.get(key) ?? []), shard])
  }
  const groups: ReplicationGroup[] = []
  const mixed: string[] = []
  for (const [master, list] of byMaster) {
    const replicasOf = (s: Shard) => [...new Set([...s.replicas, ...s.persist].map(instanceKey))]
    const variants = new Map<string, string[]>()
    for (const shard of list) {
      const key = [...replicasOf(shard)].sort().join(',')
      variants.set(key, [...(variants.get(key) ?? []), shard.id])
    }
    if (variants.size > 1) {
      const described = [...variants].map(([replicas, ids]) => `${ids.sort(compareIds).join(', ')} name ${replicas || 'no replica'}`)
      mixed.push(`${master}: ${described.join('; ')}`)
      continue
    }
    const ids = list.map((s) => s.id).sort(compareIds)
    groups.push({master, replicas: replicasOf(list[0]), shards: ids})
  }
  if (mixed.length > 0) {
    throw usageError(
      `shards on one instance name different replicas, so Sentinel cannot move them together: ${mixed.join(' | ')}`,
      'give every shard of an instance the same replicas (shards:add --replica, shards:import), then register again',
    )
  }
  return groups.sort((a, b) => compareIds(a.shards[0], b.shards[0]))
}

/**
 * Stable names: a group keeps the name the registry records for its master; a new one
 * is named after the prefix and its first shard (`shards-s000`), with -2, -3... when
 * that is taken. Recorded once, a name never changes, whatever moves later.
 */
export function nameGroups(groups: ReplicationGroup[], record: SentinelRecord | undefined, prefix: string): Map<string, ReplicationGroup> {
  const named = new Map<string, ReplicationGroup>()
  const taken = new Set(record?.groups.keys() ?? [])
  const fresh: ReplicationGroup[] = []
  for (const group of groups) {
    const recorded = [...(record?.groups ?? [])].find(([, g]) => g.master === group.master)
    if (recorded) named.set(recorded[0], group)
    else fresh.push(group)
  }
  for (const group of fresh) {
    const base = `${prefix}-${group.shards[0]}`
    let name = base
    for (let n = 2; taken.has(name) || named.has(name); n++) name = `${base}-${n}`
    named.set(name, group)
  }
  return named
}

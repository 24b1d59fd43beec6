import {type ShardAddress, instanceKey} from '../registry/address.js'
import {compareIds} from '../registry/registry.js'
import type {Shard} from '../registry/schema.js'

/**
 * Shards that share their nodes: the same master instance and the same replica
 * instances. Health is a property of instances (replication, persistence and fencing
 * are per redis-server, not per database), so `shards:check` reports a line per group
 * instead of a hundred identical lines per instance.
 */
export interface NodeRef {
  /** host:port */
  instance: string
  host: string
  port: number
  kind: 'master' | 'slave' | 'persist'
}

export interface ShardGroup {
  master: NodeRef
  /** Read replicas then persistence replicas, as the registry names them. */
  replicas: NodeRef[]
  shards: Shard[]
}

function ref(address: ShardAddress, kind: NodeRef['kind']): NodeRef {
  return {instance: instanceKey(address), host: address.host, port: address.port, kind}
}

export function groupShards(shards: Shard[]): ShardGroup[] {
  const groups = new Map<string, ShardGroup>()
  for (const shard of shards) {
    const replicas = [...shard.replicas.map((r) => ref(r, 'slave')), ...shard.persist.map((r) => ref(r, 'persist'))]
    const key = [instanceKey(shard.master), ...replicas.map((r) => `${r.kind}:${r.instance}`)].join('|')
    let group = groups.get(key)
    if (!group) {
      group = {master: ref(shard.master, 'master'), replicas, shards: []}
      groups.set(key, group)
    }
    group.shards.push(shard)
  }
  return [...groups.values()].sort((a, b) => compareIds(a.shards[0].id, b.shards[0].id))
}

/** Every distinct instance of the groups, masters first. */
export function instancesOf(groups: ShardGroup[]): NodeRef[] {
  const seen = new Map<string, NodeRef>()
  for (const g of groups) if (!seen.has(g.master.instance)) seen.set(g.master.instance, g.master)
  for (const g of groups) for (const r of g.replicas) if (!seen.has(r.instance)) seen.set(r.instance, r)
  return [...seen.values()]
}

/** `s000…s049 (50)`, `s1, s7`: a short name for a list of shard ids, for a table cell. */
export function describeIds(ids: string[]): string {
  if (ids.length <= 3) return ids.join(', ')
  return `${ids[0]}…${ids.at(-1)} (${ids.length})`
}

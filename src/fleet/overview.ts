import {formatAddress, instanceKey} from '../registry/address.js'
import type {Registry} from '../registry/registry.js'
import type {Shard} from '../registry/schema.js'
import type {ConnectionPool} from './connect.js'
import {type ReplicaHealth, type NodeHealth, probeInstances, shardHealth} from './probe.js'

export interface ShardOverview {
  id: string
  weight: number
  /** Share of new assignments: weight / total weight. */
  share: number
  master: NodeHealth
  replicas: (ReplicaHealth & {kind: 'slave' | 'persist'})[]
  /** Hashes assigned to this shard (with counts). */
  hashes?: number
  /** What is wrong, in words; empty when healthy or not probed. */
  problems: string[]
}

export interface BrokenShard {
  id: string
  weight: number | null
  problems: string[]
}

export interface FleetOverview {
  totalWeight: number
  instances: number
  probed: boolean
  shards: ShardOverview[]
  broken: BrokenShard[]
  /** Hashes in the map that point at no registered shard (with counts). */
  orphanHashes?: number
}

export interface OverviewOptions {
  probe: boolean
  counts: boolean
  onProgress?: (message: string) => void
}

/**
 * Everything `shards:list` shows: the registry read in one pipeline, every instance
 * probed once and in parallel, and optionally the hashes per shard from one HSCAN pass.
 */
export async function fleetOverview(registry: Registry, pool: ConnectionPool, options: OverviewOptions): Promise<FleetOverview> {
  const {shards, broken} = await registry.snapshot()
  const nodes = (s: Shard) => [s.master, ...s.replicas, ...s.persist]
  const instances = new Set(shards.flatMap((s) => nodes(s).map((n) => instanceKey(n))))
  const [states, counts] = await Promise.all([
    options.probe ? probeInstances(shards.flatMap((s) => nodes(s)), pool) : undefined,
    options.counts ? registry.countAssignments((n) => options.onProgress?.(`counted ${n.toLocaleString('en-US')} hashes`)) : undefined,
  ])
  const totalWeight = shards.reduce((sum, s) => sum + s.weight, 0)

  const overview: ShardOverview[] = shards.map((shard) => {
    const kinds = [...shard.replicas.map(() => 'slave' as const), ...shard.persist.map(() => 'persist' as const)]
    const health = states
      ? shardHealth(shard, states, formatAddress)
      : {master: {address: formatAddress(shard.master)}, replicas: nodes(shard).slice(1).map((r) => ({address: formatAddress(r)}))}
    const entry: ShardOverview = {
      id: shard.id,
      weight: shard.weight,
      share: totalWeight > 0 ? shard.weight / totalWeight : 0,
      master: health.master,
      replicas: health.replicas.map((r, i) => ({...r, kind: kinds[i]})),
      problems: states ? shardProblems(health.master, health.replicas) : [],
    }
    if (counts) entry.hashes = counts.get(shard.id) ?? 0
    return entry
  })

  const result: FleetOverview = {
    totalWeight,
    instances: instances.size,
    probed: options.probe,
    shards: overview,
    broken: broken.map(({id, weight, problems}) => ({id, weight, problems})),
  }
  if (counts) {
    const known = new Set([...shards.map((s) => s.id), ...broken.map((b) => b.id)])
    result.orphanHashes = [...counts].filter(([id]) => !known.has(id)).reduce((sum, [, n]) => sum + n, 0)
  }
  return result
}

/** What an operator must know about a shard's nodes, in words. */
export function shardProblems(master: NodeHealth, replicas: ReplicaHealth[]): string[] {
  const problems: string[] = []
  if (!master.reachable) problems.push(`master ${master.address} unreachable`)
  else if (master.role !== 'master') problems.push(`master ${master.address} is a ${master.role === 'slave' ? 'replica' : master.role}`)
  for (const r of replicas) {
    if (!r.reachable) problems.push(`replica ${r.address} unreachable`)
    else if (!r.followsMaster) problems.push(`replica ${r.address} does not follow the master`)
    else if (!r.linkUp) problems.push(`replica ${r.address} link down`)
  }
  return problems
}

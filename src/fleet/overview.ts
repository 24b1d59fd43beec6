import {formatAddress, instanceKey} from '../registry/address.js'
import {shares} from '../registry/assign.js'
import type {Registry} from '../registry/registry.js'
import {type Shard, sharedDatabases} from '../registry/schema.js'
import type {ConnectionPool} from './connect.js'
import {identityOf} from './identity.js'
import {type InstanceState, type NodeHealth, type ReplicaHealth, probeInstances, shardHealth, unreachableWord} from './probe.js'
import {plural} from '../ui/terminal.js'

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
  /** The sum of the weights: null in JSON when it is beyond the largest number (shares are still right). */
  totalWeight: number
  instances: number
  probed: boolean
  shards: ShardOverview[]
  /** With `instances`: one row per instance, masters first. */
  instanceRows?: InstanceOverview[]
  broken: BrokenShard[]
  /** Hashes in the map that point at no registered shard (with counts). */
  orphanHashes?: number
}

export interface OverviewOptions {
  probe: boolean
  counts: boolean
  /** Also one row per instance (keys, memory, replicas, lag): the view before deciding what to split. */
  instances?: boolean
  onProgress?: (message: string) => void
}

/** One instance of the fleet, as it reports itself. */
export interface InstanceOverview {
  instance: string
  reachable: boolean
  role?: string
  /** Shards whose master it is. */
  shards: number
  /** Keys over all its databases. */
  keys?: number
  usedMemory?: number
  /** 0: no limit. */
  maxMemory?: number
  /** Replicas connected to it (as a master). */
  replicas?: number
  /** The largest lag of its connected replicas, in bytes. */
  maxLagBytes?: number
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
    options.probe || options.instances
      ? probeInstances(
          shards.flatMap((s) => nodes(s)),
          pool,
          {memory: options.instances},
        )
      : undefined,
    options.counts ? registry.countAssignments((n) => options.onProgress?.(`counted ${plural(n, 'hash')}`)) : undefined,
  ])
  const totalWeight = shards.reduce((sum, s) => sum + s.weight, 0)
  const shareOf = shares(new Map(shards.map((s) => [s.id, s.weight])))

  // What the registry itself gets wrong, told by what the instances are (their run_id where probed).
  const identity = identityOf(states ?? new Map())
  const sharing = new Map<string, string[]>()
  for (const shared of sharedDatabases(shards, identity.database))
    for (const id of shared.ids)
      sharing.set(
        id,
        shared.ids.filter((other) => other !== id),
      )
  const registryProblems = (shard: Shard): string[] => [
    ...(sharing.has(shard.id)
      ? [`master ${formatAddress(shard.master)} is also the master of ${sharing.get(shard.id)!.join(', ')}: a database holds one shard`]
      : []),
    ...[...shard.replicas, ...shard.persist]
      .filter((r) => identity.instance(r) === identity.instance(shard.master))
      .map((r) => `replica ${formatAddress(r)} is the master itself`),
  ]

  const overview: ShardOverview[] = shards.map((shard) => {
    const kinds = [...shard.replicas.map(() => 'slave' as const), ...shard.persist.map(() => 'persist' as const)]
    const health = states
      ? shardHealth(shard, states, formatAddress)
      : {
          master: {address: formatAddress(shard.master)},
          replicas: nodes(shard)
            .slice(1)
            .map((r) => ({address: formatAddress(r)})),
        }
    const entry: ShardOverview = {
      id: shard.id,
      weight: shard.weight,
      share: shareOf.get(shard.id) ?? 0,
      master: health.master,
      replicas: health.replicas.map((r, i) => ({...r, kind: kinds[i]})),
      problems: [...registryProblems(shard), ...(states ? shardProblems(health.master, health.replicas) : [])],
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
  if (options.instances && states) result.instanceRows = instanceRows(shards, states)
  if (counts) {
    const known = new Set([...shards.map((s) => s.id), ...broken.map((b) => b.id)])
    result.orphanHashes = [...counts].filter(([id]) => !known.has(id)).reduce((sum, [, n]) => sum + n, 0)
  }
  return result
}

/** What an operator must know about a shard's nodes, in words. */
export function shardProblems(master: NodeHealth, replicas: ReplicaHealth[]): string[] {
  const problems: string[] = []
  if (!master.reachable) problems.push(`master ${master.address} ${unreachableWord(master.error)}`)
  else if (master.role !== 'master') problems.push(`master ${master.address} is a ${master.role === 'slave' ? 'replica' : master.role}`)
  for (const r of replicas) {
    if (!r.reachable) problems.push(`replica ${r.address} ${unreachableWord(r.error)}`)
    else if (!r.followsMaster) problems.push(`replica ${r.address} does not follow the master`)
    else if (!r.linkUp) problems.push(`replica ${r.address} link down`)
  }
  return problems
}

function instanceRows(shards: Shard[], states: Map<string, InstanceState>): InstanceOverview[] {
  const masters = new Map<string, number>()
  for (const s of shards) masters.set(instanceKey(s.master), (masters.get(instanceKey(s.master)) ?? 0) + 1)
  const rows = [...states.values()].map((state): InstanceOverview => {
    const row: InstanceOverview = {instance: state.instance, reachable: state.reachable, shards: masters.get(state.instance) ?? 0}
    if (!state.reachable || !state.info) return row
    row.role = state.replication?.role
    row.keys = [...(state.keysByDb?.values() ?? [])].reduce((a, b) => a + b, 0)
    row.usedMemory = Number(state.info.used_memory ?? 0)
    row.maxMemory = Number(state.info.maxmemory ?? 0)
    if (state.replication?.role === 'master') {
      row.replicas = state.replication.replicas.length
      row.maxLagBytes = Math.max(0, ...state.replication.replicas.map((r) => state.replication!.offset - r.offset))
    }
    return row
  })
  return rows.sort((a, b) => b.shards - a.shards || a.instance.localeCompare(b.instance))
}

import type {ConnectionPool} from '../fleet/connect.js'
import {databaseCount, estimateDbMemory} from '../fleet/instance.js'
import {mapLimited, probeInstances} from '../fleet/probe.js'
import {type Endpoint, type ShardAddress, instanceKey} from '../registry/address.js'
import type {Registry} from '../registry/registry.js'
import type {BalanceBy, PlanInstance, PlanShard} from './plan.js'
import {plural} from '../ui/terminal.js'

/**
 * The fleet as the rebalance plan needs it: every master instance of the registry
 * (and any instance named to take shards), its used memory, maxmemory and keys from
 * one INFO each, its free databases, and each shard's memory estimated by sampling
 * (fleet/instance.ts, estimateDbMemory), scaled so that the databases of an instance
 * add up to its used_memory_dataset.
 *
 * An instance the plan cannot balance is left out, with the reason: unreachable, a
 * replica, or (--by memory) without maxmemory — there is nothing to even its memory
 * against, and no room to prove. With --by keys an instance without maxmemory takes
 * part, and its room is taken as unbounded (keys, not bytes, are evened).
 */

export interface ExcludedInstance {
  instance: string
  reason: string
}

export interface FleetMeasure {
  instances: PlanInstance[]
  shards: PlanShard[]
  excluded: ExcludedInstance[]
  /** Shards that stay where they are whatever the plan, and why. */
  fixed: {shard: string; reason: string}[]
  /** Keys whose memory was measured. */
  sampledKeys: number
}

export interface MeasureOptions {
  by: BalanceBy
  /** Instances that serve no shard yet and may take some. */
  extra: Endpoint[]
  /** The registry's own database: never free, if it lives on an instance of the fleet. */
  registry: ShardAddress
  onProgress?: (line: string) => void
}

/** Instances measured at once: each samples its databases one after another. */
const CONCURRENCY = 8

export async function measureFleet(registry: Registry, pool: ConnectionPool, options: MeasureOptions): Promise<FleetMeasure> {
  const {shards, broken} = await registry.snapshot()
  const masters = new Map<string, Endpoint>()
  for (const shard of shards) masters.set(instanceKey(shard.master), shard.master)
  for (const endpoint of options.extra) masters.set(instanceKey(endpoint), endpoint)
  // Every database the registry names, on any instance and in any role, is taken.
  const taken = new Map<string, Set<number>>()
  const take = (address: ShardAddress) => {
    const key = instanceKey(address)
    if (!taken.has(key)) taken.set(key, new Set())
    taken.get(key)!.add(address.db)
  }
  for (const shard of shards) for (const node of [shard.master, ...shard.replicas, ...shard.persist]) take(node)
  take(options.registry)
  const replicaInstances = new Set(shards.flatMap((s) => [...s.replicas, ...s.persist].map((r) => instanceKey(r))))

  options.onProgress?.(`probing ${plural(masters.size, 'instance')}`)
  const states = await probeInstances(masters.values(), pool, {memory: true, config: ['databases']})
  const excluded: ExcludedInstance[] = []
  const eligible: string[] = []
  for (const [key] of masters) {
    const state = states.get(key)!
    const reason = !state.reachable
      ? `unreachable: ${state.error ?? 'no answer'}`
      : state.replication?.role !== 'master'
        ? `a ${state.replication?.role === 'slave' ? 'replica' : (state.replication?.role ?? 'non-master')}, not a master`
        : replicaInstances.has(key)
          ? 'the registry names it as a replica of a shard'
          : options.by === 'memory' && !(Number(state.info?.maxmemory ?? 0) > 0)
            ? 'no maxmemory: nothing to even its memory against (set maxmemory, or use --by keys)'
            : undefined
    if (reason) excluded.push({instance: key, reason})
    else eligible.push(key)
  }

  let sampledKeys = 0
  const measured = await mapLimited(
    eligible,
    CONCURRENCY,
    async (key): Promise<{instance: PlanInstance; memoryByDb: Map<number, number>}> => {
      const state = states.get(key)!
      const info = state.info!
      const client = await pool.get(masters.get(key)!)
      const keysByDb = state.keysByDb ?? new Map<number, number>()
      const estimates = new Map<number, number>()
      for (const [db, keys] of keysByDb) {
        if (keys === 0) continue
        const {bytes, sampled} = await estimateDbMemory(client, db, keys)
        estimates.set(db, bytes)
        sampledKeys += sampled
      }
      const total = [...estimates.values()].reduce((n, b) => n + b, 0)
      const dataset = Number(info.used_memory_dataset ?? 0)
      const scale = total > 0 && dataset > 0 ? dataset / total : 1
      const memoryByDb = new Map([...estimates].map(([db, bytes]) => [db, Math.round(bytes * scale)]))
      const databases =
        state.config?.databases === undefined ? await databaseCount(client, masters.get(key)!) : Number(state.config.databases)
      const used = new Set([...(taken.get(key) ?? []), ...[...keysByDb].filter(([, n]) => n > 0).map(([db]) => db)])
      const freeDbs = Array.from({length: databases}, (_, db) => db).filter((db) => !used.has(db))
      options.onProgress?.(`measured ${key}: ${plural(estimates.size, 'database')}`)
      return {
        instance: {
          instance: key,
          usedMemory: Number(info.used_memory ?? 0),
          maxMemory: Number(info.maxmemory ?? 0),
          keys: [...keysByDb.values()].reduce((n, k) => n + k, 0),
          freeDbs,
        },
        memoryByDb,
      }
    },
  )

  const byInstance = new Map(measured.map((m) => [m.instance.instance, m]))
  const planShards: PlanShard[] = []
  const fixed: FleetMeasure['fixed'] = broken.map((b) => ({shard: b.id, reason: `not readable in the registry: ${b.problems.join('; ')}`}))
  for (const shard of shards) {
    const key = instanceKey(shard.master)
    const m = byInstance.get(key)
    if (!m) {
      fixed.push({shard: shard.id, reason: `its master ${key} is left out: ${excluded.find((e) => e.instance === key)?.reason ?? ''}`})
      continue
    }
    planShards.push({
      id: shard.id,
      instance: key,
      db: shard.master.db,
      memory: m.memoryByDb.get(shard.master.db) ?? 0,
      keys: states.get(key)!.keysByDb?.get(shard.master.db) ?? 0,
    })
  }
  return {instances: measured.map((m) => m.instance), shards: planShards, excluded, fixed, sampledKeys}
}

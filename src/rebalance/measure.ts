import type {ConnectionPool} from '../fleet/connect.js'
import {databaseCount, estimateDbMemory} from '../fleet/instance.js'
import {mapLimited, probeInstances} from '../fleet/probe.js'
import {type Endpoint, type ShardAddress, canonicalInstance, endpointOf, instanceKey, sameInstance} from '../registry/address.js'
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
  // A broken record's databases are unknown: no database could be proved free.
  const shards = await registry.wholeSnapshot('a rebalance')
  // Instances by their canonical names: 127.0.0.1 and localhost are one (run_ids below tell the rest).
  const masters = new Map<string, Endpoint>()
  for (const shard of shards) if (!masters.has(canonicalInstance(shard.master))) masters.set(canonicalInstance(shard.master), shard.master)
  const registered = new Set(masters.keys())
  for (const endpoint of options.extra) if (!masters.has(canonicalInstance(endpoint))) masters.set(canonicalInstance(endpoint), endpoint)
  // Every database the registry names, on any instance and in any role, is taken.
  const taken = new Map<string, Set<number>>()
  const take = (address: ShardAddress) => {
    const key = canonicalInstance(address)
    if (!taken.has(key)) taken.set(key, new Set())
    taken.get(key)!.add(address.db)
  }
  for (const shard of shards) for (const node of [shard.master, ...shard.replicas, ...shard.persist]) take(node)
  take(options.registry)
  const replicaInstances = new Set(shards.flatMap((s) => [...s.replicas, ...s.persist].map((r) => canonicalInstance(r))))

  options.onProgress?.(`probing ${plural(masters.size, 'instance')}`)
  const states = await probeInstances(masters.values(), pool, {memory: true, config: ['databases']})
  // Probed by their names as given (instanceKey), known here by their canonical ones.
  const endpoints = new Map(masters)
  const stateOf = (key: string) => states.get(instanceKey(endpoints.get(key)!))
  // Named in the plan (and in each move's --to) as the registry names them, or as --include did.
  const nameOf = (key: string) => instanceKey(endpoints.get(key)!)
  // An instance named to take shards that serves some already, under another name (the same run_id): measured once.
  const runIds = new Map<string, string>()
  for (const key of registered) {
    const run = stateOf(key)?.info?.run_id
    if (run) runIds.set(run, key)
  }
  for (const key of [...masters.keys()].filter((k) => !registered.has(k))) {
    const run = stateOf(key)?.info?.run_id
    const same = run === undefined ? undefined : runIds.get(run)
    if (same === undefined) continue
    masters.delete(key)
    options.onProgress?.(`${nameOf(key)} is ${nameOf(same)} (the same run_id), measured once`)
    endpoints.delete(key)
  }
  const excluded: ExcludedInstance[] = []
  const eligible: string[] = []
  for (const [key] of masters) {
    const state = stateOf(key)!
    const reason = !state.reachable
      ? `unreachable: ${state.error ?? 'no answer'}`
      : state.replication?.role !== 'master'
        ? `a ${state.replication?.role === 'slave' ? 'replica' : (state.replication?.role ?? 'non-master')}, not a master`
        : replicaInstances.has(key)
          ? 'the registry names it as a replica of a shard'
          : options.by === 'memory' && !(Number(state.info?.maxmemory ?? 0) > 0)
            ? 'no maxmemory: nothing to even its memory against (set maxmemory, or use --by keys)'
            : undefined
    if (reason) excluded.push({instance: nameOf(key), reason})
    else eligible.push(key)
  }

  let sampledKeys = 0
  const measured = await mapLimited(
    eligible,
    CONCURRENCY,
    async (key): Promise<{instance: PlanInstance; memoryByDb: Map<number, number>}> => {
      const state = stateOf(key)!
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
      options.onProgress?.(`measured ${nameOf(key)}: ${plural(estimates.size, 'database')}`)
      return {
        instance: {
          instance: nameOf(key),
          usedMemory: Number(info.used_memory ?? 0),
          maxMemory: Number(info.maxmemory ?? 0),
          keys: [...keysByDb.values()].reduce((n, k) => n + k, 0),
          freeDbs,
        },
        memoryByDb,
      }
    },
  )

  const byInstance = new Map(measured.map((m) => [canonicalInstance(endpointOf(m.instance.instance)), m]))
  const planShards: PlanShard[] = []
  const fixed: FleetMeasure['fixed'] = []
  for (const shard of shards) {
    const key = canonicalInstance(shard.master)
    const m = byInstance.get(key)
    if (!m) {
      fixed.push({
        shard: shard.id,
        reason: `its master ${nameOf(key)} is left out: ${excluded.find((e) => e.instance === nameOf(key))?.reason ?? ''}`,
      })
      continue
    }
    if (sameInstance(shard.master, options.registry)) {
      // It counts in its instance's use, but shards:move refuses to pause the registry's instance.
      fixed.push({shard: shard.id, reason: `its master ${nameOf(key)} also holds the registry, which a move cannot pause`})
      continue
    }
    planShards.push({
      id: shard.id,
      instance: nameOf(key),
      db: shard.master.db,
      memory: m.memoryByDb.get(shard.master.db) ?? 0,
      keys: stateOf(key)!.keysByDb?.get(shard.master.db) ?? 0,
    })
  }
  return {instances: measured.map((m) => m.instance), shards: planShards, excluded, fixed, sampledKeys}
}

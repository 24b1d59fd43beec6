import {usageError} from '../errors.js'
import type {ConnectionPool} from '../fleet/connect.js'
import {type InstanceState, probeInstances} from '../fleet/probe.js'
import {follows} from '../fleet/replication.js'
import {type Endpoint, canonicalInstance, endpointOf, instanceKey} from '../registry/address.js'
import {compareIds} from '../registry/registry.js'
import type {Shard} from '../registry/schema.js'
import type {NodeRole} from './manifest.js'

/**
 * Which instances a backup takes, and from which node each: the persistence replica
 * (persistN) when there is one, else a read replica, and the master only when it has
 * neither or when asked (`from: 'master'`): a snapshot forks the node that makes it,
 * and the master is the node that serves the writes. A replica serves only while it
 * follows that master with its link up; one that does not is passed over, with the
 * reason in the plan. The registry is an instance like the others (its map is data
 * too): its snapshot comes from a replica of it when it has one.
 */
export type FromMode = 'auto' | 'master'

export interface Candidate {
  node: string
  endpoint: Endpoint
  role: NodeRole
}

export interface PlannedInstance {
  instance: string
  endpoint: Endpoint
  registry: boolean
  shards: {id: string; db: number}[]
  /** The node chosen to serve the snapshot, or why none can. */
  source?: Candidate
  /** Bytes the snapshot is expected to be about (the node's dataset), for sizing uploads. */
  expectedBytes?: number
  /** Nodes passed over, with the reason. */
  skipped: {node: string; reason: string}[]
  error?: string
}

export interface BackupSelection {
  /** --instance: master instances (or the registry's own instance). */
  instances: Endpoint[]
  /** --shard: the instances of these shards' masters. */
  shards: string[]
}

export interface RegistrySide {
  /** The registry's instance, host:port. */
  endpoint: Endpoint
  /** Its replicas that are online, as INFO replication lists them. */
  replicas: Endpoint[]
}

const sameKey = canonicalInstance

/** The instances to back up and their candidate nodes, from the registry alone. */
export function selectInstances(
  shards: Shard[],
  registry: RegistrySide,
  selection: BackupSelection,
  from: FromMode,
): {instances: (Omit<PlannedInstance, 'skipped'> & {candidates: Candidate[]})[]; whole: boolean} {
  const byInstance = new Map<string, Shard[]>()
  for (const shard of shards) {
    const key = sameKey(shard.master)
    byInstance.set(key, [...(byInstance.get(key) ?? []), shard])
  }
  const registryKey = sameKey(registry.endpoint)
  const whole = selection.instances.length === 0 && selection.shards.length === 0
  const chosen = new Set<string>()
  if (whole) {
    for (const key of byInstance.keys()) chosen.add(key)
    chosen.add(registryKey)
  }
  for (const e of selection.instances) {
    const key = sameKey(e)
    if (!byInstance.has(key) && key !== registryKey)
      throw usageError(
        `no shard has its master on ${instanceKey(e)}, and it is not the registry`,
        'name a master instance (see shards:list --instances) or the registry',
      )
    chosen.add(key)
  }
  for (const id of selection.shards) {
    const shard = shards.find((s) => s.id === id)
    if (!shard) throw usageError(`unknown shard "${id}"`, 'see shards:list')
    chosen.add(sameKey(shard.master))
  }
  const instances = [...chosen].sort().map((key) => {
    const held = byInstance.get(key) ?? []
    const isRegistry = key === registryKey
    const endpoint = held[0] ? {host: held[0].master.host, port: held[0].master.port} : registry.endpoint
    const master: Candidate = {node: instanceKey(endpoint), endpoint, role: 'master'}
    const others: Candidate[] = []
    const add = (e: Endpoint, role: NodeRole) => {
      if (sameKey(e) === key || others.some((c) => sameKey(c.endpoint) === sameKey(e))) return
      others.push({node: instanceKey(e), endpoint: {host: e.host, port: e.port}, role})
    }
    for (const s of held) for (const p of s.persist) add(p, 'persist')
    for (const s of held) for (const r of s.replicas) add(r, 'replica')
    if (isRegistry) for (const r of registry.replicas) add(r, 'replica')
    return {
      instance: instanceKey(endpoint),
      endpoint,
      registry: isRegistry,
      shards: held.map((s) => ({id: s.id, db: s.master.db})).sort((a, b) => a.db - b.db || compareIds(a.id, b.id)),
      candidates: from === 'master' || others.length === 0 ? [master] : others,
    }
  })
  return {instances, whole}
}

/**
 * Choose each instance's node from its candidates, asking every candidate once (in
 * parallel): a replica serves only while it follows the instance with its link up and
 * no sync under way. The registry, when no replica of it can serve, is taken from
 * itself (a warning says so); a shard instance is not: its master is left alone.
 */
export async function chooseSources(
  instances: (Omit<PlannedInstance, 'skipped'> & {candidates: Candidate[]})[],
  pools: {shards: ConnectionPool; registry: ConnectionPool},
): Promise<{planned: PlannedInstance[]; warnings: string[]}> {
  const probe = async (endpoints: Endpoint[], pool: ConnectionPool) =>
    endpoints.length === 0 ? new Map<string, InstanceState>() : probeInstances(endpoints, pool, {persistence: true, memory: true})
  const registrySide = instances.filter((i) => i.registry)
  const shardSide = instances.filter((i) => !i.registry)
  const [registryStates, shardStates] = await Promise.all([
    probe(
      registrySide.flatMap((i) => [...i.candidates.map((c) => c.endpoint), i.endpoint]),
      pools.registry,
    ),
    probe(
      shardSide.flatMap((i) => i.candidates.map((c) => c.endpoint)),
      pools.shards,
    ),
  ])
  const warnings: string[] = []
  const planned = instances.map((i): PlannedInstance => {
    const states = i.registry ? registryStates : shardStates
    const {candidates, ...rest} = i
    const plannedInstance: PlannedInstance = {...rest, skipped: []}
    for (const candidate of candidates) {
      const state = states.get(candidate.node)
      const reason = unfit(candidate, state, i.endpoint)
      if (reason) {
        plannedInstance.skipped.push({node: candidate.node, reason})
        continue
      }
      plannedInstance.source = candidate
      plannedInstance.expectedBytes = Number(state?.info?.used_memory_dataset ?? state?.info?.used_memory ?? 0) || undefined
      break
    }
    if (!plannedInstance.source && i.registry && candidates[0]?.role !== 'master') {
      const state = states.get(i.instance)
      const reason = unfit({node: i.instance, endpoint: i.endpoint, role: 'master'}, state, i.endpoint)
      if (!reason) {
        plannedInstance.source = {node: i.instance, endpoint: i.endpoint, role: 'master'}
        warnings.push(`no replica of the registry could serve its snapshot, so it is taken from the registry itself`)
      }
    }
    if (!plannedInstance.source) {
      plannedInstance.error = `no node can serve the snapshot: ${plannedInstance.skipped.map((s) => `${s.node} ${s.reason}`).join('; ')}`
      if (candidates.every((c) => c.role !== 'master') && !i.registry) plannedInstance.error += ' (--from master takes it from the master)'
    }
    return plannedInstance
  })
  return {planned, warnings}
}

function unfit(candidate: Candidate, state: InstanceState | undefined, master: Endpoint): string | undefined {
  if (!state?.reachable) return `does not answer (${state?.error ?? 'not probed'})`
  const replication = state.replication!
  if (candidate.role === 'master') return replication.role === 'master' ? undefined : `is not a master (role ${replication.role})`
  if (!follows(replication, master)) return `does not replicate ${instanceKey(master)}`
  if (!replication.linkUp) return 'has its link to the master down'
  if (replication.syncInProgress) return 'is still loading its copy'
  return undefined
}

/** The registry's online replicas, as INFO replication on the registry lists them. */
export function onlineReplicas(info: {replicas: {host: string; port: number; state: string}[]}): Endpoint[] {
  return info.replicas.filter((r) => r.state === 'online').map((r) => endpointOf(instanceKey({host: r.host, port: r.port})))
}

/**
 * Jobs run at most `limit` at a time, never two whose source is on the same host: two
 * snapshots at once would fork two redis-server processes on one machine.
 */
export async function runPerHost<T>(jobs: {host: string; run: () => Promise<T>}[], limit: number): Promise<PromiseSettledResult<T>[]> {
  const results: PromiseSettledResult<T>[] = new Array(jobs.length)
  const waiting = jobs.map((job, index) => ({...job, index}))
  const busy = new Set<string>()
  let running = 0
  return new Promise((resolve) => {
    const next = () => {
      if (waiting.length === 0 && running === 0) return resolve(results)
      while (running < limit) {
        const i = waiting.findIndex((j) => !busy.has(j.host))
        if (i === -1) return
        const [job] = waiting.splice(i, 1)
        busy.add(job.host)
        running++
        job.run().then(
          (value) => finish(job, {status: 'fulfilled', value}),
          (reason: unknown) => finish(job, {status: 'rejected', reason}),
        )
      }
    }
    const finish = (job: {host: string; index: number}, result: PromiseSettledResult<T>) => {
      results[job.index] = result
      busy.delete(job.host)
      running--
      next()
    }
    next()
  })
}

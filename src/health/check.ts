import type {ConnectOptions, ConnectionPool} from '../fleet/connect.js'
import {type InstanceState, probeInstances} from '../fleet/probe.js'
import {type Registry, unknownShard} from '../registry/registry.js'
import {type CanaryRow, runCanaries} from './canary.js'
import {FENCING_SETTINGS, type FencingRow, checkFencing} from './fencing.js'
import {type ShardGroup, groupShards, instancesOf} from './groups.js'
import {type LeftoverRow, checkLeftovers, unreplicated} from './leftovers.js'
import {PERSISTENCE_SETTINGS, type PersistenceRow, checkPersistence} from './persistence.js'
import {type TopologyLimits, type TopologyRow, checkTopology} from './topology.js'
import {readRecord} from '../sentinel/record.js'
import type {SentinelCredentials} from '../sentinel/sentinel.js'
import type {SentinelReport} from './sentinel.js'

/**
 * `shards:check`: the registry read once, every instance probed once and in parallel
 * (one connection each), then each concern judged from what was read — topology and
 * fencing always, the canary and persistence when asked.
 */
export interface CheckOptions {
  /** Only these shards (all when empty). */
  shardIds: string[]
  canary: boolean
  persistence: boolean
  limits: TopologyLimits
  maxSaveAgeSeconds: number
  timeoutMs: number
  /** A master with no replica is accepted (said, not a problem). */
  allowNoReplica?: boolean
  /** How to reach the Sentinels the registry records (their section is checked when it records some). */
  sentinel?: {credentials: SentinelCredentials; options: ConnectOptions}
  /** A registry with no shard at all passes (otherwise a CI gate fails: nothing was checked). */
  allowEmpty?: boolean
  /** The command line that finishes an interrupted operation of this type, named beside the fence it left. */
  recoverCommand?: (type: 'split' | 'promote' | 'move') => string
}

export interface CheckReport {
  healthy: boolean
  /** Problems found, over every concern. */
  problems: number
  shards: number
  instances: number
  /** Registry entries that do not match the schema. */
  broken: {id: string; problems: string[]}[]
  topology: TopologyRow[]
  fencing: FencingRow[]
  canary?: CanaryRow[]
  persistence?: PersistenceRow[]
  /** Masters with no replica at all; each is a problem unless --allow-no-replica. */
  unreplicated: {master: string; shards: string[]; accepted: boolean; problems: string[]}[]
  /** What operations can leave behind: shared databases, kept stray writes, fences left on, masters outside the registry. */
  leftovers: LeftoverRow[]
  /** When the registry records Sentinels: each group against them, and the Sentinels themselves. */
  sentinel?: SentinelReport
  /** No shard at all under the prefix: a problem unless --allow-empty (a typo of --prefix, a wiped registry). */
  empty?: {accepted: boolean; problems: string[]}
}

export interface Health {
  report: CheckReport
  groups: ShardGroup[]
  states: Map<string, InstanceState>
}

export async function checkHealth(registry: Registry, pool: ConnectionPool, options: CheckOptions): Promise<Health> {
  const snapshot = await registry.snapshot()
  const wanted = new Set(options.shardIds)
  for (const id of wanted) {
    if (!snapshot.shards.some((s) => s.id === id) && !snapshot.broken.some((b) => b.id === id)) throw unknownShard(id)
  }
  const pick = <T extends {id: string}>(list: T[]) => (wanted.size === 0 ? list : list.filter((s) => wanted.has(s.id)))
  const shards = pick(snapshot.shards)
  const groups = groupShards(shards)
  const nodes = instancesOf(groups)
  const states = await probeInstances(nodes, pool, {
    persistence: options.persistence,
    config: [...FENCING_SETTINGS, 'replica-read-only', ...(options.persistence ? PERSISTENCE_SETTINGS : [])],
  })
  const report: CheckReport = {
    healthy: true,
    problems: 0,
    shards: shards.length,
    instances: nodes.length,
    broken: pick(snapshot.broken).map((b) => ({id: b.id, problems: b.problems})),
    topology: checkTopology(groups, states, options.limits),
    fencing: checkFencing(groups, states),
    unreplicated: unreplicated(groups).map((u) => ({
      ...u,
      accepted: Boolean(options.allowNoReplica),
      problems: options.allowNoReplica
        ? []
        : [`master ${u.master} has no replica: losing it loses its shards (add replicas, or pass --allow-no-replica)`],
    })),
    leftovers: await checkLeftovers(
      registry,
      pool,
      snapshot.shards,
      states,
      wanted.size === 0 ? undefined : wanted,
      options.recoverCommand,
    ),
  }
  if (snapshot.shards.length === 0 && snapshot.broken.length === 0) {
    report.empty = {
      accepted: Boolean(options.allowEmpty),
      problems: options.allowEmpty
        ? []
        : ['the registry has no shard under this prefix: nothing was checked (pass --allow-empty if that is expected)'],
    }
  }
  if (options.persistence) report.persistence = checkPersistence(groups, states, {maxSaveAgeSeconds: options.maxSaveAgeSeconds})
  if (options.canary)
    report.canary = await runCanaries(groups, states, pool, {timeoutMs: options.timeoutMs, allowNoReplica: options.allowNoReplica})
  const record = options.sentinel ? await readRecord(registry) : undefined
  if (record && options.sentinel) {
    const {checkSentinel} = await import('./sentinel.js')
    report.sentinel = await checkSentinel(record, shards, options.sentinel, wanted.size > 0)
  }
  tally(report)
  return {report, groups, states}
}

/** Count the problems over every concern (again after --fence fixed some). */
export function tally(report: CheckReport): void {
  const rows: {problems: string[]}[] = [
    ...report.broken,
    ...report.topology,
    ...report.fencing,
    ...(report.canary ?? []),
    ...(report.persistence ?? []),
    ...report.unreplicated,
    ...report.leftovers,
    ...(report.sentinel ? [...report.sentinel.groups, ...report.sentinel.fleet] : []),
    ...(report.empty ? [report.empty] : []),
  ]
  report.problems = rows.reduce((n, row) => n + row.problems.length, 0)
  report.healthy = report.problems === 0
}

import {type Identity, identityOf} from '../fleet/identity.js'
import {type InstanceState, unreachableWord} from '../fleet/probe.js'
import {sameHost} from '../fleet/info.js'
import {follows} from '../fleet/replication.js'
import {type NodeRef, type ShardGroup} from './groups.js'
import {plural} from '../ui/terminal.js'

/**
 * What the registry says against what each instance says: the master is a master,
 * each replica replicates that master with its link up and within the lag limits,
 * no instance the registry does not know replicates a master.
 */
export interface ReplicaStatus {
  instance: string
  kind: 'slave' | 'persist'
  reachable: boolean
  role?: string
  /** The master this replica actually follows, when it is not the registry's. */
  follows?: string
  linkUp?: boolean
  /** Bytes of the master's replication stream the replica has not processed. */
  lagBytes?: number
  /** Seconds since the master last heard from this replica (REPLCONF ACK). */
  lagSeconds?: number
  problems: string[]
}

export interface TopologyRow {
  master: string
  shards: string[]
  masterReachable: boolean
  masterRole?: string
  replicas: ReplicaStatus[]
  problems: string[]
}

export interface TopologyLimits {
  maxLagBytes: number
  maxLagSeconds: number
}

export function checkTopology(groups: ShardGroup[], states: Map<string, InstanceState>, limits: TopologyLimits): TopologyRow[] {
  const identity = identityOf(states)
  const rows = groups.map((group) => topologyRow(group, states, limits, identity))
  flagUnknownReplicas(groups, rows, states)
  return rows
}

function topologyRow(group: ShardGroup, states: Map<string, InstanceState>, limits: TopologyLimits, identity: Identity): TopologyRow {
  const master = states.get(group.master.instance)
  const row: TopologyRow = {
    master: group.master.instance,
    shards: group.shards.map((s) => s.id),
    masterReachable: Boolean(master?.reachable),
    masterRole: master?.replication?.role,
    replicas: [],
    problems: [],
  }
  if (!master?.reachable)
    row.problems.push(
      `master ${group.master.instance} ${unreachableWord(master?.error)}${master?.error ? ` (${shortError(master.error)})` : ''}`,
    )
  else if (master.replication?.role !== 'master') {
    const follows = master.replication?.masterHost ? ` of ${master.replication.masterHost}:${master.replication.masterPort}` : ''
    row.problems.push(`master ${group.master.instance} is a replica${follows}`)
  }
  for (const shard of group.shards) {
    for (const [kind, list] of [
      ['slave', shard.replicas],
      ['persist', shard.persist],
    ] as const) {
      list.forEach((r, i) => {
        if (r.db !== shard.master.db)
          row.problems.push(`shard ${shard.id}: ${kind}${i} names db ${r.db}, but replication keeps the master's db ${shard.master.db}`)
      })
    }
  }
  for (const replica of group.replicas) {
    if (identity.instance(replica) === identity.instance(group.master)) {
      row.replicas.push({
        instance: replica.instance,
        kind: replica.kind as 'slave' | 'persist',
        reachable: Boolean(master?.reachable),
        problems: [],
      })
      row.problems.push(
        `${replica.kind === 'persist' ? 'persistence replica' : 'replica'} ${replica.instance} is the master itself: its shards have one copy`,
      )
      continue
    }
    const status = replicaStatus(group.master, replica, master, states.get(replica.instance), limits)
    row.replicas.push(status)
    row.problems.push(
      ...status.problems.map((p) => `${replica.kind === 'persist' ? 'persistence replica' : 'replica'} ${replica.instance} ${p}`),
    )
  }
  return row
}

function replicaStatus(
  masterRef: NodeRef,
  replica: NodeRef,
  master: InstanceState | undefined,
  state: InstanceState | undefined,
  limits: TopologyLimits,
): ReplicaStatus {
  const status: ReplicaStatus = {
    instance: replica.instance,
    kind: replica.kind as 'slave' | 'persist',
    reachable: Boolean(state?.reachable),
    problems: [],
  }
  const repl = state?.replication
  if (!state?.reachable || !repl) {
    status.problems.push(`${unreachableWord(state?.error)}${state?.error ? ` (${shortError(state.error)})` : ''}`)
    return status
  }
  status.role = repl.role
  if (repl.role !== 'slave') {
    status.problems.push(`is a ${repl.role}, not a replica`)
    return status
  }
  if (state.config?.['replica-read-only'] === 'no') {
    status.problems.push('takes writes of its own (replica-read-only no): they reach no master and vanish at its next full sync')
  }
  if (!follows(repl, masterRef)) {
    status.follows = `${repl.masterHost}:${repl.masterPort}`
    status.problems.push(`follows ${status.follows}, not the master`)
    return status
  }
  status.linkUp = Boolean(repl.linkUp)
  if (!repl.linkUp) {
    status.problems.push(repl.syncInProgress ? 'link down: a full sync is in progress' : 'link down')
    return status
  }
  if (master?.reachable && master.replication) {
    status.lagBytes = Math.max(0, master.replication.offset - repl.offset)
    const seen = master.replication.replicas.find((r) => r.port === replica.port && sameHost(r.host, replica.host))
    if (seen) status.lagSeconds = seen.lagSeconds
    if (status.lagBytes > limits.maxLagBytes) status.problems.push(`lags ${plural(status.lagBytes, 'byte')} (limit ${limits.maxLagBytes})`)
    if (status.lagSeconds !== undefined && status.lagSeconds > limits.maxLagSeconds) {
      status.problems.push(`last acknowledged ${status.lagSeconds} s ago (limit ${limits.maxLagSeconds} s)`)
    }
  }
  return status
}

/** A replica a master serves that no shard on it names: data goes where the registry cannot route. */
function flagUnknownReplicas(groups: ShardGroup[], rows: TopologyRow[], states: Map<string, InstanceState>): void {
  const known = new Map<string, NodeRef[]>()
  for (const g of groups) known.set(g.master.instance, [...(known.get(g.master.instance) ?? []), ...g.replicas])
  const flagged = new Set<string>()
  groups.forEach((group, i) => {
    if (flagged.has(group.master.instance)) return
    flagged.add(group.master.instance)
    const connected = states.get(group.master.instance)?.replication?.replicas ?? []
    const names = known.get(group.master.instance) ?? []
    for (const r of connected) {
      if (!names.some((n) => n.port === r.port && sameHost(r.host, n.host))) {
        rows[i].problems.push(`${r.host}:${r.port} replicates master ${group.master.instance}, but the registry does not name it`)
      }
    }
  })
}

export function shortError(message: string): string {
  return message.replace(/^cannot reach \S+: /, '').split('\n')[0]
}

import type {ConnectionPool} from '../fleet/connect.js'
import type {InstanceState} from '../fleet/probe.js'
import {WRITE_FENCE_REPLICAS} from '../fleet/replication.js'
import type {NodeRef, ShardGroup} from './groups.js'
import {shortError} from './topology.js'
import {plural} from '../ui/terminal.js'

/**
 * Fencing: a master cut off from all its replicas (a network partition) must stop
 * taking writes, or the writes it takes are lost when a replica is promoted in its
 * place. Redis does that with min-replicas-to-write / min-replicas-max-lag; INFO shows
 * `min_slaves_good_slaves` only when it is on, so this check needs no CONFIG rights.
 */
export const FENCING_SETTINGS = ['min-replicas-to-write', 'min-replicas-max-lag']

export interface FencingRow {
  master: string
  shards: string[]
  /** Distinct replica instances the registry names for this master. */
  replicas: number
  fenced?: boolean
  minReplicasToWrite?: number
  minReplicasMaxLag?: number
  /** Replicas the master counts as good right now (only known when fenced). */
  goodReplicas?: number
  /** Set by --fence. */
  action?: 'fenced' | 'would fence' | 'not fenced'
  actionNote?: string
  problems: string[]
}

export function checkFencing(groups: ShardGroup[], states: Map<string, InstanceState>): FencingRow[] {
  const masters = new Map<string, {shards: string[]; replicas: Set<string>}>()
  for (const group of groups) {
    const entry = masters.get(group.master.instance) ?? {shards: [], replicas: new Set<string>()}
    entry.shards.push(...group.shards.map((s) => s.id))
    for (const r of group.replicas) entry.replicas.add(r.instance)
    masters.set(group.master.instance, entry)
  }
  const rows: FencingRow[] = []
  for (const [master, entry] of masters) {
    const state = states.get(master)
    // An unreachable master or one that is not a master is the topology check's finding.
    if (!state?.reachable || state.replication?.role !== 'master' || !state.info) continue
    const row: FencingRow = {master, shards: entry.shards, replicas: entry.replicas.size, problems: []}
    const good = state.info.min_slaves_good_slaves
    row.fenced = good !== undefined
    if (good !== undefined) row.goodReplicas = Number(good)
    if (state.config?.['min-replicas-to-write'] !== undefined) row.minReplicasToWrite = Number(state.config['min-replicas-to-write'])
    if (state.config?.['min-replicas-max-lag'] !== undefined) row.minReplicasMaxLag = Number(state.config['min-replicas-max-lag'])
    // shardctl's own cut-over fence, left on by an interrupted operation: reported with what it left behind.
    if (row.minReplicasToWrite === WRITE_FENCE_REPLICAS) {
      rows.push(row)
      continue
    }
    if (!row.fenced && row.replicas > 0) {
      row.problems.push('keeps accepting writes when cut off from every replica (min-replicas-to-write is 0)')
    }
    if (row.fenced && row.minReplicasToWrite !== undefined) {
      if (row.minReplicasToWrite > row.replicas) {
        row.problems.push(`needs ${plural(row.minReplicasToWrite, 'replica')} to accept writes, the registry names ${row.replicas}`)
      } else if ((row.goodReplicas ?? 0) < row.minReplicasToWrite) {
        row.problems.push(`refuses writes now: ${row.goodReplicas} good replicas of the ${row.minReplicasToWrite} needed`)
      }
    } else if (row.fenced && row.goodReplicas === 0) {
      row.problems.push('refuses writes now: no good replica')
    }
    rows.push(row)
  }
  return rows
}

export interface FenceSettings {
  minReplicas: number
  maxLagSeconds: number
}

/** The masters --fence would change: unfenced, with replicas, and enough of them connected now. */
export function fencePlan(rows: FencingRow[], states: Map<string, InstanceState>, settings: FenceSettings): FencingRow[] {
  const plan: FencingRow[] = []
  for (const row of rows) {
    if (row.fenced || row.replicas === 0) continue
    const connected = states.get(row.master)?.replication?.replicas.filter((r) => r.state === 'online').length ?? 0
    const needed = Math.min(settings.minReplicas, row.replicas)
    if (connected < needed) {
      row.action = 'not fenced'
      row.actionNote = `only ${plural(connected, 'replica')} connected: fencing it now would stop its writes`
      continue
    }
    plan.push(row)
  }
  return plan
}

/**
 * Set min-replicas-to-write / -max-lag on each planned master, and try to write it to
 * its config file (CONFIG REWRITE), so a restart keeps it.
 */
export async function applyFence(plan: FencingRow[], nodes: NodeRef[], pool: ConnectionPool, settings: FenceSettings): Promise<void> {
  const byInstance = new Map(nodes.map((n) => [n.instance, n]))
  await Promise.all(
    plan.map(async (row) => {
      const minReplicas = Math.min(settings.minReplicas, row.replicas)
      try {
        const client = await pool.get(byInstance.get(row.master)!)
        await client.config('SET', 'min-replicas-to-write', String(minReplicas), 'min-replicas-max-lag', String(settings.maxLagSeconds))
        row.action = 'fenced'
        row.fenced = true
        row.minReplicasToWrite = minReplicas
        row.minReplicasMaxLag = settings.maxLagSeconds
        row.problems = row.problems.filter((p) => !p.startsWith('keeps accepting writes'))
        row.actionNote = await client.config('REWRITE').then(
          () => 'saved in its config file',
          (error: Error) => `not saved in a config file (${shortError(error.message)}): set it there too, or a restart undoes it`,
        )
      } catch (error) {
        row.action = 'not fenced'
        row.actionNote = shortError((error as Error).message)
      }
    }),
  )
}

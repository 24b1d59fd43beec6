import type {InstanceState} from '../fleet/probe.js'
import type {ShardGroup} from './groups.js'
import {shortError} from './topology.js'
import {plural} from '../ui/terminal.js'

/**
 * Whether the nodes that should persist really do: the persistence replicas
 * (persistN), or every node of a group whose shards name none. And whether a master
 * persists nothing at all: restarted, it would come back empty and its replicas would
 * copy the emptiness.
 */
export const PERSISTENCE_SETTINGS = ['appendonly', 'appendfsync', 'save']

export interface PersistenceRow {
  instance: string
  role: 'master' | 'replica' | 'persist'
  shards: string[]
  reachable: boolean
  aof?: boolean
  fsync?: string
  aofLastWrite?: string
  rdbLastSave?: string
  /** Seconds since the last successful RDB save (or load at start). */
  lastSaveAgeSeconds?: number
  changesSinceSave?: number
  problems: string[]
}

export function checkPersistence(
  groups: ShardGroup[],
  states: Map<string, InstanceState>,
  options: {maxSaveAgeSeconds: number},
): PersistenceRow[] {
  // Per instance: its role, its shards, and whether it is expected to persist (or only
  // looked at for the restart-empty hazard, as a master whose persistence replicas persist).
  const nodes = new Map<string, {role: PersistenceRow['role']; shards: string[]; persists: boolean}>()
  const add = (instance: string, role: PersistenceRow['role'], shards: string[], persists: boolean) => {
    const node = nodes.get(instance) ?? {role, shards: [], persists: false}
    node.shards.push(...shards)
    node.persists ||= persists
    nodes.set(instance, node)
  }
  for (const group of groups) {
    const ids = group.shards.map((s) => s.id)
    const persist = group.replicas.filter((r) => r.kind === 'persist')
    const persisting = persist.length > 0 ? persist : [group.master, ...group.replicas]
    for (const node of persisting)
      add(node.instance, node.kind === 'master' ? 'master' : node.kind === 'persist' ? 'persist' : 'replica', ids, true)
    if (persist.length > 0) add(group.master.instance, 'master', ids, false)
  }
  const now = Date.now() / 1000
  return [...nodes].map(([instance, node]) => {
    const row: PersistenceRow = {instance, role: node.role, shards: node.shards, reachable: false, problems: []}
    inspect(row, states.get(instance), node.persists, options.maxSaveAgeSeconds, now)
    return row
  })
}

function inspect(row: PersistenceRow, state: InstanceState | undefined, full: boolean, maxSaveAge: number, now: number): void {
  if (!state?.reachable || !state.info) {
    row.problems.push(`unreachable${state?.error ? ` (${shortError(state.error)})` : ''}`)
    return
  }
  row.reachable = true
  const info = state.info
  row.aof = info.aof_enabled === '1'
  row.fsync = state.config?.appendfsync
  row.aofLastWrite = info.aof_last_write_status
  row.rdbLastSave = info.rdb_last_bgsave_status
  const serverNow = info.server_time_usec ? Number(info.server_time_usec) / 1e6 : now
  row.lastSaveAgeSeconds = Math.max(0, Math.round(serverNow - Number(info.rdb_last_save_time ?? serverNow)))
  row.changesSinceSave = Number(info.rdb_changes_since_last_save ?? 0)
  const save = state.config?.save

  if (row.role === 'master' && !row.aof && save !== undefined && save.trim() === '') {
    row.problems.push(
      'persists nothing (no AOF, no RDB save points): restarted, it comes back empty and its replicas copy the empty data set',
    )
  }
  if (!full) return
  if (state.configError) row.problems.push(`cannot read its settings (${state.configError}): allow CONFIG GET for this check`)
  if (!row.aof) row.problems.push('append-only file off')
  else if (row.fsync !== undefined && row.fsync !== 'everysec' && row.fsync !== 'always')
    row.problems.push(`appendfsync ${row.fsync}: writes are not fsynced every second`)
  if (row.aof && row.aofLastWrite !== 'ok') row.problems.push(`last AOF write failed (${row.aofLastWrite})`)
  if (row.aof && info.aof_last_bgrewrite_status && info.aof_last_bgrewrite_status !== 'ok')
    row.problems.push(`last AOF rewrite failed (${info.aof_last_bgrewrite_status})`)
  if (row.rdbLastSave !== 'ok') row.problems.push(`last RDB save failed (${row.rdbLastSave})`)
  if (maxSaveAge > 0 && row.changesSinceSave > 0 && row.lastSaveAgeSeconds > maxSaveAge) {
    row.problems.push(
      `last RDB save ${row.lastSaveAgeSeconds} s ago, ${plural(row.changesSinceSave, 'change')} since (limit ${maxSaveAge} s)`,
    )
  }
}

import {parseInfo, parseReplication, sameHost} from '../fleet/info.js'
import type {ConnectionPool} from '../fleet/connect.js'
import {identityOf} from '../fleet/identity.js'
import type {InstanceState} from '../fleet/probe.js'
import {isWriteFence, readFencing} from '../fleet/replication.js'
import {type JournalEntry, fencedSince, liveHolder, readJournal} from '../ops/journal.js'
import {describeHolder, parseHolder} from '../ops/lock.js'
import {readStrays} from '../ops/reconcile.js'
import {endpointOf, instanceKey} from '../registry/address.js'
import {readHistory} from '../registry/history.js'
import type {Registry} from '../registry/registry.js'
import {type Shard, sharedDatabases} from '../registry/schema.js'
import type {ShardGroup} from './groups.js'
import {shortError} from './topology.js'

/**
 * What operations can leave behind that no single shard shows: two shards on one
 * database, writes a split kept where they landed, a fence an interrupted cut-over
 * left on, and former masters that the registry no longer names but that still run
 * as masters (a revived master after an emergency failover, the source of a split).
 */
export interface LeftoverRow {
  /** What it is about: a database, an instance. */
  subject: string
  problems: string[]
  /** For shardctl's write fence: the operation that set it, since when, and what lifts it. */
  fence?: FenceLeftOn
}

export interface FenceLeftOn {
  /** When the operation set it (its journal's fence step), if the journal says. */
  since?: string
  onForMs?: number
  operation?: {type: JournalEntry['type']; target: string; by: string; startedAt: string}
  /** The operation is running now: a live holder holds the lock for it. */
  running: boolean
  /** The command that finishes or rolls back the operation, lifting the fence. */
  recover?: string
}

/** How far back the history is read for instances that left the registry. */
const HISTORY_DEPTH = 200

/**
 * What was left behind, for every shard of the registry (`shards`), or only what
 * concerns the `selected` ones (check --shard): a database one of them shares, strays
 * of theirs, a fence on their instances, a former master of theirs.
 */
export async function checkLeftovers(
  registry: Registry,
  pool: ConnectionPool,
  shards: Shard[],
  states: Map<string, InstanceState>,
  selected?: Set<string>,
  /** The command line that recovers an operation of this type, for this fleet. */
  recoverCommand: (type: JournalEntry['type']) => string = (type) => `shardctl shards:${type} --recover`,
): Promise<LeftoverRow[]> {
  const concerns = (ids: string[]) => selected === undefined || ids.some((id) => selected.has(id))
  const rows: LeftoverRow[] = []
  for (const shared of sharedDatabases(shards, identityOf(states).database)) {
    if (!concerns(shared.ids)) continue
    rows.push({
      subject: shared.database,
      problems: [
        `is the master database of ${shared.ids.length} shards (${shared.ids.join(', ')}): a database holds one shard; they share and overwrite each other's keys`,
      ],
    })
  }
  for (const stray of await readStrays(registry)) {
    if (!concerns([stray.shard])) continue
    rows.push({
      subject: stray.source,
      problems: [`holds ${stray.recorded} key(s) written after shard ${stray.shard} moved away: run shards:reconcile`],
    })
  }
  const fenced = [...states].filter(([, state]) => state.config && isWriteFence(state.config as {'min-replicas-to-write': string}))
  if (fenced.length > 0) {
    const operation = await openOperation(registry)
    for (const [instance] of fenced) rows.push(fenceRow(instance, operation, recoverCommand))
  }
  rows.push(...(await formerMasters(registry, pool, shards, concerns)))
  return rows
}

/** The shards an event of the history names: a promote's shards, a split's moves. */
function shardsOf(event: Record<string, unknown>): string[] {
  const ids = Array.isArray(event.shards) ? event.shards : []
  const moves = event.moves && typeof event.moves === 'object' ? Object.keys(event.moves) : []
  return [...ids, ...moves].filter((id): id is string => typeof id === 'string')
}

/** The operation open in the journal, and who runs it if someone does (unreadable: as none). */
async function openOperation(registry: Registry): Promise<{entry: JournalEntry; holder?: string} | undefined> {
  const entry = await readJournal(registry).catch(() => undefined)
  if (!entry) return undefined
  const held = await liveHolder(registry).catch(() => undefined)
  const holder = held && parseHolder(held.value)
  return {entry, holder: holder && holder.token === entry.owner ? describeHolder(holder) : undefined}
}

/**
 * shardctl's write fence on an instance: it never lifts by itself. Said with the
 * operation that set it (from the journal), since when, and either who is running it
 * now or the command that finishes it; a fence no open operation explains is said too.
 */
function fenceRow(
  instance: string,
  open: {entry: JournalEntry; holder?: string} | undefined,
  recoverCommand: (type: JournalEntry['type']) => string,
  now = Date.now(),
): LeftoverRow {
  const fencedBy =
    open && [(open.entry.plan as {source?: string}).source, (open.entry.plan as {oldMaster?: string}).oldMaster].includes(instance)
  if (!open || !fencedBy) {
    return {
      subject: instance,
      problems: [
        "refuses every write: shardctl's write fence is on (min-replicas-to-write 1000000), yet no open operation set it: see shards:history, then lift it by hand (CONFIG SET min-replicas-to-write to its usual value)",
      ],
      fence: {running: false},
    }
  }
  const {entry, holder} = open
  const since = fencedSince(entry)
  const onForMs = since ? Math.max(0, now - Date.parse(since)) : undefined
  const forHowLong = since ? ` since ${since} (${Math.round(onForMs! / 1000)}s)` : ''
  const operation = {type: entry.type, target: entry.target, by: entry.by, startedAt: entry.startedAt}
  if (holder) {
    return {
      subject: instance,
      problems: [
        `refuses every write${forHowLong}: the ${entry.type} of ${entry.target}, running now (${holder}), has it fenced for its cut-over`,
      ],
      fence: {since, onForMs, operation, running: true},
    }
  }
  const recover = recoverCommand(entry.type)
  return {
    subject: instance,
    problems: [
      `refuses every write${forHowLong}: an interrupted ${entry.type} of ${entry.target} (started by ${entry.by} at ${entry.startedAt}) left its fence on; run ${recover} to finish or roll it back`,
    ],
    fence: {since, onForMs, operation, running: false, recover},
  }
}

/** Instances the history names as masters that left (emergency failovers, split sources), probed where the registry no longer names them. */
async function formerMasters(
  registry: Registry,
  pool: ConnectionPool,
  shards: Shard[],
  concerns: (ids: string[]) => boolean,
): Promise<LeftoverRow[]> {
  const named = new Set(shards.flatMap((s) => [s.master, ...s.replicas, ...s.persist].map(instanceKey)))
  const replicas = shards.flatMap((s) => [...s.replicas, ...s.persist])
  const history = await readHistory(registry, HISTORY_DEPTH).catch(() => [])
  const candidates = new Set<string>()
  for (const event of history) {
    if (!concerns(shardsOf(event))) continue
    for (const field of ['removedMaster', 'from']) {
      const value = event[field]
      if (typeof value === 'string' && /^[^/]+:\d+$/.test(value) && !named.has(value)) candidates.add(value)
    }
  }
  const rows = await Promise.all(
    [...candidates].map(async (instance): Promise<LeftoverRow | undefined> => {
      let client
      try {
        client = await pool.get(endpointOf(instance))
      } catch {
        return undefined // gone: nothing can write to it
      }
      try {
        const info = parseInfo(await client.info('replication'))
        const repl = parseReplication(info)
        if (repl.role !== 'master') return undefined
        const problems: string[] = []
        const followers = repl.replicas.filter((r) => replicas.some((n) => n.port === r.port && sameHost(r.host, n.host)))
        const fencing = await readFencing(client).catch(() => undefined)
        const refuses =
          fencing &&
          (isWriteFence(fencing) ||
            (Number(fencing['min-replicas-to-write']) > 0 &&
              Number(info.min_slaves_good_slaves ?? 0) < Number(fencing['min-replicas-to-write'])))
        problems.push(
          `is not in the registry but runs as a master${refuses ? ' (it refuses writes now: NOREPLICAS)' : ''}; no shard routes to it: make it a replica of the shards' master or shut it down`,
        )
        if (followers.length > 0)
          problems.push(`still has registered replica(s) following it: ${followers.map((f) => `${f.host}:${f.port}`).join(', ')}`)
        return {subject: instance, problems}
      } catch (error) {
        return {subject: instance, problems: [`is not in the registry and could not be read: ${shortError((error as Error).message)}`]}
      }
    }),
  )
  return rows.filter((r): r is LeftoverRow => r !== undefined)
}

/** A master the registry names with no replica at all: its shards have one copy. */
export function unreplicated(groups: ShardGroup[]): {master: string; shards: string[]}[] {
  const byMaster = new Map<string, {replicas: number; shards: string[]}>()
  for (const g of groups) {
    const entry = byMaster.get(g.master.instance) ?? {replicas: 0, shards: []}
    entry.replicas += g.replicas.length
    entry.shards.push(...g.shards.map((s) => s.id))
    byMaster.set(g.master.instance, entry)
  }
  return [...byMaster].filter(([, e]) => e.replicas === 0).map(([master, e]) => ({master, shards: e.shards}))
}

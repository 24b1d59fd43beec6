import {randomBytes} from 'node:crypto'
import {setTimeout as sleep} from 'node:timers/promises'

import {type ConnectionPool, type ScriptedRedis, close} from '../fleet/connect.js'
import type {InstanceState} from '../fleet/probe.js'
import type {NodeRef, ShardGroup} from './groups.js'
import {shortError} from './topology.js'

/**
 * Proof that a write reached more than one server: for each shard a short-lived key
 * written in its database on the master must appear in the same database on every
 * replica, and a message PUBLISHed on the master must reach a subscriber on every
 * replica. The keys carry a TTL and are deleted at the end: they never outlive the check.
 */
export interface CanaryReplica {
  instance: string
  kind: 'slave' | 'persist'
  /** Shards whose canary key arrived on this replica. */
  seen: number
  expected: number
  /** Round trip, write sent on the master to key read on the replica, in ms. */
  p50Ms?: number
  maxMs?: number
  /** The PUBLISH on the master as received by a subscriber on the replica, in ms. */
  pubsubMs?: number
  problems: string[]
}

export interface CanaryRow {
  master: string
  shards: string[]
  replicas: CanaryReplica[]
  problems: string[]
  /** Why the canary did not run, when that is not a problem: no replica, accepted with --allow-no-replica. */
  skipped?: string
}

/** The canary key and channel: under shardctl's own name, never an application's. */
export const CANARY_PREFIX = 'shardctl:canary:'

export async function runCanaries(
  groups: ShardGroup[],
  states: Map<string, InstanceState>,
  pool: ConnectionPool,
  options: {timeoutMs: number; allowNoReplica?: boolean},
): Promise<CanaryRow[]> {
  return Promise.all(groups.map((group) => canary(group, states, pool, options)))
}

async function canary(
  group: ShardGroup,
  states: Map<string, InstanceState>,
  pool: ConnectionPool,
  {timeoutMs, allowNoReplica}: {timeoutMs: number; allowNoReplica?: boolean},
): Promise<CanaryRow> {
  const row: CanaryRow = {master: group.master.instance, shards: group.shards.map((s) => s.id), replicas: [], problems: []}
  const masterState = states.get(group.master.instance)
  if (!masterState?.reachable || masterState.replication?.role !== 'master') {
    row.problems.push('not run: the master is not a reachable master')
    return row
  }
  if (group.replicas.length === 0) {
    // Accepted by the operator: nothing to confirm on, and nothing wrong with that.
    if (allowNoReplica) row.skipped = 'no replica to confirm a write on (accepted with --allow-no-replica)'
    else row.problems.push('no replica to confirm a write on: every write lives on one server')
    return row
  }
  const token = randomBytes(8).toString('hex')
  const key = `${CANARY_PREFIX}${token}`
  const dbs = [...new Set(group.shards.map((s) => s.master.db))]
  // Outlives the polling deadline, so a slow replica can still read it; gone soon after a crash.
  const ttlMs = timeoutMs * 2 + 5000

  const master = await pool.get(group.master).catch((error: Error) => error)
  if (master instanceof Error) {
    row.problems.push(`not run: the master stopped answering (${shortError(master.message)})`)
    return row
  }
  const watchers = group.replicas.map((replica) => watchReplica(replica, pool, key, dbs, timeoutMs))
  try {
    // Subscribers listen before anything is written, or they could miss the message.
    await Promise.all(watchers.map((w) => w.ready))
    const sentAt = performance.now()
    const write = master.pipeline()
    for (const db of dbs) write.select(db).set(key, token, 'PX', ttlMs)
    write.select(0).publish(key, token)
    // A connection lost here is a finding about this master, like a refusal.
    const replies = await write.exec().catch((error: Error) => [[error, null]] as [Error, null][])
    const refused = (replies ?? []).find(([error]) => error)
    if (refused) {
      row.problems.push(`the master refused the canary write: ${shortError((refused[0] as Error).message)}`)
      for (const w of watchers) w.cancel()
      await Promise.all(watchers.map((w) => w.done))
      return row
    }
    for (const w of watchers) w.start(sentAt)
    row.replicas = await Promise.all(watchers.map((w) => w.done))
  } finally {
    await removeCanary(master, key, dbs)
  }
  for (const r of row.replicas)
    row.problems.push(...r.problems.map((p) => `${r.kind === 'persist' ? 'persistence replica' : 'replica'} ${r.instance} ${p}`))
  return row
}

async function removeCanary(master: ScriptedRedis, key: string, dbs: number[]): Promise<void> {
  const del = master.pipeline()
  for (const db of dbs) del.select(db).del(key)
  del.select(0)
  await del.exec().catch(() => undefined)
}

interface Watcher {
  ready: Promise<void>
  start: (sentAt: number) => void
  cancel: () => void
  done: Promise<CanaryReplica>
}

/** Subscribe on a replica, then (once started) poll its databases until every canary key is there. */
function watchReplica(replica: NodeRef, pool: ConnectionPool, key: string, dbs: number[], timeoutMs: number): Watcher {
  const result: CanaryReplica = {
    instance: replica.instance,
    kind: replica.kind as 'slave' | 'persist',
    seen: 0,
    expected: dbs.length,
    problems: [],
  }
  let start!: (sentAt: number | undefined) => void
  const started = new Promise<number | undefined>((resolve) => {
    start = resolve
  })
  let subscriber: Promise<ScriptedRedis> | undefined
  let message: Promise<number | undefined> = Promise.resolve(undefined)
  const ready = (async () => {
    subscriber = pool.dedicated(replica)
    const sub = await subscriber
    message = new Promise((resolve) => {
      sub.on('message', (_channel: string) => resolve(performance.now()))
      setTimeout(() => resolve(undefined), timeoutMs * 2).unref()
    })
    await sub.subscribe(key)
  })()
  const done = (async (): Promise<CanaryReplica> => {
    try {
      await ready
    } catch (error) {
      result.problems.push(`unreachable (${shortError((error as Error).message)})`)
      start(undefined)
    }
    const sentAt = await started
    if (sentAt === undefined || result.problems.length > 0) return result
    const client = await pool.get(replica).catch(() => undefined)
    if (!client) {
      result.problems.push('unreachable')
      return result
    }
    const arrivals = await pollKeys(client, key, dbs, sentAt + timeoutMs)
    const times = [...arrivals.values()].map((t) => t - sentAt).sort((a, b) => a - b)
    result.seen = times.length
    if (times.length > 0) {
      result.p50Ms = round(times[Math.floor((times.length - 1) / 2)])
      result.maxMs = round(times.at(-1)!)
    }
    const heard = await Promise.race([message, sleep(Math.max(0, sentAt + timeoutMs - performance.now()), undefined, {ref: false})])
    if (heard !== undefined) result.pubsubMs = round(heard - sentAt)
    if (result.seen < result.expected) {
      result.problems.push(
        `never saw the canary write of ${result.expected - result.seen} of ${result.expected} database(s) within ${timeoutMs} ms`,
      )
    }
    if (heard === undefined) result.problems.push(`never received the canary message within ${timeoutMs} ms`)
    return result
  })().finally(() => subscriber?.then(close, () => undefined))
  return {ready: ready.catch(() => undefined), start: (t) => start(t), cancel: () => start(undefined), done}
}

/** Poll every database for the key in one pipeline per round; when each first showed it. */
async function pollKeys(client: ScriptedRedis, key: string, dbs: number[], deadline: number): Promise<Map<number, number>> {
  const arrivals = new Map<number, number>()
  let pending = dbs
  while (pending.length > 0) {
    const poll = client.pipeline()
    for (const db of pending) poll.select(db).exists(key)
    poll.select(0)
    const replies = (await poll.exec()) ?? []
    const now = performance.now()
    pending = pending.filter((db, i) => {
      const [error, exists] = replies[i * 2 + 1]
      if (!error && exists === 1) {
        arrivals.set(db, now)
        return false
      }
      return true
    })
    if (pending.length === 0 || now > deadline) break
    await sleep(1)
  }
  return arrivals
}

const round = (ms: number) => Math.round(ms * 10) / 10

import {setTimeout as sleep} from 'node:timers/promises'

import type {Redis} from 'ioredis'

import {ExitCode, ShardctlError, usageError} from '../errors.js'
import {type ConnectionPool, close, connect} from '../fleet/connect.js'
import {parseInfo} from '../fleet/info.js'
import {databaseCount, flushDb, keysPerDb} from '../fleet/instance.js'
import {copyProgress, follows, makeMaster, makeReplica, pauseWrites, replicationOf, resumeWrites, waitForOffset, waitForStreaming} from '../fleet/replication.js'
import {type ShardAddress, formatAddress, instanceKey, parseInstance} from '../registry/address.js'
import {Change, type Registry, compareIds} from '../registry/registry.js'
import {Journal, type JournalEntry} from './journal.js'
import type {OperatorLock} from './lock.js'

/**
 * shards:split as explicit steps over the journal: the targets follow the source as
 * replicas while writes go on (live copy), then a short cut-over moves the chosen
 * shard databases — numbers kept — onto them, and each side drops what it no
 * longer owns. The source's copy of a moved database is dropped only if no write
 * landed on it after the cut-over (a client with stale routing).
 */

type Endpoint = {host: string; port: number}

export interface SplitRequest {
  source: Endpoint
  targets: Endpoint[]
  shards?: string[]
  targetReplicas: Endpoint[]
  maxPauseMs: number
  graceMs: number
  keepSource: boolean
}

export interface SplitMove {
  id: string
  db: number
  keys: number
  to: string
  before: {master: string; replicas: string[]; persist: string[]}
  after: {master: string; replicas: string[]}
}

export interface SplitPlan {
  source: string
  targets: {instance: string; replicas: string[]}[]
  moves: SplitMove[]
  staying: {id: string; db: number; keys: number}[]
  /** Keys and shards per instance once the split is done. */
  balance: {instance: string; keys: number; shards: number}[]
  /** Memory the source holds: what the live copy transfers, roughly. */
  sourceBytes: number
  maxPauseMs: number
  graceMs: number
  keepSource: boolean
}

export interface SplitResult {
  plan: SplitPlan
  applied: boolean
  pauseMs?: number
  /** Source databases kept because writes landed on them after the cut-over (db -> writes seen). */
  strayWrites: Record<string, number>
  /** Source databases dropped after the grace period. */
  droppedFromSource: number[]
  keptOnSource: number[]
  recovered?: 'rolled-forward' | 'rolled-back'
  /** Instances started with --spawn: stop them with their pid when they are retired. */
  spawned?: {port: number; pid: number; dir: string}[]
}

const at = (e: Endpoint, db: number): ShardAddress => ({host: e.host, port: e.port, db})
const endpoint = (key: string): Endpoint => parseInstance(key)

/**
 * Which shards go where: heaviest first, each to the instance (source or a target)
 * holding the fewest keys so far — so keys end up balanced. A fleet without keys
 * is balanced by shard count.
 */
export function assignMoves(shards: {id: string; keys: number}[], targets: string[], explicit?: string[]): Map<string, string> {
  const moves = new Map<string, string>()
  if (explicit) {
    // Named shards are spread over the targets, lightest target first.
    const load = new Map(targets.map((t) => [t, 0]))
    for (const s of [...shards].filter((s) => explicit.includes(s.id)).sort((a, b) => b.keys - a.keys)) {
      const target = [...load].sort((a, b) => a[1] - b[1])[0][0]
      moves.set(s.id, target)
      load.set(target, load.get(target)! + s.keys + 1e-9)
    }
    return moves
  }
  const source = '\u0000source'
  const load = new Map<string, {keys: number; count: number}>([[source, {keys: 0, count: 0}], ...targets.map((t) => [t, {keys: 0, count: 0}] as const)])
  for (const s of [...shards].sort((a, b) => b.keys - a.keys || compareIds(a.id, b.id))) {
    const [lightest] = [...load].sort(([, a], [, b]) => a.keys - b.keys || a.count - b.count)[0]
    const entry = load.get(lightest)!
    entry.keys += s.keys
    entry.count += 1
    if (lightest !== source) moves.set(s.id, lightest)
  }
  return moves
}

async function reach(pool: ConnectionPool, e: Endpoint, what: string): Promise<Redis> {
  try {
    return await pool.get(e)
  } catch (error) {
    throw new ShardctlError(`${what} ${instanceKey(e)}: ${(error as Error).message}`, {code: 'EUNREACHABLE', hint: 'check the address, or raise --timeout'})
  }
}

async function checkEmpty(client: Redis, key: string, role: string): Promise<void> {
  const used = [...(await keysPerDb(client))].filter(([, n]) => n > 0)
  if (used.length > 0) {
    const total = used.reduce((sum, [, n]) => sum + n, 0)
    throw usageError(`${role} ${key} is not empty: ${total} keys in db ${used.map(([db]) => db).join(', ')}`, 'a split copies onto empty instances only; nothing was changed')
  }
}

export async function planSplit(registry: Registry, pool: ConnectionPool, request: SplitRequest): Promise<SplitPlan> {
  const sourceKey = instanceKey(request.source)
  const registryAt = instanceKey({host: registry.client.options.host ?? '', port: registry.client.options.port ?? 0})
  if (registryAt === sourceKey) throw usageError(`${sourceKey} also holds the registry`, 'pausing its writes would pause the registry too')
  if (request.targets.length === 0) throw usageError('no target', 'name one with --to HOST:PORT, or use --spawn')
  const targetKeys = request.targets.map(instanceKey)
  for (const [i, key] of targetKeys.entries()) {
    if (key === sourceKey) throw usageError(`target ${key} is the source itself`)
    if (targetKeys.indexOf(key) !== i) throw usageError(`target ${key} is named twice`)
  }
  if (request.targetReplicas.length > 0 && request.targets.length !== 1) {
    throw usageError('--to-replica needs exactly one --to', 'split onto several targets without replicas, then add them')
  }

  const {shards} = await registry.snapshot()
  const onSource = shards.filter((s) => instanceKey(s.master) === sourceKey)
  if (onSource.length === 0) throw usageError(`no shard in the registry has its master on ${sourceKey}`, 'name the master instance of some shards (see shards:list)')
  for (const id of request.shards ?? []) {
    const shard = shards.find((s) => s.id === id)
    if (!shard) throw usageError(`unknown shard "${id}"`, 'see shards:list')
    if (instanceKey(shard.master) !== sourceKey) throw usageError(`shard ${id} is not on ${sourceKey} (its master is ${formatAddress(shard.master)})`)
  }
  if (request.shards && request.shards.length === onSource.length) {
    throw usageError(`--shards names every shard of ${sourceKey}`, 'a split leaves some shards on the source; to move all, promote a replica instead')
  }

  const source = await reach(pool, request.source, 'cannot reach the source')
  const sourceRole = await replicationOf(source)
  if (sourceRole.role !== 'master') throw usageError(`the source ${sourceKey} is not a master`, 'the registry and the fleet disagree: see shards:list')
  const sourceKeys = await keysPerDb(source)
  const maxUsedDb = Math.max(0, ...sourceKeys.keys(), ...onSource.map((s) => s.master.db))

  for (const target of request.targets) {
    const client = await reach(pool, target, 'cannot reach the target')
    const info = await replicationOf(client)
    if (info.role !== 'master' && !follows(info, request.source)) {
      throw usageError(`target ${instanceKey(target)} is a replica of ${info.masterHost}:${info.masterPort}`, 'a target must be a standalone, empty instance')
    }
    await checkEmpty(client, instanceKey(target), 'target')
    const databases = await databaseCount(client, target)
    if (databases <= maxUsedDb) {
      throw usageError(`target ${instanceKey(target)} has ${databases} databases; the source uses db ${maxUsedDb}`, `start it with --databases ${maxUsedDb + 1} or more (or use --spawn)`)
    }
  }
  for (const replica of request.targetReplicas) {
    const client = await reach(pool, replica, 'cannot reach the target replica')
    const info = await replicationOf(client)
    if (!follows(info, request.targets[0])) await checkEmpty(client, instanceKey(replica), 'target replica')
  }

  const withKeys = onSource.map((s) => ({shard: s, id: s.id, keys: sourceKeys.get(s.master.db) ?? 0}))
  const assignment = assignMoves(withKeys, targetKeys, request.shards)
  const replicas = request.targetReplicas.map(instanceKey)
  const moves: SplitMove[] = withKeys
    .filter((s) => assignment.has(s.id))
    .map(({shard, keys}) => {
      const to = endpoint(assignment.get(shard.id)!)
      return {
        id: shard.id,
        db: shard.master.db,
        keys,
        to: instanceKey(to),
        before: {master: formatAddress(shard.master), replicas: shard.replicas.map(formatAddress), persist: shard.persist.map(formatAddress)},
        after: {master: formatAddress(at(to, shard.master.db)), replicas: request.targetReplicas.map((r) => formatAddress(at(r, shard.master.db)))},
      }
    })
  const staying = withKeys.filter((s) => !assignment.has(s.id)).map((s) => ({id: s.id, db: s.shard.master.db, keys: s.keys}))
  const memory = parseInfo(await source.info('memory'))
  const balance = [sourceKey, ...targetKeys].map((instance) => {
    const mine = instance === sourceKey ? staying : moves.filter((m) => m.to === instance)
    return {instance, keys: mine.reduce((sum, s) => sum + s.keys, 0), shards: mine.length}
  })
  return {
    source: sourceKey,
    targets: targetKeys.map((instance) => ({instance, replicas})),
    moves,
    staying,
    balance,
    sourceBytes: Number(memory.used_memory_dataset ?? memory.used_memory ?? 0),
    maxPauseMs: request.maxPauseMs,
    graceMs: request.graceMs,
    keepSource: request.keepSource,
  }
}

async function switchRegistry(registry: Registry, plan: SplitPlan, details: Record<string, unknown>): Promise<void> {
  const moves = plan.moves.map((m) => ({id: m.id, expectMaster: m.before.master, ...m.after, persist: []}))
  await registry.repointShards(moves, 'shards.split', {from: plan.source, moves: Object.fromEntries(plan.moves.map((m) => [m.id, m.to])), ...details})
}

/**
 * Watches the source's moved databases for writes after the cut-over, with keyspace
 * notifications on a connection of its own. Started while writes are still paused,
 * so no write can slip in unseen.
 */
class StrayWriteWatch {
  readonly writes = new Map<number, number>()
  private constructor(
    private readonly admin: Redis,
    private readonly subscriber: Redis,
    readonly previous: string,
  ) {}

  static async start(admin: Redis, subscriber: Redis, dbs: number[]): Promise<StrayWriteWatch> {
    const reply = (await admin.config('GET', 'notify-keyspace-events')) as string[]
    const previous = reply[1] ?? ''
    const flags = new Set([...previous, 'E', 'A'])
    await admin.config('SET', 'notify-keyspace-events', [...flags].join(''))
    const watch = new StrayWriteWatch(admin, subscriber, previous)
    subscriber.on('pmessage', (_pattern: string, channel: string) => {
      const match = /^__keyevent@(\d+)__:(.+)$/.exec(channel)
      // Expiry and eviction are the server's own doing, not a client's write.
      if (match && match[2] !== 'expired' && match[2] !== 'evicted') {
        watch.writes.set(Number(match[1]), (watch.writes.get(Number(match[1])) ?? 0) + 1)
      }
    })
    await subscriber.psubscribe(...dbs.map((db) => `__keyevent@${db}__:*`))
    return watch
  }

  async stop(): Promise<void> {
    await close(this.subscriber)
    await this.admin.config('SET', 'notify-keyspace-events', this.previous).catch(() => undefined)
  }
}

/** Drop the connections of clients using a moved database, so their next write re-reads the routing. */
async function disconnectClientsOn(client: Redis, dbs: Set<number>): Promise<number> {
  const list = (await client.call('CLIENT', 'LIST', 'TYPE', 'normal')) as string
  const own = Number(await client.call('CLIENT', 'ID'))
  let killed = 0
  for (const line of list.split('\n')) {
    const id = Number(/(?:^| )id=(\d+)/.exec(line)?.[1])
    const db = Number(/ db=(\d+)/.exec(line)?.[1])
    if (Number.isFinite(id) && id !== own && dbs.has(db)) {
      await client.call('CLIENT', 'KILL', 'ID', String(id)).catch(() => undefined)
      killed++
    }
  }
  return killed
}

/** Before the cut-over pause, a target may trail the source by this much (a few ms of work)... */
const PRE_PAUSE_SLACK_BYTES = 64 * 1024
/** ...and is given this long to get there; past it the pause-bounded catch-up decides. */
const PRE_PAUSE_WAIT_MS = 10_000

/**
 * Wait until every target holds its full copy and applies the live stream, reporting
 * progress. A link that is up is not proof of streaming (see waitForStreaming): each
 * target must apply a write the source made after its link came up.
 */
async function waitForCopy(pool: ConnectionPool, plan: SplitPlan, onProgress?: (line: string) => void): Promise<void> {
  let lastBytes = -1
  let stalledSince = Date.now()
  for (;;) {
    const states = await Promise.all(plan.targets.map(async (t) => copyProgress(parseInfo(await (await pool.get(endpoint(t.instance))).info('replication')))))
    if (states.every((s) => s.linkUp && !s.syncing)) {
      const source = await pool.get(endpoint(plan.source))
      const streaming = await Promise.all(plan.targets.map(async (t) => waitForStreaming(source, await pool.get(endpoint(t.instance)), Date.now() + 60_000)))
      if (streaming.every(Boolean)) return
      throw new ShardctlError('a target linked up but did not apply the live stream within 60 s', {code: 'ESTALLED', hint: "check the targets' logs; run the split again to roll it back"})
    }
    const read = states.reduce((sum, s) => sum + s.readBytes, 0)
    const total = states.reduce((sum, s) => sum + Math.max(0, s.totalBytes), 0)
    if (read !== lastBytes) {
      lastBytes = read
      stalledSince = Date.now()
      const pct = total > 0 ? ` (${Math.floor((100 * read) / total)}%)` : ''
      onProgress?.(`copying: ${(read / 1e6).toFixed(1)} MB${total > 0 ? ` of ${(total / 1e6).toFixed(1)} MB` : ''}${pct}`)
    } else if (Date.now() - stalledSince > 60_000) {
      throw new ShardctlError('the live copy made no progress for 60 s', {code: 'ESTALLED', hint: 'check the targets\' logs; run the split again to roll it back'})
    }
    await sleep(100)
  }
}

/** Undo a split that never reached the registry: the targets drop their copy (they were empty). */
async function rollBack(pool: ConnectionPool, plan: SplitPlan): Promise<void> {
  for (const t of plan.targets) {
    const client = await pool.get(endpoint(t.instance))
    await makeMaster(client)
    await client.flushall('ASYNC')
  }
  await resumeWrites(await pool.get(endpoint(plan.source))).catch(() => undefined)
}

async function cleanTargets(pool: ConnectionPool, plan: SplitPlan): Promise<void> {
  for (const t of plan.targets) {
    const client = await pool.get(endpoint(t.instance))
    const owned = new Set(plan.moves.filter((m) => m.to === t.instance).map((m) => m.db))
    for (const db of (await keysPerDb(client)).keys()) if (!owned.has(db)) await flushDb(client, db)
  }
}

export async function executeSplit(
  registry: Registry,
  lock: OperatorLock,
  pool: ConnectionPool,
  plan: SplitPlan,
  options: {timeoutMs: number; onStep?: (step: string) => void; onProgress?: (line: string) => void},
): Promise<SplitResult> {
  const journal = await Journal.begin(registry, lock, 'split', plan.source, plan)
  journal.onStep = options.onStep
  const step = <T>(name: string, action: () => Promise<T>) => journal.step(name, action)
  const result: SplitResult = {plan, applied: false, strayWrites: {}, droppedFromSource: [], keptOnSource: []}
  const sourceEp = endpoint(plan.source)
  const source = await pool.get(sourceEp)
  const targets = await Promise.all(plan.targets.map((t) => pool.get(endpoint(t.instance))))
  const abort = async (message: string, reason: string, hint: string): Promise<never> => {
    await rollBack(pool, plan)
    await registry.apply(new Change(), 'split.aborted', {from: plan.source, reason})
    await journal.close()
    throw new ShardctlError(message, {code: 'EABORTED', exitCode: ExitCode.unexpected, hint})
  }

  await step('copy', async () => {
    for (const [i, t] of plan.targets.entries()) {
      await makeReplica(targets[i], sourceEp)
      for (const r of t.replicas) await makeReplica(await pool.get(endpoint(r)), endpoint(t.instance))
    }
    await waitForCopy(pool, plan, options.onProgress)
    // A target that just loaded its copy still works through the stream buffered
    // meanwhile: let it, before the pause, so that the pause holds only the last bytes.
    await Promise.all(targets.map((t) => waitForOffset(source, t, Date.now() + PRE_PAUSE_WAIT_MS, PRE_PAUSE_SLACK_BYTES)))
  })

  let pausedAt = 0
  await step('pause', async () => {
    pausedAt = Date.now()
    await pauseWrites(source, plan.maxPauseMs)
  })
  const caught = await step('catch-up', () => Promise.all(targets.map((t) => waitForOffset(source, t, pausedAt + plan.maxPauseMs / 2))))
  if (!caught.every((c) => c.caughtUp)) {
    await abort(
      `the targets did not catch up within --max-pause ${plan.maxPauseMs} ms; writes resumed on ${plan.source}, the registry is unchanged and the targets were emptied`,
      'catch-up',
      'retry when the write load is lower, or raise --max-pause',
    )
  }
  await step('promote', () => Promise.all(targets.map((t) => makeMaster(t))))
  try {
    await step('registry', () => switchRegistry(registry, plan, {}))
  } catch (error) {
    if ((error as ShardctlError).code !== 'ECONFLICT') throw error
    await abort(`${(error as Error).message}; the split was undone`, 'registry changed', 'look at shards:list, then run the command again')
  }
  result.pauseMs = Date.now() - pausedAt

  const movedDbs = plan.moves.map((m) => m.db)
  let watch: StrayWriteWatch | undefined
  await journal.step(
    'isolate',
    async () => {
      const subscriber = await connect({...sourceEp, db: 0}, {timeoutMs: options.timeoutMs})
      watch = await StrayWriteWatch.start(source, subscriber, movedDbs)
      await disconnectClientsOn(source, new Set(movedDbs))
      // Kept in the journal: a recovery restores the setting the watch changed.
      return {notifyKeyspaceEvents: watch.previous}
    },
    {keepResult: true},
  )
  await step('resume', () => resumeWrites(source))
  try {
    await step('grace', () => sleep(plan.graceMs))
  } finally {
    await watch?.stop()
  }
  for (const [db, n] of watch!.writes) result.strayWrites[String(db)] = n
  await step('clean-target', () => cleanTargets(pool, plan))
  await step('clean-source', async () => {
    for (const db of movedDbs) {
      if (plan.keepSource || watch!.writes.has(db)) result.keptOnSource.push(db)
      else {
        await flushDb(source, db)
        result.droppedFromSource.push(db)
      }
    }
  })
  await registry.apply(new Change(), 'split.finished', {
    from: plan.source,
    pauseMs: result.pauseMs,
    keptOnSource: result.keptOnSource,
    strayWrites: result.strayWrites,
  })
  await journal.close()
  return {...result, applied: true}
}

export function splitJournalMatches(entry: JournalEntry, source: Endpoint): boolean {
  const plan = entry.plan as SplitPlan
  return entry.type === 'split' && (plan.source === instanceKey(source) || plan.targets.some((t) => t.instance === instanceKey(source)))
}

/**
 * Finish or roll back a split a killed run left behind. Before the registry switch no
 * client has written to a target, so the targets simply drop their copy; after it,
 * the split is finished — except that the source's moved databases are kept, since
 * no one watched them for stray writes: the operator drops them when sure.
 */
export async function recoverSplit(registry: Registry, lock: OperatorLock, pool: ConnectionPool, entry: JournalEntry): Promise<SplitResult> {
  const journal = Journal.resume(registry, lock, entry)
  const plan = entry.plan as SplitPlan
  const result: SplitResult = {plan, applied: false, strayWrites: {}, droppedFromSource: [], keptOnSource: []}
  const {shards} = await registry.snapshot()
  const byId = new Map(shards.map((s) => [s.id, formatAddress(s.master)]))
  const switched = plan.moves.every((m) => byId.get(m.id) === m.after.master)
  const untouched = plan.moves.every((m) => byId.get(m.id) === m.before.master)
  if (!switched && !untouched) {
    throw new ShardctlError(`the registry changed since the interrupted split of ${plan.source}`, {
      code: 'ECONFLICT',
      hint: `inspect with shards:list; once the fleet is consistent, delete ${registry.keys.journal} by hand`,
    })
  }
  const source = await reach(pool, endpoint(plan.source), 'cannot reach the source')
  if (untouched) {
    await rollBack(pool, plan)
    await registry.apply(new Change(), 'split.rolled-back', {from: plan.source})
    await journal.close()
    return {...result, recovered: 'rolled-back'}
  }
  for (const t of plan.targets) {
    const client = await pool.get(endpoint(t.instance))
    if ((await replicationOf(client)).role !== 'master') await makeMaster(client)
  }
  // Still within the pause, clients on the moved databases must re-read the routing first.
  await disconnectClientsOn(source, new Set(plan.moves.map((m) => m.db)))
  // A run killed while watching for stray writes left keyspace notifications on.
  const isolated = entry.steps.find((s) => s.name === 'isolate' && s.state === 'done')?.result as {notifyKeyspaceEvents?: string} | undefined
  if (isolated?.notifyKeyspaceEvents !== undefined) {
    await source.config('SET', 'notify-keyspace-events', isolated.notifyKeyspaceEvents).catch(() => undefined)
  }
  await resumeWrites(source).catch(() => undefined)
  await cleanTargets(pool, plan)
  const sourceDone = entry.steps.some((s) => s.name === 'clean-source' && s.state === 'done')
  if (!sourceDone) result.keptOnSource = plan.moves.map((m) => m.db)
  await registry.apply(new Change(), 'split.finished', {from: plan.source, recovered: true, keptOnSource: result.keptOnSource})
  await journal.close()
  return {...result, applied: true, recovered: 'rolled-forward'}
}

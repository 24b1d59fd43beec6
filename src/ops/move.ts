import type {Redis} from 'ioredis'

import {type CopyProgressEvent, type CopyRate, type DatabaseCopy, startDatabaseCopy} from '../copy/engine.js'
import {refuseMissingExtensions} from '../copy/extensions.js'
import {ExitCode, ShardctlError, usageError} from '../errors.js'
import {clientsOn, killClients} from '../fleet/clients.js'
import type {ConnectionPool, ScriptedRedis, TlsSettings} from '../fleet/connect.js'
import {parseInfo} from '../fleet/info.js'
import {probeInstances} from '../fleet/probe.js'
import {databaseCount, estimateDbMemory, flushDb, keysPerDb} from '../fleet/instance.js'
import {DEFAULT_FENCING, type FencingSettings, liftFence, readFencing, replicationOf, setFencing} from '../fleet/replication.js'
import {RDB_VERSION_OF_REDIS} from '../rdb/constants.js'
import {
  type ConnectTarget,
  type Endpoint,
  canonicalInstance,
  endpointOf,
  formatAddress,
  instanceKey,
  sameInstance,
} from '../registry/address.js'
import {Change, type Registry} from '../registry/registry.js'
import {type Shard, sharedDatabases} from '../registry/schema.js'
import {plural} from '../ui/terminal.js'
import {type KeyDifference} from '../verify/compare.js'
import {displayKey} from '../verify/keys.js'
import {type VerifyReport, recheckKeys, verifyDatabases} from '../verify/verify.js'
import {
  type HealPolicy,
  type Healed,
  PRE_PAUSE_SLACK_BYTES,
  PRE_PAUSE_WAIT_MS,
  PauseClock,
  type PlannedMove,
  type StillRefusing,
  type StraysFound,
  assertUnused,
  cutOffPreviousOwner,
  fenceStep,
  finishCutover,
  graceWatch,
  heal,
  holdClientsOff,
  nodesOf,
  registryState,
  reachInstance,
  registryStateIfKnown,
  releaseMovedDbs,
  settleRecovery,
  sourceFacts,
  switchOrFindOut,
} from './cutover.js'
import {Journal, type JournalEntry, fencedSince, stepDone, stepResult, stepStarted} from './journal.js'
import type {OperatorLock} from './lock.js'
import {type MoveAction, type NodeFacts, decideMoveRecovery} from './recovery.js'

/**
 * shards:move as named steps over the journal. Each moved shard's database is copied,
 * live, into a database of another instance that may serve other shards already, under
 * another number if need be (src/copy/engine.ts: the source sees a replica; only the
 * moved database's entries and commands reach the target database):
 *
 *   copy         the copies load the snapshot, then apply the live stream
 *   verify       each moved database is compared with its copy (src/verify), rounds re-checking
 *                only the keys that differed, until at most VERIFY_FEW differ (--no-verify: skipped)
 *   fence        the source is paused and fenced (a fence that does not expire)
 *   catch-up     every copy has applied the source's offset, read under the fence: the proof
 *   stop-stream  the copies stop: nothing more reaches the target databases
 *   recheck      the keys that still differed are compared once more, under the fence: one
 *                that still differs is a copy that is wrong, and the move is rolled back (exit 3)
 *   registry     the moved shards are routed to the target databases (compare-and-set)
 *   hold         clients are kept off the moved databases of the still fenced source
 *   release      in one step no client can come between, the fence is lifted and the
 *                source drops the moved databases: any key there from now on is a write
 *                that landed after the cut-over
 *   grace        after --grace, a moved database holding keys on the source is reported
 *                (exit 3), kept and recorded for shards:reconcile
 *
 * Unlike a split, the stream stops before the registry switch, not after it. A split's
 * targets are replicas (READONLY) until promoted, so nothing a client writes there can
 * meet the source's stream. A move's target database is writable the moment the registry
 * routes to it: were the stream still applied then, anything the source still sent (a DEL
 * from an expiry on the source, a write a stale client got in before its connection was
 * cut) would overwrite writes acknowledged on the target. So the order is: fence, prove
 * the copy has the source's last offset, stop the stream, then switch; the source stays
 * fenced until the release, and a write that lands on it after that is a stray, named.
 */

export interface MoveRequest {
  shards: string[]
  to: Endpoint
  /** The target database (one shard only); otherwise each shard takes the lowest free database of the target. */
  toDb?: number
  rate?: CopyRate
  maxPauseMs: number
  graceMs: number
  holdMs: number
  quietMs: number
  /** How far apart the two instances' clocks may be: expiry times are copied as absolute times. */
  maxClockSkewMs: number
  /** Compare each moved database with its copy before the switch (verify, recheck). */
  verify: boolean
  /** The verify compares the values too, not only keys, types, expiries and lengths. */
  verifyValues: boolean
}

export interface MoveShard extends PlannedMove {
  /** Its database on the source, and the one it takes on the target. */
  db: number
  toDb: number
  keys: number
  /** What it holds on the source, estimated (MEMORY USAGE of a sample). */
  bytes: number
}

export interface MovePreflight {
  /** The RDB version each side's Redis writes: the target must read the source's. */
  rdb: {source: {redis: string; version: number}; target: {redis: string; version: number}}
  /** The target's maxmemory (0: none), what it uses, and what arrives. */
  memory: {maxmemory: number; used: number; arriving: number}
  /** How far apart the clocks are (TIME, the round trips taken off), and the bound. */
  clock: {skewMs: number; maxSkewMs: number}
}

export interface MovePlan {
  source: string
  target: string
  moves: MoveShard[]
  /** The target instance's replicas: the moved shards' replicas once moved. */
  targetReplicas: string[]
  /**
   * The shards whose master is on each side when planned: the registry switch is taken
   * only if they still are (nobody moved a shard there or away meanwhile).
   */
  sourceShards: string[]
  targetShards: string[]
  /** Moved shards that end with fewer replicas than they have now. */
  fewerReplicas: {id: string; before: number; after: number}[]
  preflight: MovePreflight
  rate?: CopyRate
  maxPauseMs: number
  graceMs: number
  holdMs: number
  quietMs: number
  /** Absent in the journal of an older run: verified. */
  verify?: boolean
  /** Absent in the journal of an older run: values compared. */
  verifyValues?: boolean
}

export interface MoveResult extends StraysFound {
  plan: MovePlan
  applied: boolean
  /** How long writes to the source were held: from the fence to its lift. */
  pauseMs?: number
  pauseExceeded?: boolean
  /** The hold on the fenced source: whether no client came back to a moved database, and the connections closed. */
  hold?: {clear: boolean; closed: number; lingering: string[]}
  /** The proof: the source's offset under the fence, and what each copy had applied. */
  proof?: {offset: number; applied: number[]}
  droppedFromSource: number[]
  recovered?: 'rolled-forward' | 'rolled-back'
  healed?: Healed
  /** The comparison of each moved database with its copy: keys compared, keys left to re-check under the fence, and how long it took. */
  verified?: {shards: {id: string; keys: number; differing: number}[]; ms: number; recheckMs?: number}
}

/** A moved database whose copy differs: how many keys, and a few of them with what differs. */
interface Differing {
  id: string
  count: number
  sample: string
}

/** Rounds of the verify before the fence, the first (full) one included... */
export const VERIFY_ROUNDS = 5
/** ...which end once at most this many keys differ: those are re-checked under the fence, where the writes wait. */
export const VERIFY_FEW = 100

// ---- plan and preflight ---------------------------------------------------------------

/** The RDB version a Redis release writes (the newest known for a newer release). */
export function rdbVersionOf(redisVersion: string): number {
  const [major, minor] = redisVersion.split('.').map(Number)
  const known = RDB_VERSION_OF_REDIS.find(([release]) => {
    const [a, b] = release.split('.').map(Number)
    return major > a || (major === a && minor >= b)
  })
  return known ? known[1] : RDB_VERSION_OF_REDIS.at(-1)![1]
}

/**
 * How far the target's clock is from the source's: each one's TIME against the middle of
 * its own round trip here, so the network's delay cancels (what is left is within half a
 * round trip).
 */
async function clockSkew(source: Redis, target: Redis): Promise<{skewMs: number; source: string; target: string}> {
  const offset = async (client: Redis) => {
    let best: {offset: number; rtt: number} | undefined
    for (let i = 0; i < 3; i++) {
      const sent = Date.now()
      const [seconds, micros] = (await client.call('TIME')) as [string, string]
      const received = Date.now()
      const rtt = received - sent
      const server = Number(seconds) * 1000 + Number(micros) / 1000
      if (!best || rtt < best.rtt) best = {offset: server - (sent + received) / 2, rtt}
    }
    return best!.offset
  }
  const [sourceOffset, targetOffset] = [await offset(source), await offset(target)]
  const now = Date.now()
  const reads = (offsetMs: number) => new Date(Math.round(now + offsetMs)).toISOString()
  return {skewMs: Math.round(Math.abs(targetOffset - sourceOffset)), source: reads(sourceOffset), target: reads(targetOffset)}
}

/** A database on the target instance that a shard of the registry names (in any role, on it or on its replicas). */
function usedDbs(shards: Shard[], instances: Set<string>): Map<number, string> {
  const used = new Map<number, string>()
  for (const s of shards)
    for (const n of [s.master, ...s.replicas, ...s.persist]) if (instances.has(canonicalInstance(n))) used.set(n.db, s.id)
  return used
}

async function runIdOf(client: Redis): Promise<string> {
  return parseInfo(await client.info('server')).run_id ?? ''
}

/**
 * The names, canonical, under which the registry may know the target and its replicas:
 * their own, and those of registry instances on the same port whose server has the
 * target's run_id (another DNS name of it). Only instances on that port are asked (the
 * aliases of one server share its port); in a fleet on one port everywhere that is every
 * instance, probed once and in parallel, an unreachable one costing at most --timeout.
 */
async function namesOf(pool: ConnectionPool, shards: Shard[], targetRun: string, nodes: Endpoint[]): Promise<Set<string>> {
  const names = new Set(nodes.map(canonicalInstance))
  const candidates = new Map<string, Endpoint>()
  for (const s of shards) {
    for (const n of [s.master, ...s.replicas, ...s.persist]) {
      const name = canonicalInstance(n)
      if (!names.has(name) && n.port === nodes[0].port) candidates.set(name, {host: n.host, port: n.port})
    }
  }
  const states = await probeInstances(candidates.values(), pool)
  for (const [, state] of states) {
    if (targetRun !== '' && state.info?.run_id === targetRun) names.add(canonicalInstance(endpointOf(state.instance)))
  }
  return names
}

export async function planMove(registry: Registry, pool: ConnectionPool, request: MoveRequest): Promise<MovePlan> {
  const targetKey = instanceKey(request.to)
  if (request.shards.length === 0) throw usageError('no shard to move', 'name one or more shards (see shards:list)')
  const named = new Set<string>()
  for (const id of request.shards) {
    if (named.has(id)) throw usageError(`shard ${id} is named twice`)
    named.add(id)
  }
  if (request.toDb !== undefined && request.shards.length > 1) {
    throw usageError(
      `--to ${targetKey}/${request.toDb} names one database, for ${plural(request.shards.length, 'shard')}`,
      'name the target instance without /db: each shard takes a free database of it',
    )
  }
  const shards = await registry.wholeSnapshot('a move')
  const moving = request.shards.map((id) => {
    const shard = shards.find((s) => s.id === id)
    if (!shard) throw usageError(`unknown shard "${id}"`, 'see shards:list')
    return shard
  })
  const sourceKey = instanceKey(moving[0].master)
  for (const s of moving) {
    if (!sameInstance(s.master, moving[0].master)) {
      throw usageError(
        `shards ${moving[0].id} and ${s.id} live on different instances (${sourceKey}, ${instanceKey(s.master)})`,
        'a move fences one source instance: move the shards of each instance with its own command',
      )
    }
  }
  if (sameInstance(moving[0].master, request.to)) {
    throw usageError(`shard ${moving[0].id} is on ${sourceKey} already`, 'name another instance with --to')
  }
  const registryAt = {host: registry.client.options.host ?? '', port: registry.client.options.port ?? 0}
  if (sameInstance(registryAt, moving[0].master)) {
    throw usageError(`${sourceKey} also holds the registry`, 'pausing its writes would pause the registry too')
  }
  const onSource = shards.filter((s) => sameInstance(s.master, moving[0].master))
  // The registry's switch compares the masters on each instance with the instance as named:
  // one instance must have one name, and the target the name the registry gives it.
  const otherName = (instance: Endpoint, named: string) =>
    shards.find((s) => sameInstance(s.master, instance) && instanceKey(s.master) !== named)
  const twice = otherName(moving[0].master, sourceKey)
  if (twice) {
    throw usageError(
      `the registry names ${sourceKey} in more than one way (shard ${twice.id} is on ${formatAddress(twice.master)})`,
      'repoint its shards to one name first (shards:check)',
    )
  }
  const asRegistry = otherName(request.to, targetKey)
  if (asRegistry) {
    throw usageError(
      `the registry names ${targetKey} ${instanceKey(asRegistry.master)} (shard ${asRegistry.id})`,
      `name the target ${instanceKey(asRegistry.master)}, as the registry does`,
    )
  }
  for (const shared of sharedDatabases(onSource)) {
    if (shared.ids.some((id) => named.has(id))) {
      throw usageError(
        `db ${shared.database.replace(/^.*\//, '')} of ${sourceKey} holds two shards, ${shared.ids.join(' and ')}`,
        'a database holds one shard: remove or repoint one of them first (shards:check lists them all)',
      )
    }
  }

  const source = await reachInstance(pool, endpointOf(sourceKey), 'the source')
  const target = await reachInstance(pool, request.to, 'the target')
  // Two names of one server (a second DNS name, an address of another interface): its run_id tells.
  const [sourceRun, targetRun] = await Promise.all([runIdOf(source), runIdOf(target)])
  if (sourceRun !== '' && sourceRun === targetRun) {
    throw usageError(
      `target ${targetKey} is the source ${sourceKey} under another name (the same run_id)`,
      'name another instance with --to',
    )
  }
  const sourceRole = await replicationOf(source)
  if (sourceRole.role !== 'master')
    throw usageError(`the source ${sourceKey} is not a master`, 'the registry and the fleet disagree: see shards:list')
  const targetRole = await replicationOf(target)
  if (targetRole.role !== 'master') {
    throw usageError(
      `target ${targetKey} is a replica of ${targetRole.masterHost}:${targetRole.masterPort}`,
      'name the master instance of that group as the target',
    )
  }
  const targetReplicas = targetRole.replicas.map((r) => instanceKey({host: r.host ?? '', port: r.port}))

  // Which database each shard takes on the target: empty, and named by no shard (on it or its replicas).
  const databases = await databaseCount(target, request.to)
  const targetKeys = await keysPerDb(target)
  const used = usedDbs(shards, await namesOf(pool, shards, targetRun, [request.to, ...targetReplicas.map(endpointOf)]))
  const toDbs: number[] = []
  if (request.toDb === undefined) {
    for (let db = 0; db < databases && toDbs.length < moving.length; db++) if (!used.has(db) && !targetKeys.get(db)) toDbs.push(db)
    if (toDbs.length < moving.length) {
      throw usageError(
        `${targetKey} has ${plural(databases - used.size, 'database')} no shard uses, ${plural(toDbs.length, 'of them empty', 'of them empty')}; ${plural(moving.length, 'shard')} to move`,
        'empty one, move fewer shards, or choose another target',
      )
    }
  } else {
    const db = request.toDb
    if (db >= databases) throw usageError(`${targetKey} has ${plural(databases, 'database')}: there is no db ${db}`)
    if (used.has(db)) throw usageError(`db ${db} of ${targetKey} is used by shard ${used.get(db)}`, 'name a database no shard uses')
    const keys = targetKeys.get(db) ?? 0
    if (keys > 0) {
      throw usageError(
        `db ${db} of ${targetKey} is not empty: ${plural(keys, 'key')}`,
        'a move copies into an empty database only; nothing was changed',
      )
    }
    toDbs.push(db)
  }

  // The target's Redis must read what the source's writes (RESTORE refuses a newer payload).
  const [sourceServer, targetServer] = await Promise.all([source.info('server'), target.info('server')])
  const sourceRedis = parseInfo(sourceServer).redis_version ?? '0.0'
  const targetRedis = parseInfo(targetServer).redis_version ?? '0.0'
  const rdb = {
    source: {redis: sourceRedis, version: rdbVersionOf(sourceRedis)},
    target: {redis: targetRedis, version: rdbVersionOf(targetRedis)},
  }
  if (rdb.source.version > rdb.target.version) {
    throw usageError(
      `target ${targetKey} runs Redis ${targetRedis}, which cannot read RDB version ${rdb.source.version} of the source's Redis ${sourceRedis}`,
      'move to an instance running the same Redis or newer',
    )
  }

  // The snapshot carries the source's function libraries and module values: the target must have them.
  await refuseMissingExtensions(source, target, sourceKey, targetKey)

  const sourceKeys = await keysPerDb(source)
  const moves: MoveShard[] = []
  for (const [i, shard] of moving.entries()) {
    const keys = sourceKeys.get(shard.master.db) ?? 0
    const {bytes} = await estimateDbMemory(source, shard.master.db, keys)
    const at = (e: Endpoint) => formatAddress({host: e.host, port: e.port, db: toDbs[i]})
    moves.push({
      id: shard.id,
      db: shard.master.db,
      toDb: toDbs[i],
      keys,
      bytes,
      before: nodesOf(shard),
      after: {master: at(request.to), replicas: targetReplicas.map((r) => at(endpointOf(r))), persist: []},
    })
  }

  // Room under the target's maxmemory for what arrives.
  const memoryInfo = parseInfo(await target.info('memory'))
  const memory = {
    maxmemory: Number(memoryInfo.maxmemory ?? 0),
    used: Number(memoryInfo.used_memory ?? 0),
    arriving: moves.reduce((sum, m) => sum + m.bytes, 0),
  }
  if (memory.maxmemory > 0 && memory.used + memory.arriving > memory.maxmemory) {
    const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`
    throw usageError(
      `target ${targetKey} has ${mb(Math.max(0, memory.maxmemory - memory.used))} free under maxmemory ${mb(memory.maxmemory)}; ${moves.length === 1 ? 'the moved shard holds' : `the ${moves.length} moved shards hold`} ~${mb(memory.arriving)}`,
      'raise its maxmemory, or move fewer shards or elsewhere; nothing was changed',
    )
  }

  // Expiry times travel as absolute times: the clocks must agree.
  const clocks = await clockSkew(source, target)
  const {skewMs} = clocks
  if (skewMs > request.maxClockSkewMs) {
    throw usageError(
      `the clocks of ${sourceKey} (${clocks.source}) and ${targetKey} (${clocks.target}) are ${skewMs} ms apart (at most ${request.maxClockSkewMs} ms): keys would expire that much early or late`,
      'synchronise the hosts (NTP), or raise --max-clock-skew',
    )
  }

  return {
    source: sourceKey,
    target: targetKey,
    moves,
    targetReplicas,
    sourceShards: onSource.map((s) => s.id),
    targetShards: shards.filter((s) => instanceKey(s.master) === targetKey).map((s) => s.id),
    fewerReplicas: moves
      .filter((m) => m.after.replicas.length < m.before.replicas.length + m.before.persist.length)
      .map((m) => ({id: m.id, before: m.before.replicas.length + m.before.persist.length, after: m.after.replicas.length})),
    preflight: {rdb, memory, clock: {skewMs, maxSkewMs: request.maxClockSkewMs}},
    ...(request.rate ? {rate: request.rate} : {}),
    maxPauseMs: request.maxPauseMs,
    graceMs: request.graceMs,
    holdMs: request.holdMs,
    quietMs: request.quietMs,
    verify: request.verify,
    verifyValues: request.verifyValues,
  }
}

// ---- the run ----------------------------------------------------------------------

/** Every instance a move acts on: the source and the target. */
export function moveInstances(plan: MovePlan): Endpoint[] {
  return [plan.source, plan.target].map(endpointOf)
}

/** What the command gives a move: how to reach the instances for the copy, progress, how it heals. */
export interface MoveOptions {
  /** The instance with the credentials of the fleet's instances, for the copy's own connections. */
  connectTarget: (instance: Endpoint) => ConnectTarget
  timeoutMs: number
  tls?: TlsSettings
  onStep?: (step: string) => void
  onCopy?: (shard: string, p: CopyProgressEvent) => void
  heal?: HealPolicy
}

class MoveRun {
  readonly result: MoveResult
  private source?: ScriptedRedis
  private target?: ScriptedRedis
  private copies: DatabaseCopy[] = []
  private readonly abort = new AbortController()
  /** Per move: the keys that still differed at the end of the verify, re-checked under the fence. */
  private differing: Buffer[][] = []

  constructor(
    private readonly registry: Registry,
    private readonly pool: ConnectionPool,
    private readonly journal: Journal<MovePlan>,
    readonly plan: MovePlan,
    private readonly clock: PauseClock,
    private readonly options: MoveOptions,
  ) {
    this.result = {plan, applied: false, strays: {}, strayWrites: {}, keptOnSource: [], droppedFromSource: []}
  }

  private get movedDbs(): number[] {
    return this.plan.moves.map((m) => m.db)
  }

  async connect(): Promise<void> {
    this.source = await this.pool.get(endpointOf(this.plan.source)).catch(() => undefined)
    this.target = await this.pool.get(endpointOf(this.plan.target)).catch(() => undefined)
  }

  private client(which: 'source' | 'target'): ScriptedRedis {
    const client = this[which]
    if (!client)
      throw new ShardctlError(`the ${which} ${this.plan[which]} does not answer`, {
        code: 'EUNREACHABLE',
        hint: 'bring it back, then run the command again',
      })
    return client
  }

  /** The source's fencing as it was before the copy (the copy raises it by one meanwhile: see src/copy/engine.ts). */
  private recordedFencing(): FencingSettings | undefined {
    return stepResult<{fencing: FencingSettings}>(this.journal.entry, 'copy')?.fencing
  }

  /** What lifting the fence gives back: the fencing recorded before the copy. */
  private previousFencing(): FencingSettings {
    // Never recorded (the fence predates this journal): Redis's defaults.
    return this.recordedFencing() ?? stepResult<{previous: FencingSettings}>(this.journal.entry, 'fence')?.previous ?? DEFAULT_FENCING
  }

  /** The source's shards and the target's, as planned: the compare-and-set covers them all. */
  private instanceSets(): {instance: string; ids: string[]}[] {
    return [
      {instance: this.plan.source, ids: this.plan.sourceShards},
      {instance: this.plan.target, ids: this.plan.targetShards},
    ]
  }

  /** Wait on the copies, failing as soon as one fails. */
  private async onCopies<T>(wait: (copy: DatabaseCopy, i: number) => Promise<T>): Promise<T[]> {
    return Promise.race([Promise.all(this.copies.map(wait)), ...this.copies.map((c) => c.failure)])
  }

  private async stopCopies(): Promise<void> {
    this.abort.abort()
    await Promise.all(this.copies.map((c) => c.stop().catch(() => undefined)))
  }

  /** The moved databases: on the source, and their copies on the target. */
  private sides(m: MoveShard) {
    return [
      {client: this.client('source'), db: m.db},
      {client: this.client('target'), db: m.toDb},
    ] as const
  }

  /** A copy found to differ from its source: the move stops before the switch, rolled back. */
  private differs({id, count, sample}: Differing, underFence: boolean): ShardctlError {
    const m = this.plan.moves.find((move) => move.id === id)!
    const [a, b] = [formatAddress({...endpointOf(this.plan.source), db: m.db}), m.after.master]
    return new ShardctlError(
      `the copy of shard ${m.id} on ${b} differs from ${a} ${underFence ? 'under the fence, with every write applied' : `after ${VERIFY_ROUNDS} rounds`} (${plural(count, 'key')}: ${sample}); the move was rolled back: ${this.plan.source} takes writes again and the target databases were emptied`,
      {
        code: 'EDIFFERS',
        exitCode: ExitCode.unhealthy,
        hint: `find what else writes to db ${m.toDb} of ${this.plan.target} (shards:verify ${m.id} --against ${b} compares them), then run the move again`,
      },
    )
  }

  readonly actions: Record<
    MoveAction | 'copy' | 'verify' | 'catch-up' | 'stop-stream' | 'recheck' | 'registry' | 'fence',
    () => Promise<unknown>
  > = {
    copy: async () => {
      const source = this.client('source')
      // Recorded before the copy raises it (and a copy cut short leaves it raised).
      const fencing = await readFencing(source)
      await this.journal.step(
        'copy',
        async () => {
          const {connectTarget, timeoutMs, tls, onCopy} = this.options
          for (const m of this.plan.moves) {
            const copy = await startDatabaseCopy({
              source: {...connectTarget(endpointOf(this.plan.source)), db: m.db},
              sourceDb: m.db,
              target: {...connectTarget(endpointOf(this.plan.target)), db: m.toDb},
              targetDb: m.toDb,
              timeoutMs,
              tls,
              ...(this.plan.rate ? {rate: this.plan.rate} : {}),
              signal: this.abort.signal,
              onProgress: (p) => onCopy?.(m.id, p),
            })
            // Observed through every wait below; never an unhandled rejection.
            copy.failure.catch(() => undefined)
            this.copies.push(copy)
          }
          await this.onCopies((c) => c.snapshotLoaded())
          // The copies work through the stream buffered during the snapshot: let them,
          // before the pause, so that the pause holds only the last bytes.
          const {offset} = await replicationOf(source)
          await this.onCopies((c) => c.waitApplied(offset - PRE_PAUSE_SLACK_BYTES, Date.now() + PRE_PAUSE_WAIT_MS))
        },
        {intent: {fencing}},
      )
    },
    verify: () =>
      this.journal.step(
        'verify',
        async () => {
          const started = Date.now()
          const shards: {id: string; keys: number; differing: number}[] = []
          const source = this.client('source')
          for (const m of this.plan.moves) {
            const [a, b] = this.sides(m)
            const report = await verifyDatabases(a, b, {
              rounds: VERIFY_ROUNDS,
              values: this.plan.verifyValues !== false,
              fewEnough: VERIFY_FEW,
              keepKeys: true,
              signal: this.abort.signal,
              // Instead of a pause: every write the source had taken is applied on the copy.
              beforeRecheck: async () => {
                const {offset} = await replicationOf(source)
                await this.onCopies((c) => c.waitApplied(offset, Date.now() + PRE_PAUSE_WAIT_MS))
              },
            })
            if (report.differing > VERIFY_FEW || report.unrechecked > 0) {
              const sample = reportSample(report.differences)
              return {shards, refused: {id: m.id, count: report.differing, sample}}
            }
            this.differing.push(report.differingKeys ?? [])
            shards.push({id: m.id, keys: report.keys.a, differing: report.differing})
          }
          this.result.verified = {shards, ms: Date.now() - started}
          return {shards}
        },
        {keepResult: true},
      ),
    recheck: () =>
      this.journal.step(
        'recheck',
        async () => {
          const started = Date.now()
          for (const [i, m] of this.plan.moves.entries()) {
            const [a, b] = this.sides(m)
            const still = await recheckKeys(a, b, this.differing[i] ?? [])
            if (still.length > 0) return {id: m.id, count: still.length, sample: sampleOf(still)} satisfies Differing
          }
          if (this.result.verified) this.result.verified.recheckMs = Date.now() - started
          return undefined
        },
        {keepResult: true},
      ),
    fence: () => fenceStep(this.journal, this.client('source'), this.plan.source, this.plan.maxPauseMs, this.clock),
    'catch-up': () =>
      this.journal.step(
        'catch-up',
        async () => {
          // The source is fenced: its offset stands still, and every copy that applied it holds every acknowledged write.
          const {offset} = await replicationOf(this.client('source'))
          const caught = await this.onCopies((c) => c.waitApplied(offset, this.clock.deadline(this.plan.maxPauseMs / 2)))
          const proof = {offset, applied: this.copies.map((c) => c.appliedOffset())}
          this.result.proof = proof
          return {...proof, caughtUp: caught.every(Boolean)}
        },
        {keepResult: true},
      ),
    'stop-stream': () => this.journal.step('stop-stream', () => this.stopCopies()),
    registry: () =>
      this.journal.step('registry', () =>
        switchOrFindOut(this.registry, this.plan.moves, 'after', () =>
          this.registry.repointShards(this.plan.moves, this.instanceSets(), 'shards.moved', {
            from: this.plan.source,
            to: this.plan.target,
            moves: Object.fromEntries(this.plan.moves.map((m) => [m.id, m.after.master])),
          }),
        ),
      ),
    hold: async () => {
      // The source is fenced still: a client's write there waits, then is refused. The
      // hold closes their connections so that they read the routing again; bounded by
      // what is left of the pause (the source's other shards wait meanwhile).
      const left = Math.max(0, this.clock.deadline(this.plan.maxPauseMs) - Date.now())
      const outcome = await this.journal.step(
        'hold',
        () => holdClientsOff(this.client('source'), new Set(this.movedDbs), Math.min(this.plan.holdMs, left), this.plan.quietMs),
        {keepResult: true},
      )
      this.result.hold = {clear: outcome.clear, closed: outcome.closed, lingering: outcome.lingering}
    },
    release: () =>
      this.journal.step('release', async () => {
        await releaseMovedDbs(this.registry, this.client('source'), this.plan.source, this.previousFencing(), this.movedDbs)
        this.result.droppedFromSource = [...this.movedDbs]
        this.clock.end()
      }),
    'keep-source': async () => {
      this.result.keptOnSource = [...this.movedDbs]
    },
    grace: () =>
      this.journal.step(
        'grace',
        async () => {
          const moves = this.plan.moves.map((m) => ({id: m.id, db: m.db, to: m.after.master}))
          await graceWatch(this.registry, this.client('source'), this.plan.source, moves, this.plan.graceMs, this.result)
          return this.result.strays
        },
        {keepResult: true},
      ),
    lift: () =>
      this.journal.step('lift', async () => {
        await liftFence(this.client('source'), this.previousFencing())
        this.clock.end()
      }),
    'restore-fencing': () =>
      this.journal.step('restore-fencing', async () => {
        // A copy that died left the source's min-replicas-to-write one higher: put it back, unless someone changed it since.
        const recorded = this.recordedFencing()
        if (!recorded || Number(recorded['min-replicas-to-write']) <= 0) return
        const source = this.client('source')
        const now = await readFencing(source)
        if (Number(now['min-replicas-to-write']) === Number(recorded['min-replicas-to-write']) + 1) await setFencing(source, recorded)
      }),
    'drop-target': () =>
      this.journal.step('drop-target', async () => {
        await this.stopCopies()
        const target = this.client('target')
        const dbs = this.plan.moves.map((m) => m.toDb)
        await assertUnused(this.registry, this.plan.target, dbs)
        // A copy of a run that lost its lock may still hold a connection there: cut it first.
        const writing = await clientsOn(target, new Set(dbs))
        await killClients(
          target,
          writing.map((c) => c.id),
        )
        for (const db of dbs) await flushDb(target, db)
      }),
  }

  async run(names: MoveAction[]): Promise<void> {
    for (const name of names) await this.actions[name]()
  }

  /** Roll a move back before the switch: the source as it was (fence lifted), the target databases emptied. */
  async rollBack(reason: string, error: ShardctlError, lift: boolean): Promise<never> {
    if (lift) await this.actions.lift()
    await this.actions['drop-target']()
    await this.registry.apply(new Change(), 'move.aborted', {from: this.plan.source, to: this.plan.target, reason})
    await this.journal.close()
    throw error
  }

  finish(recovered?: 'rolled-forward'): Promise<MoveResult> {
    const details = {from: this.plan.source, to: this.plan.target}
    return finishCutover(this.registry, this.journal, this.clock, this.plan.maxPauseMs, this.result, 'move.finished', details, recovered)
  }

  async normal(): Promise<MoveResult> {
    const {plan} = this
    try {
      await this.actions.copy()
      if (plan.verify !== false) {
        const verified = (await this.actions.verify()) as {refused?: Differing}
        if (verified.refused) {
          await this.stopCopies()
          return await this.rollBack('verify', this.differs(verified.refused, false), false)
        }
      }
      await this.actions.fence()
      const caught = (await this.actions['catch-up']()) as {offset: number; applied: number[]; caughtUp: boolean}
      if (!caught.caughtUp) {
        // Nothing was switched: lifting the fence and emptying the target lose nothing.
        await this.stopCopies()
        return await this.rollBack(
          'catch-up',
          new ShardctlError(
            `the copy did not apply the source's offset ${caught.offset} within --max-pause ${plan.maxPauseMs} ms (at ${caught.applied.join(', ')}); writes resumed on ${plan.source} and the target databases were emptied`,
            {code: 'ETIMEOUT', exitCode: ExitCode.unexpected, hint: 'retry when the write load is lower, or raise --max-pause'},
          ),
          true,
        )
      }
      await this.actions['stop-stream']()
      if (plan.verify !== false) {
        const still = (await this.actions.recheck()) as Differing | undefined
        if (still) return await this.rollBack('verify', this.differs(still, true), true)
      }
    } catch (error) {
      // A failed copy: whatever comes next (a heal, a rerun) rolls back; its connections go now.
      await this.stopCopies()
      throw error
    }
    let switched: boolean
    try {
      switched = (await this.actions.registry()) as boolean
    } catch (error) {
      if ((error as ShardctlError).code !== 'ECONFLICT') throw error
      return this.rollBack(
        'registry changed',
        new ShardctlError(`${(error as Error).message}; the move was undone`, {
          code: 'ECONFLICT',
          hint: 'look at shards:list, then run the command again',
        }),
        true,
      )
    }
    if (!switched)
      return this.rollBack(
        'registry refused',
        new ShardctlError('the registry did not take the switch; the move was undone', {code: 'EFAILED', hint: 'run the command again'}),
        true,
      )
    await this.run(['hold', 'release', 'grace'])
    return this.finish()
  }
}

/** A few differing keys, each with what differs, for one line. */
function sampleOf(differences: KeyDifference[]): string {
  const shown = differences.slice(0, 3).map((d) => `${displayKey(d.key)}: ${d.detail}`)
  return differences.length > 3 ? `${shown.join('; ')}; …` : shown.join('; ')
}

/** The same, from a verify's report (its samples by kind). */
function reportSample(differences: VerifyReport['differences']): string {
  const shown = Object.values(differences)
    .flatMap((d) => d.keys)
    .slice(0, 3)
    .map((k) => `${k.key}: ${k.detail}`)
  return shown.join('; ')
}

export async function executeMove(
  registry: Registry,
  lock: OperatorLock,
  pool: ConnectionPool,
  plan: MovePlan,
  options: MoveOptions,
): Promise<MoveResult> {
  const journal = await Journal.begin(registry, lock, 'move', plan.source, plan)
  journal.onStep = options.onStep
  const clock = new PauseClock()
  return healMove(registry, pool, journal, clock, options, async () => {
    const run = new MoveRun(registry, pool, journal, plan, clock, options)
    await run.connect()
    return run.normal()
  })
}

export function moveJournalMatches(entry: JournalEntry, shards: string[]): boolean {
  const plan = entry.plan as MovePlan
  return entry.type === 'move' && plan.moves.some((m) => shards.includes(m.id))
}

async function moveNodeFacts(pool: ConnectionPool, plan: MovePlan): Promise<{source: NodeFacts; target: NodeFacts}> {
  const [source, target] = await Promise.all([
    sourceFacts(pool, endpointOf(plan.source)),
    pool
      .get(endpointOf(plan.target))
      .then(async (c) => ({reachable: true, role: (await replicationOf(c)).role}))
      .catch(() => ({reachable: false})),
  ])
  return {source, target}
}

/**
 * Finish or roll back a move a killed, stopped or overtaken run left behind: that run is
 * cut off first (its connections, and any it kept on the target databases), then the
 * journal and the live facts decide (decideMoveRecovery).
 */
export async function recoverMove(
  registry: Registry,
  lock: OperatorLock,
  pool: ConnectionPool,
  entry: JournalEntry,
  options: MoveOptions,
): Promise<MoveResult> {
  const plan = entry.plan as MovePlan
  await cutOffPreviousOwner(pool, entry, moveInstances(plan), lock.token)
  const journal = await Journal.resume(registry, lock, entry as JournalEntry<MovePlan>)
  journal.onStep = options.onStep
  const clock = new PauseClock()
  return healMove(registry, pool, journal, clock, options, () => finishOrRollBack(registry, pool, journal, clock, options))
}

function healMove(
  registry: Registry,
  pool: ConnectionPool,
  journal: Journal<MovePlan>,
  clock: PauseClock,
  options: MoveOptions,
  run: () => Promise<MoveResult>,
): Promise<MoveResult> {
  return heal({
    registry,
    pool,
    journal,
    policy: options.heal,
    lossless: true,
    run,
    again: () => finishOrRollBack(registry, pool, journal, clock, options),
    left: () => stillRefusingAfterMove(registry, pool, journal.entry),
  })
}

async function finishOrRollBack(
  registry: Registry,
  pool: ConnectionPool,
  journal: Journal<MovePlan>,
  clock: PauseClock,
  options: MoveOptions,
): Promise<MoveResult> {
  const {plan} = journal.entry
  const [registryNow, nodes] = await Promise.all([registryState(registry, plan.moves), moveNodeFacts(pool, plan)])
  const decision = decideMoveRecovery(journal.entry, {registry: registryNow, ...nodes})
  const run = async () => {
    const run = new MoveRun(registry, pool, journal, plan, clock, options)
    await run.connect()
    return run
  }
  return settleRecovery(registry, journal, decision, run, ['move.rolled-back', {from: plan.source, to: plan.target}])
}

/**
 * What refuses writes when a move stops half-way: the source while its fence is on
 * (with the shards routed to it), or when it does not answer.
 */
async function stillRefusingAfterMove(registry: Registry, pool: ConnectionPool, entry: JournalEntry<MovePlan>): Promise<StillRefusing[]> {
  const {plan} = entry
  const [registryNow, nodes] = await Promise.all([registryStateIfKnown(registry, plan.moves), moveNodeFacts(pool, plan)])
  const switched = registryNow === undefined ? stepDone(entry, 'registry') : registryNow !== 'before'
  const moved = new Set(plan.moves.map((m) => m.id))
  const onSource = plan.sourceShards.filter((id) => !switched || !moved.has(id))
  const since = fencedSince(entry)
  const refusing: StillRefusing[] = []
  if (!nodes.source.reachable && stepStarted(entry, 'fence'))
    refusing.push({instance: plan.source, why: 'silent', shards: onSource, ...(since ? {fencedSince: since} : {})})
  else if (nodes.source.fenced)
    refusing.push({instance: plan.source, why: 'fence', shards: onSource, ...(since ? {fencedSince: since} : {})})
  if (switched && !nodes.target.reachable) refusing.push({instance: plan.target, why: 'silent', shards: [...moved]})
  return refusing
}

import {setTimeout as sleep} from 'node:timers/promises'

import type {Redis} from 'ioredis'

import {ExitCode, ShardctlError, usageError} from '../errors.js'
import type {ConnectionPool, ScriptedRedis} from '../fleet/connect.js'
import {parseInfo} from '../fleet/info.js'
import {databaseCount, flushDb, keysPerDb} from '../fleet/instance.js'
import {
  DEFAULT_FENCING,
  type FencingSettings,
  copyProgress,
  follows,
  liftFence,
  makeMaster,
  makeReplica,
  replicationOf,
  waitForOffset,
  waitForStreaming,
  writableAsReplica,
} from '../fleet/replication.js'
import {
  type Endpoint,
  type ShardAddress,
  canonicalInstance,
  endpointOf,
  formatAddress,
  instanceKey,
  sameInstance,
} from '../registry/address.js'
import {Change, type Registry, compareIds} from '../registry/registry.js'
import {sharedDatabases} from '../registry/schema.js'
import {
  type CatchUp,
  type HealPolicy,
  type Healed,
  PRE_PAUSE_SLACK_BYTES,
  PRE_PAUSE_WAIT_MS,
  PauseClock,
  type NeverElectHook,
  type PlannedMove,
  type ReleaseHook,
  type StillRefusing,
  type StrayWrites,
  assertUnused,
  catchUp,
  cutOffPreviousOwner,
  fenceStep,
  finishCutover,
  graceWatch,
  heal,
  MIN_QUIET_MS,
  holdClientsOff,
  nodesOf,
  notCaughtUp as notCaughtUpLine,
  registryState,
  neverElectStep,
  reachInstance,
  registryStateIfKnown,
  releaseMovedDbs,
  releaseStep,
  settleRecovery,
  sourceFacts,
  switchOrFindOut,
  waitUntil,
  writableReplicaRefusal,
} from './cutover.js'
export type {StrayWrites} from './cutover.js'
import {Journal, type JournalEntry, fencedSince, stepDone, stepResult, stepStarted} from './journal.js'
import type {OperatorLock} from './lock.js'
import {type NodeFacts, type SplitAction, decideSplitRecovery} from './recovery.js'
import {plural} from '../ui/terminal.js'

/**
 * shards:split as named steps over the journal. The chosen shard databases move,
 * numbers kept, onto the targets:
 *
 *   copy          the targets follow the source as replicas while writes go on
 *   registry      the moved shards are routed to the targets, which still follow the
 *                 source: a client that hears of it late writes to the source, and
 *                 the write still reaches a target
 *   hold          clients are kept off the moved databases on the source until none
 *                 comes back (bounded by --hold; past it the split is rolled back)
 *   fence         the source is paused and fenced (a fence that does not expire)
 *   catch-up      every target's offset is proven equal to the source's
 *   promote       the targets stop following
 *   release       in one step no client can come between, the fence is lifted and
 *                 the source drops the moved databases: from here on, any key in
 *                 one of them is a write that landed after the cut-over
 *   grace         after --grace, a moved database with keys on the source is
 *                 reported (exit 3) and recorded for shards:reconcile
 *   clean-target  each target drops the databases it does not own
 */

export interface SplitRequest {
  source: Endpoint
  targets: Endpoint[]
  shards?: string[]
  targetReplicas: Endpoint[]
  maxPauseMs: number
  graceMs: number
  holdMs: number
  /** How long no client may come back to a moved database before the hold counts as clear. */
  quietMs: number
  keepSource: boolean
  /**
   * Targets and target replicas that --spawn will start (with the source's settings):
   * planned as empty instances with the source's databases, not probed.
   */
  toBeStarted?: Endpoint[]
}

export interface SplitMove extends PlannedMove {
  db: number
  keys: number
  to: string
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
  /** Moved shards that end with fewer replicas than they have now (said in the plan and the confirmation). */
  fewerReplicas: {id: string; before: number; after: number}[]
  maxPauseMs: number
  graceMs: number
  holdMs: number
  quietMs: number
  keepSource: boolean
}

export interface SplitResult {
  plan: SplitPlan
  applied: boolean
  /** How long writes to the source were held: from the fence to its lift. */
  pauseMs?: number
  pauseExceeded?: boolean
  /** How long the moved shards took no writes: from the registry switch to the targets' promotion. */
  heldMs?: number
  /** Keys per source db found on a moved database after the cut-over (kept, see strays). */
  strayWrites: Record<string, number>
  strays: StrayWrites
  /** Source databases dropped at the cut-over. */
  droppedFromSource: number[]
  keptOnSource: number[]
  recovered?: 'rolled-forward' | 'rolled-back'
  /** The run failed half-way and finished or rolled back by itself (see --heal-within). */
  healed?: Healed
  /** Instances started with --spawn: stop them with their pid when they are retired. */
  spawned?: {port: number; pid: number; dir: string}[]
}

const at = (e: Endpoint, db: number): ShardAddress => ({host: e.host, port: e.port, db})

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
  const load = new Map<string, {keys: number; count: number}>([
    [source, {keys: 0, count: 0}],
    ...targets.map((t) => [t, {keys: 0, count: 0}] as const),
  ])
  for (const s of [...shards].sort((a, b) => b.keys - a.keys || compareIds(a.id, b.id))) {
    const [lightest] = [...load].sort(([, a], [, b]) => a.keys - b.keys || a.count - b.count)[0]
    const entry = load.get(lightest)!
    entry.keys += s.keys
    entry.count += 1
    if (lightest !== source) moves.set(s.id, lightest)
  }
  return moves
}

async function checkEmpty(client: Redis, key: string, role: string): Promise<void> {
  const used = [...(await keysPerDb(client))].filter(([, n]) => n > 0)
  if (used.length > 0) {
    const total = used.reduce((sum, [, n]) => sum + n, 0)
    throw usageError(
      `${role} ${key} is not empty: ${plural(total, 'key')} in db ${used.map(([db]) => db).join(', ')}`,
      'a split copies onto empty instances only; nothing was changed',
    )
  }
}

export async function planSplit(registry: Registry, pool: ConnectionPool, request: SplitRequest): Promise<SplitPlan> {
  const sourceKey = instanceKey(request.source)
  const registryAt = {host: registry.client.options.host ?? '', port: registry.client.options.port ?? 0}
  if (sameInstance(registryAt, request.source)) {
    throw usageError(`${sourceKey} also holds the registry`, 'pausing its writes would pause the registry too')
  }
  if (request.targets.length === 0) throw usageError('no target', 'name one with --to HOST:PORT, or use --spawn')
  const targetKeys = request.targets.map(instanceKey)
  const canonicalTargets = request.targets.map(canonicalInstance)
  for (const [i, key] of targetKeys.entries()) {
    if (sameInstance(request.targets[i], request.source)) throw usageError(`target ${key} is the source itself`)
    if (canonicalTargets.indexOf(canonicalTargets[i]) !== i) throw usageError(`target ${key} is named twice`)
    if (sameInstance(request.targets[i], registryAt)) {
      throw usageError(`target ${key} holds the registry`, 'a target is emptied when it starts to follow the source')
    }
  }
  if (request.targetReplicas.length > 0 && request.targets.length !== 1) {
    throw usageError('--to-replica needs exactly one --to', 'split onto several targets without replicas, then add them')
  }

  const shards = await registry.wholeSnapshot('a split')
  const onSource = shards.filter((s) => sameInstance(s.master, request.source))
  if (onSource.length === 0)
    throw usageError(`no shard in the registry has its master on ${sourceKey}`, 'name the master instance of some shards (see shards:list)')
  // The registry's switch compares its masters with the source as named: it must be named as the registry names it.
  const spelled = onSource.find((s) => instanceKey(s.master) !== sourceKey)
  if (spelled) {
    throw usageError(
      `the registry names ${sourceKey} ${instanceKey(spelled.master)} (shard ${spelled.id})`,
      onSource.every((s) => instanceKey(s.master) === instanceKey(spelled.master))
        ? `name the source ${instanceKey(spelled.master)}, as the registry does`
        : 'the registry names this instance in more than one way: repoint its shards to one name first (shards:check)',
    )
  }
  // A database holds one shard (SPEC §4.9): moving one of two would drop the other's data with it.
  const [shared] = sharedDatabases(onSource)
  if (shared) {
    throw usageError(
      `db ${shared.database.replace(/^.*\//, '')} of ${sourceKey} holds two shards, ${shared.ids.sort(compareIds).join(' and ')}`,
      'a database holds one shard: remove or repoint one of them first (shards:check lists them all)',
    )
  }
  for (const id of request.shards ?? []) {
    const shard = shards.find((s) => s.id === id)
    if (!shard) throw usageError(`unknown shard "${id}"`, 'see shards:list')
    if (!sameInstance(shard.master, request.source))
      throw usageError(`shard ${id} is not on ${sourceKey} (its master is ${formatAddress(shard.master)})`)
  }
  // A target is wiped when it starts to follow the source: no shard may live on it, in any role.
  for (const key of [...targetKeys, ...request.targetReplicas.map(instanceKey)]) {
    const user = shards.find((s) => [s.master, ...s.replicas, ...s.persist].some((n) => sameInstance(n, endpointOf(key))))
    if (user)
      throw usageError(
        `${key} already serves shard ${user.id} (see shards:list)`,
        'a split copies onto instances no shard uses; nothing was changed',
      )
  }
  if (request.shards && request.shards.length === onSource.length) {
    throw usageError(
      `--shards names every shard of ${sourceKey}`,
      'a split leaves some shards on the source; to move all, promote a replica instead',
    )
  }

  const source = await reachInstance(pool, request.source, 'the source')
  const sourceRole = await replicationOf(source)
  if (sourceRole.role !== 'master')
    throw usageError(`the source ${sourceKey} is not a master`, 'the registry and the fleet disagree: see shards:list')
  const sourceKeys = await keysPerDb(source)
  const maxUsedDb = Math.max(0, ...sourceKeys.keys(), ...onSource.map((s) => s.master.db))

  const started = new Set((request.toBeStarted ?? []).map(instanceKey))
  for (const target of request.targets.filter((t) => !started.has(instanceKey(t)))) {
    const client = await reachInstance(pool, target, 'the target')
    const info = await replicationOf(client)
    if (info.role !== 'master' && !follows(info, request.source)) {
      throw usageError(
        `target ${instanceKey(target)} is a replica of ${info.masterHost}:${info.masterPort}`,
        'a target must be a standalone, empty instance',
      )
    }
    await checkEmpty(client, instanceKey(target), 'target')
    if (await writableAsReplica(client)) throw writableReplicaRefusal(instanceKey(target), 'target')
    const databases = await databaseCount(client, target)
    if (databases <= maxUsedDb) {
      throw usageError(
        `target ${instanceKey(target)} has ${plural(databases, 'database')}; the source uses db ${maxUsedDb}`,
        `start it with --databases ${maxUsedDb + 1} or more (or use --spawn)`,
      )
    }
  }
  for (const replica of request.targetReplicas.filter((r) => !started.has(instanceKey(r)))) {
    const client = await reachInstance(pool, replica, 'the target replica')
    const info = await replicationOf(client)
    if (!follows(info, request.targets[0])) await checkEmpty(client, instanceKey(replica), 'target replica')
    if (await writableAsReplica(client)) throw writableReplicaRefusal(instanceKey(replica), 'target replica')
  }

  const withKeys = onSource.map((s) => ({shard: s, id: s.id, keys: sourceKeys.get(s.master.db) ?? 0}))
  const assignment = assignMoves(withKeys, targetKeys, request.shards)
  const replicas = request.targetReplicas.map(instanceKey)
  const moves: SplitMove[] = withKeys
    .filter((s) => assignment.has(s.id))
    .map(({shard, keys}) => {
      const to = endpointOf(assignment.get(shard.id)!)
      return {
        id: shard.id,
        db: shard.master.db,
        keys,
        to: instanceKey(to),
        before: nodesOf(shard),
        after: {
          master: formatAddress(at(to, shard.master.db)),
          replicas: request.targetReplicas.map((r) => formatAddress(at(r, shard.master.db))),
          persist: [],
        },
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
    fewerReplicas: moves
      .filter((m) => m.after.replicas.length + m.after.persist.length < m.before.replicas.length + m.before.persist.length)
      .map((m) => ({id: m.id, before: m.before.replicas.length + m.before.persist.length, after: m.after.replicas.length})),
    maxPauseMs: request.maxPauseMs,
    graceMs: request.graceMs,
    holdMs: request.holdMs,
    quietMs: request.quietMs,
    keepSource: request.keepSource,
  }
}

/** How long a recovery waits for the targets of a fenced source to hold every byte. */
const FENCED_CATCH_UP_MS = 30_000

/**
 * Wait until every target holds its full copy and applies the live stream, reporting
 * progress. A link that is up is not proof of streaming (see waitForStreaming): each
 * target must apply a write the source made after its link came up.
 */
async function waitForCopy(source: Redis, targets: Redis[], onCopy?: (read: number, total: number) => void): Promise<void> {
  let lastBytes = -1
  let stalledSince = Date.now()
  for (;;) {
    const states = await Promise.all(targets.map(async (t) => copyProgress(parseInfo(await t.info('replication')))))
    if (states.every((s) => s.linkUp && !s.syncing)) {
      const streaming = await Promise.all(targets.map((t) => waitForStreaming(source, t, Date.now() + 60_000)))
      if (streaming.every(Boolean)) return
      throw new ShardctlError('a target linked up but did not apply the live stream within 60 s', {
        code: 'ESTALLED',
        hint: "check the targets' logs; run the split again to roll it back",
      })
    }
    const read = states.reduce((sum, s) => sum + s.readBytes, 0)
    const total = states.reduce((sum, s) => sum + Math.max(0, s.totalBytes), 0)
    if (read !== lastBytes) {
      lastBytes = read
      stalledSince = Date.now()
      onCopy?.(read, total)
    } else if (Date.now() - stalledSince > 60_000) {
      throw new ShardctlError('the live copy made no progress for 60 s', {
        code: 'ESTALLED',
        hint: "check the targets' logs; run the split again to roll it back",
      })
    }
    await sleep(100)
  }
}

/** Every instance a split acts on: the source, the targets and their replicas. */
export function splitInstances(plan: SplitPlan): Endpoint[] {
  return SplitRun.instances(plan)
}

/**
 * The clocks of one split, kept across the attempts of a run that heals: the write
 * pause of the source (fence to lift, added up), and when the moved shards were
 * switched (they take no writes until their targets are promoted).
 */
interface SplitTiming {
  clock: PauseClock
  switchedAt?: number
}

/** One split in progress: its connections (all opened before the journal begins), journal, clocks and steps. */
class SplitRun {
  readonly result: SplitResult
  private readonly sourceEp: Endpoint
  private readonly movedDbs: number[]
  private source?: ScriptedRedis
  private targets: Redis[] = []
  onCopy?: (read: number, total: number) => void
  /** Taken once no client is left on the moved databases, right before the fence (Sentinel lets go of the source). */
  release?: ReleaseHook

  constructor(
    private readonly registry: Registry,
    private readonly pool: ConnectionPool,
    private readonly journal: Journal<SplitPlan>,
    readonly plan: SplitPlan,
    private readonly timing: SplitTiming = {clock: new PauseClock()},
    /** In a heal attempt: the end of the heal's bound, where a wait for a host ends too. */
    private readonly healDeadline?: number,
  ) {
    this.sourceEp = endpointOf(plan.source)
    this.movedDbs = plan.moves.map((m) => m.db)
    this.result = {plan, applied: false, strayWrites: {}, strays: {}, droppedFromSource: [], keptOnSource: []}
  }

  static instances(plan: SplitPlan): Endpoint[] {
    return [plan.source, ...plan.targets.flatMap((t) => [t.instance, ...t.replicas])].map(endpointOf)
  }

  async connect(): Promise<void> {
    this.source = await this.pool.get(this.sourceEp).catch(() => undefined)
    this.targets = await Promise.all(this.plan.targets.map((t) => this.pool.get(endpointOf(t.instance))))
    await Promise.all(this.plan.targets.flatMap((t) => t.replicas.map((r) => this.pool.get(endpointOf(r)))))
  }

  get clock(): PauseClock {
    return this.timing.clock
  }

  private get sourceClient(): ScriptedRedis {
    if (!this.source)
      throw new ShardctlError(`the source ${this.plan.source} does not answer`, {
        code: 'EUNREACHABLE',
        hint: 'bring it back, then run the command again',
      })
    return this.source
  }

  private previousFencing(): FencingSettings | undefined {
    return stepResult<{previous: FencingSettings}>(this.journal.entry, 'fence')?.previous
  }

  private reversed(): PlannedMove[] {
    return this.plan.moves.map((m) => ({id: m.id, before: m.after, after: m.before}))
  }

  /** The source's shards (moved and staying) and each target's, as planned: the compare-and-set covers them all. */
  private instanceSets(switched: boolean): {instance: string; ids: string[]}[] {
    const {plan} = this
    const moved = (t: string) => plan.moves.filter((m) => m.to === t).map((m) => m.id)
    const staying = plan.staying.map((s) => s.id)
    return [
      {instance: plan.source, ids: switched ? staying : [...staying, ...plan.moves.map((m) => m.id)]},
      ...plan.targets.map((t) => ({instance: t.instance, ids: switched ? moved(t.instance) : []})),
    ]
  }

  /** Each step, by name: the normal flow and a recovery run the same functions. */
  readonly actions: Record<SplitAction | 'copy' | 'registry' | 'undo-registry', () => Promise<unknown>> = {
    copy: () =>
      this.journal.step('copy', async () => {
        for (const [i, t] of this.plan.targets.entries()) {
          await makeReplica(this.targets[i], this.sourceEp)
          for (const r of t.replicas) await makeReplica(await this.pool.get(endpointOf(r)), endpointOf(t.instance))
        }
        await waitForCopy(this.sourceClient, this.targets, this.onCopy)
        // A target that just loaded its copy still works through the stream buffered
        // meanwhile: let it, before the pause, so that the pause holds only the last bytes.
        await Promise.all(
          this.targets.map((t) => waitForOffset(this.sourceClient, t, Date.now() + PRE_PAUSE_WAIT_MS, PRE_PAUSE_SLACK_BYTES)),
        )
      }),
    registry: async () => {
      const switched = await this.journal.step('registry', () =>
        switchOrFindOut(this.registry, this.plan.moves, 'after', () =>
          this.registry.repointShards(this.plan.moves, this.instanceSets(false), 'shards.split', {
            from: this.plan.source,
            moves: Object.fromEntries(this.plan.moves.map((m) => [m.id, m.to])),
          }),
        ),
      )
      this.timing.switchedAt = Date.now()
      return switched
    },
    hold: async () => {
      this.timing.switchedAt ??= Date.now()
      const outcome = await this.journal.step(
        'hold',
        () => holdClientsOff(this.sourceClient, new Set(this.movedDbs), this.plan.holdMs, this.plan.quietMs),
        {keepResult: true},
      )
      if (!outcome.clear) {
        await this.abort(
          'clients',
          new ShardctlError(
            `clients kept using the moved databases on ${this.plan.source} for --hold ${this.plan.holdMs} ms (${outcome.lingering.join(', ')}); the split was rolled back, nothing was lost`,
            {
              code: 'EHELD',
              exitCode: ExitCode.unhealthy,
              hint: 'those clients do not reload their routing on the event or on a dropped connection: fix or restart them, or raise --hold, then run the split again',
            },
          ),
          {undoRegistry: true},
        )
      }
    },
    fence: () => fenceStep(this.journal, this.sourceClient, this.plan.source, this.plan.maxPauseMs, this.clock),
    'catch-up': () =>
      this.journal.step('catch-up', async () => {
        const unpromoted = await Promise.all(this.targets.map(async (t) => ((await replicationOf(t)).role === 'master' ? undefined : t)))
        const caught = await catchUp(
          this.sourceClient,
          unpromoted.filter((t): t is Redis => t !== undefined),
          waitUntil(FENCED_CATCH_UP_MS, this.healDeadline),
        )
        if (!caught.caughtUp) throw notCaughtUp(this.plan, caught, false)
      }),
    promote: () =>
      this.journal.step('promote', async () => {
        await Promise.all(this.targets.map((t) => makeMaster(t)))
        if (this.timing.switchedAt !== undefined) this.result.heldMs = Date.now() - this.timing.switchedAt
      }),
    release: () =>
      this.journal.step('release', async () => {
        const source = this.sourceClient
        const previous = this.previousFencing() ?? DEFAULT_FENCING
        if (this.plan.keepSource) {
          await liftFence(source, previous)
          this.result.keptOnSource = [...this.movedDbs]
        } else {
          await releaseMovedDbs(this.registry, source, this.plan.source, previous, this.movedDbs)
          this.result.droppedFromSource = [...this.movedDbs]
        }
        this.clock.end()
      }),
    'keep-source': async () => {
      this.result.keptOnSource = [...this.movedDbs]
    },
    lift: () =>
      this.journal.step('lift', async () => {
        // Never recorded (the fence predates this journal): Redis's defaults.
        const previous = this.previousFencing() ?? DEFAULT_FENCING
        await liftFence(this.sourceClient, previous)
        this.clock.end()
      }),
    grace: () =>
      this.journal.step(
        'grace',
        async () => {
          // Kept on purpose, or gone (a source that is down takes no writes): nothing to look for.
          if (this.plan.keepSource || this.result.keptOnSource.length > 0 || !this.source) {
            await sleep(this.plan.graceMs)
            return this.result.strays
          }
          const moves = this.plan.moves.map((m) => ({id: m.id, db: m.db, to: m.after.master}))
          await graceWatch(this.registry, this.sourceClient, this.plan.source, moves, this.plan.graceMs, this.result)
          return this.result.strays
        },
        {keepResult: true},
      ),
    'clean-target': () =>
      this.journal.step('clean-target', async () => {
        for (const [i, t] of this.plan.targets.entries()) {
          const owned = new Set(this.plan.moves.filter((m) => m.to === t.instance).map((m) => m.db))
          const extra = [...(await keysPerDb(this.targets[i])).keys()].filter((db) => !owned.has(db))
          await assertUnused(this.registry, t.instance, extra)
          for (const db of extra) await flushDb(this.targets[i], db)
        }
      }),
    'detach-targets': () =>
      this.journal.step('detach-targets', async () => {
        const {shards} = await this.registry.snapshot()
        for (const [i, t] of this.plan.targets.entries()) {
          const user = shards.find((s) => instanceKey(s.master) === t.instance)
          if (user)
            throw new ShardctlError(`will not empty ${t.instance}: the registry routes shard ${user.id} there`, {
              code: 'ECONFLICT',
              hint: 'look at shards:list',
            })
          // Empty at planning time, so everything on it is the split's own copy.
          await makeMaster(this.targets[i])
          await this.targets[i].flushall('ASYNC')
        }
      }),
    'undo-registry': () =>
      this.journal.step('undo-registry', () =>
        switchOrFindOut(this.registry, this.reversed(), 'after', () =>
          this.registry.repointShards(this.reversed(), this.instanceSets(true), 'shards.split-undone', {from: this.plan.source}),
        ),
      ),
  }

  async run(names: (SplitAction | 'copy' | 'registry' | 'undo-registry')[]): Promise<void> {
    for (const name of names) await this.actions[name]()
  }

  /** Roll a split back before its cut-over: routing back to the source if it had moved, the targets emptied. */
  async abort(reason: string, error: ShardctlError, options: {undoRegistry?: boolean; lift?: boolean} = {}): Promise<never> {
    if (options.lift) await this.actions.lift()
    if (options.undoRegistry) await this.actions['undo-registry']()
    await this.actions['detach-targets']()
    await this.registry.apply(new Change(), 'split.aborted', {from: this.plan.source, reason})
    await this.journal.close()
    throw error
  }

  finish(recovered?: 'rolled-forward'): Promise<SplitResult> {
    const details = {from: this.plan.source, heldMs: this.result.heldMs}
    return finishCutover(this.registry, this.journal, this.clock, this.plan.maxPauseMs, this.result, 'split.finished', details, recovered)
  }

  async normal(): Promise<SplitResult> {
    const {plan} = this
    await this.actions.copy()
    let switched: boolean
    try {
      switched = (await this.actions.registry()) as boolean
    } catch (error) {
      if ((error as ShardctlError).code !== 'ECONFLICT') throw error
      return this.abort(
        'registry changed',
        new ShardctlError(`${(error as Error).message}; the split was undone`, {
          code: 'ECONFLICT',
          hint: 'look at shards:list, then run the command again',
        }),
      )
    }
    if (!switched)
      return this.abort(
        'registry refused',
        new ShardctlError('the registry did not take the switch; the split was undone', {code: 'EFAILED', hint: 'run the command again'}),
      )
    await this.actions.hold()
    if (this.release) {
      // Refused (a Sentinel would not let go): nothing is fenced yet, the targets still follow; routing goes back.
      await releaseStep(this.journal, this.release).catch((error: ShardctlError) =>
        this.abort('cut-over refused', error, {undoRegistry: true}),
      )
    }
    await this.actions.fence()
    const caught = await this.journal.step('catch-up', () =>
      catchUp(this.sourceClient, this.targets, this.clock.deadline(plan.maxPauseMs / 2)),
    )
    if (!caught.caughtUp) {
      // The targets still follow: lifting the fence and routing back lose nothing.
      await this.abort('catch-up', notCaughtUp(plan, caught, true), {lift: true, undoRegistry: true})
    }
    await this.run(['promote', 'release', 'grace', 'clean-target'])
    return this.finish()
  }
}

function notCaughtUp(plan: SplitPlan, caught: CatchUp, undone: boolean): ShardctlError {
  return notCaughtUpLine(caught, {
    replicas: `the targets (${plan.targets.map((t) => t.instance).join(', ')})`,
    when: undone ? `within --max-pause ${plan.maxPauseMs} ms` : 'in time',
    undone: undone ? `writes resumed on ${plan.source}, the registry routes to it again and the targets were emptied` : undefined,
    fencedHint: 'the source stays fenced; check the targets, then run the command again',
  })
}

/** What the command gives a split: progress callbacks, and how it heals a failure half-way. */
export interface SplitOptions {
  onStep?: (step: string) => void
  onCopy?: (read: number, total: number) => void
  heal?: HealPolicy
  /**
   * Sentinel lets go of the source: a step of the journal once no client is left on the
   * moved databases, right before the fence; a refusal rolls the split back.
   */
  release?: ReleaseHook
  /** The targets kept from being elected by Sentinel during the copy: the journal's first step. */
  neverElect?: NeverElectHook
}

export async function executeSplit(
  registry: Registry,
  lock: OperatorLock,
  pool: ConnectionPool,
  plan: SplitPlan,
  options: SplitOptions,
): Promise<SplitResult> {
  const journal = await Journal.begin(registry, lock, 'split', plan.source, plan)
  journal.onStep = options.onStep
  const timing: SplitTiming = {clock: new PauseClock()}
  const run = new SplitRun(registry, pool, journal, plan, timing)
  run.onCopy = options.onCopy
  run.release = options.release
  return healSplit(registry, pool, journal, timing, options, async () => {
    await run.connect()
    if (options.neverElect) await neverElectStep(journal, options.neverElect)
    return run.normal()
  })
}

export function splitJournalMatches(entry: JournalEntry, source: Endpoint): boolean {
  const plan = entry.plan as SplitPlan
  return entry.type === 'split' && (plan.source === instanceKey(source) || plan.targets.some((t) => t.instance === instanceKey(source)))
}

/**
 * What the instances of a split say now. An instance counts as reachable only if it
 * answers every question asked of it: a source whose fencing cannot be read is not
 * known to be unfenced.
 */
async function splitNodeFacts(pool: ConnectionPool, plan: SplitPlan): Promise<{source: NodeFacts; targets: NodeFacts[]}> {
  const sourceEp = endpointOf(plan.source)
  const [source, targets] = await Promise.all([
    sourceFacts(pool, sourceEp),
    Promise.all(
      plan.targets.map(async (t): Promise<NodeFacts> => {
        try {
          const info = await replicationOf(await pool.get(endpointOf(t.instance)))
          return {reachable: true, role: info.role, followsPeer: follows(info, sourceEp)}
        } catch {
          return {reachable: false}
        }
      }),
    ),
  ])
  return {source, targets}
}

/**
 * Finish or roll back a split a killed, stopped or overtaken run left behind: the run
 * that wrote the journal is cut off first; then the journal and the live facts decide
 * (decideSplitRecovery), and the same step functions as a normal run act. A host that
 * does not answer is waited for, within the heal policy's bound.
 */
export async function recoverSplit(
  registry: Registry,
  lock: OperatorLock,
  pool: ConnectionPool,
  entry: JournalEntry,
  options: Omit<SplitOptions, 'onCopy'> = {},
): Promise<SplitResult> {
  const plan = entry.plan as SplitPlan
  plan.holdMs ??= 10_000
  plan.quietMs ??= MIN_QUIET_MS
  plan.fewerReplicas ??= []
  await cutOffPreviousOwner(pool, entry, SplitRun.instances(plan), lock.token)
  const journal = await Journal.resume(registry, lock, entry as JournalEntry<SplitPlan>)
  journal.onStep = options.onStep
  const timing: SplitTiming = {clock: new PauseClock()}
  return healSplit(registry, pool, journal, timing, options, () => finishOrRollBack(registry, pool, journal, timing))
}

function healSplit(
  registry: Registry,
  pool: ConnectionPool,
  journal: Journal<SplitPlan>,
  timing: SplitTiming,
  options: Pick<SplitOptions, 'heal'>,
  run: () => Promise<SplitResult>,
): Promise<SplitResult> {
  return heal({
    registry,
    pool,
    journal,
    policy: options.heal,
    lossless: true,
    run,
    again: (deadline) => finishOrRollBack(registry, pool, journal, timing, deadline),
    left: () => stillRefusingAfterSplit(registry, pool, journal.entry),
  })
}

/** The recovery itself, over a journal this run owns: decide from the journal and the facts, then act. */
async function finishOrRollBack(
  registry: Registry,
  pool: ConnectionPool,
  journal: Journal<SplitPlan>,
  timing: SplitTiming,
  healDeadline?: number,
): Promise<SplitResult> {
  const {plan} = journal.entry
  const [registryNow, nodes] = await Promise.all([registryState(registry, plan.moves), splitNodeFacts(pool, plan)])
  const decision = decideSplitRecovery(journal.entry, {registry: registryNow, ...nodes})
  const run = async () => {
    const run = new SplitRun(registry, pool, journal, plan, timing, healDeadline)
    await run.connect()
    return run
  }
  return settleRecovery(registry, journal, decision, run, ['split.rolled-back', {from: plan.source}])
}

/**
 * What refuses writes when a split stops half-way: the source while its fence is on
 * (with the shards routed to it), and, once the registry routes the moved shards to
 * the targets, each target that still follows the source (READONLY) or does not answer.
 * Read from the fleet; where the registry cannot be read, the journal says whether it
 * was switched.
 */
async function stillRefusingAfterSplit(registry: Registry, pool: ConnectionPool, entry: JournalEntry<SplitPlan>): Promise<StillRefusing[]> {
  const {plan} = entry
  const [registryNow, nodes] = await Promise.all([registryStateIfKnown(registry, plan.moves), splitNodeFacts(pool, plan)])
  const switched =
    registryNow === undefined ? stepStarted(entry, 'registry') && !stepDone(entry, 'undo-registry') : registryNow !== 'before'
  const since = fencedSince(entry)
  const onSource = [...plan.staying.map((s) => s.id), ...(switched ? [] : plan.moves.map((m) => m.id))]
  const refusing: StillRefusing[] = []
  if (!nodes.source.reachable)
    refusing.push({instance: plan.source, why: 'silent', shards: onSource, ...(since ? {fencedSince: since} : {})})
  else if (nodes.source.fenced)
    refusing.push({instance: plan.source, why: 'fence', shards: onSource, ...(since ? {fencedSince: since} : {})})
  if (switched) {
    for (const [i, t] of plan.targets.entries()) {
      const moved = plan.moves.filter((m) => m.to === t.instance).map((m) => m.id)
      const facts = nodes.targets[i]
      if (!facts.reachable) refusing.push({instance: t.instance, why: 'silent', shards: moved})
      else if (facts.role !== 'master') refusing.push({instance: t.instance, why: 'replica', shards: moved})
    }
  }
  return refusing
}

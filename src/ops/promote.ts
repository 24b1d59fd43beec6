import type {Redis} from 'ioredis'

import {ExitCode, ShardctlError, usageError} from '../errors.js'
import type {ConnectionPool} from '../fleet/connect.js'
import type {ReplicationInfo} from '../fleet/info.js'
import {
  DEFAULT_FENCING,
  type FencingSettings,
  follows,
  isWriteFence,
  liftFence,
  makeMaster,
  makeReplica,
  readFencing,
  replicationOf,
  setFencing,
  writableAsReplica,
} from '../fleet/replication.js'
import {type Endpoint, type ShardAddress, endpointOf, formatAddress, instanceKey, parseInstance} from '../registry/address.js'
import {Change, type Registry, type ShardNodes} from '../registry/registry.js'
import {type Shard, validateShardId} from '../registry/schema.js'
import {
  type CatchUp,
  type HealPolicy,
  type Healed,
  PauseClock,
  type PlannedMove,
  type ReleaseHook,
  type StillRefusing,
  catchUp,
  cutOffPreviousOwner,
  fenceStep,
  heal,
  nodesOf,
  notCaughtUp as notCaughtUpLine,
  registryState,
  registryStateIfKnown,
  releaseStep,
  switchOrFindOut,
  waitUntil,
  writableReplicaRefusal,
} from './cutover.js'
import {Journal, type JournalEntry, fencedSince, pendingOperation, readJournal, stepDone, stepResult, stepStarted} from './journal.js'
import type {OperatorLock} from './lock.js'
import {type NodeFacts, type PromoteAction, decidePromoteRecovery, refusalError} from './recovery.js'
import {plural} from '../ui/terminal.js'

/**
 * shards:promote as named steps over the journal. Many shards live in the databases
 * of one redis-server, so promoting is always per instance: every shard whose master
 * is on that instance moves with it.
 *
 * Graceful (zero loss), in the order of Redis's FAILOVER and Vitess's planned
 * reparent: the old master is fenced first (paused, then made to refuse writes by a
 * means that does not expire), the replica's offset is proven equal to the fenced
 * master's, the registry switches (compare-and-set), the replica becomes master, the
 * old master follows it, the fence is lifted, the other replicas follow.
 * Emergency (--force): the master is gone; promote the most caught-up replica.
 */

export interface PromoteRequest {
  /** A shard id, or the master instance, host:port. */
  target: string
  replica?: Endpoint
  maxPauseMs: number
  maxLagBytes: number
  force: boolean
  yes: boolean
}

export interface ShardMove extends PlannedMove {
  db: number
}

export interface PromotePlan {
  mode: 'graceful' | 'emergency'
  oldMaster: string
  newMaster: string
  /** Replicas of the old master that will follow the new one. */
  others: string[]
  shards: ShardMove[]
  masterReachable: boolean
  /** Bytes the chosen replica is behind the master when planned (unknown if the master is down). */
  lagBytes: number | null
  /** Why each other candidate was not chosen. */
  candidates: {instance: string; chosen: boolean; offset?: number; note: string}[]
  maxPauseMs: number
}

export interface PromoteResult {
  plan: PromotePlan
  applied: boolean
  /** How long writes to the instance were held (graceful): from the fence to its lift. */
  pauseMs?: number
  /** The pause ran past --max-pause (the registry or this process was slow): reported, never hidden. */
  pauseExceeded?: boolean
  /** From the fence to the new master answering as master. */
  promoteMs?: number
  /** Emergency: replication bytes the new master may have missed, if it can be known. */
  missedBytes?: number | null
  repointed: string[]
  unreachable: string[]
  recovered?: 'rolled-forward' | 'rolled-back'
  /** The run failed half-way and finished or rolled back by itself (see --heal-within). */
  healed?: Healed
  /** The old master's min-replicas-* settings, given to the new master (graceful). */
  fencing?: Record<string, string>
}

const at = (e: Endpoint, db: number): ShardAddress => ({host: e.host, port: e.port, db})

/** Which instance a target names: a shard's master instance, or host:port itself. */
export async function resolveInstance(registry: Registry, target: string): Promise<{instance: Endpoint; shardId?: string}> {
  if (target.includes(':') || target.startsWith('redis')) {
    const instance = parseInstance(target)
    return {instance: {host: instance.host, port: instance.port}}
  }
  const shard = await registry.shard(validateShardId(target))
  return {instance: {host: shard.master.host, port: shard.master.port}, shardId: shard.id}
}

async function probe(pool: ConnectionPool, e: Endpoint): Promise<{client?: Redis; info?: ReplicationInfo; error?: string}> {
  try {
    const client = await pool.get(e)
    return {client, info: await replicationOf(client)}
  } catch (error) {
    return {error: (error as Error).message}
  }
}

function planMoves(shards: Shard[], oldMaster: Endpoint, newMaster: Endpoint, keepOldAsReplica: boolean): ShardMove[] {
  const isNew = (a: ShardAddress) => instanceKey(a) === instanceKey(newMaster)
  return shards.map((s) => {
    const replicas = s.replicas.filter((r) => !isNew(r))
    const persist = s.persist.filter((r) => !isNew(r))
    if (keepOldAsReplica) replicas.unshift(at(oldMaster, s.master.db))
    return {
      id: s.id,
      db: s.master.db,
      before: nodesOf(s),
      after: {
        master: formatAddress(at(newMaster, s.master.db)),
        replicas: replicas.map(formatAddress),
        persist: persist.map(formatAddress),
      },
    }
  })
}

/** Decide what a promote would do, checking everything that can be checked before touching anything. */
export async function planPromote(registry: Registry, pool: ConnectionPool, request: PromoteRequest): Promise<PromotePlan> {
  const {instance: master} = await resolveInstance(registry, request.target)
  const masterKey = instanceKey(master)
  const registryAt = instanceKey({host: registry.client.options.host ?? '', port: registry.client.options.port ?? 0})
  if (registryAt === masterKey) {
    throw usageError(`${masterKey} also holds the registry`, 'pausing its writes would pause the registry too; move the registry first')
  }
  const {shards} = await registry.snapshot()
  const moving = shards.filter((s) => instanceKey(s.master) === masterKey)
  if (moving.length === 0) {
    throw usageError(`no shard in the registry has its master on ${masterKey}`, 'name a shard id or a master instance from shards:list')
  }

  // Candidates: every instance the registry names as a replica of these shards.
  const kinds = new Map<string, 'slave' | 'persist'>()
  for (const s of moving) {
    for (const r of s.persist) kinds.set(instanceKey(r), 'persist')
    for (const r of s.replicas) kinds.set(instanceKey(r), 'slave')
  }
  const listed = new Set(kinds.keys())
  if (request.replica) {
    const named = instanceKey(request.replica)
    if (named === masterKey) throw usageError(`${named} is the master itself`, 'name one of its replicas')
    if (!kinds.has(named)) kinds.set(named, 'slave')
  }
  if (kinds.size === 0)
    throw usageError(
      `the shards on ${masterKey} have no replica in the registry`,
      'add replicas first (shards:add or shards:init --replica)',
    )

  const [masterState, ...states] = await Promise.all([probe(pool, master), ...[...kinds.keys()].map((k) => probe(pool, endpointOf(k)))])
  const masterReachable = masterState.info !== undefined
  const masterOffset = masterState.info?.offset

  if (masterReachable && masterState.info!.role !== 'master') {
    throw new ShardctlError(
      `${masterKey} is not a master (it replicates ${masterState.info!.masterHost}:${masterState.info!.masterPort})`,
      {
        code: 'ESTATE',
        hint: 'the registry and the fleet disagree: see shards:list',
      },
    )
  }
  // A replica of the registry's that answers as a master was made one by someone else (Sentinel, most often), and
  // may hold writes no other node has: whatever the mode, promoting another node would demote it under that one.
  const masters = [...kinds.keys()].filter((key, i) => listed.has(key) && states[i].info?.role === 'master')
  if (masters.length > 0) throw alreadyPromoted(masterKey, masters)
  const mode: PromotePlan['mode'] = masterReachable && !request.force ? 'graceful' : 'emergency'
  if (!masterReachable && !request.force) {
    throw new ShardctlError(`the master ${masterKey} does not answer: ${masterState.error}`, {
      code: 'EUNREACHABLE',
      hint: 'to fail over without it, use --force: the most caught-up replica is promoted, and writes it had not received are lost',
    })
  }
  if (masterReachable && request.force && !request.yes) {
    throw usageError(
      `the master ${masterKey} answers, but --force skips the zero-loss handoff`,
      'drop --force for a graceful promote, or add --yes to force it anyway',
    )
  }

  // Once demoted, the old master follows the new one: it must refuse writes as a replica.
  if (mode === 'graceful' && (await writableAsReplica(await pool.get(master)))) throw writableReplicaRefusal(masterKey, 'the master')

  const candidates = [...kinds.keys()].map((key, i) => {
    const {info, error} = states[i]
    let note = 'ok'
    let eligible = false
    if (!info) note = `unreachable: ${error}`
    else if (mode === 'graceful' && !follows(info, master)) note = `not a replica of ${masterKey}`
    else if (mode === 'graceful' && !info.linkUp) note = 'replication link down'
    else if (info.role !== 'slave') note = `not a replica (role ${info.role})`
    else if (mode === 'graceful' && masterOffset !== undefined && masterOffset - info.offset > request.maxLagBytes) {
      note = `lags ${plural(masterOffset - info.offset, 'byte')}, beyond --max-lag ${request.maxLagBytes}`
    } else eligible = true
    return {instance: key, info, eligible, note, kind: kinds.get(key)!}
  })

  let chosen
  if (request.replica) {
    chosen = candidates.find((c) => c.instance === instanceKey(request.replica!))!
    if (!chosen.eligible) {
      // Refused for what the fleet holds (lag, a dead or wrong replica), as a writable replica is: exit 3.
      throw new ShardctlError(`cannot promote ${chosen.instance}: ${chosen.note}`, {
        code: 'EREFUSED',
        exitCode: ExitCode.unhealthy,
        hint: 'name another replica with --replica, or omit it to let shardctl choose',
      })
    }
  } else {
    // Most caught up first; read replicas before persistence-only ones on a tie.
    const ranked = candidates
      .filter((c) => c.eligible)
      .sort((a, b) => b.info!.offset - a.info!.offset || (a.kind === b.kind ? 0 : a.kind === 'slave' ? -1 : 1))
    chosen = ranked[0]
    if (!chosen) {
      throw new ShardctlError(
        `no replica of ${masterKey} can be promoted: ${candidates.map((c) => `${c.instance} ${c.note}`).join('; ')}`,
        {
          code: 'EREFUSED',
          exitCode: ExitCode.unhealthy,
          hint: 'bring a replica in sync (shards:list shows links and lag), or raise --max-lag',
        },
      )
    }
  }
  const newMaster = endpointOf(chosen.instance)
  return {
    mode,
    oldMaster: masterKey,
    newMaster: chosen.instance,
    others: candidates.filter((c) => c !== chosen).map((c) => c.instance),
    shards: planMoves(moving, master, newMaster, mode === 'graceful'),
    masterReachable,
    lagBytes: masterOffset === undefined ? null : Math.max(0, masterOffset - chosen.info!.offset),
    candidates: candidates.map((c) => ({instance: c.instance, chosen: c === chosen, offset: c.info?.offset, note: c.note})),
    maxPauseMs: request.maxPauseMs,
  }
}

/** A registry replica that is a master already: never demoted by a promote, whatever its flags. */
function alreadyPromoted(masterKey: string, masters: string[]): ShardctlError {
  const [first] = masters
  return new ShardctlError(
    `${masters.join(', ')}, named as ${masters.length === 1 ? 'a replica' : 'replicas'} of ${masterKey} in the registry, ${masters.length === 1 ? 'answers' : 'answer'} as a master: Sentinel (or someone) made ${masters.length === 1 ? 'it' : 'them'} a master, and a promote would demote ${masters.length === 1 ? 'it' : 'them'}, losing the writes ${masters.length === 1 ? 'it' : 'they'} took`,
    {
      code: 'ESTATE',
      exitCode: ExitCode.unhealthy,
      hint: `nothing was changed; if Sentinel failed ${masterKey} over, run sentinel:follow (it moves the registry to ${first}); otherwise find out who promoted ${first} and point the registry at the master that holds the writes`,
    },
  )
}

/** How long a recovery (or the step after the switch) waits for a replica of a fenced master to hold every byte. */
const FENCED_CATCH_UP_MS = 30_000

/**
 * One promote in progress: its connections (all opened before the journal begins, so
 * that every action on them follows a lock check), its journal and its pause clock,
 * and each step as a function of its own.
 */
class PromoteRun {
  readonly result: PromoteResult
  private readonly oldEp: Endpoint
  private readonly newEp: Endpoint
  private old?: Redis
  private next?: Redis

  constructor(
    private readonly registry: Registry,
    private readonly pool: ConnectionPool,
    private readonly journal: Journal<PromotePlan>,
    readonly plan: PromotePlan,
    /** The write pause, kept across the attempts of a run that heals. */
    readonly clock = new PauseClock(),
    /** In a heal attempt: the end of the heal's bound, where a wait for a host ends too. */
    private readonly healDeadline?: number,
  ) {
    this.oldEp = endpointOf(plan.oldMaster)
    this.newEp = endpointOf(plan.newMaster)
    this.result = {plan, applied: false, repointed: [], unreachable: []}
  }

  /** Every instance the plan names. */
  static instances(plan: PromotePlan): Endpoint[] {
    return [plan.oldMaster, plan.newMaster, ...plan.others].map(endpointOf)
  }

  /** Connect to every instance that answers; the old master may be gone (emergency). */
  async connect(): Promise<void> {
    ;[this.old, this.next] = await Promise.all([
      this.pool.get(this.oldEp).catch(() => undefined),
      this.pool.get(this.newEp).catch(() => undefined),
    ])
    await Promise.all(this.plan.others.map((o) => this.pool.get(endpointOf(o)).catch(() => undefined)))
  }

  private get oldMaster(): Redis {
    if (!this.old) throw new ShardctlError(`the old master ${this.plan.oldMaster} does not answer`, {code: 'EUNREACHABLE'})
    return this.old
  }

  private get newMaster(): Redis {
    if (!this.next)
      throw new ShardctlError(`the new master ${this.plan.newMaster} does not answer`, {
        code: 'EUNREACHABLE',
        hint: 'bring it back, then run the command again',
      })
    return this.next
  }

  /** The fencing the old master had before this operation fenced it (from the journal once fenced). */
  private previousFencing(): FencingSettings | undefined {
    return stepResult<{previous: FencingSettings}>(this.journal.entry, 'fence')?.previous
  }

  private moves(): PlannedMove[] {
    return this.plan.shards
  }

  private switchRegistry(details: Record<string, unknown>) {
    const {plan} = this
    return switchOrFindOut(this.registry, this.moves(), 'after', () =>
      this.registry.repointShards(
        plan.shards,
        [
          {instance: plan.oldMaster, ids: plan.shards.map((s) => s.id)},
          {instance: plan.newMaster, ids: []},
        ],
        'shards.promoted',
        {
          mode: plan.mode,
          from: plan.oldMaster,
          to: plan.newMaster,
          shards: plan.shards.map((s) => s.id),
          ...(plan.mode === 'emergency' ? {removedMaster: plan.oldMaster} : {}),
          ...details,
        },
      ),
    )
  }

  /** Each step, by name: the normal flow and a recovery run the same functions. */
  readonly actions: Record<PromoteAction | 'fence' | 'verify', () => Promise<unknown>> = {
    fence: () => fenceStep(this.journal, this.oldMaster, this.plan.oldMaster, this.plan.maxPauseMs, this.clock),
    'catch-up': () =>
      this.journal.step('catch-up', async () => {
        const caught = await catchUp(this.oldMaster, [this.newMaster], waitUntil(FENCED_CATCH_UP_MS, this.healDeadline))
        if (!caught.caughtUp) throw notCaughtUp(this.plan, caught, 'in time')
      }),
    // After the switch, before the promotion: the new master holds every byte of the
    // fenced old one (a separate step, so a recovery knows it was never promoted).
    verify: () =>
      this.journal.step('verify', async () => {
        if (!this.old || this.plan.mode !== 'graceful') return
        const caught = await catchUp(this.old, [this.newMaster], waitUntil(FENCED_CATCH_UP_MS, this.healDeadline))
        if (!caught.caughtUp) throw notCaughtUp(this.plan, caught, 'after the registry switch')
      }),
    registry: () => this.journal.step('registry', () => this.switchRegistry({recovered: true})),
    promote: () =>
      this.journal.step('promote', async () => {
        await makeMaster(this.newMaster)
        this.result.promoteMs = this.clock.ms
      }),
    demote: () => this.journal.step('demote', () => makeReplica(this.oldMaster, this.newEp)),
    lift: () =>
      this.journal.step('lift', async () => {
        // Never recorded (the fence predates this journal): Redis's defaults.
        const previous = this.previousFencing() ?? DEFAULT_FENCING
        await liftFence(this.oldMaster, previous)
        this.clock.end()
      }),
    repoint: async () => Object.assign(this.result, await this.journal.step('repoint', () => this.repointOthers())),
    'carry-fencing': () =>
      this.journal.step('carry-fencing', async () => {
        // After the pause: a fenced new master refuses writes until its replicas attach.
        const previous = this.previousFencing()
        if (!previous || Number(previous['min-replicas-to-write']) === 0) return
        await setFencing(this.newMaster, previous)
        this.result.fencing = {...previous}
      }),
    'undo-registry': () =>
      this.journal.step('undo-registry', () => {
        const {plan} = this
        const back = plan.shards.map((m) => ({id: m.id, before: m.after, after: m.before}))
        return switchOrFindOut(this.registry, back, 'after', () =>
          this.registry.repointShards(
            back,
            [
              {instance: plan.oldMaster, ids: []},
              {instance: plan.newMaster, ids: plan.shards.map((s) => s.id)},
            ],
            'shards.promote-undone',
            {from: plan.oldMaster, to: plan.newMaster},
          ),
        )
      }),
    'restore-old': () => this.journal.step('restore-old', () => makeMaster(this.oldMaster)),
    'detach-new': () => this.journal.step('detach-new', () => makeReplica(this.newMaster, this.oldEp)),
  }

  private async repointOthers(): Promise<{repointed: string[]; unreachable: string[]}> {
    const results = await Promise.all(
      this.plan.others.map(async (key) => {
        try {
          await makeReplica(await this.pool.get(endpointOf(key)), this.newEp)
          return {key, ok: true}
        } catch {
          return {key, ok: false}
        }
      }),
    )
    return {repointed: results.filter((r) => r.ok).map((r) => r.key), unreachable: results.filter((r) => !r.ok).map((r) => r.key)}
  }

  async run(names: (PromoteAction | 'fence' | 'verify')[]): Promise<void> {
    for (const name of names) await this.actions[name]()
  }

  /** Undo a graceful promote that has not reached the registry: lift the fence, say why, close. */
  async abort(reason: string, error: ShardctlError): Promise<never> {
    if (this.previousFencing()) await this.journal.step('undo', () => liftFence(this.oldMaster, this.previousFencing()!))
    this.clock.end()
    await this.registry.apply(new Change(), 'promote.aborted', {from: this.plan.oldMaster, to: this.plan.newMaster, reason})
    await this.journal.close()
    throw error
  }

  pauseFigures(): void {
    this.result.pauseMs = this.clock.ms
    if (this.result.pauseMs !== undefined) this.result.pauseExceeded = this.result.pauseMs > this.plan.maxPauseMs
  }

  async graceful(): Promise<PromoteResult> {
    const {plan} = this
    await this.actions.fence()
    // Half the pause for the catch-up; the rest covers the switch, the promotion and the lift.
    const caught = await this.journal.step('catch-up', () =>
      catchUp(this.oldMaster, [this.newMaster], this.clock.deadline(plan.maxPauseMs / 2)),
    )
    if (!caught.caughtUp) await this.abort('catch-up', notCaughtUp(plan, caught, `within --max-pause ${plan.maxPauseMs} ms`, true))
    let switched: boolean
    try {
      switched = await this.journal.step('registry', () => this.switchRegistry({}))
    } catch (error) {
      if ((error as ShardctlError).code !== 'ECONFLICT') throw error
      // Someone changed the registry: it still names the old master, and the new one is
      // still its replica. Lifting the fence is the whole undo; nothing is lost.
      return this.abort(
        'registry changed',
        new ShardctlError(`${(error as Error).message}; the promote was undone: ${plan.oldMaster} is the master again and takes writes`, {
          code: 'ECONFLICT',
          hint: 'look at shards:list, then run the command again',
        }),
      )
    }
    if (!switched) {
      return this.abort(
        'registry refused',
        new ShardctlError(`the registry did not take the switch; the promote was undone: ${plan.oldMaster} is the master again`, {
          code: 'EFAILED',
          hint: 'run the command again',
        }),
      )
    }
    await this.run(['verify', 'promote', 'demote', 'lift', 'repoint', 'carry-fencing'])
    this.pauseFigures()
    await this.registry.apply(new Change(), 'promote.finished', {from: plan.oldMaster, to: plan.newMaster, pauseMs: this.result.pauseMs})
    await this.journal.close()
    return {...this.result, applied: true}
  }

  async emergency(): Promise<PromoteResult> {
    const {plan} = this
    const before = await replicationOf(this.newMaster)
    const old = plan.masterReachable ? this.old : undefined
    if (old) {
      // Forced while the master answers: it must stop taking writes at once.
      await this.actions.fence()
      this.result.missedBytes = Math.max(0, (await replicationOf(old)).offset - before.offset)
    } else {
      this.result.missedBytes = null
    }
    await this.journal.step('promote', () => makeMaster(this.newMaster))
    await this.journal.step('registry', () => this.switchRegistry({missedBytes: this.result.missedBytes}))
    if (old) await this.run(['demote', 'lift'])
    await this.actions.repoint()
    await this.journal.close()
    return {...this.result, applied: true}
  }
}

function notCaughtUp(plan: PromotePlan, caught: CatchUp, when: string, undone = false): ShardctlError {
  return notCaughtUpLine(caught, {
    replicas: plan.newMaster,
    when,
    undone: undone ? `writes resumed on ${plan.oldMaster}, nothing changed` : undefined,
    fencedHint: 'writes stay fenced; check the new master, then run the command again',
  })
}

/** What the command gives a promote: progress, and how it heals a failure half-way. */
export interface PromoteOptions {
  onStep?: (step: string) => void
  heal?: HealPolicy
  /** Asked when the old master is gone and only an emergency finish is left (--force); absent: refuse. */
  confirmEmergency?: (plan: PromotePlan) => Promise<boolean>
  /**
   * The old master's group taken out of Sentinel's hands: the first step once the
   * journal is open, so a run stopped after it leaves a journal that says so. Refused,
   * the promote ends there with nothing changed.
   */
  release?: ReleaseHook
}

/** Run a planned promote under the lock, step by step over the journal. */
export async function executePromote(
  registry: Registry,
  lock: OperatorLock,
  pool: ConnectionPool,
  plan: PromotePlan,
  options: Omit<PromoteOptions, 'confirmEmergency'>,
): Promise<PromoteResult> {
  const journal = await Journal.begin(registry, lock, 'promote', plan.oldMaster, plan)
  journal.onStep = options.onStep
  const run = new PromoteRun(registry, pool, journal, plan)
  return healPromote(registry, pool, journal, run.clock, options, async () => {
    await run.connect()
    if (options.release) await releaseStep(journal, options.release).catch((error: ShardctlError) => run.abort('sentinel refused', error))
    return plan.mode === 'emergency' ? run.emergency() : run.graceful()
  })
}

/** Whether a pending operation is about this target (its old or new master, or one of its shards). */
export function journalMatches(entry: JournalEntry, instance: Endpoint, shardId?: string): boolean {
  const plan = entry.plan as PromotePlan
  const key = instanceKey(instance)
  return entry.type === 'promote' && (plan.oldMaster === key || plan.newMaster === key || plan.shards.some((s) => s.id === shardId))
}

/**
 * What the old and the new master say now, for the recovery's decision. An instance
 * counts as reachable only if it answers every question asked of it: an old master
 * whose fencing cannot be read is not known to have lost its fence.
 */
async function promoteNodeFacts(pool: ConnectionPool, plan: PromotePlan): Promise<{old: NodeFacts; new: NodeFacts}> {
  const oldEp = endpointOf(plan.oldMaster)
  const newEp = endpointOf(plan.newMaster)
  const [oldState, newState] = await Promise.all([probe(pool, oldEp), probe(pool, newEp)])
  const fencing = oldState.client ? await readFencing(oldState.client).catch(() => undefined) : undefined
  const oldAnswers = oldState.info !== undefined && fencing !== undefined
  return {
    old: {
      reachable: oldAnswers,
      role: oldAnswers ? oldState.info?.role : undefined,
      followsPeer: oldAnswers && oldState.info ? follows(oldState.info, newEp) : undefined,
      fenced: fencing !== undefined && isWriteFence(fencing),
    },
    new: {
      reachable: Boolean(newState.info),
      role: newState.info?.role,
      followsPeer: newState.info ? follows(newState.info, oldEp) : undefined,
    },
  }
}

/**
 * Finish or roll back a promote a killed, stopped or overtaken run left behind. The
 * run that wrote the journal is cut off first; then the journal and the live facts
 * decide (decidePromoteRecovery), and the same step functions as a normal run act. A
 * host that does not answer is waited for, within the heal policy's bound.
 */
export async function recoverPromote(
  registry: Registry,
  lock: OperatorLock,
  pool: ConnectionPool,
  entry: JournalEntry,
  options: PromoteOptions = {},
): Promise<PromoteResult> {
  const plan = entry.plan as PromotePlan
  plan.maxPauseMs ??= 1000
  await cutOffPreviousOwner(pool, entry, PromoteRun.instances(plan), lock.token)
  const journal = await Journal.resume(registry, lock, entry as JournalEntry<PromotePlan>)
  journal.onStep = options.onStep
  const clock = new PauseClock()
  return healPromote(registry, pool, journal, clock, options, () => finishOrRollBack(registry, pool, journal, clock, options))
}

function healPromote(
  registry: Registry,
  pool: ConnectionPool,
  journal: Journal<PromotePlan>,
  clock: PauseClock,
  options: PromoteOptions,
  run: () => Promise<PromoteResult>,
): Promise<PromoteResult> {
  return heal({
    registry,
    pool,
    journal,
    policy: options.heal,
    lossless: journal.entry.plan.mode === 'graceful',
    run,
    again: (deadline) => finishOrRollBack(registry, pool, journal, clock, options, deadline),
    left: () => stillRefusingAfterPromote(registry, pool, journal.entry),
  })
}

/** The recovery itself, over a journal this run owns: decide from the journal and the facts, then act. */
async function finishOrRollBack(
  registry: Registry,
  pool: ConnectionPool,
  journal: Journal<PromotePlan>,
  clock: PauseClock,
  options: PromoteOptions,
  healDeadline?: number,
): Promise<PromoteResult> {
  let {plan} = journal.entry
  const [registryNow, nodes] = await Promise.all([registryState(registry, plan.shards), promoteNodeFacts(pool, plan)])
  const decision = decidePromoteRecovery(journal.entry, {registry: registryNow, ...nodes})
  if (decision.kind === 'refuse') throw refusalError(decision)

  if (decision.kind === 'emergency-only') {
    if (!options.confirmEmergency) {
      throw new ShardctlError(`cannot roll back the interrupted promote: the old master ${plan.oldMaster} does not answer`, {
        code: 'EUNREACHABLE',
        hint: `bring it back and run shards:promote --recover; if it is gone for good, run shards:promote ${plan.oldMaster} --force to finish as an emergency failover to ${plan.newMaster}`,
      })
    }
    // The old master died mid-promote: finish as an emergency failover to the planned
    // replica (which had caught up, or nearly), and the dead master leaves the shards.
    const {shards} = await registry.snapshot()
    const moving = shards.filter((s) => plan.shards.some((m) => m.id === s.id))
    const emergency: PromotePlan = {
      ...plan,
      mode: 'emergency',
      masterReachable: false,
      shards: planMoves(moving, endpointOf(plan.oldMaster), endpointOf(plan.newMaster), false),
    }
    if (!(await options.confirmEmergency(emergency)))
      throw usageError('nothing changed: the interrupted promote is still pending', 'run again to decide')
    plan = emergency
    journal.entry.plan = emergency
    const run = new PromoteRun(registry, pool, journal, plan, clock, healDeadline)
    await run.connect()
    run.result.missedBytes = null
    await run.run(['promote', 'registry', 'repoint'])
    await registry.apply(new Change(), 'promote.finished', {
      from: plan.oldMaster,
      to: plan.newMaster,
      recovered: 'rolled-forward',
      mode: 'emergency',
    })
    await journal.close()
    return {...run.result, applied: true, recovered: 'rolled-forward'}
  }

  const run = new PromoteRun(registry, pool, journal, plan, clock, healDeadline)
  await run.connect()
  if (decision.kind === 'close') {
    await journal.close()
    return {...run.result, recovered: 'rolled-back'}
  }
  await run.run(decision.actions)
  run.pauseFigures()
  const forward = decision.kind === 'roll-forward'
  await registry.apply(new Change(), forward ? 'promote.finished' : 'promote.rolled-back', {
    from: plan.oldMaster,
    to: plan.newMaster,
    ...(forward ? {recovered: 'rolled-forward'} : {}),
  })
  await journal.close()
  return {...run.result, applied: forward, recovered: forward ? 'rolled-forward' : 'rolled-back'}
}

/**
 * What refuses writes when a promote stops half-way: the old master while its fence is
 * on (with the shards the registry still routes to it), and, once the registry routes
 * them to the new master, the new master while it is still a replica (READONLY) or does
 * not answer. Read from the fleet; where the registry cannot be read, the journal says
 * whether it was switched.
 */
async function stillRefusingAfterPromote(
  registry: Registry,
  pool: ConnectionPool,
  entry: JournalEntry<PromotePlan>,
): Promise<StillRefusing[]> {
  const {plan} = entry
  const [registryNow, nodes] = await Promise.all([registryStateIfKnown(registry, plan.shards), promoteNodeFacts(pool, plan)])
  const switched =
    registryNow === undefined ? stepStarted(entry, 'registry') && !stepDone(entry, 'undo-registry') : registryNow !== 'before'
  const since = fencedSince(entry)
  const ids = plan.shards.map((s) => s.id)
  const refusing: StillRefusing[] = []
  const onOld = switched ? [] : ids
  if (!nodes.old.reachable) {
    if (!switched || since) refusing.push({instance: plan.oldMaster, why: 'silent', shards: onOld, ...(since ? {fencedSince: since} : {})})
  } else if (nodes.old.fenced)
    refusing.push({instance: plan.oldMaster, why: 'fence', shards: onOld, ...(since ? {fencedSince: since} : {})})
  if (switched) {
    if (!nodes.new.reachable) refusing.push({instance: plan.newMaster, why: 'silent', shards: ids})
    else if (nodes.new.role !== 'master') refusing.push({instance: plan.newMaster, why: 'replica', shards: ids})
  }
  return refusing
}

export {pendingOperation, readJournal}

/** Every instance a promote acts on: the old master, the new one and the other replicas. */
export function promoteInstances(plan: PromotePlan): Endpoint[] {
  return PromoteRun.instances(plan)
}
export type {ShardNodes}

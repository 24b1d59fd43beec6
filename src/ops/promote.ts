import type {Redis} from 'ioredis'

import {ExitCode, ShardctlError, usageError} from '../errors.js'
import type {ConnectionPool} from '../fleet/connect.js'
import type {ReplicationInfo} from '../fleet/info.js'
import {carryFencing, follows, makeMaster, makeReplica, pauseWrites, replicationOf, resumeWrites, waitForOffset} from '../fleet/replication.js'
import {type ShardAddress, formatAddress, instanceKey, parseInstance} from '../registry/address.js'
import {Change, type Registry} from '../registry/registry.js'
import {type Shard, validateShardId} from '../registry/schema.js'
import {Journal, type JournalEntry, pendingOperation, readJournal, stepDone} from './journal.js'
import type {OperatorLock} from './lock.js'

/**
 * shards:promote as explicit steps over the journal. Many shards live in the
 * databases of one redis-server, so promoting is always per instance: every shard
 * whose master is on that instance moves with it.
 *
 * Graceful (zero loss): pause writes on the master, wait until the replica has every
 * byte, promote it, demote the old master under it, switch the registry (compare-and-set,
 * with its event), repoint the other replicas, resume.
 * Emergency (--force): the master is gone; promote the most caught-up replica.
 */

type Endpoint = {host: string; port: number}

export interface PromoteRequest {
  /** A shard id or the master instance, host:port. */
  target: string
  replica?: Endpoint
  maxPauseMs: number
  maxLagBytes: number
  force: boolean
  yes: boolean
}

export interface ShardMove {
  id: string
  db: number
  before: {master: string; replicas: string[]; persist: string[]}
  after: {master: string; replicas: string[]; persist: string[]}
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
}

export interface PromoteResult {
  plan: PromotePlan
  applied: boolean
  /** Writes to the instance were paused for this long (graceful): pause to registry switch. */
  pauseMs?: number
  /** Pause to the new master answering as master. */
  promoteMs?: number
  /** Emergency: replication bytes the new master may have missed, if it can be known. */
  missedBytes?: number | null
  repointed: string[]
  unreachable: string[]
  recovered?: 'rolled-forward' | 'rolled-back'
  /** The old master's min-replicas-* settings, given to the new master (graceful). */
  fencing?: Record<string, string>
}

function toEndpoint(key: string): Endpoint {
  return parseInstance(key)
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
      before: {master: formatAddress(s.master), replicas: s.replicas.map(formatAddress), persist: s.persist.map(formatAddress)},
      after: {master: formatAddress(at(newMaster, s.master.db)), replicas: replicas.map(formatAddress), persist: persist.map(formatAddress)},
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
  if (request.replica) {
    const named = instanceKey(request.replica)
    if (named === masterKey) throw usageError(`${named} is the master itself`, 'name one of its replicas')
    if (!kinds.has(named)) kinds.set(named, 'slave')
  }
  if (kinds.size === 0) throw usageError(`the shards on ${masterKey} have no replica in the registry`, 'add replicas first (shards:add or shards:init --replica)')

  const [masterState, ...states] = await Promise.all([probe(pool, master), ...[...kinds.keys()].map((k) => probe(pool, toEndpoint(k)))])
  const masterReachable = masterState.info !== undefined
  const masterOffset = masterState.info?.offset

  if (masterReachable && masterState.info!.role !== 'master') {
    throw new ShardctlError(`${masterKey} is not a master (it replicates ${masterState.info!.masterHost}:${masterState.info!.masterPort})`, {
      code: 'ESTATE',
      hint: 'the registry and the fleet disagree: see shards:list',
    })
  }
  const mode: PromotePlan['mode'] = masterReachable && !request.force ? 'graceful' : 'emergency'
  if (!masterReachable && !request.force) {
    throw new ShardctlError(`the master ${masterKey} does not answer: ${masterState.error}`, {
      code: 'EUNREACHABLE',
      hint: 'to fail over without it, use --force: the most caught-up replica is promoted, and writes it had not received are lost',
    })
  }
  if (masterReachable && request.force && !request.yes) {
    throw usageError(`the master ${masterKey} answers, but --force skips the zero-loss handoff`, 'drop --force for a graceful promote, or add --yes to force it anyway')
  }

  const candidates = [...kinds.keys()].map((key, i) => {
    const {info, error} = states[i]
    let note = 'ok'
    let eligible = false
    if (!info) note = `unreachable: ${error}`
    else if (mode === 'graceful' && !follows(info, master)) note = `not a replica of ${masterKey}`
    else if (mode === 'graceful' && !info.linkUp) note = 'replication link down'
    else if (info.role !== 'slave') note = `not a replica (role ${info.role})`
    else if (mode === 'graceful' && masterOffset !== undefined && masterOffset - info.offset > request.maxLagBytes) {
      note = `lags ${masterOffset - info.offset} bytes, beyond --max-lag ${request.maxLagBytes}`
    } else eligible = true
    return {instance: key, info, eligible, note, kind: kinds.get(key)!}
  })

  let chosen
  if (request.replica) {
    chosen = candidates.find((c) => c.instance === instanceKey(request.replica!))!
    if (!chosen.eligible) {
      throw new ShardctlError(`cannot promote ${chosen.instance}: ${chosen.note}`, {
        code: 'EREFUSED',
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
      throw new ShardctlError(`no replica of ${masterKey} can be promoted: ${candidates.map((c) => `${c.instance} ${c.note}`).join('; ')}`, {
        code: 'EREFUSED',
        hint: 'bring a replica in sync (shards:list shows links and lag), or raise --max-lag',
      })
    }
  }
  const newMaster = toEndpoint(chosen.instance)
  return {
    mode,
    oldMaster: masterKey,
    newMaster: chosen.instance,
    others: candidates.filter((c) => c !== chosen).map((c) => c.instance),
    shards: planMoves(moving, master, newMaster, mode === 'graceful'),
    masterReachable,
    lagBytes: masterOffset === undefined ? null : Math.max(0, masterOffset - chosen.info!.offset),
    candidates: candidates.map((c) => ({instance: c.instance, chosen: c === chosen, offset: c.info?.offset, note: c.note})),
  }
}

/** The registry switch: every moving shard at once, only if each still names the old master. */
async function switchRegistry(registry: Registry, plan: PromotePlan, details: Record<string, unknown>): Promise<void> {
  const moves = plan.shards.map((m) => ({id: m.id, expectMaster: m.before.master, ...m.after}))
  await registry.repointShards(moves, 'shards.promoted', {
    mode: plan.mode,
    from: plan.oldMaster,
    to: plan.newMaster,
    shards: plan.shards.map((s) => s.id),
    ...(plan.mode === 'emergency' ? {removedMaster: plan.oldMaster} : {}),
    ...details,
  })
}

async function repointOthers(pool: ConnectionPool, plan: PromotePlan): Promise<{repointed: string[]; unreachable: string[]}> {
  const newMaster = toEndpoint(plan.newMaster)
  const results = await Promise.all(
    plan.others.map(async (key) => {
      try {
        await makeReplica(await pool.get(toEndpoint(key)), newMaster)
        return {key, ok: true}
      } catch {
        return {key, ok: false}
      }
    }),
  )
  return {repointed: results.filter((r) => r.ok).map((r) => r.key), unreachable: results.filter((r) => !r.ok).map((r) => r.key)}
}

/** Run a planned promote under the lock, step by step over the journal. */
export async function executePromote(
  registry: Registry,
  lock: OperatorLock,
  pool: ConnectionPool,
  plan: PromotePlan,
  options: {maxPauseMs: number; onStep?: (step: string) => void},
): Promise<PromoteResult> {
  const journal = await Journal.begin(registry, lock, 'promote', plan.oldMaster, plan)
  journal.onStep = options.onStep
  const step = <T>(name: string, action: () => Promise<T>) => journal.step(name, action)
  const newMaster = await pool.get(toEndpoint(plan.newMaster))
  const result: PromoteResult = {plan, applied: false, repointed: [], unreachable: []}

  if (plan.mode === 'emergency') {
    const before = await replicationOf(newMaster)
    await step('promote', () => makeMaster(newMaster))
    if (plan.masterReachable) {
      // Forced while the master answers: it must stop taking writes at once.
      const oldMaster = await pool.get(toEndpoint(plan.oldMaster))
      const info = await replicationOf(oldMaster)
      result.missedBytes = Math.max(0, info.offset - before.offset)
      await step('demote', () => makeReplica(oldMaster, toEndpoint(plan.newMaster)))
    } else {
      result.missedBytes = null
    }
    await step('registry', () => switchRegistry(registry, plan, {missedBytes: result.missedBytes}))
    Object.assign(result, await step('repoint', () => repointOthers(pool, plan)))
    await journal.close()
    return {...result, applied: true}
  }

  const oldMaster = await pool.get(toEndpoint(plan.oldMaster))
  let pausedAt = 0
  await step('pause', async () => {
    pausedAt = Date.now()
    await pauseWrites(oldMaster, options.maxPauseMs)
  })
  // Half the pause for the catch-up; the other half covers promote, demote and the switch.
  const caught = await step('catch-up', () => waitForOffset(oldMaster, newMaster, pausedAt + options.maxPauseMs / 2))
  if (!caught.caughtUp) {
    await resumeWrites(oldMaster).catch(() => undefined)
    await registry.apply(new Change(), 'promote.aborted', {from: plan.oldMaster, to: plan.newMaster, reason: 'catch-up'})
    await journal.close()
    throw new ShardctlError(
      `${plan.newMaster} did not catch up within --max-pause ${options.maxPauseMs} ms (at offset ${caught.replicaOffset} of ${caught.masterOffset}); writes resumed on ${plan.oldMaster}, nothing changed`,
      {code: 'ETIMEOUT', exitCode: ExitCode.unexpected, hint: 'retry when the write load is lower, or raise --max-pause'},
    )
  }
  await step('promote', () => makeMaster(newMaster))
  result.promoteMs = Date.now() - pausedAt
  await step('demote', () => makeReplica(oldMaster, toEndpoint(plan.newMaster)))
  try {
    await step('registry', () => switchRegistry(registry, plan, {}))
  } catch (error) {
    if ((error as ShardctlError).code !== 'ECONFLICT') throw error
    // Someone changed the registry: it still names the old master, so no client has
    // written to the new one. Hand the role back; nothing is lost.
    await makeMaster(oldMaster)
    await makeReplica(newMaster, toEndpoint(plan.oldMaster))
    await resumeWrites(oldMaster)
    await registry.apply(new Change(), 'promote.aborted', {from: plan.oldMaster, to: plan.newMaster, reason: 'registry changed'})
    await journal.close()
    throw new ShardctlError(`${(error as Error).message}; the promote was undone: ${plan.oldMaster} is the master again and takes writes`, {
      code: 'ECONFLICT',
      hint: 'look at shards:list, then run the command again',
    })
  }
  result.pauseMs = Date.now() - pausedAt
  Object.assign(result, await step('repoint', () => repointOthers(pool, plan)))
  await step('resume', () => resumeWrites(oldMaster))
  // After the pause: a fenced new master refuses writes until its replicas attach.
  result.fencing = await carryFencing(oldMaster, newMaster).catch(() => undefined)
  await registry.apply(new Change(), 'promote.finished', {from: plan.oldMaster, to: plan.newMaster, pauseMs: result.pauseMs})
  await journal.close()
  return {...result, applied: true}
}

/** Whether a pending operation is about this target (its old or new master, or one of its shards). */
export function journalMatches(entry: JournalEntry, instance: Endpoint, shardId?: string): boolean {
  const plan = entry.plan as PromotePlan
  const key = instanceKey(instance)
  return entry.type === 'promote' && (plan.oldMaster === key || plan.newMaster === key || plan.shards.some((s) => s.id === shardId))
}

/**
 * Finish or roll back a promote a killed run left behind, from the journal and the
 * live facts. Until the old master is demoted no client can have written to the new
 * one (the registry still names the old), so rolling back loses nothing; from the
 * demotion on, the only way is forward.
 */
export async function recoverPromote(
  registry: Registry,
  lock: OperatorLock,
  pool: ConnectionPool,
  entry: JournalEntry,
  options: {
    /** Asked when the old master is gone and only an emergency finish is left (--force); false: refuse. */
    confirmEmergency?: (plan: PromotePlan) => Promise<boolean>
  } = {},
): Promise<PromoteResult> {
  const journal = Journal.resume(registry, lock, entry)
  const plan = entry.plan as PromotePlan
  const result: PromoteResult = {plan, applied: false, repointed: [], unreachable: []}
  const newEp = toEndpoint(plan.newMaster)
  const oldEp = toEndpoint(plan.oldMaster)
  const [oldState, newState] = await Promise.all([probe(pool, oldEp), probe(pool, newEp)])

  const {shards} = await registry.snapshot()
  const byId = new Map(shards.map((s) => [s.id, formatAddress(s.master)]))
  const switched = plan.shards.every((m) => byId.get(m.id) === m.after.master)
  const untouched = plan.shards.every((m) => byId.get(m.id) === m.before.master)
  if (!switched && !untouched) {
    throw new ShardctlError(`the registry changed since the interrupted promote of ${plan.oldMaster}: its shards name neither the old nor the new master`, {
      code: 'ECONFLICT',
      hint: `inspect with shards:list; once the fleet is consistent, delete ${registry.keys.journal} by hand`,
    })
  }
  const demoted = plan.mode === 'graceful' && oldState.info !== undefined && follows(oldState.info, newEp)
  let forward = switched || demoted || (plan.mode === 'emergency' && stepDone(entry, 'promote') && !oldState.info)
  const touched = entry.steps.some((s) => s.name === 'pause' || s.name === 'promote')

  if (!forward && touched && !oldState.client && newState.client && options.confirmEmergency) {
    // The old master died mid-promote: it cannot take its role back, so finish as an
    // emergency failover to the planned replica (which had caught up, or nearly), and
    // the dead master leaves the shards like in any emergency.
    const moving = shards.filter((s) => plan.shards.some((m) => m.id === s.id))
    const emergency: PromotePlan = {...plan, mode: 'emergency', masterReachable: false, shards: planMoves(moving, oldEp, newEp, false)}
    if (!(await options.confirmEmergency(emergency))) throw usageError('nothing changed: the interrupted promote is still pending', 'run again to decide')
    Object.assign(plan, emergency)
    result.plan = plan
    result.missedBytes = null
    forward = true
  }

  if (forward) {
    if (!newState.client) throw new ShardctlError(`cannot finish the promote: the new master ${plan.newMaster} does not answer`, {code: 'EUNREACHABLE'})
    if (newState.info?.role !== 'master') await makeMaster(newState.client)
    if (oldState.client && plan.mode === 'graceful' && !demoted) await makeReplica(oldState.client, newEp)
    if (!switched) await switchRegistry(registry, plan, {recovered: true})
    Object.assign(result, await repointOthers(pool, plan))
    if (oldState.client) await resumeWrites(oldState.client).catch(() => undefined)
    await registry.apply(new Change(), 'promote.finished', {from: plan.oldMaster, to: plan.newMaster, recovered: 'rolled-forward'})
    await journal.close()
    return {...result, applied: true, recovered: 'rolled-forward'}
  }

  // Roll back: the registry still names the old master and it was never demoted.
  if (!touched) {
    await journal.close()
    return {...result, recovered: 'rolled-back'}
  }
  if (!oldState.client) {
    throw new ShardctlError(`cannot roll back the interrupted promote: the old master ${plan.oldMaster} does not answer`, {
      code: 'EUNREACHABLE',
      hint: `if it is gone for good, run shards:promote ${plan.oldMaster} --force to finish as an emergency failover to ${plan.newMaster}`,
    })
  }
  if (newState.client && newState.info?.role === 'master') await makeReplica(newState.client, oldEp)
  await resumeWrites(oldState.client).catch(() => undefined)
  await registry.apply(new Change(), 'promote.rolled-back', {from: plan.oldMaster, to: plan.newMaster})
  await journal.close()
  return {...result, recovered: 'rolled-back'}
}

export {pendingOperation, readJournal}

import {setTimeout as sleep} from 'node:timers/promises'

import type {Redis} from 'ioredis'

import {ExitCode, ShardctlError} from '../errors.js'
import {type ClientInfo, clientsOn, cutConnectionsNamed, hasWorked, killClients, writeCommandsOf} from '../fleet/clients.js'
import {type ConnectionPool, type ScriptedRedis, reopen} from '../fleet/connect.js'
import {keysPerDb, sampleKeys} from '../fleet/instance.js'
import {type FencingSettings, fenceWrites, isWriteFence, readFencing, replicationOf} from '../fleet/replication.js'
import {type Endpoint, endpointOf, instanceKey, sameInstance} from '../registry/address.js'
import {Change, type Registry, type ShardNodes, nodeFields} from '../registry/registry.js'
import type {Shard} from '../registry/schema.js'
import {formatAddress} from '../registry/address.js'
import {type Journal, type JournalEntry, stepDone, stepResult} from './journal.js'
import {type NodeFacts, type Refusal, refusalError} from './recovery.js'
import {operatorClientName} from './lock.js'

/**
 * What split and promote share: the fenced pause and its clock, the proof that a
 * replica holds every byte, the registry's state against a plan, keeping clients off
 * moved databases, and cutting off a run that lost its lease.
 */

/** A shard's nodes before and after an operation, as planned (registry addresses). */
export interface PlannedMove {
  id: string
  before: ShardNodes
  after: ShardNodes
}

/** Where the registry stands against a plan: untouched, switched, or changed by someone else. */
export type RegistryState = 'before' | 'after' | 'changed'

export function nodesOf(shard: Shard): ShardNodes {
  return {master: formatAddress(shard.master), replicas: shard.replicas.map(formatAddress), persist: shard.persist.map(formatAddress)}
}

const sameNodes = (a: ShardNodes, b: ShardNodes) => JSON.stringify(nodeFields(a)) === JSON.stringify(nodeFields(b))

export function registryStateOf(shards: Shard[], moves: PlannedMove[]): RegistryState {
  const byId = new Map(shards.map((s) => [s.id, nodesOf(s)]))
  const now = moves.map((m) => byId.get(m.id))
  if (moves.every((m, i) => now[i] && sameNodes(now[i], m.before))) return 'before'
  if (moves.every((m, i) => now[i] && sameNodes(now[i], m.after))) return 'after'
  return 'changed'
}

export async function registryState(registry: Registry, moves: PlannedMove[]): Promise<RegistryState> {
  return registryStateOf((await registry.snapshot()).shards, moves)
}

/**
 * Switch the registry, and when the answer is lost (a timeout, a dropped connection)
 * find out from the registry itself whether the switch took: the outcome decides
 * everything after it, so it is never guessed. Returns whether the registry now
 * holds the switch; a conflict (someone changed it) is thrown.
 */
export async function switchOrFindOut(
  registry: Registry,
  moves: PlannedMove[],
  target: 'after' | 'before',
  apply: () => Promise<unknown>,
): Promise<boolean> {
  try {
    await apply()
    return true
  } catch (error) {
    // A switch the registry's replicas did not confirm is not one to act on: stop and say so.
    if (['ECONFLICT', 'ELOCKLOST', 'EUNCONFIRMED'].includes((error as ShardctlError).code)) throw error
    for (let attempt = 0; attempt < 3; attempt++) {
      const state = await registryState(registry, moves).catch(() => undefined)
      if (state === target) return true
      if (state !== undefined) return false
    }
    throw new ShardctlError(`cannot tell whether the registry took the switch: ${(error as Error).message}`, {
      code: 'EUNKNOWN',
      hint: 'writes stay fenced so nothing can be lost; run the same command again to finish or roll back once the registry answers',
    })
  }
}

/**
 * A connection to `e`, the source or a target of an operation (`what`: "the source"): a
 * failure says which of them it is, "cannot reach the target 10.0.0.9:6379: connection
 * refused", with the connection's own hint (a password, TLS) where it has one.
 */
export async function reachInstance(pool: ConnectionPool, e: Endpoint, what: string): Promise<Redis> {
  try {
    return await pool.get(e)
  } catch (error) {
    const where = instanceKey(e)
    const message = (error as Error).message
    const prefix = `cannot reach ${where}: `
    const because = message.startsWith(prefix)
      ? `cannot reach ${what} ${where}: ${message.slice(prefix.length)}`
      : message.includes(where)
        ? `${what}: ${message}`
        : `cannot reach ${what} ${where}: ${message}`
    throw new ShardctlError(because, {
      code: 'EUNREACHABLE',
      exitCode: error instanceof ShardctlError ? error.exitCode : ExitCode.unexpected,
      hint: (error instanceof ShardctlError && error.hint) || 'check the address, or raise --timeout',
    })
  }
}

/** Before the cut-over pause, the new side may trail the source by this much (a few ms of work)... */
export const PRE_PAUSE_SLACK_BYTES = 64 * 1024
/** ...and is given this long to get there; past it the pause-bounded catch-up decides. */
export const PRE_PAUSE_WAIT_MS = 10_000

/**
 * The write pause as it really was, from the fence to its lift: the figure reported.
 * A run that heals may lift the fence and set it again: the pauses add up.
 */
export class PauseClock {
  private startedAt?: number
  private pastMs = 0
  private ever = false

  start(): void {
    this.ever = true
    this.startedAt ??= Date.now()
  }

  end(): void {
    if (this.startedAt === undefined) return
    this.pastMs += Date.now() - this.startedAt
    this.startedAt = undefined
  }

  get ms(): number | undefined {
    if (!this.ever) return undefined
    return this.pastMs + (this.startedAt === undefined ? 0 : Date.now() - this.startedAt)
  }

  /** Time left of a budget counted from the start of the pause under way. */
  deadline(budgetMs: number): number {
    return (this.startedAt ?? Date.now()) + budgetMs
  }
}

export interface CatchUp {
  caughtUp: boolean
  masterOffset: number
  replicaOffsets: number[]
  /** A replica whose connection is gone: it will not come back (connections never reconnect). */
  lost?: Error
}

/**
 * Wait until every replica has processed exactly what its master has: with the master
 * fenced its offset stands still, so equality is the proof that no acknowledged write
 * is missing on the side about to take over. Returns the offsets either way; a
 * replica that does not answer in time is not caught up, one whose connection is gone
 * ends the wait at once.
 */
export async function catchUp(master: Redis, replicas: Redis[], deadline: number): Promise<CatchUp> {
  let wait = 0
  for (;;) {
    let lost: Error | undefined
    const [masterOffset, ...replicaOffsets] = await Promise.all([
      replicationOf(master).then((r) => r.offset),
      ...replicas.map((r) =>
        replicationOf(r).then(
          (info) => info.offset,
          (error: ShardctlError) => {
            if (error.code === 'ECONNLOST') lost ??= error
            return -1
          },
        ),
      ),
    ])
    if (lost) return {caughtUp: false, masterOffset, replicaOffsets, lost}
    if (replicaOffsets.every((o) => o >= masterOffset)) return {caughtUp: true, masterOffset, replicaOffsets}
    if (Date.now() >= deadline) return {caughtUp: false, masterOffset, replicaOffsets}
    if (wait > 0) await sleep(wait)
    wait = Math.min(10, wait + 1)
  }
}

/**
 * The fence step of a cut-over: the fencing the instance has is read first and saved
 * with the step's start record, so that whatever happens next, a recovery lifts the
 * fence back to it. An instance fenced already was left so by an interrupted run.
 */
export async function fenceStep(
  journal: Journal<unknown>,
  client: Redis,
  instance: string,
  maxPauseMs: number,
  clock: PauseClock,
): Promise<void> {
  const previous = await readFencing(client)
  if (isWriteFence(previous)) {
    throw new ShardctlError(
      `${instance} is fenced already (min-replicas-to-write ${previous['min-replicas-to-write']}): an interrupted operation left it so`,
      {
        code: 'ESTATE',
        hint: 'see shards:history and shards:check; the run that fenced it lifts the fence when it is run again',
      },
    )
  }
  await journal.step(
    'fence',
    async () => {
      clock.start()
      await fenceWrites(client, maxPauseMs, previous)
    },
    {intent: {previous} satisfies {previous: FencingSettings}},
  )
}

/**
 * A node that follows the other side during the operation (a split's target, a
 * promote's old master once demoted) must refuse writes meanwhile: with
 * replica-read-only no, a client with stale routing would get writes acknowledged there
 * that reach no master.
 */
/**
 * Taking an instance out of the hands of what fails it over on its own (Sentinel) for
 * an operation: the group's name, and the release itself. Given by the command; the
 * operation runs it as a step of its journal, so that whatever stops the operation
 * after the journal opened, the run that finishes or rolls it back finds the group
 * to hand back.
 */
export interface ReleaseHook {
  group: string
  release: () => Promise<void>
}

/**
 * Instances kept from being elected by Sentinel while an operation runs (a split's
 * targets while they follow the source): their settings before, recorded with the
 * start of the journal's step `sentinel-never-elect`, so that whichever run ends the
 * operation puts them back.
 */
export interface NeverElectHook {
  previous: Record<string, string>
  apply: () => Promise<void>
}

export function neverElectStep(journal: Journal<unknown>, hook: NeverElectHook): Promise<void> {
  return journal.step('sentinel-never-elect', hook.apply, {intent: {previous: hook.previous}})
}

/** The settings an operation's `sentinel-never-elect` step recorded, to put back once it is over. */
export function neverElectedBefore(entry: Pick<JournalEntry, 'steps'>): Record<string, string> | undefined {
  return stepResult<{previous: Record<string, string>}>(entry, 'sentinel-never-elect')?.previous
}

/** The release as the journal's step `sentinel-release`, the group recorded with its start. */
export function releaseStep(journal: Journal<unknown>, hook: ReleaseHook): Promise<void> {
  return journal.step('sentinel-release', hook.release, {intent: {group: hook.group}})
}

export function writableReplicaRefusal(instance: string, role: string): ShardctlError {
  return new ShardctlError(
    `${role} ${instance} has replica-read-only no: while it follows the other side it would acknowledge writes that reach no master`,
    {
      code: 'EREFUSED',
      exitCode: ExitCode.unhealthy,
      hint: `CONFIG SET replica-read-only yes on ${instance} (and in its configuration file), then run the command again; nothing was changed`,
    },
  )
}

/** Why a catch-up proof failed, in one line: who, where it stood, and what was done about it. */
export function notCaughtUp(caught: CatchUp, what: {replicas: string; when: string; undone?: string; fencedHint: string}): ShardctlError {
  const line = caught.lost
    ? `${caught.lost.message}, so ${what.replicas} cannot be proven caught up`
    : `${what.replicas} did not catch up ${what.when} (at offset ${caught.replicaOffsets.join(', ')} of ${caught.masterOffset})`
  return new ShardctlError(`${line}${what.undone ? `; ${what.undone}` : ''}`, {
    code: caught.lost ? 'ECONNLOST' : 'ETIMEOUT',
    exitCode: ExitCode.unexpected,
    hint: what.undone ? 'retry when the write load is lower, or raise --max-pause' : what.fencedHint,
  })
}

export interface HoldOutcome {
  /** No client came back to a moved database for the whole quiet period. */
  clear: boolean
  /** Connections closed on the moved databases. */
  closed: number
  /** Clients still using a moved database when the hold ran out (addresses). */
  lingering: string[]
  heldMs: number
}

/**
 * The default quiet period: no client back on a moved database for this long (or four
 * times the slowest return seen) counts as "no client uses them". It is a trade: the
 * moved shards take no writes during the hold (their new masters still follow the
 * source and answer READONLY), and a longer quiet period catches clients that ignore
 * the routing and write only now and then (split --quiet). Those it misses are caught
 * writing during the grace period, named, and the split exits 3.
 */
export const MIN_QUIET_MS = 30

/**
 * Keep clients off the moved databases of the source while the targets still follow
 * it (every write a stale client gets acknowledged there still reaches a target).
 * First every connection on a moved database is closed, so that each client re-reads
 * its routing. A connection that shows up again there and runs an application command
 * (not only its library's reconnection: SELECT, AUTH, HELLO...) belongs to a client
 * that still routes to the source: it is closed again. Libraries that reconnect by
 * themselves and sit idle (ioredis does, eagerly) are left alone. The hold ends when no
 * such client has shown up for a quiet period longer than four times the slowest
 * return seen (at least `quietMs`), or at `maxMs`.
 */
export async function holdClientsOff(source: Redis, dbs: Set<number>, maxMs: number, quietMs = MIN_QUIET_MS): Promise<HoldOutcome> {
  const started = Date.now()
  let lastSeen = started
  let slowestReturn = 0
  let closed = 0
  const lastClosed = new Map<string, number>()
  let lingering: string[] = []
  let first = true
  for (;;) {
    const now = Date.now()
    const on = await clientsOn(source, dbs)
    const using = first ? on : on.filter(hasWorked)
    first = false
    if (using.length > 0) {
      for (const c of using) {
        const host = c.addr.replace(/:\d+$/, '')
        const before = lastClosed.get(host)
        if (before !== undefined) slowestReturn = Math.max(slowestReturn, now - before)
        lastClosed.set(host, now)
      }
      await killClients(
        source,
        using.map((c) => c.id),
      )
      closed += using.length
      lastSeen = now
      lingering = using.map((c) => c.addr)
    } else if (now - lastSeen >= Math.max(quietMs, 4 * slowestReturn)) {
      return {clear: true, closed, lingering: [], heldMs: now - started}
    }
    if (now - started >= maxMs) return {clear: false, closed, lingering: [...new Set(lingering)], heldMs: now - started}
    await sleep(5)
  }
}

/**
 * Before a recovery acts, cut every connection the run that wrote the journal still
 * has on the operation's instances. A run that lost its lease while stopped can then
 * change nothing when it resumes: its connections never reconnect, and any new one it
 * opens is followed by a lock check that fails. Unreachable instances are skipped
 * (nothing can act on them now, this recovery included).
 */
export async function cutOffPreviousOwner(
  pool: ConnectionPool,
  entry: JournalEntry,
  instances: Endpoint[],
  ownToken: string,
): Promise<void> {
  if (!entry.owner || entry.owner === ownToken) return
  const name = operatorClientName(entry.owner)
  await Promise.all(
    instances.map(async (instance) => {
      const client = await pool.get(instance).catch(() => undefined)
      if (client) await cutConnectionsNamed(client, name).catch(() => undefined)
    }),
  )
}

// ---- release and grace --------------------------------------------------------------

/** Writes that landed on a moved database of the source after the cut-over, per source db. */
export interface StrayWrites {
  /**
   * keys: what the moved database holds on the source after the grace period (kept);
   * writers: the connections seen writing there meanwhile ("addr (command)"), whose
   * writes reached no copy the registry routes to (a delete leaves no key behind).
   */
  [db: string]: {shard: string; to: string; keys: number; sample: string[]; writers?: string[]}
}

/** Refuse to drop a database the registry routes a shard to (one shard per database: SPEC §4.9). */
export async function assertUnused(registry: Registry, instance: string, dbs: number[]): Promise<void> {
  const {shards} = await registry.snapshot()
  // However the registry spells the instance: a shard routed there under another name is routed there.
  const used = shards.filter((s) => sameInstance(s.master, endpointOf(instance)) && dbs.includes(s.master.db))
  if (used.length > 0) {
    throw new ShardctlError(
      `will not drop ${instance} db ${used.map((s) => s.master.db).join(', ')}: the registry routes shard ${used.map((s) => s.id).join(', ')} there`,
      {
        code: 'ECONFLICT',
        hint: 'the registry changed during the operation: look at shards:list, then run the command again',
      },
    )
  }
}

/**
 * Lift the fence and drop the moved databases as one step that no other client's
 * command can come between: one pipeline, written at once and small enough for one
 * packet, which Redis runs through before it serves anyone else. The write fence goes
 * off entirely (min-replicas-to-write 0) while the pause still holds everyone else,
 * CLIENT UNPAUSE wakes the waiting clients (they run only once this connection's
 * buffered commands are done), a script empties the databases, and the operator's own
 * fencing comes back last. So the flush cannot be refused by that fencing (a replica of
 * the source that is down or lagging would make it answer NOREPLICAS and leave the
 * moved databases unfenced and full). A write that a client with stale routing sends
 * from then on lands on an empty database, where the grace step finds it. (Under the
 * pause the flush would wait behind the very writes it must not drop.) Should the flush
 * fail all the same, the source is fenced again before the error is reported.
 */
async function releaseAndDrop(source: ScriptedRedis, previous: FencingSettings, dbs: number[]): Promise<void> {
  // defineCommand gives pipelines the script too; ioredis's types do not know it.
  const pipeline = source.pipeline() as ReturnType<ScriptedRedis['pipeline']> & {flushDbs(numKeys: number, ...dbs: string[]): unknown}
  pipeline.config('SET', 'min-replicas-to-write', '0')
  pipeline.call('CLIENT', 'UNPAUSE')
  pipeline.flushDbs(0, ...dbs.map(String))
  pipeline.config(
    'SET',
    'min-replicas-to-write',
    previous['min-replicas-to-write'],
    'min-replicas-max-lag',
    previous['min-replicas-max-lag'],
  )
  const replies = await pipeline.exec()
  const failed = replies?.find(([error]) => error)
  if (failed) {
    await fenceWrites(source, 1000, previous).catch(() => undefined)
    throw failed[0]
  }
}

/**
 * The release of a cut-over: the moved databases of the source are dropped and its
 * fence lifted in one step (releaseAndDrop), unless the registry routes one of them
 * again. Writes waiting in the pause on a moved database would land on the dropped
 * copy: those connections are cut first (nothing of theirs was acknowledged).
 */
export async function releaseMovedDbs(
  registry: Registry,
  source: ScriptedRedis,
  sourceKey: string,
  previous: FencingSettings,
  dbs: number[],
): Promise<void> {
  await assertUnused(registry, sourceKey, dbs)
  const waiting = await clientsOn(source, new Set(dbs))
  await killClients(
    source,
    waiting.map((c) => c.id),
  )
  await releaseAndDrop(source, previous, dbs)
}

/** How often the grace period looks for clients writing to the moved databases. */
const GRACE_POLL_MS = 20

/**
 * For the grace period, watch the moved databases of the source for clients that
 * write there (stale routing): each one is named and cut off, so that it re-reads its
 * routing. Keys alone would not tell: a delete, an expiry or an overwrite of a key that
 * is gone from the source leaves nothing to find. Polled, so a connection that opens,
 * writes and closes between two looks is seen only by the keys it leaves.
 */
export async function watchWriters(source: Redis, dbs: number[], ms: number): Promise<Map<number, Set<string>>> {
  const moved = new Set(dbs)
  const isWrite = writeCommandsOf(source)
  const writers = new Map<number, Set<string>>()
  const end = Date.now() + ms
  for (;;) {
    const writing: ClientInfo[] = []
    for (const c of (await clientsOn(source, moved)).filter(hasWorked)) if (await isWrite(c.cmd)) writing.push(c)
    for (const c of writing) writers.set(c.db, (writers.get(c.db) ?? new Set()).add(`${c.addr} (${c.cmd})`))
    await killClients(
      source,
      writing.map((c) => c.id),
    )
    const left = end - Date.now()
    if (left <= 0) return writers
    await sleep(Math.min(GRACE_POLL_MS, left))
  }
}

/** What a grace period found: writes per source db, and the dbs kept for shards:reconcile. */
export interface StraysFound {
  strays: StrayWrites
  strayWrites: Record<string, number>
  keptOnSource: number[]
}

/**
 * The grace period of a cut-over: watch the moved databases of the source (watchWriters),
 * then name every one holding keys or written to meanwhile; keys are kept where they
 * landed and recorded for shards:reconcile. `moves`: each moved shard, its database on
 * the source and where the registry routes it now.
 */
export async function graceWatch(
  registry: Registry,
  source: Redis,
  sourceKey: string,
  moves: {id: string; db: number; to: string}[],
  ms: number,
  found: StraysFound,
): Promise<void> {
  const writers = await watchWriters(
    source,
    moves.map((m) => m.db),
    ms,
  )
  const keys = await keysPerDb(source)
  const change = new Change()
  for (const move of moves) {
    const count = keys.get(move.db) ?? 0
    const seen = [...(writers.get(move.db) ?? [])]
    if (count === 0 && seen.length === 0) continue
    const sample = count === 0 ? [] : await sampleKeys(source, move.db)
    found.strays[String(move.db)] = {
      shard: move.id,
      to: move.to,
      keys: count,
      sample,
      ...(seen.length > 0 ? {writers: seen} : {}),
    }
    if (count === 0) continue
    found.strayWrites[String(move.db)] = count
    found.keptOnSource.push(move.db)
    change.hset(registry.keys.strays, {
      [`${sourceKey}/${move.db}`]: JSON.stringify({shard: move.id, to: move.to, keys: count, at: new Date().toISOString()}),
    })
  }
  if (change.ops.length > 0) await registry.apply(change, 'strays.found', {from: sourceKey, strays: found.strayWrites})
}

/**
 * The end of a cut-over that went through: the write pause as it really was (fence to
 * lift), the event in the history, the journal closed.
 */
/** A source's facts for a recovery: whether it answers, and whether shardctl's write fence is on. */
export async function sourceFacts(pool: ConnectionPool, instance: Endpoint): Promise<NodeFacts> {
  const fencing = await pool
    .get(instance)
    .then(readFencing)
    .catch(() => undefined)
  return {reachable: fencing !== undefined, fenced: fencing !== undefined && isWriteFence(fencing)}
}

/** A run of a split or a move, made to act on a recovery's decision. */
export interface RecoveringRun<A extends string, R extends StraysFound> {
  readonly result: R
  run(actions: A[]): Promise<void>
  finish(recovered: 'rolled-forward'): Promise<R>
}

/**
 * Act on what a recovery of a split or a move decided: a refusal is thrown; otherwise the
 * run (made only then) takes the actions, with any strays a finished grace already found;
 * a roll-back is recorded (`rolledBack`: its event and details) and the journal closed, a
 * roll-forward finishes as a normal run does.
 */
export async function settleRecovery<A extends string, R extends StraysFound>(
  registry: Registry,
  journal: Journal<unknown>,
  decision: {kind: 'roll-forward' | 'roll-back'; actions: A[]} | Refusal,
  makeRun: () => Promise<RecoveringRun<A, R>>,
  rolledBack: [event: string, details: Record<string, unknown>],
): Promise<R & {recovered?: 'rolled-forward' | 'rolled-back'}> {
  if (decision.kind === 'refuse') throw refusalError(decision)
  const run = await makeRun()
  if (stepDone(journal.entry, 'grace')) Object.assign(run.result.strays, stepResult(journal.entry, 'grace', 'done'))
  await run.run(decision.actions)
  if (decision.kind === 'roll-back') {
    await registry.apply(new Change(), ...rolledBack)
    await journal.close()
    return {...run.result, recovered: 'rolled-back'}
  }
  return run.finish('rolled-forward')
}

export async function finishCutover<
  R extends {pauseMs?: number; pauseExceeded?: boolean; keptOnSource: number[]; strayWrites: Record<string, number>},
>(
  registry: Registry,
  journal: Journal<unknown>,
  clock: PauseClock,
  maxPauseMs: number,
  result: R,
  event: string,
  details: Record<string, unknown>,
  recovered?: 'rolled-forward',
): Promise<R & {applied: true; recovered?: 'rolled-forward'}> {
  result.pauseMs = clock.ms
  if (result.pauseMs !== undefined) result.pauseExceeded = result.pauseMs > maxPauseMs
  await registry.apply(new Change(), event, {
    ...details,
    pauseMs: result.pauseMs,
    keptOnSource: result.keptOnSource,
    strayWrites: result.strayWrites,
    ...(recovered ? {recovered: true} : {}),
  })
  await journal.close()
  return {...result, applied: true, ...(recovered ? {recovered} : {})}
}

// ---- healing ----------------------------------------------------------------------

/** How a run heals its own operation when it fails half-way (see heal). */
export interface HealPolicy {
  /** How long after the failure it keeps trying to finish or roll back by itself; 0: not at all. */
  withinMs: number
  /** Told once, when a failure starts the healing. */
  onHealing?: (error: Error, withinMs: number) => void
}

/** A run that failed half-way and finished or rolled back its operation by itself. */
export interface Healed {
  /** The failure that started it. */
  after: string
  attempts: number
  /** From that failure to the end of the operation. */
  ms: number
  withinMs: number
}

/** An instance that refuses writes when a run gives up: why, and the shards routed to it. */
export interface StillRefusing {
  instance: string
  /**
   * fence: shardctl's write fence is on (it never lifts by itself); replica: the
   * registry routes shards to it while it still follows another instance (READONLY);
   * silent: it does not answer.
   */
  why: 'fence' | 'replica' | 'silent'
  shards: string[]
  /** When the operation set its fence, if the journal says it is on (a silent instance may have it too). */
  fencedSince?: string
}

/** What an operation that stopped half-way leaves behind (see OperationLeftOpen). */
export interface LeftOpen {
  operation: {type: JournalEntry['type']; target: string; id: string; startedAt: string}
  /** The failure the run stopped on. */
  cause: {code: string; message: string; hint?: string}
  /** The bound it healed within (--heal-within), and whether it tried (not for a failure no retry can fix). */
  healWithinMs: number
  retried: boolean
  refusing: StillRefusing[]
  /** No acknowledged write was lost: a graceful cut-over's guarantee holds at every step. */
  lossless: boolean
}

/**
 * A cut-over stopped half-way with its journal open: the facts of what it left, for the
 * command to say (which instances refuse writes, why, since when, and what finishes it).
 */
export class OperationLeftOpen extends ShardctlError {
  constructor(
    readonly left: LeftOpen,
    cause: Error,
  ) {
    super(`the ${left.operation.type} of ${left.operation.target} stopped half-way: ${left.cause.message}`, {
      code: left.refusing.length > 0 ? 'EDEGRADED' : 'EOPEN',
      exitCode: left.refusing.length > 0 ? ExitCode.degraded : ExitCode.unexpected,
      hint: `run shardctl shards:${left.operation.type} --recover to finish or roll it back`,
      cause,
    })
  }
}

/**
 * Failures a retry cannot fix: someone changed the registry or took the operation
 * over, the input is wrong, or a human must decide. Anything else (a host or the
 * registry that does not answer, a connection cut) may pass.
 */
const FINAL_CODES = new Set(['ECONFLICT', 'ELOCKLOST', 'EUSAGE', 'ECORRUPT', 'EHELD', 'EREFUSED'])

/** Between two attempts: short at first, then up to half a second (a refused connection fails at once). */
const HEAL_BACKOFF_MS = [50, 100, 200, 500]

/** An operation under heal(): its run, one attempt of its recovery, and what it leaves. */
export interface HealedOperation<R> {
  registry: Registry
  pool: ConnectionPool
  journal: Journal<unknown>
  policy?: HealPolicy
  /** A graceful cut-over (no acknowledged write can be lost at any step). */
  lossless: boolean
  run: () => Promise<R>
  /** One attempt of the recovery; its waits for a host end by `deadline`. */
  again: (deadline: number) => Promise<R>
  /** What still refuses writes, read from the fleet and the journal. */
  left: () => Promise<StillRefusing[]>
}

/**
 * Run an operation, and if it fails half-way (its journal still open, its lock still
 * ours) do not stop at the first failure. Until `withinMs` after it, try again what a
 * rerun would do: the same recovery over the same journal, under the same lock. Each
 * attempt first opens again every connection that died (they never come back by
 * themselves, see reopen) and then proves the lock and writes the journal whole
 * (reclaim), so that a run that lost its lock meanwhile changes nothing. No attempt
 * starts after the bound, and each one's waits for a host are capped by it. A host
 * that is back within the bound costs a pause, not an outage.
 *
 * When it gives up, or meets a failure no retry can fix, it throws OperationLeftOpen
 * with what is left (`left`, read as well as the fleet answers). A failure after which
 * the operation is over (finished, or undone and closed) is thrown as it is, and so is
 * a lost lock: whoever took it over owns the operation now.
 */
export async function heal<R extends object>(op: HealedOperation<R>): Promise<R & {healed?: Healed}> {
  let failure: Error
  try {
    return await op.run()
  } catch (error) {
    failure = error as Error
  }
  const withinMs = op.policy?.withinMs ?? 0
  const retry = (error: Error) => !op.journal.isClosed && !FINAL_CODES.has((error as ShardctlError).code)
  // Over, or not this run's to tell (a lost lock), or not a failure of the operation (a usage error, a
  // confirmation no terminal can give: nothing was done, the command line must change).
  const ownFailure = (error: Error) =>
    !op.journal.isClosed && (error as ShardctlError).code !== 'ELOCKLOST' && (error as ShardctlError).exitCode !== ExitCode.usage
  if (!ownFailure(failure)) throw failure
  const first = failure
  const started = Date.now()
  const deadline = started + withinMs
  if (withinMs > 0 && retry(failure)) {
    op.policy?.onHealing?.(failure, withinMs)
    for (let attempt = 1; Date.now() < deadline; attempt++) {
      await sleep(Math.min(HEAL_BACKOFF_MS[Math.min(attempt - 1, HEAL_BACKOFF_MS.length - 1)], Math.max(0, deadline - Date.now())))
      try {
        await reviveConnections(op.registry, op.pool)
        await op.journal.reclaim()
        const result = await op.again(deadline)
        return {...result, healed: {after: first.message, attempts: attempt, ms: Date.now() - started, withinMs}}
      } catch (error) {
        failure = error as Error
        if (!ownFailure(failure)) throw failure
        if (!retry(failure)) break
      }
    }
  }
  throw await leftOpen(op, failure, withinMs, withinMs > 0 && retry(first))
}

async function leftOpen(op: HealedOperation<object>, failure: Error, healWithinMs: number, retried: boolean): Promise<OperationLeftOpen> {
  await reviveConnections(op.registry, op.pool).catch(() => undefined)
  const refusing = await op.left().catch(() => [])
  const {entry} = op.journal
  return new OperationLeftOpen(
    {
      operation: {type: entry.type, target: entry.target, id: entry.id, startedAt: entry.startedAt},
      cause: {
        code: (failure as ShardctlError).code ?? 'EUNEXPECTED',
        message: failure.message,
        ...((failure as ShardctlError).hint ? {hint: (failure as ShardctlError).hint} : {}),
      },
      healWithinMs,
      retried,
      refusing,
      lossless: op.lossless,
    },
    failure,
  )
}

/** Open again what died: the registry's connection (in place: the lock and the journal use it) and the pool's. */
async function reviveConnections(registry: Registry, pool: ConnectionPool): Promise<void> {
  await Promise.all([reopen(registry.client), pool.revive()])
}

/** The registry's state, or undefined when it cannot be read (for a report, never for a decision). */
export async function registryStateIfKnown(registry: Registry, moves: PlannedMove[]): Promise<RegistryState | undefined> {
  return registryState(registry, moves).catch(() => undefined)
}

/** A wait for a host during a heal attempt ends at the heal's bound, and at `ms` from now otherwise. */
export function waitUntil(ms: number, healDeadline?: number): number {
  return healDeadline === undefined ? Date.now() + ms : Math.min(Date.now() + ms, Math.max(healDeadline, Date.now()))
}

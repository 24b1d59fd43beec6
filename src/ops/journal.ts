import {randomBytes} from 'node:crypto'

import {ExitCode, ShardctlError} from '../errors.js'
import type {Registry} from '../registry/registry.js'
import {failpoint} from './failpoint.js'
import {type OperatorLock, describeHolder, holderIsDead, lockHeld, parseHolder} from './lock.js'

/**
 * The operation journal (SPEC §4.3): a long operation records each step in the
 * registry before it takes it, so a run killed at any point leaves enough behind for
 * the next run to finish the operation or roll it back. One operation at a time:
 * the journal is written only under the operator lock (and fenced by it).
 */

export interface StepRecord {
  name: string
  state: 'started' | 'done'
  at: string
  /**
   * What a recovery must know of the step. On a started record: what is about to be
   * changed and how to undo it (e.g. a setting's value before), saved before the
   * change, so a run killed in the middle of it leaves it behind. On a done record:
   * what the step found.
   */
  result?: unknown
}

export interface JournalEntry<P = unknown> {
  v: 1
  id: string
  type: 'promote' | 'split' | 'move'
  /** What the operation is about, e.g. the instance being promoted away from. */
  target: string
  by: string
  /** The lock token of the run writing it: a recovery first cuts that run's connections. */
  owner?: string
  startedAt: string
  plan: P
  steps: StepRecord[]
}

export async function readJournal(registry: Registry): Promise<JournalEntry | undefined> {
  const raw = await registry.guard(registry.keys.journal, 'a string', () => registry.client.get(registry.keys.journal))
  if (raw === null) return undefined
  try {
    const entry = JSON.parse(raw) as JournalEntry
    if (entry.v !== 1 || !Array.isArray(entry.steps)) throw new Error('unknown shape')
    return entry
  } catch (error) {
    throw new ShardctlError(`the operation journal ${registry.keys.journal} is unreadable: ${(error as Error).message}`, {
      code: 'ECORRUPT',
      hint: `inspect it with redis-cli GET ${registry.keys.journal}; delete it once the fleet is consistent`,
    })
  }
}

/**
 * When the operation's write fence went on, if the journal says it is on still: the
 * start of the last fence step with no lift or release done after it.
 */
export function fencedSince(entry: Pick<JournalEntry, 'steps'>): string | undefined {
  let since: string | undefined
  for (const s of entry.steps) {
    if (s.name === 'fence' && s.state === 'started') since = s.at
    if (['lift', 'release', 'undo'].includes(s.name) && s.state === 'done') since = undefined
  }
  return since
}

/** The last step that was started, and whether it finished. */
export function lastStep(entry: JournalEntry): StepRecord | undefined {
  return entry.steps.at(-1)
}

export function stepDone(entry: Pick<JournalEntry, 'steps'>, name: string): boolean {
  return entry.steps.some((s) => s.name === name && s.state === 'done')
}

export function stepStarted(entry: Pick<JournalEntry, 'steps'>, name: string): boolean {
  return entry.steps.some((s) => s.name === name)
}

/** What a step recorded when it started (or, with state 'done', when it ended). */
export function stepResult<T>(entry: Pick<JournalEntry, 'steps'>, name: string, state: StepRecord['state'] = 'started'): T | undefined {
  return [...entry.steps].reverse().find((s) => s.name === name && s.state === state)?.result as T | undefined
}

/**
 * A long operation's journal, written only under the operator lock. Every write is
 * fenced by the lock and renews its lease in the same script, and every step writes
 * before it acts: so a run that lost its lease (stopped, partitioned, overtaken) finds
 * out before its next action, never after it.
 */
export class Journal<P> {
  /** Told the name of each step as it starts (progress for a person). */
  onStep?: (name: string) => void
  private closed = false

  private constructor(
    private readonly registry: Registry,
    private readonly lock: OperatorLock,
    readonly entry: JournalEntry<P>,
  ) {}

  /** Start a new operation; refused while another one awaits recovery. */
  static async begin<P>(registry: Registry, lock: OperatorLock, type: JournalEntry['type'], target: string, plan: P): Promise<Journal<P>> {
    const pending = await readJournal(registry)
    if (pending) throw pendingOperation(pending)
    const entry: JournalEntry<P> = {
      v: 1,
      id: randomBytes(6).toString('hex'),
      type,
      target,
      by: registry.actor.user,
      owner: lock.token,
      startedAt: new Date().toISOString(),
      plan,
      steps: [],
    }
    const journal = new Journal(registry, lock, entry)
    await journal.save()
    return journal
  }

  /** Take over an operation a killed or overtaken run left behind: from now on this run owns it. */
  static async resume<P>(registry: Registry, lock: OperatorLock, entry: JournalEntry<P>): Promise<Journal<P>> {
    const journal = new Journal(registry, lock, {...entry, owner: lock.token})
    await journal.save()
    return journal
  }

  /**
   * Record the step, take it, record that it is done. `intent` is saved with the
   * started record (what a recovery needs if the step is cut short); with
   * keepResult, the action's result is saved with the done record.
   */
  async step<T>(name: string, action: () => Promise<T>, options: {intent?: unknown; keepResult?: boolean} = {}): Promise<T> {
    this.onStep?.(name)
    this.entry.steps.push({
      name,
      state: 'started',
      at: new Date().toISOString(),
      ...(options.intent === undefined ? {} : {result: options.intent}),
    })
    await this.save()
    await failpoint(name, 'before')
    let result: T
    try {
      result = await action()
    } catch (error) {
      throw await this.explain(error as Error)
    }
    this.entry.steps.push({name, state: 'done', at: new Date().toISOString(), ...(options.keepResult ? {result} : {})})
    await this.save()
    await failpoint(name, 'after')
    return result
  }

  /** Prove the lock is still ours (and renew it) right before an action outside a step. */
  async prove(): Promise<void> {
    await this.write('?')
  }

  /** The operation is over (finished or rolled back): the journal goes, the outcome is in the history. */
  async close(): Promise<void> {
    await this.write('')
    this.closed = true
  }

  /** Whether the operation ended (finished or rolled back) and the journal is gone. */
  get isClosed(): boolean {
    return this.closed
  }

  /**
   * Before a run heals its own operation: prove the lock is still ours and write the
   * journal whole again (a write that was cut short may never have reached it). A lease
   * that ran out meanwhile is taken again when that is safe (retakeLock).
   */
  async reclaim(): Promise<void> {
    try {
      await this.save()
    } catch (error) {
      if ((error as ShardctlError).code !== 'ELOCKLOST') throw error
      const retaken = await this.retakeLock()
      if (retaken.kind === 'taken over') throw error
      if (retaken.kind === 'held') {
        throw new ShardctlError(
          `the lease ran out while the registry did not answer, and another operator holds the lock now (${retaken.by}); this run waits for it`,
          {code: 'ELOCKWAIT', exitCode: ExitCode.locked},
        )
      }
      await this.save()
    }
  }

  /**
   * The lease ran out while the registry did not answer (nothing renews a lease the
   * registry cannot hear): take the lock again, but only if the journal in the registry
   * is still this run's and nobody holds the lock. A successor that took the operation
   * over wrote its own token as the journal's owner, and one that finished it deleted
   * the journal: 'taken over', this run stops. Another command holding the lock now
   * ('held', by whom) may release it: the run that heals tries again. Whoever
   * held it in between cut this run's connections (see cutOffJournalOwner): they are
   * opened again before this proof by the run that heals.
   */
  private async retakeLock(): Promise<{kind: 'ours' | 'taken over'} | {kind: 'held'; by: string}> {
    const current = await readJournal(this.registry)
    if (current?.id !== this.entry.id || current.owner !== this.lock.token) return {kind: 'taken over'}
    if (await this.lock.retake()) return {kind: 'ours'}
    const holder = parseHolder(await this.registry.client.get(this.registry.keys.lock))
    return {kind: 'held', by: holder ? describeHolder(holder) : 'an unknown holder'}
  }

  /**
   * A step failed: if this run lost its lock meanwhile (a newer operator took over and
   * cut its connections), say that, with exit 4, rather than the failure it caused.
   */
  private async explain(error: Error): Promise<Error> {
    if (error instanceof ShardctlError && error.code === 'ELOCKLOST') return error
    const lost = await this.write('?').then(
      () => false,
      (proof: Error) => proof instanceof ShardctlError && proof.code === 'ELOCKLOST',
    )
    return lost ? lockLostMidway(error) : error
  }

  private save(): Promise<void> {
    return this.write(JSON.stringify(this.entry))
  }

  private async write(json: string): Promise<void> {
    try {
      await this.registry.client.journal(
        this.registry.keys.lock,
        this.registry.keys.journal,
        this.lock.value,
        json,
        String(this.lock.leaseMs),
      )
    } catch (error) {
      if ((error as Error).message.includes('LOCKLOST')) throw lockLostMidway()
      throw error
    }
    // What the journal says must survive a registry failover before anything acts on it.
    if (json !== '?') await this.registry.confirm(json === '' ? 'the end of the operation' : 'the journal entry')
  }
}

function lockLostMidway(cause?: Error): ShardctlError {
  return new ShardctlError(
    `the operator lock was lost during the operation${cause ? ` (then: ${cause.message})` : ''}; this run stopped and changes nothing more`,
    {
      code: 'ELOCKLOST',
      exitCode: ExitCode.locked,
      hint: 'another operator may have taken over: see shards:history, then run the same command again to finish or roll back the operation',
    },
  )
}

function whereItStands(entry: JournalEntry): string {
  const last = lastStep(entry)
  return last ? `at step "${last.name}" (${last.state})` : 'before its first step'
}

/** An operation open in the journal that nobody runs any more: the rerun that recovers it is named. */
export function pendingOperation(entry: JournalEntry): ShardctlError {
  return new ShardctlError(
    `an interrupted ${entry.type} of ${entry.target}, started by ${entry.by} at ${entry.startedAt}, stopped ${whereItStands(entry)}`,
    {
      code: 'EPENDING',
      exitCode: ExitCode.unexpected,
      hint: `run shardctl shards:${entry.type} --recover to finish or roll it back first`,
    },
  )
}

/** Who holds the operator lock now, unless it is this run or a holder known to be dead. */
export async function liveHolder(registry: Registry, ownToken?: string): Promise<{value: string; ttlMs: number} | undefined> {
  const [value, ttlMs] = await Promise.all([registry.client.get(registry.keys.lock), registry.client.pttl(registry.keys.lock)])
  if (value === null || holderIsDead(value)) return undefined
  if (ownToken !== undefined && parseHolder(value)?.token === ownToken) return undefined
  return {value, ttlMs}
}

/**
 * Why an open operation in the journal stops this command, told truthfully. While a
 * live holder holds the lock, the operation is running (or waits behind that holder):
 * exit 4, naming the holder and since when, as every other mutating command says it.
 * Only when nobody holds it is the operation interrupted, and the rerun that recovers
 * it named.
 */
export async function openOperationError(registry: Registry, entry: JournalEntry, ownToken?: string): Promise<ShardctlError> {
  const held = await liveHolder(registry, ownToken)
  if (!held) return pendingOperation(entry)
  const locked = lockHeld(registry.keys.lock, held.value, held.ttlMs)
  const running = entry.owner !== undefined && parseHolder(held.value)?.token === entry.owner
  const what = running
    ? `; it is running the ${entry.type} of ${entry.target}, now ${whereItStands(entry)}`
    : `; an interrupted ${entry.type} of ${entry.target} also waits in the journal`
  return new ShardctlError(`${locked.message}${what}`, {code: locked.code, exitCode: locked.exitCode, hint: locked.hint})
}

import type {Command} from '@oclif/core'

import {RegistryCommand} from './base-command.js'
import {ExitCode, ShardctlError} from './errors.js'
import {type HealPolicy, type Healed, OperationLeftOpen, type StraysFound} from './ops/cutover.js'
import {type JournalEntry, liveHolder, openOperationError, pendingOperation, readJournal} from './ops/journal.js'
import type {OperatorLock} from './ops/lock.js'
import type {Released, SentinelCoordination} from './sentinel/coordinate.js'
import {leftOpenError} from './ui/left-open.js'
import {type StepReporter, formatDuration} from './ui/progress.js'
import {paint, plural} from './ui/terminal.js'

/**
 * What shards:split, shards:move and shards:promote share around their operation: finding the one
 * open in the journal (--recover, or a rerun), healing a failure half-way within
 * --heal-within, and saying what a run that stopped half-way left.
 */
export abstract class OperationCommand<T extends typeof Command> extends RegistryCommand<T> {
  /** The operation this command runs, as the journal names it. */
  protected abstract readonly operation: JournalEntry['type']

  /** The steps being shown, so that a failure ends the one it stopped. */
  private steps?: StepReporter

  protected override async reporter(waits: Record<string, number> = {}): Promise<StepReporter> {
    this.steps = await super.reporter(waits)
    return this.steps
  }

  /** The command that finishes or rolls back an open operation of this kind, for this fleet. */
  protected recoverCommand(): string {
    return this.sameFleetCommand(`shards:${this.operation}`, '--recover')
  }

  /** How this run heals a failure half-way: the bound, said when healing starts. */
  protected healPolicy(withinMs: number): HealPolicy {
    return {
      withinMs,
      onHealing: (error, ms) => {
        this.steps?.end()
        this.progress(
          paint.warn(
            `${error.message}. Healing: the ${this.operation} finishes or rolls back by itself as a rerun would, trying for up to ${formatDuration(ms)} (--heal-within).`,
          ),
        )
      },
    }
  }

  /** Run the operation (or its recovery); one that stopped half-way is said with what it left. */
  protected async leftOpenSaid<R>(work: Promise<R>): Promise<R> {
    try {
      return await work
    } catch (error) {
      throw error instanceof OperationLeftOpen ? leftOpenError(error.left, this.recoverCommand()) : error
    }
  }

  protected reportHealed(result: {healed?: Healed; recovered?: string}): void {
    if (!result.healed) return
    this.progress(
      `Healed: after "${result.healed.after}", the ${this.operation} ${result.recovered === 'rolled-back' ? 'rolled back' : 'finished'} by itself in ${formatDuration(result.healed.ms)} (${plural(result.healed.attempts, 'attempt')}).`,
    )
  }

  /**
   * The open operation to recover, under the lock (read again under it): the one in the
   * journal with --recover, or the one `matches` (a rerun naming its instance). While a
   * live holder runs it, exit 4 naming the holder, before queueing for the lock.
   * Undefined with --recover when there is nothing to recover.
   */
  protected async openOperation(
    matches?: (entry: JournalEntry) => boolean,
  ): Promise<{entry: JournalEntry; lock: OperatorLock} | undefined> {
    const registry = await this.registry()
    const recovering = Boolean((this.flags as {recover?: boolean}).recover)
    const pending = await readJournal(registry)
    if (pending && (await liveHolder(registry, this.operatorToken))) throw await openOperationError(registry, pending, this.operatorToken)
    if (!pending && recovering) return undefined
    const lock = await this.lock()
    const entry = await readJournal(registry)
    if (!entry) {
      if (recovering) return undefined
      throw new ShardctlError(`the interrupted ${this.operation} was finished by someone else meanwhile`, {
        code: 'ECHANGED',
        exitCode: ExitCode.unhealthy,
        hint: 'see shards:history, then run the command again',
      })
    }
    if (entry.type !== this.operation || (matches && !matches(entry))) throw pendingOperation(entry)
    this.interruptNote = `The ${this.operation} is still open in the registry's journal; run ${this.recoverCommand()} to finish or roll it back.`
    return {entry, lock}
  }

  /** What handing the instances back to Sentinel could not do: said with the result, exit 3. */
  protected sentinelProblems: string[] = []

  /** How the operation coordinates with the Sentinels the registry records (none: every hook does nothing). */
  protected async sentinelCoordination(): Promise<SentinelCoordination> {
    const {SentinelCoordination} = await import('./sentinel/coordinate.js')
    const {sentinel, instance, options} = await this.resolveConnections()
    const coordination = await SentinelCoordination.open(await this.registry(), await this.pool(), {sentinel, instance, options})
    this.onCleanup(() => coordination.close())
    return coordination
  }

  /**
   * Once the operation is over (or stopped): the group it released handed back to
   * Sentinel with the master the registry routes to, a split's targets registered.
   * Never throws: what failed is kept in sentinelProblems, the operation's result stands.
   */
  protected async handBack(
    sentinel: SentinelCoordination,
    released: Released | undefined,
    split?: () => Promise<{source: string; targets: string[]; applied: boolean}>,
  ): Promise<void> {
    try {
      const back = await sentinel.finish(released, split && (await split()))
      this.sentinelProblems = back.problems
      for (const g of back.groups) this.progress(`Sentinel monitors ${g.name}, with master ${g.master}.`)
    } catch (error) {
      this.sentinelProblems = [`Sentinel did not take the instances back: ${(error as Error).message} (run sentinel:register)`]
    }
  }

  /** A result otherwise whole: exit 3 when Sentinel did not take everything back (said above). */
  protected sentinelSaid<R extends object>(result: R): R {
    if (this.sentinelProblems.length === 0) return result
    return this.partial(result, `the ${this.operation} is done, but Sentinel does not guard every instance it should (above)`)
  }

  /** The Sentinel problems, to end a message with. */
  protected sentinelNote(): string {
    return this.sentinelProblems.length > 0 ? `; and ${this.sentinelProblems.join('; ')}` : ''
  }

  /**
   * Writes that landed on the source after the cut-over: named, kept, exit 3. `keptOnPurpose`:
   * the source keeps its copies because the operator asked (split --keep-source).
   */
  protected reportStrays<R extends StraysFound>(result: R, keptOnPurpose = false): R {
    if (this.sentinelProblems.length > 0) this.warn(this.sentinelProblems.join('; '))
    const strays = Object.entries(result.strays)
    if (strays.length === 0) {
      if (result.keptOnSource.length === 0) return this.sentinelSaid(result)
      const dbs = result.keptOnSource.join(', ')
      if (keptOnPurpose) {
        this.warn(`the source keeps its copy of db ${dbs} (--keep-source): check them, then drop them by hand`)
        return this.sentinelSaid(result)
      }
      // Kept because the source lost the fence mid-split (it restarted, or someone lifted
      // it): clients with stale routing may have written there unwatched.
      return this.partial(
        result,
        `the source lost its fence during the cut-over, so its copy of db ${dbs} was kept and may hold writes from clients with stale routing that the new copies lack. Compare each with its target (shards:list shows where it is routed) before dropping it`,
      )
    }
    const lines = strays.map(([db, s]) => {
      const keys = s.keys > 0 ? `${plural(s.keys, 'key')} kept, e.g. ${s.sample.slice(0, 5).join(', ')}` : 'no key left'
      const writers = s.writers?.length ? `, written to by ${s.writers.join(', ')}` : ''
      return `db ${db} (shard ${s.shard}, now at ${s.to}): ${keys}${writers}`
    })
    const then = [
      strays.some(([, s]) => s.keys > 0) ? 'Move the kept keys where the registry routes with: shardctl shards:reconcile.' : '',
      strays.some(([, s]) => s.writers?.length)
        ? 'The clients named do not follow the routing: what they deleted or changed there reached no copy the registry routes to; fix their routing and check that data.'
        : '',
    ]
    return this.partial(
      result,
      `writes landed on the source after the cut-over, from clients with stale routing: ${lines.join('; ')}. ${then.filter(Boolean).join(' ')}`,
    )
  }

  /** --recover found nothing open: said, exit 0. */
  protected nothingToRecover(): {applied: false; recovered: 'nothing'} {
    this.log('Nothing to recover: no operation is open in the journal.')
    return {applied: false, recovered: 'nothing'}
  }
}

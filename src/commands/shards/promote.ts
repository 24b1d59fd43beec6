import {Args, Flags} from '@oclif/core'

import {OperationCommand} from '../../operation-command.js'
import {dryRunFlag, healWithinFlag, healWithinMs, parseCount, parseDuration, yesFlag} from '../../flags.js'
import {usageError} from '../../errors.js'
import type {HealPolicy} from '../../ops/cutover.js'
import {openOperationError, readJournal} from '../../ops/journal.js'
import {
  type PromotePlan,
  type PromoteRequest,
  type PromoteResult,
  executePromote,
  journalMatches,
  planPromote,
  recoverPromote,
  resolveInstance,
} from '../../ops/promote.js'
import {parseInstance} from '../../registry/address.js'
import type {SentinelCoordination} from '../../sentinel/coordinate.js'
import {paint, plural, renderTable} from '../../ui/terminal.js'

export default class ShardsPromote extends OperationCommand<typeof ShardsPromote> {
  protected readonly operation = 'promote'
  /** Holds the lock for long: renewed from a worker thread (see ops/lock-renewer.ts). */
  static longRunning = true
  static override summary = 'Promote a replica to master for a shard or a whole instance.'
  static override description = `Promoting is per instance: naming a shard promotes its master's instance, and every shard whose master lives there moves with it (the confirmation lists them).

Graceful, when the master answers: the named replica, or the most caught-up one, must replicate that master with its link up and lag within --max-lag. Then, as Redis's own FAILOVER does: the master is fenced (writes pause for at most --max-pause, then are refused with NOREPLICAS: a fence that never runs out by itself), the replica is proven to hold every byte (its offset equals the fenced master's), the registry switches every shard in one compare-and-set step with its event, the replica becomes master, the old master becomes its replica, the fence is lifted, the other replicas follow. No acknowledged write is lost, however slow the registry or this process; the real pause is reported, with a warning when it ran past --max-pause. If the catch-up does not finish in time, or the registry changed meanwhile, the fence is lifted and nothing changes.

What a client sees: writes to the old master wait, then fail with READONLY (or NOREPLICAS); a client that re-reads the registry on the event, or on that error, writes to the new master.

Emergency, with --force, when the master is down: the reachable replica with the highest replication offset is promoted, the others follow it, and the dead master leaves the shards (named in the history so it can rejoin as a replica).

Each step is recorded in the registry's journal before it is taken. A promote that fails half-way (the master, the replica or the registry silent past --timeout) heals by itself: for --heal-within it runs again what a rerun would (the same recovery over the same journal, under the same lock), finishing the promote (exit 0) or rolling it back (exit 3). Past that bound it stops and names every instance that still refuses writes, with the shards on it and the command that finishes the promote, and exits 5. A run killed at any step is finished or rolled back by shards:promote --recover (it finds the promote in the journal by itself: a cron job can run it), or by the next shards:promote naming the same instance or shard; a run that lost its lock (stopped for longer than the lease) changes nothing more and exits 4.`

  static override examples = [
    '<%= config.bin %> <%= command.id %> s042',
    '<%= config.bin %> <%= command.id %> 10.0.0.5:6379 --replica 10.0.0.6:6379 --yes',
    '<%= config.bin %> <%= command.id %> 10.0.0.5:6379 --dry-run',
    '<%= config.bin %> <%= command.id %> 10.0.0.5:6379 --force --yes   # the master is down',
    '<%= config.bin %> <%= command.id %> --recover   # finish or roll back an interrupted promote, wherever it was',
  ]

  static override args = {
    target: Args.string({description: 'A shard id, or the master instance host:port (optional with --recover).', ignoreStdin: true}),
  }

  static override flags = {
    replica: Flags.string({summary: 'The replica (host:port) to promote; default: the most caught-up.', helpValue: '<host:port>'}),
    'max-pause': Flags.string({summary: 'Longest write pause allowed for the handoff (ms, or 500ms, 2s).', default: '1000'}),
    'max-lag': Flags.string({summary: 'Refuse a replica further behind than this many bytes.', default: '1048576'}),
    force: Flags.boolean({summary: 'Emergency failover: do not wait for the master (writes it alone had are lost).'}),
    'heal-within': healWithinFlag,
    recover: Flags.boolean({
      summary: 'Finish or roll back the interrupted promote found in the journal; exit 0 when there is none.',
      exclusive: ['replica', 'dry-run'],
    }),
    'overrule-sentinel': Flags.boolean({
      summary:
        'Promote even where Sentinel decides: --force while the Sentinels have a quorum, or an instance Sentinels the registry does not record monitor.',
    }),
    'dry-run': dryRunFlag,
    yes: yesFlag,
  }

  async run(): Promise<PromoteResult | {applied: false; recovered: 'nothing'}> {
    const {flags} = this
    const maxPauseMs = parseDuration(flags['max-pause'], '--max-pause')
    const heal = this.healPolicy(healWithinMs(flags['heal-within'], maxPauseMs))
    if (flags.recover) {
      const named = this.args.target === undefined ? undefined : await resolveInstance(await this.registry(), this.args.target)
      return this.recover(heal, named)
    }
    if (this.args.target === undefined)
      throw usageError('name a shard or its master instance (host:port)', 'or run --recover to finish an interrupted promote')
    const request = {
      target: this.args.target,
      replica: flags.replica === undefined ? undefined : parseInstance(flags.replica),
      maxPauseMs,
      maxLagBytes: parseCount(flags['max-lag'], '--max-lag', 0, Number.MAX_SAFE_INTEGER),
      force: flags.force,
      yes: flags.yes,
    }
    if (request.maxPauseMs > 60_000) throw usageError('--max-pause is at most 60s', 'writes are paused for that long in the worst case')
    const registry = await this.registry()
    const pool = await this.pool()
    const resolved = await resolveInstance(registry, request.target)

    if (!flags['dry-run']) {
      const pending = await readJournal(registry)
      if (pending) {
        if (!journalMatches(pending, resolved.instance, resolved.shardId))
          throw await openOperationError(registry, pending, this.operatorToken)
        return this.recover(heal, resolved)
      }
    }

    // Planned without the lock, asked about, then planned again under it (planThenLock).
    // The replica chosen when asked stays the choice under the lock, if it still may be.
    let chosen: PromoteRequest['replica']
    const sentinel = await this.sentinelCoordination()
    const make = async () => {
      const pending = await readJournal(registry)
      if (pending) throw await openOperationError(registry, pending, this.operatorToken)
      const plan = await planPromote(registry, pool, {...request, replica: request.replica ?? chosen})
      await sentinelAllows(sentinel, plan, flags['overrule-sentinel'])
      return plan
    }
    const question = (plan: PromotePlan) =>
      plan.mode === 'graceful'
        ? `Promote ${plan.newMaster} to master of the ${plural(plan.shards.length, 'shard')} above (writes pause for at most ${request.maxPauseMs} ms)?`
        : `Fail over to ${plan.newMaster} without the master${plan.lagBytes ? ` (it is ${plural(plan.lagBytes, 'byte')} behind)` : ''}? Writes it has not received are lost.`
    if (flags['dry-run']) {
      const plan = await make()
      if (!this.jsonEnabled()) this.render(plan)
      this.progress(paint.warn('Dry run: nothing changed.'))
      return {plan, applied: false, repointed: [], unreachable: []}
    }
    const {plan, confirmed} = await this.planThenLock(
      make,
      (plan) => {
        if (!this.jsonEnabled()) this.render(plan)
        chosen = parseInstance(plan.newMaster)
        return question(plan)
      },
      (plan) => ({
        mode: plan.mode,
        from: plan.oldMaster,
        to: plan.newMaster,
        others: plan.others,
        shards: plan.shards.map((m) => [m.id, m.before, m.after]),
      }),
    )
    if (!confirmed) {
      this.progress('Nothing changed.')
      return {plan, applied: false, repointed: [], unreachable: []}
    }
    const lock = await this.lock()
    this.interruptNote = `The promote is recorded in the registry's journal; run ${this.recoverCommand()} to finish or roll it back.`
    const steps = await this.reporter()
    // Out of Sentinel's hands while the master changes, handed back with the master the registry then routes to (src/sentinel/coordinate.ts).
    // Released as the journal's first step: a run stopped after it leaves a journal whose recovery hands the group back.
    const release = sentinel.releaseHook(plan.oldMaster, 'promote', {insist: plan.mode === 'emergency'})
    const result = await this.leftOpenSaid(
      executePromote(registry, lock, pool, plan, {onStep: (step) => steps.step(step), heal, release: release.hook}),
    )
      .finally(() => steps.end())
      .finally(() => this.handBack(sentinel, release.released()))
    if (result.recovered === 'rolled-back') {
      return this.partial(
        result,
        `the promote failed half-way (${result.healed?.after}) and healed by rolling back: ${plan.oldMaster} stays the master and takes writes again; nothing was lost. Run the promote again${this.sentinelNote()}`,
      )
    }
    this.report(result)
    this.reportHealed(result)
    if (result.pauseExceeded) {
      this.warn(
        `writes were held ${result.pauseMs} ms, beyond --max-pause ${request.maxPauseMs} ms (the registry or this process was slow); none was lost`,
      )
    }
    if (result.unreachable.length > 0) {
      this.partial(
        result,
        `promoted, but ${result.unreachable.join(', ')} could not be repointed: point them at ${plan.newMaster} when they are back`,
      )
    }
    if (this.sentinelProblems.length > 0) this.partial(result, `promoted, but ${this.sentinelProblems.join('; ')}`)
    return result
  }

  /** Finish or roll back the interrupted promote: the one in the journal (--recover), or the one of this instance or shard. */
  private async recover(
    heal: HealPolicy,
    target?: Awaited<ReturnType<typeof resolveInstance>>,
  ): Promise<PromoteResult | {applied: false; recovered: 'nothing'}> {
    const open = await this.openOperation(target && ((entry) => journalMatches(entry, target.instance, target.shardId)))
    if (!open) return this.nothingToRecover()
    const plan = open.entry.plan as PromotePlan
    this.progress(`Found an interrupted promote of ${plan.oldMaster}; finishing or rolling it back...`)
    // A group the interrupted run took out of Sentinel's hands is handed back once the promote is over.
    const sentinel = await this.sentinelCoordination()
    const released = sentinel.releasedBy(
      'promote',
      [plan.oldMaster, plan.newMaster],
      plan.shards.map((s) => s.id),
      open.entry,
    )
    const steps = await this.reporter()
    const registry = await this.registry()
    const recovered = await this.leftOpenSaid(
      recoverPromote(registry, open.lock, await this.pool(), open.entry, {
        onStep: (step) => steps.step(step),
        heal,
        confirmEmergency: this.flags.force
          ? (plan) =>
              this.confirm(
                `${plan.oldMaster} is gone: finish the interrupted promote as an emergency failover to ${plan.newMaster}? Writes it had not received are lost.`,
              )
          : undefined,
      }),
    )
      .finally(() => steps.end())
      .finally(() => this.handBack(sentinel, released))
    this.log(
      recovered.recovered === 'rolled-forward'
        ? `Finished the interrupted promote${recovered.plan.mode === 'emergency' ? ' as an emergency failover' : ''}: ${recovered.plan.newMaster} is the master of ${plural(recovered.plan.shards.length, 'shard')}.`
        : `Rolled back the interrupted promote: ${recovered.plan.oldMaster} stays the master. Run the command again to promote.`,
    )
    this.reportHealed(recovered)
    if (this.sentinelProblems.length > 0) this.partial(recovered, this.sentinelProblems.join('; '))
    return recovered
  }

  private render(plan: PromotePlan): void {
    const head = plan.mode === 'graceful' ? 'Graceful promote' : paint.bad('Emergency failover')
    this.progress(
      `${head}: ${plan.oldMaster} → ${paint.bold(plan.newMaster)}${plan.lagBytes === null ? '' : `, ${plural(plan.lagBytes, 'byte')} behind now`}`,
    )
    this.log(
      renderTable(
        ['SHARD', 'MASTER NOW', 'MASTER AFTER', 'REPLICAS AFTER'],
        plan.shards.map((s) => [s.id, s.before.master, s.after.master, s.after.replicas.join(', ') || '-']),
      ),
    )
    for (const c of plan.candidates.filter((c) => !c.chosen))
      this.progress(paint.dim(`  ${c.instance}: ${c.note === 'ok' ? 'will follow the new master' : c.note}`))
  }

  private report(result: PromoteResult): void {
    const {plan} = result
    if (plan.mode === 'graceful') {
      this.log(
        `Promoted ${plan.newMaster} for ${plural(plan.shards.length, 'shard')}; writes paused ${result.pauseMs} ms (replica master after ${result.promoteMs} ms).`,
      )
      if (result.fencing)
        this.progress(
          `Fenced like its predecessor: min-replicas-to-write ${result.fencing['min-replicas-to-write']}, min-replicas-max-lag ${result.fencing['min-replicas-max-lag']}.`,
        )
    } else {
      const missed =
        result.missedBytes === null || result.missedBytes === undefined ? 'an unknown number of bytes' : plural(result.missedBytes, 'byte')
      this.log(
        `Failed over to ${plan.newMaster} for ${plural(plan.shards.length, 'shard')}. It may have missed ${missed} of replication from ${plan.oldMaster}, which left the shards.`,
      )
    }
  }
}

/** Never fight Sentinel: an instance unknown Sentinels monitor, or a forced promote Sentinel can decide itself, is refused (src/sentinel/coordinate.ts). */
async function sentinelAllows(sentinel: SentinelCoordination, plan: PromotePlan, overrule: boolean): Promise<void> {
  await sentinel.refuseUnknownSentinels(plan.oldMaster, overrule)
  if (plan.mode === 'emergency') await sentinel.checkEmergency(plan.oldMaster, overrule)
}

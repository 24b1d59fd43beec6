import {Args, Flags} from '@oclif/core'

import {OperationCommand} from '../../operation-command.js'
import {ExitCode, ShardctlError, usageError} from '../../errors.js'
import {countFlag, dryRunFlag, healWithinFlag, healWithinMs, parseDuration, yesFlag} from '../../flags.js'
import type {HealPolicy} from '../../ops/cutover.js'
import {openOperationError, readJournal} from '../../ops/journal.js'
import {type SplitPlan, type SplitResult, executeSplit, planSplit, recoverSplit, splitJournalMatches} from '../../ops/split.js'
import {type Endpoint, endpointOf, instanceKey, parseInstance, sameInstance} from '../../registry/address.js'
import {neverElectedBefore, registryState} from '../../ops/cutover.js'
import {defaultSpawnDir, recordSpawned, spawnLike, spawnPorts, stopSpawned} from '../../sandbox/spawn.js'
import {formatCount, paint, plural, renderTable} from '../../ui/terminal.js'

export default class ShardsSplit extends OperationCommand<typeof ShardsSplit> {
  protected readonly operation = 'split'
  /** Holds the lock for long: renewed from a worker thread (see ops/lock-renewer.ts). */
  static longRunning = true
  static override summary = "Move some of an instance's shard databases onto new instances, live, with a short cut-over."
  static override description = `A shard is a numbered database; a split moves whole databases, numbers kept, to the targets and repoints those shards in the registry.

Plan: by default half of the source's shards, chosen so that keys end up balanced between the source and the target(s); --shards picks them. The plan is printed (with any shard that ends with fewer replicas) and applied on confirmation or --yes.
Targets must answer, be empty, serve no shard and have enough databases; --spawn starts one on this machine with the source's settings (and --spawn-replicas replicas of it).
Live copy: each target follows the source as a replica while writes go on (progress on stderr).
Switch and hold: the registry routes the moved shards to the targets (one compare-and-set step with its event) while the targets still follow the source, so a client that hears of it late writes to the source and the write still reaches a target. Clients on the moved databases of the source are disconnected until none comes back for --quiet, or four times the longest a client took to come back (at most --hold; past it the routing goes back to the source and the split is rolled back, exit 3, naming those clients).
Cut-over: the source is fenced (writes pause for at most --max-pause, then are refused: a fence that never runs out by itself), every target is proven to hold every byte (offsets equal), the targets become masters, the source drops the moved databases, the fence is lifted. The real pauses are reported.
During --grace, a client that writes to a moved database of the source has stale routing: it is named and disconnected, and the split exits 3. After it, a moved database that holds keys on the source again took such writes: the split exits 3, names the databases and keys, keeps them, and records them for shards:reconcile. --keep-source keeps the source's copies instead (then writes landing there cannot be told apart).
Each step is journaled. A split that fails half-way (a host or the registry silent past --timeout) heals by itself: for --heal-within it runs again what a rerun would (the same recovery over the same journal, under the same lock), finishing the split (exit 0) or rolling it back (exit 3). Past that bound it stops and names every instance that still refuses writes, with the shards on it and the command that finishes the split, and exits 5. A killed split is finished or rolled back by shards:split --recover (it finds the split in the journal by itself: a cron job can run it), or by the next shards:split of the same source; a run that lost its lock changes nothing more and exits 4.`

  static override examples = [
    '<%= config.bin %> <%= command.id %> 10.0.0.5:6379 --to 10.0.0.9:6379 --dry-run',
    '<%= config.bin %> <%= command.id %> 10.0.0.5:6379 --to 10.0.0.9:6379 --to-replica 10.0.0.10:6379 --yes',
    '<%= config.bin %> <%= command.id %> 127.0.0.1:7001 --spawn --port 7100 --spawn-replicas 1 --yes',
    '<%= config.bin %> <%= command.id %> 10.0.0.5:6379 --to 10.0.0.9:6379 --to 10.0.0.11:6379 --shards s001,s002,s003',
    '<%= config.bin %> <%= command.id %> --recover   # finish or roll back an interrupted split, wherever it was',
  ]

  static override args = {
    source: Args.string({description: 'The instance to split, host:port (optional with --recover).', ignoreStdin: true}),
  }

  static override flags = {
    to: Flags.string({summary: 'A target instance, host:port (repeat for several).', multiple: true, helpValue: '<host:port>'}),
    shards: Flags.string({summary: 'The shards to move, comma-separated (default: half, balanced by keys).', helpValue: '<id,id,...>'}),
    spawn: Flags.boolean({summary: "Start a new local redis-server as a target, with the source's settings."}),
    port: countFlag('port', 1024, 65_535)({summary: 'With --spawn: its port (replicas take the next ones).'}),
    dir: Flags.string({summary: 'With --spawn: where its data goes.', defaultHelp: async () => '~/.shardctl/instances'}),
    'spawn-replicas': countFlag('spawn replicas', 0, 8)({summary: 'With --spawn: replicas of the new instance.', default: 0}),
    'to-replica': Flags.string({
      summary: 'A replica instance of the (single) target, host:port: the moved shards keep a replica.',
      multiple: true,
    }),
    'max-pause': Flags.string({summary: 'Longest write pause allowed for the cut-over (ms, or 500ms, 2s).', default: '1000'}),
    grace: Flags.string({
      summary: "How long after the cut-over to look for writes that landed on the source's moved databases.",
      default: '5s',
    }),
    hold: Flags.string({
      summary: 'Longest wait for clients to leave the moved databases on the source before the cut-over.',
      default: '10s',
    }),
    quiet: Flags.string({
      summary: 'How long no client may come back to a moved database on the source before the cut-over.',
      description:
        'The moved shards take no writes for at least this long (their new masters still follow the source). Raise it when some clients may ignore the routing and write only now and then: the hold then catches them (and rolls back past --hold) instead of the grace period finding their writes after the cut-over.',
      default: '30ms',
    }),
    'keep-source': Flags.boolean({summary: "Keep the source's copy of the moved databases."}),
    'heal-within': healWithinFlag,
    recover: Flags.boolean({
      summary: 'Finish or roll back the interrupted split found in the journal; exit 0 when there is none.',
      exclusive: ['to', 'shards', 'spawn', 'port', 'dir', 'to-replica', 'keep-source', 'dry-run'],
    }),
    'overrule-sentinel': Flags.boolean({summary: 'Split a source that Sentinels the registry does not record monitor.'}),
    'dry-run': dryRunFlag,
    yes: yesFlag,
  }

  async run(): Promise<SplitResult | {applied: false; recovered?: 'nothing'}> {
    const {flags} = this
    const maxPauseMs = parseDuration(flags['max-pause'], '--max-pause')
    const heal = this.healPolicy(healWithinMs(flags['heal-within'], maxPauseMs))
    const named = this.args.source === undefined ? undefined : parseInstance(this.args.source)
    if (flags.recover) return this.recover(heal, named)
    if (!named) throw usageError('name the instance to split (host:port)', 'or run --recover to finish an interrupted split')
    const source = named
    const graceMs = parseDuration(flags.grace, '--grace')
    const holdMs = parseDuration(flags.hold, '--hold')
    const quietMs = parseDuration(flags.quiet, '--quiet')
    if (maxPauseMs > 60_000) throw usageError('--max-pause is at most 60s')
    if (!flags.spawn && (flags.port !== undefined || flags.dir !== undefined || flags['spawn-replicas'] > 0)) {
      throw usageError('--port, --dir and --spawn-replicas go with --spawn')
    }
    const shards = flags.shards
      ?.split(',')
      .map((s) => s.trim())
      .filter(Boolean)
    const registry = await this.registry()
    const pool = await this.pool()

    if (!flags['dry-run']) {
      const pending = await readJournal(registry)
      if (pending) {
        if (!splitJournalMatches(pending, source)) throw await openOperationError(registry, pending, this.operatorToken)
        // The split asked for: its --to targets (with --spawn, new ones: whichever a finished split used).
        const asked = flags.to === undefined && !flags.spawn ? undefined : {targets: flags.to?.map(parseInstance)}
        return this.recover(heal, source, asked)
      }
    }

    const targets: Endpoint[] = (flags.to ?? []).map(parseInstance)
    const targetReplicas: Endpoint[] = (flags['to-replica'] ?? []).map(parseInstance)
    // --spawn: the ports are decided first, so the plan (and the question) name the new instances.
    const toBeStarted: Endpoint[] = flags.spawn
      ? (await spawnPorts(flags.port, flags['spawn-replicas'])).map((port) => ({host: '127.0.0.1', port}))
      : []
    if (toBeStarted.length > 0) {
      targets.push(toBeStarted[0])
      targetReplicas.push(...toBeStarted.slice(1))
    }
    const request = {source, targets, shards, targetReplicas, maxPauseMs, graceMs, holdMs, quietMs, keepSource: flags['keep-source']}
    const sentinel = await this.sentinelCoordination()
    const make = async () => {
      const pending = await readJournal(registry)
      if (pending) throw await openOperationError(registry, pending, this.operatorToken)
      await sentinel.refuseUnknownSentinels(instanceKey(source), flags['overrule-sentinel'])
      return planSplit(registry, pool, {...request, toBeStarted})
    }
    const empty = (plan: SplitPlan): SplitResult => ({
      plan,
      applied: false,
      strayWrites: {},
      strays: {},
      droppedFromSource: [],
      keptOnSource: [],
    })
    if (flags['dry-run']) {
      const plan = await make()
      if (!this.jsonEnabled()) this.render(plan, toBeStarted)
      this.progress(paint.warn('Dry run: nothing changed.'))
      return empty(plan)
    }
    const fingerprint = (plan: SplitPlan) => ({
      targets: plan.targets,
      moves: plan.moves.map((m) => [m.id, m.to, m.before, m.after]),
      staying: plan.staying.map((s) => s.id),
    })
    const planned = await this.planThenLock(
      make,
      (plan) => {
        if (!this.jsonEnabled()) this.render(plan, toBeStarted)
        const fewer =
          plan.fewerReplicas.length > 0 ? `; ${plural(plan.fewerReplicas.length, 'of them ends', 'of them end')} with fewer replicas` : ''
        const start =
          toBeStarted.length > 0
            ? `Start ${plural(toBeStarted.length, 'new redis-server')} on this machine (${toBeStarted.map((e) => `127.0.0.1:${e.port}`).join(', ')}) and move`
            : 'Move'
        return `${start} ${plural(plan.moves.length, 'shard')} off ${plan.source} (copy ~${(plan.sourceBytes / 1e6).toFixed(1)} MB; writes pause at most ${maxPauseMs} ms${fewer})?`
      },
      fingerprint,
    )
    let plan = planned.plan
    const confirmed = planned.confirmed
    if (!confirmed) return {...empty(plan), ...this.nothing()}
    const lock = await this.lock()

    const spawned: NonNullable<SplitResult['spawned']> = []
    let started = false
    if (toBeStarted.length > 0) {
      const spawnDir = flags.dir ?? defaultSpawnDir()
      const instances = await spawnLike(await pool.get(source), {ports: toBeStarted.map((e) => e.port), dir: spawnDir})
      spawned.push(...[instances.target, ...instances.replicas].map(({port, pid, dir}) => ({port, pid, dir})))
      // Recorded (whatever --dir says): sandbox:status lists them, sandbox:down stops those started for the sandbox.
      recordSpawned(spawned.map((p) => ({...p, startedAt: new Date().toISOString(), forSplitOf: instanceKey(source)})))
      this.progress(`Started redis-server on ${spawned.map((p) => `127.0.0.1:${p.port} (pid ${p.pid})`).join(', ')}, data in ${spawnDir}.`)
      // Started for this split only: if it never begins, nothing is left running.
      this.onCleanup(async () => {
        if (!started) await stopSpawned(spawned.map((p) => p.port))
      })
      // Now that they exist, they are checked like any target (empty, databases).
      const real = await planSplit(registry, pool, request)
      if (JSON.stringify(fingerprint(real)) !== JSON.stringify(fingerprint(plan))) {
        throw new ShardctlError('the spawned instances do not give the planned split; nothing was changed and they were stopped', {
          code: 'ECHANGED',
          exitCode: ExitCode.unhealthy,
        })
      }
      plan = real
    }
    this.interruptNote = `The split is recorded in the registry's journal; run ${this.recoverCommand()} to finish or roll it back.`
    started = true
    const steps = await this.reporter({grace: plan.graceMs})
    // Sentinel keeps guarding the source during the copy, never electing a target; it lets go of it for the cut-over (src/sentinel/coordinate.ts).
    const neverElect = await sentinel.neverElect(
      plan.source,
      plan.targets.map((t) => endpointOf(t.instance)),
    )
    const release = sentinel.releaseHook(plan.source, 'split')
    const result = await this.leftOpenSaid(
      executeSplit(registry, lock, pool, plan, {
        onStep: (step) => steps.step(step),
        onCopy: (read, total) => steps.copied(read, total),
        heal,
        release: release.hook,
        neverElect,
      }),
    )
      .finally(() => steps.end())
      .finally(() => sentinel.restorePriority(neverElect?.previous))
      .finally(() => this.handBack(sentinel, release.released(), () => this.splitOutcome(plan)))
    if (spawned.length > 0) result.spawned = spawned
    if (result.recovered === 'rolled-back') {
      return this.partial(
        result,
        `the split failed half-way (${result.healed?.after}) and healed by rolling back: the registry routes to ${plan.source} again, which takes writes, and the targets were emptied; nothing was lost. Run the split again${this.sentinelNote()}`,
      )
    }
    this.log(
      `Moved ${plural(plan.moves.length, 'shard')} off ${plan.source}; writes to the source paused ${result.pauseMs} ms, to the moved shards ${result.heldMs} ms.`,
    )
    this.reportHealed(result)
    if (result.pauseExceeded)
      this.warn(
        `the pause ran ${result.pauseMs} ms, beyond --max-pause ${maxPauseMs} ms (the registry or this process was slow); no write was lost`,
      )
    return this.reportStrays(result, result.plan.keepSource)
  }

  /**
   * Finish or roll back the interrupted split: the one in the journal (--recover), or the
   * one of this source. `asked`: the run named a split (--to, --spawn), which a roll-back
   * did not make: exit 3, not 0, so that a script does not carry on as if it had.
   */
  private async recover(
    heal: HealPolicy,
    source?: Endpoint,
    asked?: {targets?: Endpoint[]},
  ): Promise<SplitResult | {applied: false; recovered: 'nothing'}> {
    const open = await this.openOperation(source && ((entry) => splitJournalMatches(entry, source)))
    if (!open) return this.nothingToRecover()
    const plan = open.entry.plan as SplitPlan
    this.progress(`Found an interrupted split of ${plan.source}; finishing or rolling it back...`)
    // A source the interrupted run took out of Sentinel's hands is handed back once the split is over.
    const sentinel = await this.sentinelCoordination()
    const released = sentinel.releasedBy(
      'split',
      [plan.source],
      [...plan.moves.map((m) => m.id), ...plan.staying.map((s) => s.id)],
      open.entry,
    )
    const steps = await this.reporter({grace: plan.graceMs})
    const registry = await this.registry()
    const recovered = await this.leftOpenSaid(
      recoverSplit(registry, open.lock, await this.pool(), open.entry, {onStep: (step) => steps.step(step), heal}),
    )
      .finally(() => steps.end())
      .finally(() => sentinel.restorePriority(neverElectedBefore(open.entry)))
      .finally(() => this.handBack(sentinel, released, () => this.splitOutcome(plan)))
    this.log(
      recovered.recovered === 'rolled-forward'
        ? 'Finished the interrupted split.'
        : 'Rolled back the interrupted split: the registry routes to the source and the targets were emptied. Run the command again to split.',
    )
    this.reportHealed(recovered)
    const reported = this.reportStrays(recovered, recovered.plan.keepSource)
    if (asked && recovered.recovered === 'rolled-back') {
      return this.partial(
        recovered,
        'the split asked for was not made (the interrupted one was rolled back first): run the command again to make it',
      )
    }
    const finished = plan.targets.map((t) => endpointOf(t.instance))
    const same = (a: Endpoint[], b: Endpoint[]) => a.length === b.length && a.every((e) => b.some((f) => sameInstance(e, f)))
    if (asked?.targets && !same(asked.targets, finished)) {
      return this.partial(
        recovered,
        `the interrupted split (onto ${plan.targets.map((t) => t.instance).join(', ')}) was finished, not the one asked for: look at shards:list, then run the command again if it is still wanted`,
      )
    }
    return reported
  }

  /** Where the split ended, for Sentinel: the source, the targets, and whether the registry routes the moved shards to them. */
  private async splitOutcome(plan: SplitPlan): Promise<{source: string; targets: string[]; applied: boolean}> {
    const applied = (await registryState(await this.registry(), plan.moves)) === 'after'
    return {source: plan.source, targets: plan.targets.map((t) => t.instance), applied}
  }

  private nothing(): {applied: false} {
    this.progress('Nothing changed.')
    return {applied: false}
  }

  private render(plan: SplitPlan, toBeStarted: Endpoint[] = []): void {
    const spawning = toBeStarted.length > 0 ? ` (to be started by --spawn: ${toBeStarted.map(instanceKey).join(', ')})` : ''
    this.progress(
      `Split ${plan.source} → ${plan.targets.map((t) => t.instance).join(', ')}${spawning}: ${plural(plan.moves.length, 'shard moves', 'shards move')}, ${plural(plan.staying.length, 'stays', 'stay')}.`,
    )
    this.log(
      renderTable(
        ['SHARD', 'DB', 'KEYS', 'FROM', 'TO'],
        plan.moves.map((m) => [m.id, String(m.db), formatCount(m.keys), m.before.master, m.after.master]),
      ),
    )
    this.progress(
      paint.dim(`After: ${plan.balance.map((b) => `${b.instance} ${plural(b.shards, 'shard')}, ${plural(b.keys, 'key')}`).join(' · ')}`),
    )
    for (const f of plan.fewerReplicas) {
      this.progress(
        paint.warn(
          `  ${f.id} goes from ${plural(f.before, 'replica')} to ${f.after}${f.after === 0 ? ' (give the target replicas with --to-replica or --spawn-replicas)' : ''}`,
        ),
      )
    }
  }
}

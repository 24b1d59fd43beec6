import {Args, Flags} from '@oclif/core'

import type {CopyRate} from '../../copy/engine.js'
import {OperationCommand} from '../../operation-command.js'
import {ShardctlError, usageError} from '../../errors.js'
import {dryRunFlag, healWithinFlag, healWithinMs, parseDuration, yesFlag} from '../../flags.js'
import type {HealPolicy} from '../../ops/cutover.js'
import {openOperationError, readJournal} from '../../ops/journal.js'
import {type MoveOptions, type MovePlan, type MoveResult, executeMove, moveJournalMatches, planMove, recoverMove} from '../../ops/move.js'
import {type Endpoint, endpointOf, instanceKey, parseAddress, sameInstance} from '../../registry/address.js'
import {formatBytes, formatCount, paint, plural, renderTable} from '../../ui/terminal.js'

/** --rate: keys per second (a plain number, or 5000keys/s) or megabytes per second (20MB/s). */
export function parseRate(input: string): CopyRate {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(keys\/s|mb\/s)?\s*$/i.exec(input)
  const value = match ? Number(match[1]) : 0
  if (!match || value <= 0)
    throw usageError(`invalid --rate "${input}"`, 'give keys per second (5000 or 5000keys/s) or megabytes per second (20MB/s)')
  return match[2]?.toLowerCase() === 'mb/s' ? {bytesPerSecond: Math.round(value * 1e6)} : {keysPerSecond: Math.round(value)}
}

/** How a move runs: shards:rebalance passes these on to each move it makes. */
export const moveRunFlags = {
  rate: Flags.string({summary: 'Throttle the copy: keys per second (5000) or megabytes per second (20MB/s).', helpValue: '<rate>'}),
  'max-pause': Flags.string({summary: 'Longest write pause allowed for the cut-over (ms, or 500ms, 2s).', default: '1000'}),
  grace: Flags.string({
    summary: "How long after the cut-over to look for writes that landed on the source's moved databases.",
    default: '5s',
  }),
  hold: Flags.string({
    summary: 'Longest wait, within --max-pause, for clients to leave the moved databases of the fenced source.',
    default: '10s',
  }),
  quiet: Flags.string({
    summary: 'How long no client may come back to a moved database of the fenced source before the release.',
    default: '30ms',
  }),
}

/** The --rate, --max-pause, --grace, --hold and --quiet given, checked (exit 2 for a bad one). */
export function parseMoveRunFlags(flags: {rate?: string; 'max-pause': string; grace: string; hold: string; quiet: string}): {
  rate?: CopyRate
  maxPauseMs: number
  graceMs: number
  holdMs: number
  quietMs: number
} {
  const maxPauseMs = parseDuration(flags['max-pause'], '--max-pause')
  if (maxPauseMs > 60_000) throw usageError('--max-pause is at most 60s')
  return {
    ...(flags.rate === undefined ? {} : {rate: parseRate(flags.rate)}),
    maxPauseMs,
    graceMs: parseDuration(flags.grace, '--grace'),
    holdMs: parseDuration(flags.hold, '--hold'),
    quietMs: parseDuration(flags.quiet, '--quiet'),
  }
}

export default class ShardsMove extends OperationCommand<typeof ShardsMove> {
  protected readonly operation = 'move'
  /** Holds the lock for long: renewed from a worker thread (see ops/lock-renewer.ts). */
  static longRunning = true
  static override strict = false
  /** The README's heading for it (help builds the full usage, flags and all: see help.ts). */
  static override usage = '<%= command.id %> [SHARD...]'
  static override summary = "Move shards' databases, live, into free databases of another instance that may serve other shards."
  static override description = `Each shard's database is copied into a database of the target instance, under another number if need be: the lowest database of the target that is empty and that no shard of the registry uses (on it or on its replicas), or the one --to names (HOST:PORT/DB, one shard only). The shards must live on one source instance.

Plan and preflight (printed, and in --json; a failed check is refused in one line, exit 2, nothing changed): the target database is empty and unused; the target's Redis reads the RDB version of the source's; the target has room under its maxmemory for what arrives (the source databases' memory, estimated from a sample); the target has every function library and module the source has (compared by name); the clocks of both instances agree within --max-clock-skew (expiry times are copied as absolute times); the moved shards' replicas afterwards are the target instance's replicas, and a shard that ends with fewer is named.
Live copy: a replication client reads the source's snapshot and stream and applies only the moved database's entries and commands to the target database, at --rate if given (progress on stderr). The source sees it as one more replica; it never counts towards the fleet's fencing.
Verify (--no-verify skips it): once the copy is live, each moved database is compared with its copy as shards:verify does, rounds re-checking only the keys that differed (once the copy has applied every write the source had then), until at most 100 differ; those are compared once more, values included, under the fence, after the proof below. The verify compares each key's presence on both sides, type, absolute expiry, length and value; --no-verify-values leaves the values out (the snapshot's values arrive by RESTORE, whose checksum Redis checks; a write whose command went astray may leave a value of the same length, which only the values show). A copy that still differs is wrong (something else writes to the target database): the move is not switched but rolled back, exit 3, in one line naming the shard and keys.
Cut-over: the source is fenced (its writes pause for at most --max-pause, then are refused), the copy is proven to have applied the source's replication offset read under the fence, the copy stops, and only then the registry routes the moved shards to the target databases (one compare-and-set step with its event). Stopping before the switch is deliberate: once the target database takes the shard's writes, nothing the source still sent (an expiry's DEL) may overwrite them. Clients on the moved databases of the fenced source are disconnected so that they read the routing again, then, in one step no client can come between, the fence is lifted and the source drops the moved databases.
During --grace, a client that writes to a moved database of the source has stale routing: it is named and disconnected, and the move exits 3; keys found there are kept and recorded for shards:reconcile.
Each step is journaled, under the operator lock. Before the switch a failure rolls the move back (the target databases emptied, the source untouched); after it, forward. A move that fails half-way heals by itself within --heal-within, or stops naming what still refuses writes, exit 5. A killed move is finished or rolled back by shards:move --recover, or by the next shards:move of one of its shards; a run that lost its lock changes nothing more and exits 4.`

  static override examples = [
    '<%= config.bin %> <%= command.id %> s007 --to 10.0.0.9:6379 --dry-run',
    '<%= config.bin %> <%= command.id %> s007 s012 --to 10.0.0.9:6379 --rate 20MB/s --yes',
    '<%= config.bin %> <%= command.id %> s007 --to 10.0.0.9:6379/14 --yes',
    '<%= config.bin %> <%= command.id %> --recover   # finish or roll back an interrupted move, wherever it was',
  ]

  static override args = {
    shard: Args.string({description: 'The shards to move (several may be named; optional with --recover).', ignoreStdin: true}),
  }

  static override flags = {
    to: Flags.string({summary: 'The target instance, host:port, or host:port/db for one shard.', helpValue: '<host:port[/db]>'}),
    ...moveRunFlags,
    'max-clock-skew': Flags.string({
      summary: 'How far apart the clocks of the source and the target may be (expiry times are copied as absolute times).',
      default: '1s',
    }),
    verify: Flags.boolean({
      summary: 'Compare each moved database with its copy before the switch; --no-verify skips it.',
      default: true,
      allowNo: true,
    }),
    'verify-values': Flags.boolean({
      summary: "The verify compares every value too; --no-verify-values compares only each key's presence, type, expiry and length.",
      default: true,
      allowNo: true,
    }),
    'heal-within': healWithinFlag,
    recover: Flags.boolean({
      summary: 'Finish or roll back the interrupted move found in the journal; exit 0 when there is none.',
      exclusive: ['to', 'rate', 'dry-run'],
    }),
    'dry-run': dryRunFlag,
    yes: yesFlag,
  }

  async run(): Promise<MoveResult | {applied: false; recovered?: 'nothing'}> {
    const {flags} = this
    const run = parseMoveRunFlags(flags)
    const {maxPauseMs} = run
    const heal = this.healPolicy(healWithinMs(flags['heal-within'], maxPauseMs))
    const shards = this.positional
    if (flags.recover) return this.recover(heal, shards)
    if (shards.length === 0) throw usageError('name the shards to move', 'or run --recover to finish an interrupted move')
    // Read before anything is asked of the registry: a malformed --to is refused as such.
    const target = flags.to === undefined ? undefined : parseTo(flags.to)
    const registry = await this.registry()
    if (!flags['dry-run']) {
      // A rerun naming a shard of an interrupted move finishes or rolls that move back first.
      const pending = await readJournal(registry)
      if (pending) {
        if (!moveJournalMatches(pending, shards)) throw await openOperationError(registry, pending, this.operatorToken)
        const asked =
          flags.to === undefined || target === undefined
            ? undefined
            : {shards, to: {host: target.host, port: target.port}, toDb: /\/\d+\s*$/.test(flags.to) ? target.db : undefined}
        return this.recover(heal, shards, asked)
      }
    }
    if (flags.to === undefined || target === undefined)
      throw usageError('no target', 'name it with --to HOST:PORT (or HOST:PORT/DB for one shard)')
    const to: Endpoint = {host: target.host, port: target.port}
    const toDb = /\/\d+\s*$/.test(flags.to) ? target.db : undefined
    const request = {
      shards,
      to,
      toDb,
      ...run,
      maxClockSkewMs: parseDuration(flags['max-clock-skew'], '--max-clock-skew'),
      verify: flags.verify,
      verifyValues: flags['verify-values'],
    }
    const pool = await this.pool()
    const make = async () => {
      const pending = await readJournal(registry)
      if (pending) throw await openOperationError(registry, pending, this.operatorToken)
      return planMove(registry, pool, request)
    }
    const empty = (plan: MovePlan): MoveResult => ({
      plan,
      applied: false,
      strays: {},
      strayWrites: {},
      keptOnSource: [],
      droppedFromSource: [],
    })
    if (flags['dry-run']) {
      const plan = await make()
      if (!this.jsonEnabled()) this.render(plan)
      this.progress(paint.warn('Dry run: nothing changed.'))
      return empty(plan)
    }
    const {plan, confirmed} = await this.planThenLock(
      make,
      (plan) => {
        if (!this.jsonEnabled()) this.render(plan)
        const fewer =
          plan.fewerReplicas.length > 0 ? `; ${plural(plan.fewerReplicas.length, 'of them ends', 'of them end')} with fewer replicas` : ''
        return `Move ${plural(plan.moves.length, 'shard')} from ${plan.source} to ${plan.target} (copy ~${formatBytes(plan.preflight.memory.arriving)}; writes to ${plan.source} pause at most ${maxPauseMs} ms${fewer})?`
      },
      (plan) => ({target: plan.target, moves: plan.moves.map((m) => [m.id, m.before, m.after])}),
    )
    if (!confirmed) {
      this.progress('Nothing changed.')
      return empty(plan)
    }
    const lock = await this.lock()
    this.interruptNote = `The move is recorded in the registry's journal; run ${this.recoverCommand()} to finish or roll it back.`
    const steps = await this.reporter({grace: plan.graceMs})
    const copied = new Map<string, {bytes: number; total: number}>()
    const result = await this.leftOpenSaid(
      executeMove(registry, lock, pool, plan, {
        ...(await this.moveOptions(heal)),
        onStep: (step) => steps.step(step),
        onCopy: (shard, p) => {
          copied.set(shard, {bytes: p.bytes, total: p.snapshotBytes ?? 0})
          const all = [...copied.values()]
          steps.copied(
            all.reduce((n, c) => n + c.bytes, 0),
            all.reduce((n, c) => n + c.total, 0),
          )
        },
      }),
    ).finally(() => steps.end())
    if (result.recovered === 'rolled-back') {
      return this.partial(
        result,
        `the move failed half-way (${result.healed?.after}) and healed by rolling back: the registry routes to ${plan.source} still, which takes writes, and the target databases were emptied; nothing was lost. Run the move again`,
      )
    }
    this.log(
      `Moved ${plural(plan.moves.length, 'shard')} from ${plan.source} to ${plan.target} (${plan.moves.map((m) => `${m.id} → db ${m.toDb}`).join(', ')}); writes to the source paused ${result.pauseMs} ms.`,
    )
    this.reportHealed(result)
    if (result.pauseExceeded)
      this.warn(
        `the pause ran ${result.pauseMs} ms, beyond --max-pause ${maxPauseMs} ms (the registry or this process was slow); no write was lost`,
      )
    return this.reportStrays(result)
  }

  /** How the copy reaches the instances: the fleet's instance credentials and TLS. */
  private async moveOptions(heal: HealPolicy): Promise<MoveOptions> {
    const {instance, options} = await this.resolveConnections()
    return {
      connectTarget: (e) => ({...instance, host: e.host, port: e.port, db: 0}),
      timeoutMs: options.timeoutMs,
      ...(options.tls ? {tls: options.tls} : {}),
      heal,
    }
  }

  /**
   * Finish or roll back the interrupted move: the one in the journal (--recover), or the
   * one of these shards. `asked`: the move the run named (--to). When the recovery did not
   * make it (a roll-back, or another move finished): exit 3, not 0, so that a script does
   * not carry on as if it had.
   */
  private async recover(
    heal: HealPolicy,
    shards: string[],
    asked?: {shards: string[]; to: Endpoint; toDb?: number},
  ): Promise<MoveResult | {applied: false; recovered: 'nothing'}> {
    const open = await this.openOperation(shards.length > 0 ? (entry) => moveJournalMatches(entry, shards) : undefined)
    if (!open) return this.nothingToRecover()
    const plan = open.entry.plan as MovePlan
    this.progress(`Found an interrupted move from ${plan.source} to ${plan.target}; finishing or rolling it back...`)
    const steps = await this.reporter({grace: plan.graceMs})
    const recovered = await this.leftOpenSaid(
      recoverMove(await this.registry(), open.lock, await this.pool(), open.entry, {
        ...(await this.moveOptions(heal)),
        onStep: (step) => steps.step(step),
      }),
    ).finally(() => steps.end())
    const rolledBack = 'Rolled back the interrupted move: the registry routes to the source and the target databases were emptied.'
    this.log(recovered.recovered === 'rolled-forward' ? 'Finished the interrupted move.' : `${rolledBack} Run the command again to move.`)
    this.reportHealed(recovered)
    const reported = this.reportStrays(recovered)
    if (asked && recovered.recovered === 'rolled-back') {
      return this.partial(
        recovered,
        'the move asked for was not made (the interrupted one was rolled back first): run the command again to make it',
      )
    }
    if (asked && !sameMove(plan, asked)) {
      return this.partial(
        recovered,
        `the interrupted move (${plan.moves.map((m) => m.id).join(', ')} to ${plan.target}) was finished, not the one asked for (${asked.shards.join(', ')} to ${instanceKey(asked.to)}): run the command again to make it`,
      )
    }
    return reported
  }

  private render(plan: MovePlan): void {
    const {rdb, memory, clock} = plan.preflight
    this.progress(`Move ${plan.source} → ${plan.target}: ${plural(plan.moves.length, 'shard')}.`)
    this.log(
      renderTable(
        ['SHARD', 'FROM', 'TO', 'KEYS', 'MEMORY'],
        plan.moves.map((m) => [m.id, m.before.master, m.after.master, formatCount(m.keys), `~${formatBytes(m.bytes)}`]),
      ),
    )
    const room = memory.maxmemory > 0 ? `${formatBytes(memory.maxmemory - memory.used)} free under maxmemory` : 'no maxmemory'
    this.progress(
      paint.dim(
        `Preflight: target databases empty and unused · Redis ${rdb.source.redis} (RDB ${rdb.source.version}) → ${rdb.target.redis} (reads RDB ${rdb.target.version}) · ~${formatBytes(memory.arriving)} arriving, ${room} · clocks ${clock.skewMs} ms apart (at most ${clock.maxSkewMs})`,
      ),
    )
    this.progress(
      paint.dim(
        `Replicas after the move: ${plan.targetReplicas.length > 0 ? plan.targetReplicas.join(', ') : 'none'} (the target instance's)${plan.rate ? ` · copy throttled to ${plan.rate.keysPerSecond ? `${plan.rate.keysPerSecond} keys/s` : `${formatBytes(plan.rate.bytesPerSecond ?? 0)}/s`}` : ''}`,
      ),
    )
    for (const f of plan.fewerReplicas) {
      this.progress(
        paint.warn(
          `  ${f.id} goes from ${plural(f.before, 'replica')} to ${f.after}${f.after === 0 ? ' (the target instance has no replica)' : ''}`,
        ),
      )
    }
  }
}

/** --to, parsed; a refusal names the flag. */
function parseTo(input: string): ReturnType<typeof parseAddress> {
  try {
    return parseAddress(input)
  } catch (error) {
    if (error instanceof ShardctlError) throw usageError(`--to: ${error.message}`, error.hint)
    throw error
  }
}

/** Whether a move finished is the one a command asks for: the same shards, to the same instance (and database, if named). */
function sameMove(plan: MovePlan, asked: {shards: string[]; to: Endpoint; toDb?: number}): boolean {
  const ids = new Set(plan.moves.map((m) => m.id))
  return (
    ids.size === asked.shards.length &&
    asked.shards.every((id) => ids.has(id)) &&
    sameInstance(endpointOf(plan.target), asked.to) &&
    (asked.toDb === undefined || plan.moves.every((m) => m.toDb === asked.toDb))
  )
}

import {Flags} from '@oclif/core'

import {RegistryCommand} from '../../base-command.js'
import {ExitCode, type ExitCodeValue, ShardctlError} from '../../errors.js'
import {countFlag, dryRunFlag, instanceFlag, yesFlag} from '../../flags.js'
import {failpoint} from '../../ops/failpoint.js'
import {openOperationError, readJournal} from '../../ops/journal.js'
import {lockLost} from '../../ops/lock.js'
import {runMove} from '../../rebalance/apply.js'
import {canonicalInstance, endpointOf} from '../../registry/address.js'
import {moveRunFlags, parseMoveRunFlags} from './move.js'
import {type ExcludedInstance, measureFleet} from '../../rebalance/measure.js'
import {type BalanceBy, type InstanceBalance, type RebalancePlan, planRebalance} from '../../rebalance/plan.js'
import {formatBytes, formatCount, formatPercent, paint, plural, renderTable} from '../../ui/terminal.js'

/** A spread of fills at or below this counts as balanced. */
const TOLERANCE = 0.05
/** A target takes a shard only while it stays at or below this fraction of its maxmemory. */
const MAX_FILL = 0.9

export interface RebalanceMove {
  shard: string
  /** host:port/db */
  from: string
  to: string
  /** The shards:move command line that makes it, for this fleet. */
  command: string
}

export interface RebalanceResult {
  by: BalanceBy
  instances: InstanceBalance[]
  moves: RebalanceMove[]
  spreadBefore: number
  spreadAfter: number
  stopped: RebalancePlan['stopped']
  excluded: ExcludedInstance[]
  fixed: {shard: string; reason: string}[]
  applied: boolean
  /** With --apply: the shards moved. */
  done: string[]
}

export default class ShardsRebalance extends RegistryCommand<typeof ShardsRebalance> {
  /** Holds the lock across all its moves: renewed from a worker thread (see ops/lock-renewer.ts). */
  static longRunning = true
  static override summary = 'Plan the shard moves that even the instances out, and with --apply make them.'
  static override description = `Measures every master instance of the registry, and those --include names (instances that serve no shard yet; one that cannot take shards, unreachable, a replica or without maxmemory for --by memory, is refused), by used memory, maxmemory, keys, and each shard's memory estimated from a sample, and plans the fewest shards:move that bring the instances within ${TOLERANCE * 100} points of fill of each other: --by memory, used memory over maxmemory (an instance without maxmemory is left out, named); --by keys, keys against the mean of the instances. A shard goes only into a free database of an instance that stays at or below ${MAX_FILL * 100}% of its maxmemory. Instances that are unreachable or replicas are left out, and named.

Without --apply (or with --dry-run) the plan is printed: each instance before and after, and the moves as the shards:move command lines that make them, for this fleet, to paste (with the --rate, --max-pause, --grace, --hold and --quiet given). A balanced fleet says so, with no move.
--apply asks first (--yes answers; with no terminal --yes is needed), then takes the operator lock and holds it until the last move is over, so no other operator can change the fleet between two moves (they exit 4 naming the rebalance). The moves run one after another in this process, each as shards:move --yes would (its progress on stderr, with the --rate, --max-pause, --grace, --hold and --quiet given), and the first that fails stops the rest, with its exit code, naming the moves done and those not done.`

  static override examples = [
    '<%= config.bin %> <%= command.id %> --by memory',
    '<%= config.bin %> <%= command.id %> --by keys --max-moves 3 --json',
    '<%= config.bin %> <%= command.id %> --by memory --include 10.0.0.9:6379   # a new, empty instance takes shards too',
    '<%= config.bin %> <%= command.id %> --by memory --max-moves 2 --rate 20MB/s --apply --yes',
  ]

  static override flags = {
    by: Flags.string({
      summary: 'What to even out: memory (used over maxmemory) or keys.',
      options: ['memory', 'keys'],
      required: true,
    }),
    'max-moves': countFlag('--max-moves', 1, 1_000_000)({summary: 'Plan at most this many moves.'}),
    include: instanceFlag({
      summary: 'Balance this instance too, though it serves no shard yet: measured like the others, it may take shards (repeat for more).',
      multiple: true,
    }),
    ...moveRunFlags,
    apply: Flags.boolean({summary: 'Make the moves, one after another, stopping at the first that fails.', default: false}),
    'dry-run': dryRunFlag,
    yes: yesFlag,
  }

  async run(): Promise<RebalanceResult> {
    const {flags} = this
    const by = flags.by as BalanceBy
    parseMoveRunFlags(flags)
    // Passed on to each move as given (a move's own defaults otherwise), and shown in its command line.
    const passOn = Object.keys(moveRunFlags)
      .filter((name) => this.given(name) && flags[name as keyof typeof moveRunFlags] !== undefined)
      .flatMap((name) => [`--${name}`, String(flags[name as keyof typeof moveRunFlags])])
    const registry = await this.registry()
    const pool = await this.pool()
    const {registry: where} = await this.resolveConnections()
    const extra = (flags.include ?? []).map((e) => ({host: e.host, port: e.port}))
    const make = async (): Promise<{plan: RebalancePlan; result: RebalanceResult}> => {
      const measured = await measureFleet(registry, pool, {
        by,
        extra,
        registry: {host: where.host, port: where.port, db: where.db},
        onProgress: (line) => this.progress(paint.dim(line)),
      })
      // An instance named to take shards that cannot: refused, not planned around (the plan would shuffle the others instead).
      const included = new Set(extra.map((e) => canonicalInstance(e)))
      const refused = measured.excluded.find((e) => included.has(canonicalInstance(endpointOf(e.instance))))
      if (refused)
        throw new ShardctlError(`--include ${refused.instance} cannot take shards: ${refused.reason}`, {
          code: 'EINCLUDE',
          exitCode: refused.reason.startsWith('unreachable') ? ExitCode.unexpected : ExitCode.unhealthy,
          hint: 'fix it, or leave it out of --include',
        })
      for (const e of measured.excluded) this.warn(`${e.instance} is left out: ${e.reason}`)
      for (const f of measured.fixed) this.progress(paint.dim(`${f.shard} stays: ${f.reason}`))
      const plan = planRebalance({
        by,
        instances: measured.instances,
        shards: measured.shards,
        maxMoves: flags['max-moves'] ?? Number.POSITIVE_INFINITY,
        tolerance: TOLERANCE,
        maxFill: MAX_FILL,
      })
      const moves = plan.moves.map((m) => {
        const to = `${m.to.instance}/${m.to.db}`
        return {
          shard: m.shard,
          from: `${m.from.instance}/${m.from.db}`,
          to,
          command: this.sameFleetCommand('shards:move', m.shard, '--to', to, ...passOn),
        }
      })
      const result: RebalanceResult = {
        by,
        instances: plan.instances,
        moves,
        spreadBefore: plan.spreadBefore,
        spreadAfter: plan.spreadAfter,
        stopped: plan.stopped,
        excluded: measured.excluded,
        fixed: measured.fixed,
        applied: false,
        done: [],
      }
      return {plan, result}
    }

    if (!flags.apply || flags['dry-run']) {
      const {plan, result} = await make()
      if (!this.jsonEnabled()) this.render(plan, result.moves)
      const pending = await readJournal(registry)
      if (pending && result.moves.length > 0) {
        // The plan stands, but no move of it runs before that operation is over.
        const open = await openOperationError(registry, pending, this.operatorToken)
        this.warn(`${open.message}: these moves are refused until it is over (${open.hint ?? 'see shards:history'})`)
      }
      if (flags.apply) this.progress(paint.warn('Dry run: nothing changed.'))
      return result
    }

    // Asked without the lock (a person may take minutes), then planned again under it.
    const {
      plan: {result},
      confirmed,
    } = await this.planThenLock(
      async () => {
        const pending = await readJournal(registry)
        if (pending) throw await openOperationError(registry, pending, this.operatorToken)
        return make()
      },
      ({plan, result: {moves}}) => {
        if (!this.jsonEnabled()) this.render(plan, moves)
        return moves.length === 0
          ? undefined
          : `Make ${plural(moves.length, 'move')} (${moves.map((m) => `${m.shard} → ${m.to}`).join(', ')})?`
      },
      ({result: {moves}}) => moves,
    )
    const {moves} = result
    if (moves.length === 0) return result
    if (!confirmed) {
      this.progress('Nothing changed.')
      return result
    }
    const lock = await this.lock()
    const fleet = fleetArgs(this.argv)
    for (const [i, move] of moves.entries()) {
      this.progress(`Move ${i + 1} of ${moves.length}: ${move.shard} ${move.from} → ${move.to}`)
      this.interruptNote = `Moves made: ${result.done.length > 0 ? result.done.join(', ') : 'none'}; an interrupted move of ${move.shard} is finished or rolled back by ${this.sameFleetCommand('shards:move', '--recover')}.`
      const argv = [move.shard, '--to', move.to, ...passOn, '--yes', ...fleet, ...(this.jsonEnabled() ? ['--json'] : [])]
      // A lock lost since the last move (its lease ran out, or it was broken): no other move is made.
      const {exitCode: code, error} = lock.isLost
        ? {exitCode: ExitCode.locked, error: {code: 'ELOCKLOST', message: lockLost().message}}
        : await runMove(argv, this.config, lock)
      if (code !== 0) {
        const done = result.done.length > 0 ? `done: ${result.done.join(', ')}` : 'no move was done'
        const notDone = moves.slice(i + 1).map((m) => m.shard)
        throw new ShardctlError(
          `move ${i + 1} of ${moves.length} (${move.shard} → ${move.to}) stopped with exit ${code}; ${done}; not made: ${[move.shard, ...notDone].join(', ')}${code === ExitCode.unhealthy ? ` (${move.shard} may be moved: see above)` : ''}`,
          {
            code: 'EREBALANCE',
            exitCode: code as ExitCodeValue,
            hint: 'see the error above; then run shards:rebalance again for a new plan',
            details: {done: result.done, failed: move.shard, notDone, ...(error === undefined ? {} : {move: error})},
          },
        )
      }
      result.done.push(move.shard)
      // Tests stop here, between two moves, under the lock.
      await failpoint('rebalance-move', 'after')
    }
    result.applied = true
    this.log(`Rebalanced: ${plural(moves.length, 'move')} made (${result.done.join(', ')}).`)
    return result
  }

  private render(plan: RebalancePlan, moves: RebalanceMove[]): void {
    const used = (bytes: number, max: number) => (max > 0 ? `${formatBytes(bytes)} (${formatPercent(bytes / max)})` : formatBytes(bytes))
    this.log(
      renderTable(
        ['INSTANCE', 'MAXMEMORY', 'USED BEFORE', 'USED AFTER', 'KEYS BEFORE', 'KEYS AFTER', 'SHARDS'],
        plan.instances.map((i) => [
          i.instance,
          i.maxMemory > 0 ? formatBytes(i.maxMemory) : '-',
          used(i.before.usedMemory, i.maxMemory),
          used(i.after.usedMemory, i.maxMemory),
          formatCount(i.before.keys),
          formatCount(i.after.keys),
          i.before.shards === i.after.shards ? String(i.before.shards) : `${i.before.shards} → ${i.after.shards}`,
        ]),
      ),
    )
    const spread = (s: number) => (plan.by === 'memory' ? `${formatPercent(s)} of maxmemory` : `${formatPercent(s)} of the mean keys`)
    if (moves.length === 0) {
      this.log(
        plan.stopped === 'balanced'
          ? `Balanced by ${plan.by}: the instances are within ${spread(plan.spreadBefore)} of each other; no move.`
          : `No move evens the instances out further (spread ${spread(plan.spreadBefore)}); no move.`,
      )
      return
    }
    this.log(`${plural(moves.length, 'move')} (spread ${spread(plan.spreadBefore)} → ${spread(plan.spreadAfter)}):`)
    for (const m of moves) this.log(m.command)
    if (plan.stopped === 'max-moves') this.progress(paint.dim('Stopped at --max-moves; more moves would even it out further.'))
  }
}

/** The arguments that name the fleet (registry, prefix, context, TLS, timeout): the command line without this command's own flags. */
function fleetArgs(argv: string[]): string[] {
  const own = new Map<string, boolean>([['--json', false]])
  for (const [name, flag] of Object.entries(ShardsRebalance.flags)) {
    own.set(`--${name}`, flag.type === 'option')
    if (flag.char) own.set(`-${flag.char}`, flag.type === 'option')
  }
  const out: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const [name] = argv[i].split('=', 1)
    const takesValue = own.get(name)
    if (takesValue === undefined) out.push(argv[i])
    else if (takesValue && !argv[i].includes('=')) i++
  }
  return out
}

import {Args, Flags} from '@oclif/core'

import {RegistryCommand} from '../../base-command.js'
import {usageError} from '../../errors.js'
import {countFlag, dryRunFlag, parseDuration, yesFlag} from '../../flags.js'
import {pendingOperation, readJournal} from '../../ops/journal.js'
import {type SplitPlan, type SplitResult, executeSplit, planSplit, recoverSplit, splitJournalMatches} from '../../ops/split.js'
import {parseInstance} from '../../registry/address.js'
import {spawnLike} from '../../sandbox/spawn.js'
import {formatCount, paint, renderTable} from '../../ui/terminal.js'

export default class ShardsSplit extends RegistryCommand<typeof ShardsSplit> {
  static override summary = "Move some of an instance's shard databases onto new instances, live, with a short cut-over."
  static override description = `A shard is a numbered database; a split moves whole databases, numbers kept, to the targets and repoints those shards in the registry.

Plan: by default half of the source's shards, chosen so that keys end up balanced between the source and the target(s); --shards picks them. The plan is printed and applied on confirmation or --yes.
Targets must answer, be empty and have enough databases; --spawn starts one on this machine with the source's settings (and --spawn-replicas replicas of it).
Live copy: each target follows the source as a replica while writes go on (progress on stderr).
Cut-over: writes on the source pause (at most --max-pause), the targets catch up to its exact offset and become masters, the registry switches the moved shards in one compare-and-set step with its event, clients still using a moved database on the source are disconnected so they re-read the routing, writes resume. The measured pause is reported. If anything fails before the registry switch, writes resume on the source, the registry is untouched and the targets drop their copy.
Clean-up: each target drops the databases it does not own. After --grace, the source drops the moved databases — unless a write landed on one after the cut-over (a client with stale routing): then that copy is kept and named. --keep-source keeps them all.
Each step is journaled; a killed split is finished or rolled back by the next shards:split of the same source.`

  static override examples = [
    '<%= config.bin %> <%= command.id %> 10.0.0.5:6379 --to 10.0.0.9:6379 --dry-run',
    '<%= config.bin %> <%= command.id %> 10.0.0.5:6379 --to 10.0.0.9:6379 --to-replica 10.0.0.10:6379 --yes',
    '<%= config.bin %> <%= command.id %> 127.0.0.1:7001 --spawn --port 7100 --spawn-replicas 1 --yes',
    '<%= config.bin %> <%= command.id %> 10.0.0.5:6379 --to 10.0.0.9:6379 --to 10.0.0.11:6379 --shards s001,s002,s003',
  ]

  static override args = {
    source: Args.string({description: 'The instance to split, host:port.', required: true, ignoreStdin: true}),
  }

  static override flags = {
    to: Flags.string({summary: 'A target instance, host:port (repeat for several).', multiple: true, helpValue: '<host:port>'}),
    shards: Flags.string({summary: 'The shards to move, comma-separated (default: half, balanced by keys).', helpValue: '<id,id,...>'}),
    spawn: Flags.boolean({summary: 'Start a new local redis-server as a target, with the source\'s settings.'}),
    port: countFlag('port', 1024, 65_535)({summary: 'With --spawn: its port (replicas take the next ones).'}),
    dir: Flags.string({summary: 'With --spawn: where its data goes.', defaultHelp: async () => '~/.shardctl/instances'}),
    'spawn-replicas': countFlag('spawn replicas', 0, 8)({summary: 'With --spawn: replicas of the new instance.', default: 0}),
    'to-replica': Flags.string({summary: 'A replica instance of the (single) target, host:port: the moved shards keep a replica.', multiple: true}),
    'max-pause': Flags.string({summary: 'Longest write pause allowed for the cut-over (ms, or 500ms, 2s).', default: '1000'}),
    grace: Flags.string({summary: 'How long to watch the source for stray writes before dropping its moved copy.', default: '5s'}),
    'keep-source': Flags.boolean({summary: "Keep the source's copy of the moved databases."}),
    'dry-run': dryRunFlag,
    yes: yesFlag,
  }

  async run(): Promise<SplitResult | {applied: false}> {
    const {flags} = this
    const source = parseInstance(this.args.source)
    const maxPauseMs = parseDuration(flags['max-pause'])
    const graceMs = parseDuration(flags.grace)
    if (maxPauseMs > 60_000) throw usageError('--max-pause is at most 60s')
    if (!flags.spawn && (flags.port !== undefined || flags.dir !== undefined || flags['spawn-replicas'] > 0)) {
      throw usageError('--port, --dir and --spawn-replicas go with --spawn')
    }
    const shards = flags.shards?.split(',').map((s) => s.trim()).filter(Boolean)
    const registry = await this.registry()
    const pool = await this.pool()

    const lock = flags['dry-run'] ? undefined : await this.lock()
    if (lock) {
      const pending = await readJournal(registry)
      if (pending) {
        if (!splitJournalMatches(pending, source)) throw pendingOperation(pending)
        this.progress(`Found an interrupted split of ${(pending.plan as SplitPlan).source}; finishing or rolling it back...`)
        const recovered = await recoverSplit(registry, lock, pool, pending)
        this.log(
          recovered.recovered === 'rolled-forward'
            ? `Finished the interrupted split.${recovered.keptOnSource.length > 0 ? ` The source keeps its copy of db ${recovered.keptOnSource.join(', ')} (not watched for stray writes): drop them when sure.` : ''}`
            : 'Rolled back the interrupted split: the registry is unchanged and the targets were emptied. Run the command again to split.',
        )
        return recovered
      }
    }

    const targets = (flags.to ?? []).map(parseInstance)
    const spawned: SplitResult['spawned'] = []
    const targetReplicas = (flags['to-replica'] ?? []).map(parseInstance)
    if (flags.spawn) {
      if (flags['dry-run']) {
        this.progress(paint.warn('Dry run: --spawn would start a new instance; the plan below assumes an empty target with enough databases.'))
      } else {
        if (!(await this.confirm(`Start a new redis-server${flags['spawn-replicas'] ? ` and ${flags['spawn-replicas']} replicas` : ''} on this machine as the split's target?`))) return this.nothing()
        const started = await spawnLike(await pool.get(source), {port: flags.port, dir: flags.dir, replicas: flags['spawn-replicas']})
        this.progress(`Started redis-server on 127.0.0.1:${started.target.port} (pid ${started.target.pid}, data in ${started.target.dir}).`)
        spawned.push(...[started.target, ...started.replicas].map(({port, pid, dir}) => ({port, pid, dir})))
        targets.push({host: '127.0.0.1', port: started.target.port, db: 0})
        for (const r of started.replicas) targetReplicas.push({host: '127.0.0.1', port: r.port, db: 0})
      }
    }
    if (flags['dry-run'] && flags.spawn && targets.length === 0) {
      this.progress('Nothing more to show without a target.')
      return this.nothing()
    }

    const plan = await planSplit(registry, pool, {source, targets, shards, targetReplicas, maxPauseMs, graceMs, keepSource: flags['keep-source']})
    if (!this.jsonEnabled()) this.render(plan)
    if (flags['dry-run']) {
      this.progress(paint.warn('Dry run: nothing changed.'))
      return {plan, applied: false, strayWrites: {}, droppedFromSource: [], keptOnSource: []}
    }
    if (!(await this.confirm(`Move ${plan.moves.length} shards off ${plan.source} (copy ~${(plan.sourceBytes / 1e6).toFixed(1)} MB; writes pause at most ${maxPauseMs} ms)?`))) {
      return {plan, applied: false, strayWrites: {}, droppedFromSource: [], keptOnSource: []}
    }
    const result = await executeSplit(registry, lock!, pool, plan, {
      timeoutMs: this.flags.timeout,
      onStep: (step) => this.progress(paint.dim(`  ${step}`)),
      onProgress: (line) => this.progress(paint.dim(`    ${line}`)),
    })
    if (spawned.length > 0) result.spawned = spawned
    this.log(`Moved ${plan.moves.length} shards off ${plan.source}; writes paused ${result.pauseMs} ms.`)
    if (result.keptOnSource.length > 0) {
      const why = Object.keys(result.strayWrites).length > 0 ? `writes landed on db ${Object.keys(result.strayWrites).join(', ')} after the cut-over (stale routing)` : '--keep-source'
      this.warn(`the source keeps its copy of db ${result.keptOnSource.join(', ')} (${why}): check them, then drop them by hand`)
    }
    return result
  }

  private nothing(): {applied: false} {
    this.progress('Nothing changed.')
    return {applied: false}
  }

  private render(plan: SplitPlan): void {
    this.progress(`Split ${plan.source} → ${plan.targets.map((t) => t.instance).join(', ')}: ${plan.moves.length} shards move, ${plan.staying.length} stay.`)
    this.log(renderTable(['SHARD', 'DB', 'KEYS', 'FROM', 'TO'], plan.moves.map((m) => [m.id, String(m.db), formatCount(m.keys), m.before.master, m.after.master])))
    this.progress(paint.dim(`After: ${plan.balance.map((b) => `${b.instance} ${b.shards} shards, ${formatCount(b.keys)} keys`).join(' · ')}`))
  }
}


import {Flags} from '@oclif/core'

import {RegistryCommand} from '../../base-command.js'
import {ExitCode} from '../../errors.js'
import {countFlag, dryRunFlag, shardIdArg, yesFlag} from '../../flags.js'
import type {CanaryRow} from '../../health/canary.js'
import {type CheckReport, checkHealth, tally} from '../../health/check.js'
import {type FencingRow, applyFence, fencePlan} from '../../health/fencing.js'
import {describeIds, instancesOf} from '../../health/groups.js'
import type {PersistenceRow} from '../../health/persistence.js'
import type {SentinelGroupRow} from '../../health/sentinel.js'
import type {ReplicaStatus, TopologyRow} from '../../health/topology.js'
import {formatAddress} from '../../registry/address.js'
import {Change} from '../../registry/registry.js'
import {formatCount, paint, plural, renderTable} from '../../ui/terminal.js'

export default class ShardsCheck extends RegistryCommand<typeof ShardsCheck> {
  static override summary = 'Check replication, fencing and persistence against the registry; exit 3 when unhealthy.'
  static override description = `Every instance is probed once, in parallel, with one connection each; shards that share their master and replica instances are reported on one line.

Topology (always): each shard's master answers and is a master; each replica (slaveN, persistN) replicates that master with its link up, within --max-lag bytes and --max-lag-seconds, and refuses writes of its own (replica-read-only yes); no instance the registry does not name replicates a master.

Fencing (always): a master with replicas but without min-replicas-to-write keeps taking writes when cut off from all of them — writes lost when a replica is promoted in its place. --fence sets min-replicas-to-write (--fence-replicas) and min-replicas-max-lag (--fence-max-lag) on those masters, after confirmation or --yes, and tries CONFIG REWRITE so a restart keeps it.

--canary writes a short-lived key in each shard's database on its master and waits for it on every replica, and PUBLISHes a message a subscriber on every replica must receive: proof that a write reaches more than one server, with the round trip per replica. The keys (shardctl:canary:<random>) carry a TTL and are deleted at the end.

Sentinel (when the registry records Sentinels, see sentinel:register): per group, every Sentinel agrees with the registry (master address and config epoch), CKQUORUM passes, the replicas Sentinel knows are those the registry names; no Sentinel is unreachable or in TILT, no instance is monitored twice, and every master the registry routes to is monitored.

--persistence checks the persistence replicas (persistN), or every node of shards that name none: append-only file on, fsync every second, last AOF write and RDB save succeeded, last RDB save younger than --max-save-age when changes wait for it (0: do not check the age). A master that persists nothing is flagged: restarted, it would come back empty and its replicas would copy that.

Exit code 0 when everything is healthy, 3 when any problem is found: a CI job can gate on it. A registry with no shard at all (a typo in --prefix, a wiped registry) is a problem too, unless --allow-empty.`

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    '<%= config.bin %> <%= command.id %> --canary --persistence',
    '<%= config.bin %> <%= command.id %> --shard s001 --shard s002 --canary',
    '<%= config.bin %> <%= command.id %> --fence --dry-run',
    '<%= config.bin %> <%= command.id %> --json > health.json || echo "unhealthy (exit $?)"',
  ]

  static override flags = {
    shard: Flags.custom<string>({summary: 'Check only this shard (repeatable).', helpValue: '<id>', multiple: true, parse: shardIdArg})(),
    canary: Flags.boolean({summary: 'Write a canary per shard and see it arrive on every replica.', default: false}),
    persistence: Flags.boolean({summary: 'Check AOF, fsync and RDB saves on the persisting nodes.', default: false}),
    'max-lag': countFlag(
      'byte count',
      0,
      Number.MAX_SAFE_INTEGER,
    )({summary: 'A replica further behind than this many bytes is a problem.', default: 1_048_576, helpValue: '<bytes>'}),
    'max-lag-seconds': countFlag(
      'number of seconds',
      0,
      86_400,
    )({summary: 'A replica not heard from for longer is a problem.', default: 10}),
    'max-save-age': countFlag(
      'number of seconds',
      0,
      31_536_000,
    )({summary: 'Oldest acceptable RDB save, in seconds, when changes wait for one (0: no limit).', default: 3600}),
    fence: Flags.boolean({summary: 'Set min-replicas-to-write on masters that have none (asks first).', default: false}),
    'allow-empty': Flags.boolean({
      summary: 'Pass when the registry has no shard at all (by default that fails: nothing was checked).',
      env: 'SHARDCTL_ALLOW_EMPTY',
      default: false,
    }),
    'allow-no-replica': Flags.boolean({
      summary: 'Accept masters without any replica (reported, not a problem).',
      env: 'SHARDCTL_ALLOW_NO_REPLICA',
      default: false,
    }),
    'fence-replicas': countFlag(
      'replica count',
      1,
      100,
    )({summary: 'min-replicas-to-write that --fence sets (at most the replicas a master has).', default: 1}),
    'fence-max-lag': countFlag(
      'number of seconds',
      1,
      3600,
    )({summary: 'min-replicas-max-lag, in seconds, that --fence sets.', default: 10}),
    'dry-run': dryRunFlag,
    yes: yesFlag,
  }

  async run(): Promise<CheckReport> {
    const {flags} = this
    const registry = await this.registry()
    const pool = await this.pool()
    const {sentinel, options} = await this.resolveConnections()
    const {report, groups, states} = await checkHealth(registry, pool, {
      sentinel: {credentials: sentinel, options},
      shardIds: flags.shard ?? [],
      canary: flags.canary,
      persistence: flags.persistence,
      limits: {maxLagBytes: flags['max-lag'], maxLagSeconds: flags['max-lag-seconds']},
      maxSaveAgeSeconds: flags['max-save-age'],
      timeoutMs: flags.timeout,
      allowNoReplica: flags['allow-no-replica'],
      allowEmpty: flags['allow-empty'],
      recoverCommand: (type) => this.sameFleetCommand(`shards:${type}`, '--recover'),
    })

    if (flags.fence) {
      const settings = {minReplicas: flags['fence-replicas'], maxLagSeconds: flags['fence-max-lag']}
      const plan = fencePlan(report.fencing, states, settings)
      if (plan.length > 0 && flags['dry-run']) {
        for (const row of plan) row.action = 'would fence'
      } else if (plan.length > 0) {
        const question = `Set min-replicas-to-write ${settings.minReplicas} and min-replicas-max-lag ${settings.maxLagSeconds} on ${plural(plan.length, 'master')}: ${plan.map((r) => r.master).join(', ')}?`
        if (await this.confirm(question)) {
          await this.lock()
          await applyFence(plan, instancesOf(groups), pool, settings)
          const fenced = plan.filter((r) => r.action === 'fenced')
          if (fenced.length > 0) {
            await registry.apply(new Change(), 'instances.fenced', {
              masters: fenced.map((r) => r.master),
              minReplicasToWrite: settings.minReplicas,
              minReplicasMaxLag: settings.maxLagSeconds,
            })
          }
          tally(report)
        } else {
          this.progress('Nothing changed.')
        }
      }
    }

    if (this.jsonEnabled()) {
      // Unhealthy is exit 3 with the same document on stdout: a CI job reads both.
      if (!report.healthy) this.logJson(report)
    } else {
      this.render(report)
    }
    if (!report.healthy) this.exit(ExitCode.unhealthy)
    return report
  }

  private render(report: CheckReport): void {
    if (report.empty) {
      const where = `No shards under "${this.flags.prefix}" in ${formatAddress(this.flags.registry)}`
      if (report.empty.accepted) this.progress(`${where}: nothing to check (accepted with --allow-empty).`)
      else
        this.warn(
          `${where}: nothing was checked, exit 3 (a typo in --prefix or -r, or a wiped registry?); pass --allow-empty if that is expected`,
        )
      return
    }
    const status = (problems: string[]) => (problems.length === 0 ? paint.ok('ok') : paint.bad(problems.join('\n')))
    // A master without any replica is said in its topology line, on stdout with the rest of the table.
    const unreplicated = new Map(report.unreplicated.map((u) => [u.master, u]))
    this.section(
      'Topology',
      ['MASTER', 'SHARDS', 'REPLICAS', 'STATUS'],
      report.topology.map((row) => topologyLine(row, status, unreplicated.get(row.master))),
    )
    this.section(
      'Fencing',
      ['MASTER', 'SHARDS', 'REPLICAS', 'MIN-REPLICAS', 'GOOD', 'STATUS'],
      report.fencing.map((row) => fencingLine(row, status)),
    )
    if (report.canary)
      this.section(
        'Canary',
        ['MASTER', 'SHARDS', 'REPLICA', 'SEEN', 'P50', 'MAX', 'PUBSUB', 'STATUS'],
        report.canary.flatMap((row) => canaryLines(row, status)),
      )
    if (report.persistence)
      this.section(
        'Persistence',
        ['NODE', 'ROLE', 'SHARDS', 'AOF', 'FSYNC', 'LAST SAVE', 'STATUS'],
        report.persistence.map((row) => persistenceLine(row, status)),
      )
    for (const b of report.broken) this.warn(`shard ${b.id} is not readable: ${b.problems.join('; ')}`)
    if (report.sentinel) {
      this.section(
        'Sentinel',
        ['GROUP', 'MASTER', 'SHARDS', 'SENTINELS', 'QUORUM', 'STATUS'],
        report.sentinel.groups.map((row) => sentinelLine(row, status)),
      )
      for (const row of report.sentinel.fleet) this.warn(`${row.subject} ${row.problems.join('; ')}`)
    }
    if (report.leftovers.length > 0)
      this.section(
        'Left behind',
        ['WHAT', 'STATUS'],
        report.leftovers.map((row) => [row.subject, status(row.problems)]),
      )
    const where = `${plural(report.shards, 'shard')} on ${plural(report.instances, 'instance')}`
    this.progress(report.healthy ? `${where}: ${paint.ok('healthy')}` : `${where}: ${paint.bad(plural(report.problems, 'problem'))}`)
  }

  private section(title: string, head: string[], rows: string[][]): void {
    if (rows.length === 0) return
    this.log(paint.bold(title))
    this.log(renderTable(head, rows))
    this.log('')
  }
}

type Status = (problems: string[]) => string

function topologyLine(row: TopologyRow, status: Status, unreplicated?: CheckReport['unreplicated'][number]): string[] {
  const replica = (r: ReplicaStatus) => {
    const label = r.kind === 'persist' ? `${r.instance} (persist)` : r.instance
    if (r.problems.length > 0) return `${label} ${paint.bad('✗')}`
    return `${label} ${paint.dim(`lag ${formatCount(r.lagBytes)}B ${r.lagSeconds ?? '-'}s`)}`
  }
  let cell = status([...row.problems, ...(unreplicated?.problems ?? [])])
  if (unreplicated?.accepted) cell += `\n${paint.dim('no replica (accepted with --allow-no-replica)')}`
  return [row.master, describeIds(row.shards), row.replicas.map(replica).join('\n') || paint.dim('none'), cell]
}

function fencingLine(row: FencingRow, status: Status): string[] {
  const setting = row.fenced
    ? `${row.minReplicasToWrite ?? 'on'}${row.minReplicasMaxLag === undefined ? '' : ` (lag ≤ ${row.minReplicasMaxLag}s)`}`
    : paint.warn('0')
  let cell = row.replicas === 0 && row.problems.length === 0 ? paint.dim('no replicas to fence with') : status(row.problems)
  if (row.action)
    cell += `\n${row.action === 'fenced' ? paint.ok('fenced now') : paint.warn(row.action)}${row.actionNote ? paint.dim(`: ${row.actionNote}`) : ''}`
  return [
    row.master,
    describeIds(row.shards),
    String(row.replicas),
    setting,
    row.goodReplicas === undefined ? '-' : String(row.goodReplicas),
    cell,
  ]
}

function canaryLines(row: CanaryRow, status: Status): string[][] {
  if (row.replicas.length === 0)
    return [[row.master, describeIds(row.shards), '-', '-', '-', '-', '-', row.skipped ? paint.dim(row.skipped) : status(row.problems)]]
  const ms = (v: number | undefined) => (v === undefined ? '-' : `${v} ms`)
  return row.replicas.map((r) => [
    row.master,
    describeIds(row.shards),
    r.kind === 'persist' ? `${r.instance} (persist)` : r.instance,
    `${r.seen}/${r.expected}`,
    ms(r.p50Ms),
    ms(r.maxMs),
    ms(r.pubsubMs),
    status(r.problems),
  ])
}

function sentinelLine(row: SentinelGroupRow, status: Status): string[] {
  const agreeing = row.views.filter((v) => v.master === row.master && v.epoch === row.epoch).length
  const views = row.views.length === 0 ? '-' : `${agreeing}/${row.views.length} agree (epoch ${row.epoch})`
  return [row.group, row.master, describeIds(row.shards), views, row.quorum ?? '-', status(row.problems)]
}

function persistenceLine(row: PersistenceRow, status: Status): string[] {
  const age = row.lastSaveAgeSeconds === undefined ? '-' : `${formatCount(row.lastSaveAgeSeconds)} s ago`
  return [
    row.instance,
    row.role,
    describeIds([...new Set(row.shards)]),
    row.aof === undefined ? '-' : row.aof ? 'on' : 'off',
    row.fsync ?? '-',
    age,
    status(row.problems),
  ]
}

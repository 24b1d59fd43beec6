import {Args, Flags} from '@oclif/core'

import {RegistryCommand} from '../../base-command.js'
import {openDestination} from '../../backup/destination.js'
import {
  type RestoreFleet,
  type RestorePlan,
  type RestoreRequest,
  type RestoreResult,
  executeRestore,
  planRestore,
} from '../../backup/restore.js'
import {usageError} from '../../errors.js'
import {pendingOperation, readJournal} from '../../ops/journal.js'
import {backupsFlag, countFlag, destinationSettings, dryRunFlag, parseInstant, s3Flags, yesFlag} from '../../flags.js'
import {canonicalRegistry, parseAddress, parseInstance} from '../../registry/address.js'
import {validateShardId} from '../../registry/schema.js'
import {formatBytes, formatCount, formatTimestamp, paint, plural, renderTable} from '../../ui/terminal.js'

export default class ShardsRestore extends RegistryCommand<typeof ShardsRestore> {
  /** A large snapshot takes minutes to fetch and load: the lock is renewed from a worker thread. */
  static longRunning = true
  static override summary = 'Restore one shard (or every shard of an instance) from a backup into any instance and database.'
  static override description = `Finds the shard's instance and database in that backup's own registry.json (the backup named with --backup, or the newest complete one of this registry and prefix at or before --at, or the newest; a backup named that was taken of another registry or prefix is said to be), checks the snapshot's sha256 and CRC64 as it is fetched into a private directory, loads it into a temporary local redis-server (loopback, a random password, removed afterwards), and copies that one database into --to HOST:PORT/DB with DUMP / RESTORE ... ABSTTL, pipelined in bounded batches: values as they were, expiry times as absolute moments (a key whose moment has passed is not brought back).

The target must be a master, with that database, empty and used by no shard: otherwise the restore is refused before anything is fetched (exit 3), unless --replace, which empties it first (after confirmation, or --yes). The registry's own database is refused whatever the flags, under any spelling of its address. A snapshot of a newer RDB version than the target's Redis reads is refused the same way. Given an instance (host:port) instead of a shard, every shard it held is restored into the same database numbers of --to HOST:PORT.

After the copy: keys on the target are the backup's (less those that expired meanwhile), and a sample of keys is compared value by value. --route then points the shard at its copy in the registry (one compare-and-set step, with its event shards.restored): for bringing a lost shard back. Without it the data is only there to inspect.`

  static override examples = [
    '<%= config.bin %> <%= command.id %> s042 --from s3://acme-redis-backups/prod --to 10.0.0.9:6379/7',
    '<%= config.bin %> <%= command.id %> s042 --from /var/backups/shardctl --at 2026-12-02T13:00Z --to 10.0.0.9:6379/7 --dry-run',
    '<%= config.bin %> <%= command.id %> s042 --from /var/backups/shardctl --to 10.0.0.5:6379/42 --replace --route --yes',
    '<%= config.bin %> <%= command.id %> 10.0.0.5:6379 --from s3://acme-redis-backups/prod --backup 20261202T1400Z --to 10.0.0.9:6379',
  ]

  static override args = {
    subject: Args.string({description: 'A shard id, or an instance (host:port) to restore every shard it held.', required: true}),
  }

  static override flags = {
    from: backupsFlag('from'),
    to: Flags.string({
      summary: 'Where: HOST:PORT/DB for a shard; HOST:PORT for an instance (each shard keeps its database).',
      required: true,
      helpValue: '<host:port/db>',
    }),
    backup: Flags.string({summary: 'The backup: <run>/<part>, or a run (see backups:list).', helpValue: '<id>', exclusive: ['at']}),
    at: Flags.string({
      summary: 'The newest complete backup taken at or before this time (ISO 8601, e.g. 2026-12-02T13:00Z; without a zone, UTC).',
      helpValue: '<time>',
    }),
    replace: Flags.boolean({summary: 'Empty the target database first when it holds keys or serves a shard (asks first).'}),
    route: Flags.boolean({summary: 'Once the copy is verified, point the shard at it in the registry (asks first).'}),
    sample: countFlag('--sample', 0, 100_000)({summary: 'Keys compared value by value after the copy.', default: 100}),
    'dry-run': dryRunFlag,
    yes: yesFlag,
    ...s3Flags,
  }

  async run(): Promise<RestoreResult> {
    const {flags} = this
    const {registry: registryTarget} = await this.resolveConnections()
    const destination = await openDestination(flags.from, destinationSettings(flags), {existing: true})
    const registry = await this.registry()
    const request = this.request({
      registry: canonicalRegistry(registryTarget),
      prefix: registry.keys.prefix,
      registryDb: registryTarget.db,
      registryInstance: registryTarget.sentinel ? undefined : {host: registryTarget.host, port: registryTarget.port},
    })
    const pool = await this.pool()
    const make = async () => {
      // An interrupted split or promote may still wipe or repoint what a restore writes: finish it first.
      const pending = await readJournal(registry)
      if (pending) throw pendingOperation(pending)
      return planRestore(registry, pool, destination, request)
    }
    if (flags['dry-run']) {
      const plan = await make()
      this.render(plan)
      this.progress(paint.warn('Dry run: nothing fetched or copied.'))
      return {plan, applied: false, copies: []}
    }
    const {plan, confirmed} = await this.planThenLock(make, (p) => {
      this.render(p)
      return this.question(p)
    })
    if (!confirmed) {
      this.progress('Nothing changed.')
      return {plan, applied: false, copies: []}
    }
    const steps = await this.reporter()
    const result = await executeRestore(
      registry,
      pool,
      destination,
      plan,
      request,
      {onStep: (step) => steps.step(step), onBytes: (bytes, total) => steps.copied(bytes, total)},
      {timeoutMs: flags.timeout},
    ).finally(() => steps.end())
    for (const copy of result.copies) {
      this.log(
        `Restored ${copy.shard} (db ${copy.fromDb} of ${plan.instance} in backup ${plan.backup.id}) into ${copy.to}: ${plural(copy.copied, 'key')}${copy.expired > 0 ? ` (${formatCount(copy.expired)} expired since, not brought back)` : ''}; ${plural(copy.sampled, 'sampled key')} identical.`,
      )
    }
    if (result.routed) this.log(`Routed ${plural(plan.copies.length, 'shard')} to the restored copy (event ${result.routed.type}).`)
    return result
  }

  private request(fleet: RestoreFleet): RestoreRequest {
    const {flags} = this
    const subject = this.args.subject
    const isInstance = /[:[]/.test(subject)
    const at = flags.at === undefined ? undefined : parseInstant(flags.at, '--at')
    const to = isInstance ? {...parseInstance(flags.to), db: 0} : parseAddress(flags.to)
    if (!isInstance && !/\/\d+\s*$/.test(flags.to))
      throw usageError(`--to ${flags.to} names no database`, 'give HOST:PORT/DB: the database the shard is restored into')
    return {
      subject: isInstance ? {instance: parseInstance(subject)} : {shard: validateShardId(subject)},
      backup: flags.backup,
      at,
      to: {host: to.host, port: to.port, db: to.db},
      replace: flags.replace,
      route: flags.route,
      sample: flags.sample,
      fleet,
    }
  }

  /** What needs a yes: emptying a database, or changing the routing. */
  private question(plan: RestorePlan): string | undefined {
    const emptied = plan.copies.filter((c) => c.conflict)
    const parts = [
      emptied.length > 0
        ? `empty ${emptied.map((c) => c.to).join(', ')} (${emptied.map((c) => describeConflict(c.conflict!)).join('; ')})`
        : '',
      plan.routing ? `route ${plural(plan.copies.length, 'shard')} to the restored copy` : '',
    ].filter(Boolean)
    const another = plan.backup.otherFleet ? ` (another fleet's: ${plan.backup.otherFleet})` : ''
    return parts.length === 0 ? undefined : `Restore from backup ${plan.backup.id}${another}: ${parts.join(', and ')}?`
  }

  private render(plan: RestorePlan): void {
    // On stderr under --json too: a backup passed over is worth knowing however the run is read.
    for (const skipped of plan.skipped) this.warn(`the newer backup ${skipped.id} was passed over: ${skipped.reason}`)
    if (plan.backup.otherFleet) this.warn(`backup ${plan.backup.id} is of another fleet: ${plan.backup.otherFleet}`)
    else if (plan.backup.of.registry === null)
      this.warn(
        `backup ${plan.backup.id} does not record the registry it was taken of (an older backup): taken as this one's, its prefix being the same`,
      )
    if (this.jsonEnabled()) return
    this.progress(
      `Backup ${plan.backup.id} (${formatTimestamp(new Date(plan.backup.time))} UTC): ${plan.instance}, taken from ${plan.node}, ${formatBytes(plan.bytes)}, RDB ${plan.rdbVersion}; target ${plan.target} (Redis ${plan.targetVersion}).`,
    )
    this.log(
      renderTable(
        ['SHARD', 'FROM DB', 'TO', 'KEYS', 'TARGET NOW'],
        plan.copies.map((c) => [
          c.shard,
          String(c.fromDb),
          c.to,
          formatCount(c.keys),
          c.conflict ? describeConflict(c.conflict) : 'empty, unused',
        ]),
      ),
    )
    for (const r of plan.routing?.repoint ?? []) this.progress(paint.dim(`  route ${r.id}: ${r.before.master} → ${r.after.master}`))
    for (const a of plan.routing?.add ?? [])
      this.progress(paint.dim(`  route ${a.id}: not in the registry now, added back at ${a.after.master}`))
  }
}

function describeConflict(conflict: {keys: number; shards: string[]}): string {
  return [conflict.keys > 0 ? plural(conflict.keys, 'key') : '', conflict.shards.length > 0 ? `serves ${conflict.shards.join(', ')}` : '']
    .filter(Boolean)
    .join(', ')
}

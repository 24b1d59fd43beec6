import {Flags} from '@oclif/core'

import {RegistryCommand} from '../../base-command.js'
import {type BackupPlan, type BackupResult, planBackup, takeBackup} from '../../backup/backup.js'
import {openDestination} from '../../backup/destination.js'
import {defaultRunName, validateRunName} from '../../backup/layout.js'
import {ExitCode, ShardctlError} from '../../errors.js'
import {ConnectionPool} from '../../fleet/connect.js'
import {backupsFlag, countFlag, destinationSettings, dryRunFlag, instanceFlag, s3Flags, sseFlags} from '../../flags.js'
import {canonicalRegistry} from '../../registry/address.js'
import {loadProgressBars, TransferProgress, formatDuration} from '../../ui/progress.js'
import {formatBytes, formatCount, paint, plural, renderTable} from '../../ui/terminal.js'

export default class ShardsBackup extends RegistryCommand<typeof ShardsBackup> {
  static override summary = 'Back up every instance (and the registry) to a directory or S3: snapshots checked as they stream.'
  static override description = `Which instances: every master instance the registry routes to and the registry's own instance, or those named with --instance, or those of --shard. Each snapshot is taken from the instance's persistence replica (persistN) when it has one, else from a replica that follows it with its link up, and from the master only when it has no replica or with --from master. The registry's comes from a replica of it when it has one. The plan (--dry-run) says which node serves each.

How: over the replication protocol, as redis-cli --rdb does (REPLCONF rdb-only, SYNC): no access to the hosts' disks. Each node waits its repl-diskless-sync-delay (5 s by default) before sending. The snapshot streams from the socket to the destination while its RDB header, version, aux fields and Redis's own CRC64 are checked and a sha256 of the bytes stored is taken: a snapshot that does not check out is not stored. Memory stays bounded whatever the snapshot's size.

Where: <dir>/<run>/<part>/ or s3://bucket/prefix/<run>/<part>/: the snapshots, registry.json (the shards:export document at the start), and manifest.json, written last, the mark that the backup is complete. The run is the start time unless --run names it: give every host's cron the same --run (e.g. $(date -u +%Y%m%dT%H00Z)) and their backups are listed together. Local files are readable by their owner only; on S3, --sse encrypts at rest. S3 credentials come from the AWS SDK's standard chain (environment, profile, instance role).

At most --concurrency snapshots at once, never two from the same host. If some instances fail, the others still complete, the failed ones are named in the manifest and the output, and the exit code is 3.

One run of a backup at a time: a second run with the same --run (and the same instances) to the same destination while the first holds its lease in the registry exits 4, naming it. A run that was killed is taken over by the next (and what it left is cleared); a manifest is never written over another.`

  static override examples = [
    '<%= config.bin %> <%= command.id %> --to /var/backups/shardctl',
    '<%= config.bin %> <%= command.id %> --to s3://acme-redis-backups/prod --sse aws:kms --gzip',
    '<%= config.bin %> <%= command.id %> --to s3://acme-redis-backups/prod --instance 10.0.0.5:6379 --run "$(date -u +%Y%m%dT%H00Z)"',
    '<%= config.bin %> <%= command.id %> --to /var/backups/shardctl --shard s042 --dry-run',
  ]

  static override flags = {
    to: backupsFlag('to'),
    instance: instanceFlag({summary: 'Back up this master instance (or the registry), host:port; repeat for several.', multiple: true}),
    shard: Flags.string({summary: "Back up this shard's master instance; repeat for several.", multiple: true, helpValue: '<id>'}),
    from: Flags.string({
      summary: 'Which node serves each snapshot: auto (persistence replica, else replica, else master) or master.',
      options: ['auto', 'master'],
      default: 'auto',
    }),
    run: Flags.string({
      env: 'SHARDCTL_BACKUP_RUN',
      summary: 'The run this backup belongs to (default: the start time, e.g. 20261202T140005Z).',
      helpValue: '<name>',
    }),
    concurrency: countFlag('--concurrency', 1, 64)({summary: 'Snapshots taken at once (never two from one host).', default: 2}),
    gzip: Flags.boolean({summary: 'Compress each snapshot with gzip (the sha256 is of the stored, compressed bytes).'}),
    'dry-run': dryRunFlag,
    ...s3Flags,
    ...sseFlags,
  }

  async run(): Promise<(BackupResult & {plan?: undefined}) | {plan: BackupPlan; applied: false}> {
    const {flags} = this
    const run = flags.run === undefined ? defaultRunName(new Date()) : validateRunName(flags.run)
    const destination = await openDestination(flags.to, destinationSettings(flags))
    const registry = await this.registry()
    const {registry: registryTarget, instance, options} = await this.resolveConnections()
    const registryCredentials = {username: registryTarget.username, password: registryTarget.password, tls: registryTarget.tls}
    const registryPool = new ConnectionPool(options, () => registryCredentials)
    this.onCleanup(() => registryPool.closeAll())
    const context = {
      registry,
      registryEndpoint: {host: registryTarget.host, port: registryTarget.port},
      registryAddress: canonicalRegistry(registryTarget),
      pools: {shards: await this.pool(), registry: registryPool},
      linkTarget: (node: {host: string; port: number}, side: 'registry' | 'shards') => ({
        ...(side === 'registry' ? registryCredentials : instance),
        host: node.host,
        port: node.port,
        db: 0,
      }),
      options,
      destination,
    }
    const request = {
      run,
      selection: {instances: flags.instance ?? [], shards: flags.shard ?? []},
      from: flags.from as 'auto' | 'master',
      concurrency: flags.concurrency,
      gzip: flags.gzip,
      version: this.config.version,
    }
    const plan = await planBackup(context, request)
    this.renderPlan(plan)
    if (flags['dry-run']) {
      this.progress(paint.warn('Dry run: nothing backed up.'))
      return {plan, applied: false}
    }
    if (!this.jsonEnabled() && process.stderr.isTTY) await loadProgressBars()
    const progress = new TransferProgress(this.terminal)
    const started = new Map<string, number>()
    const result = await takeBackup(context, plan, request, {
      onStart: (i) => {
        started.set(i.instance, Date.now())
        progress.start(i.instance, `${i.instance} ← ${i.source!.node} (${i.source!.role})`)
      },
      onBytes: (name, bytes, total) => progress.update(name, bytes, total),
      onDone: (i, outcome) => {
        const took = formatDuration(Date.now() - (started.get(i.instance) ?? Date.now()))
        if (outcome.entry) {
          const keys = Object.values(outcome.entry.keys).reduce((sum, n) => sum + n, 0)
          progress.finish(
            i.instance,
            `${paint.ok('✔')} ${i.instance} from ${outcome.entry.node} (${outcome.entry.nodeRole}): ${formatBytes(outcome.entry.bytes)} in ${took}, ${plural(Object.keys(outcome.entry.keys).length, 'database')}, ${plural(keys, 'key')}`,
          )
        } else progress.finish(i.instance, `${paint.bad('✘')} ${i.instance}: ${outcome.error}`)
      },
    }).finally(() => progress.end())
    for (const warning of result.warnings) this.warn(warning)
    if (result.status === 'failed') {
      throw new ShardctlError(`no instance could be backed up (${result.failed.map((f) => f.instance).join(', ')}); no manifest written`, {
        code: 'EBACKUP',
        exitCode: ExitCode.unexpected,
        hint: 'see the reason given for each above',
      })
    }
    const bytes = result.instances.reduce((sum, i) => sum + i.bytes, 0)
    const summary = `Backup ${result.id} at ${result.location}: ${plural(result.instances.length, 'instance')}, ${formatBytes(bytes)}`
    if (result.status === 'partial') {
      return this.partial(
        result,
        `${summary}; ${plural(result.failed.length, 'instance')} failed: ${result.failed.map((f) => `${f.instance} (${f.error})`).join('; ')}`,
      )
    }
    this.progress(`${summary}, complete.`)
    return result
  }

  private renderPlan(plan: BackupPlan): void {
    if (this.jsonEnabled()) return
    this.progress(`Backup ${plan.id} to ${plan.location}: ${plural(plan.instances.length, 'instance')}.`)
    if (!this.flags['dry-run']) return
    this.log(
      renderTable(
        ['INSTANCE', 'FROM', 'ROLE', 'SHARDS', 'NOTE'],
        plan.instances.map((i) => [
          i.instance,
          i.source?.node ?? '-',
          i.source?.role ?? '-',
          i.registry ? `registry${i.shards.length > 0 ? ` + ${formatCount(i.shards.length)}` : ''}` : formatCount(i.shards.length),
          i.error ?? i.skipped.map((s) => `${s.node} ${s.reason}`).join('; '),
        ]),
      ),
    )
    for (const warning of plan.warnings) this.warn(warning)
  }
}

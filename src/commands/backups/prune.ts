import {ShardctlCommand} from '../../base-command.js'
import {openDestination} from '../../backup/destination.js'
import {type PruneResult, pruneBackups} from '../../backup/prune.js'
import {hasRules} from '../../backup/retention.js'
import {usageError} from '../../errors.js'
import {backupsFlag, countFlag, destinationSettings, dryRunFlag, s3Flags, timeoutFlag, yesFlag} from '../../flags.js'
import {formatBytes, formatTimestamp, paint, plural, renderTable} from '../../ui/terminal.js'

export default class BackupsPrune extends ShardctlCommand<typeof BackupsPrune> {
  static override summary = 'Remove old backups, keeping the last N and the newest of each hour, day and month asked for.'
  static override description = `Rules apply to each series on its own: a series is the backups of one registry and prefix with the same part of a backup id (<run>/<part>), "fleet" for whole-fleet backups, or the instances one host's cron backs up, so one host's history never pushes out another's, nor one fleet's another's in a shared destination. Hours, days and months are UTC; in each of the N most recent ones that hold a backup, its newest is kept. A backup is kept when any rule keeps it.

Whatever the rules, the newest complete backup of every series is never removed, nor, for each instance, the newest backup holding a usable copy of it (a partial backup holds the copies of the instances that succeeded); --dry-run says why each is kept. A backup without a manifest (it failed or never finished) is removed once nothing was written to it for a day; younger, it may still be running and is kept.`

  static override examples = [
    '<%= config.bin %> <%= command.id %> --from /var/backups/shardctl --keep-hourly 24 --keep-daily 7 --keep-monthly 12 --dry-run',
    '<%= config.bin %> <%= command.id %> --from s3://acme-redis-backups/prod --keep-last 48 --keep-daily 30 --yes',
  ]

  static override flags = {
    from: backupsFlag('from'),
    'keep-last': countFlag('--keep-last', 0, 1_000_000)({summary: 'Keep the N newest backups of each series.'}),
    'keep-hourly': countFlag('--keep-hourly', 0, 1_000_000)({summary: 'Keep the newest backup of each of the last N hours that have one.'}),
    'keep-daily': countFlag('--keep-daily', 0, 1_000_000)({summary: 'Keep the newest backup of each of the last N days that have one.'}),
    'keep-monthly': countFlag(
      '--keep-monthly',
      0,
      1_000_000,
    )({
      summary: 'Keep the newest backup of each of the last N months that have one.',
    }),
    'dry-run': dryRunFlag,
    yes: yesFlag,
    timeout: timeoutFlag(),
    ...s3Flags,
  }

  async run(): Promise<PruneResult> {
    const {flags} = this
    const rules = {
      keepLast: flags['keep-last'],
      keepHourly: flags['keep-hourly'],
      keepDaily: flags['keep-daily'],
      keepMonthly: flags['keep-monthly'],
    }
    if (!hasRules(rules))
      throw usageError('no retention rule given', 'give at least one of --keep-last, --keep-hourly, --keep-daily, --keep-monthly')
    const destination = await openDestination(flags.from, destinationSettings(flags), {existing: true})
    const result = await pruneBackups(destination, rules, {
      dryRun: flags['dry-run'],
      confirm: async (plan) => {
        this.render(plan)
        return this.confirm(
          `Remove ${plural(plan.removed.length, 'backup')} (${formatBytes(plan.bytesRemoved)}) from ${destination.location}?`,
        )
      },
    })
    if (!this.jsonEnabled()) {
      if (flags['dry-run']) this.render(result)
      if (result.removed.length === 0)
        this.progress(`Nothing to remove at ${destination.location} (${plural(result.kept.length, 'backup')} kept).`)
      else if (result.applied)
        this.progress(
          `Removed ${plural(result.removed.length, 'backup')} (${formatBytes(result.bytesRemoved)}); ${plural(result.kept.length, 'backup')} kept.`,
        )
      else this.progress(paint.warn(flags['dry-run'] ? 'Dry run: nothing removed.' : 'Nothing removed.'))
    }
    return result
  }

  private render(result: PruneResult): void {
    // A dry run shows why each backup stays even when none would go.
    if (this.jsonEnabled() || result.removed.length + result.kept.length === 0) return
    const rows = [
      ...result.removed.map((d) => [d.id, formatTimestamp(new Date(d.time)), d.status, paint.bad('remove'), d.reasons.join(', ')]),
      ...result.kept.map((d) => [d.id, formatTimestamp(new Date(d.time)), d.status, paint.ok('keep'), d.reasons.join(', ')]),
    ].sort((a, b) => (a[1] < b[1] ? 1 : -1))
    this.log(renderTable(['ID', 'TIME (UTC)', 'STATUS', 'ACTION', 'WHY'], rows))
  }
}

import {ShardctlCommand} from '../../base-command.js'
import {openDestination} from '../../backup/destination.js'
import {type BackupEntry, listBackups} from '../../backup/layout.js'
import {backupsFlag, destinationSettings, s3Flags, timeoutFlag} from '../../flags.js'
import {formatBytes, formatTimestamp, paint, plural, renderTable} from '../../ui/terminal.js'

export default class BackupsList extends ShardctlCommand<typeof BackupsList> {
  static override summary = 'List the backups at a destination: id, time, instances, size, complete or not.'
  static override description = `A backup is complete once its manifest is written, last; partial when some of its instances failed (the others are usable); incomplete when it has no manifest (it failed, or is still running). Newest first.

The id is <run>/<part>: backups taken together (one run, or every host's cron with the same --run) share the run.`

  static override examples = [
    '<%= config.bin %> <%= command.id %> --from /var/backups/shardctl',
    '<%= config.bin %> <%= command.id %> --from s3://acme-redis-backups/prod --json',
  ]

  static override flags = {
    from: backupsFlag('from'),
    timeout: timeoutFlag(),
    ...s3Flags,
  }

  async run(): Promise<{location: string; backups: ReturnType<typeof describe>[]}> {
    const destination = await openDestination(this.flags.from, destinationSettings(this.flags), {existing: true})
    const backups = await listBackups(destination)
    if (!this.jsonEnabled()) {
      if (backups.length === 0) this.progress(`No backup at ${destination.location}.`)
      else {
        const status = (b: BackupEntry) =>
          b.status === 'complete' ? paint.ok(b.status) : b.status === 'partial' ? paint.warn(b.status) : paint.bad(b.status)
        this.log(
          renderTable(
            ['ID', 'TIME (UTC)', 'INSTANCES', 'SIZE', 'STATUS'],
            backups.map((b) => [b.id, formatTimestamp(b.time), String(b.instances.length), formatBytes(b.bytes), status(b)]),
            ['left', 'left', 'right', 'right', 'left'],
          ),
        )
        const incomplete = backups.filter((b) => b.status === 'incomplete').length
        this.progress(
          paint.dim(
            `${plural(backups.length, 'backup')} at ${destination.location}${incomplete > 0 ? `; ${incomplete} incomplete (no manifest: failed, or still running)` : ''}.`,
          ),
        )
      }
    }
    return {location: destination.location, backups: backups.map(describe)}
  }
}

function describe(b: BackupEntry) {
  return {
    id: b.id,
    run: b.run,
    part: b.part,
    status: b.status,
    time: b.time.toISOString(),
    lastWrite: b.lastWrite.toISOString(),
    instances: b.instances,
    bytes: b.bytes,
    ...(b.manifest ? {failed: b.manifest.failed.map((f) => f.instance)} : {}),
    ...(b.problem ? {problem: b.problem} : {}),
  }
}

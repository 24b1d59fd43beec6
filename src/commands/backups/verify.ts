import {Args, Flags} from '@oclif/core'

import {ShardctlCommand} from '../../base-command.js'
import {openDestination} from '../../backup/destination.js'
import {verifyBackups} from '../../backup/verify.js'
import {backupsFlag, destinationSettings, s3Flags, timeoutFlag} from '../../flags.js'
import {paint, plural} from '../../ui/terminal.js'

export default class BackupsVerify extends ShardctlCommand<typeof BackupsVerify> {
  static override summary = 'Check every file of a backup against its manifest: sha256, and each snapshot read through (CRC64, keys).'
  static override description = `Each stored file's size and sha256; each snapshot read through: its RDB structure, Redis's own CRC64 in its trailer, its version, replication id and offset, and its keys per database, all as the manifest says. With --deep, each snapshot is also loaded into a temporary local redis-server (loopback, its own directory, removed afterwards) and its keys per database compared with the manifest.

The id is <run>/<part> (see backups:list), or a run: all its parts. Exit 3 when anything does not match, or the backup has no manifest.`

  static override examples = [
    '<%= config.bin %> <%= command.id %> 20261202T140005Z/fleet --from /var/backups/shardctl',
    '<%= config.bin %> <%= command.id %> 20261202T1400Z --from s3://acme-redis-backups/prod --deep',
  ]

  static override args = {
    id: Args.string({description: 'The backup: <run>/<part>, or a run (every part of it).', required: true}),
  }

  static override flags = {
    from: backupsFlag('from'),
    deep: Flags.boolean({summary: 'Also load each snapshot into a temporary local redis-server and compare its keys per database.'}),
    timeout: timeoutFlag(),
    ...s3Flags,
  }

  async run() {
    const destination = await openDestination(this.flags.from, destinationSettings(this.flags), {existing: true})
    const result = await verifyBackups(destination, this.args.id, {
      deep: this.flags.deep,
      timeoutMs: this.flags.timeout,
      onInstance: (backup, i) =>
        this.progress(
          i.ok
            ? `${paint.ok('✔')} ${backup} ${i.instance}: ${this.flags.deep ? 'loaded; ' : ''}size, sha256, CRC64 and keys per database match`
            : `${paint.bad('✘')} ${backup} ${i.instance}: ${i.problems.join('; ')}`,
        ),
    })
    for (const backup of result.backups.filter((b) => b.problems.length > 0))
      this.progress(`${paint.bad('✘')} ${backup.id}: ${backup.problems.join('; ')}`)
    // What a partial backup lacks is no fault of its files, but no restore can come from it: said.
    for (const backup of result.backups)
      for (const failed of backup.failed ?? [])
        this.progress(`${paint.warn('!')} ${backup.id} ${failed.instance}: not in this backup (partial): ${failed.error}`)
    const files = result.backups.reduce((sum, b) => sum + b.instances.length, 0)
    if (!result.ok) {
      const bad = result.backups.filter((b) => !b.ok).map((b) => b.id)
      return this.partial(
        result,
        `${plural(bad.length, 'backup')} ${bad.length === 1 ? 'does' : 'do'} not match ${bad.length === 1 ? 'its' : 'their'} manifest: ${bad.join(', ')}`,
      )
    }
    const partial = result.backups.filter((b) => b.failed)
    this.progress(
      `${plural(result.backups.length, 'backup')} verified: ${plural(files, 'snapshot')} and their registry documents match.${partial.length > 0 ? ` Partial, with instances missing: ${partial.map((b) => b.id).join(', ')}.` : ''}`,
    )
    return result
  }
}

import {RegistryCommand} from '../../base-command.js'
import {countFlag, dryRunFlag, instanceFlag, weightFlag, yesFlag} from '../../flags.js'
import {Flags} from '@oclif/core'
import {formatAddress} from '../../registry/address.js'
import {applyInit, planInit} from '../../registry/manage.js'
import {paint, renderTable} from '../../ui/terminal.js'

export default class ShardsInit extends RegistryCommand<typeof ShardsInit> {
  static override summary = 'Create N shards on consecutive databases of one instance.'
  static override description = `Each shard gets one database of the instance (db D, D+1, ...) and, with --replica, the same database on each replica instance. Ids are <id-prefix><number>, numbered after the ids that already use the prefix, so initialising a second instance continues the sequence. Refused when the databases do not fit the instance's "databases" setting, or one of them already belongs to a shard. All shards are added in one atomic step.`

  static override examples = [
    '<%= config.bin %> <%= command.id %> --instance 10.0.0.5:6379 --count 100',
    '<%= config.bin %> <%= command.id %> --instance 10.0.0.7:6379 --replica 10.0.0.8:6379 --count 50 --first-db 0 --id-prefix s',
  ]

  static override flags = {
    instance: instanceFlag({summary: 'The instance (host:port) whose databases become shards.', required: true}),
    replica: instanceFlag({summary: 'A replica instance of it (repeat for more): becomes slave0, slave1, ... of every shard.', multiple: true}),
    count: countFlag('count', 1, 100_000)({summary: 'How many shards.', required: true}),
    'first-db': countFlag('first db', 0, 1_000_000)({summary: 'Database of the first shard.', default: 0}),
    'id-prefix': Flags.string({summary: 'Shard ids are this prefix and a number.', default: 's'}),
    'first-id': countFlag('first id', 0, 100_000_000)({summary: 'Number of the first id (default: after the existing ones).'}),
    weight: weightFlag({default: 1}),
    'dry-run': dryRunFlag,
    yes: yesFlag,
  }

  async run() {
    const {flags} = this
    if (!flags['dry-run']) await this.lock()
    const shards = await planInit(await this.registry(), await this.pool(), {
      instance: flags.instance,
      replicas: flags.replica ?? [],
      count: flags.count,
      firstDb: flags['first-db'],
      idPrefix: flags['id-prefix'],
      firstId: flags['first-id'],
      weight: flags.weight,
    })
    const rows = shards.map((s) => [s.id, formatAddress(s.master), s.replicas.map(formatAddress).join(', ') || '-', String(s.weight)])
    const preview = shards.length > 12 ? [...rows.slice(0, 5), ['...', '', '', ''], ...rows.slice(-5)] : rows
    this.log(renderTable(['ID', 'MASTER', 'REPLICAS', 'WEIGHT'], preview))
    const applied = !flags['dry-run']
    if (applied) await applyInit(await this.registry(), shards)
    this.progress(applied ? `Added ${shards.length} shards.` : paint.warn(`Would add ${shards.length} shards (dry run).`))
    return {
      applied,
      shards: shards.map((s) => ({id: s.id, master: formatAddress(s.master), replicas: s.replicas.map(formatAddress), weight: s.weight})),
    }
  }
}

import {Args, Flags} from '@oclif/core'

import {RegistryCommand} from '../../base-command.js'
import {addressFlag, dryRunFlag, shardIdArg, weightFlag} from '../../flags.js'
import {formatAddress} from '../../registry/address.js'
import {addShard} from '../../registry/manage.js'
import {paint} from '../../ui/terminal.js'

export default class ShardsAdd extends RegistryCommand<typeof ShardsAdd> {
  static override summary = 'Register one shard: its master, read replicas and weight.'
  static override description = `Writes P.<id> (master, slave0..) and P.list in one atomic step and publishes the change. Refused when the id exists, when the master's database already belongs to another shard, or when master and replicas are not different instances — compared by what they are: the address in its canonical spelling (LOCALHOST is 127.0.0.1, [0:0:0:0:0:0:0:1] is [::1]) and, where the instances answer, their run_id. Credentials in a redis:// address are never written to the registry.`

  static override examples = [
    '<%= config.bin %> <%= command.id %> s042 --master 10.0.0.5:6379/42 --replica 10.0.0.6:6379/42 --weight 1',
    '<%= config.bin %> <%= command.id %> s043 --master [fd00::5]:6379/43 --weight 0 --dry-run',
  ]

  static override args = {
    id: Args.string({
      description: 'Shard id: 1-64 of [A-Za-z0-9_-], starting with a letter or digit.',
      required: true,
      parse: shardIdArg,
      ignoreStdin: true,
    }),
  }

  static override flags = {
    master: addressFlag({summary: 'Master address, host:port/db.', required: true}),
    replica: addressFlag({summary: 'Read replica address (repeat for more): slave0, slave1, ...', multiple: true}),
    persist: addressFlag({summary: 'Persistence-only replica (repeat for more): persist0, ...', multiple: true}),
    weight: weightFlag({default: 1}),
    'dry-run': dryRunFlag,
    yes: Flags.boolean({char: 'y', env: 'SHARDCTL_YES', summary: 'Accepted for symmetry; adding asks nothing.', hidden: true}),
  }

  async run() {
    const {flags} = this
    if (!flags['dry-run']) await this.lock()
    const result = await addShard(
      await this.registry(),
      {id: this.args.id, master: flags.master, replicas: flags.replica ?? [], persist: flags.persist ?? [], weight: flags.weight},
      {dryRun: flags['dry-run'], pool: await this.pool()},
    )
    const {shard} = result
    const replicas = shard.replicas.map(formatAddress).join(', ') || 'no replicas'
    const verb = result.applied ? 'Added' : paint.warn('Would add (dry run)')
    this.log(`${verb} shard ${paint.bold(shard.id)}: master ${formatAddress(shard.master)}, ${replicas}, weight ${shard.weight}`)
    return {
      applied: result.applied,
      shard: {
        id: shard.id,
        weight: shard.weight,
        master: formatAddress(shard.master),
        replicas: shard.replicas.map(formatAddress),
        persist: shard.persist.map(formatAddress),
      },
    }
  }
}

import {RegistryCommand} from '../../base-command.js'
import {countFlag, dryRunFlag, instanceFlag, weightFlag, yesFlag} from '../../flags.js'
import {Flags} from '@oclif/core'
import {formatAddress, instanceKey} from '../../registry/address.js'
import {shares} from '../../registry/assign.js'
import {type NewShard, applyInit, planInit} from '../../registry/manage.js'
import {formatPercent, paint, plural, renderTable} from '../../ui/terminal.js'

export default class ShardsInit extends RegistryCommand<typeof ShardsInit> {
  static override summary = 'Create N shards on consecutive databases of one instance.'
  static override description = `Each shard gets one database of the instance (db D, D+1, ...) and, with --replica, the same database on each replica instance. Ids are <id-prefix><number>, numbered after the ids that already use the prefix, so initialising a second instance continues the sequence. Refused when the databases do not fit the instance's "databases" setting, or one of them already belongs to a shard. All shards are added in one atomic step.`

  static override examples = [
    '<%= config.bin %> <%= command.id %> --instance 10.0.0.5:6379 --count 100',
    '<%= config.bin %> <%= command.id %> --instance 10.0.0.7:6379 --replica 10.0.0.8:6379 --count 50 --first-db 0 --id-prefix s',
  ]

  static override flags = {
    instance: instanceFlag({summary: 'The instance (host:port) whose databases become shards.', required: true}),
    replica: instanceFlag({
      summary: 'A replica instance of it (repeat for more): becomes slave0, slave1, ... of every shard.',
      multiple: true,
    }),
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
    const registry = await this.registry()
    const make = async () => ({
      shards: await planInit(registry, await this.pool(), {
        instance: flags.instance,
        replicas: flags.replica ?? [],
        count: flags.count,
        firstDb: flags['first-db'],
        idPrefix: flags['id-prefix'],
        firstId: flags['first-id'],
        weight: flags.weight,
      }),
      existing: await registry.weights(),
    })
    const show = (shards: NewShard[]) => {
      const rows = shards.map((s) => [s.id, formatAddress(s.master), s.replicas.map(formatAddress).join(', ') || '-', String(s.weight)])
      const preview = shards.length > 12 ? [...rows.slice(0, 5), ['...', '', '', ''], ...rows.slice(-5)] : rows
      this.log(renderTable(['ID', 'MASTER', 'REPLICAS', 'WEIGHT'], preview))
    }
    const result = (shards: NewShard[], applied: boolean) => ({
      applied,
      shards: shards.map((s) => ({id: s.id, master: formatAddress(s.master), replicas: s.replicas.map(formatAddress), weight: s.weight})),
    })
    if (flags['dry-run']) {
      const {shards} = await make()
      show(shards)
      this.progress(paint.warn(`Would add ${plural(shards.length, 'shard')} (dry run).`))
      return result(shards, false)
    }
    const {
      plan: {shards},
      confirmed,
    } = await this.planThenLock(
      make,
      (plan) => {
        show(plan.shards)
        return this.question(plan.shards, plan.existing)
      },
      (plan) => plan.shards.map((s) => [s.id, formatAddress(s.master)]),
    )
    if (!confirmed) {
      this.progress('Nothing changed.')
      return result(shards, false)
    }
    await applyInit(registry, shards)
    this.progress(`Added ${plural(shards.length, 'shard')}.`)
    return result(shards, true)
  }

  /** What the new shards will take of new assignments, and with how many replicas, on which fleet. */
  private question(shards: NewShard[], existing: Map<string, number>): string {
    const after = shares(new Map([...existing, ...shards.map((s): [string, number] => [s.id, s.weight])]))
    const share = shards.reduce((n, s) => n + (after.get(s.id) ?? 0), 0)
    const replicas = shards[0]?.replicas.length ?? 0
    const copies = replicas === 0 ? paint.warn('no replica') : plural(replicas, 'replica')
    return `Add ${plural(shards.length, 'shard')} on ${instanceKey(this.flags.instance)} (dbs ${shards[0]?.master.db}-${shards.at(-1)?.master.db}), with ${copies} each; they take ${formatPercent(share)} of new assignments?`
  }
}

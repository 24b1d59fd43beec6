import {Flags} from '@oclif/core'

import {RegistryCommand} from '../../base-command.js'
import {countFlag, dryRunFlag, durationFlag, sentinelFlag} from '../../flags.js'
import {describeIds} from '../../health/groups.js'
import {type RegisterPlan, type RegisterResult, applyRegister, planRegister} from '../../sentinel/register.js'
import {paint, plural, renderTable} from '../../ui/terminal.js'

export default class SentinelRegister extends RegistryCommand<typeof SentinelRegister> {
  static override summary = "Hand the fleet's replication groups to Redis Sentinel, and record them in the registry."
  static override description = `A replication group is an instance that is the master of shards, with its replicas: Sentinel monitors instances, not databases, so one Sentinel name per group moves all of its shards at once. Shards on one instance that name different replicas are refused (named).

Names are stable: a group keeps the name the registry records for it; a new one is named <name-prefix>-<its first shard> (-2, -3... when taken).

Every Sentinel is checked before anything changes: a name another master has there, or an instance it monitors under another name, is refused. Then each Sentinel monitors each group (MONITOR, with its IP) and is given down-after-milliseconds, failover-timeout, parallel-syncs, the quorum and the instances' credentials (SHARDCTL_INSTANCE_USER / _PASSWORD, as shardctl uses them; Sentinel keeps them in its own config file). A Sentinel that refuses undoes the run everywhere. Once the Sentinels know each other, CKQUORUM on each; then the Sentinels and the groups are recorded in the registry, where sentinel:follow and every operator find them.

Run it again after adding instances (new groups are added, the others only get the settings again), after a split or promote that could not hand a group back, or to change the settings. The Sentinels' own password: SHARDCTL_SENTINEL_PASSWORD (user: SHARDCTL_SENTINEL_USER).

Exit 3 when a group is registered but CKQUORUM fails (the Sentinels could not authorise a failover).`

  static override examples = [
    '<%= config.bin %> <%= command.id %> --sentinel 10.0.0.7:26379 --sentinel 10.0.0.8:26379 --sentinel 10.0.0.9:26379 --dry-run',
    '<%= config.bin %> <%= command.id %> --sentinel 10.0.0.7 --sentinel 10.0.0.8 --sentinel 10.0.0.9 --down-after 10s',
    '<%= config.bin %> <%= command.id %>   # again, with the recorded Sentinels: new instances join',
  ]

  static override flags = {
    sentinel: sentinelFlag(),
    quorum: countFlag('quorum', 1, 100)({summary: 'Sentinels that must agree a master is down (default: a majority).'}),
    'down-after': durationFlag({summary: 'down-after-milliseconds: how long a master may not answer before it is down (default 30s).'}),
    'failover-timeout': durationFlag({summary: 'failover-timeout (default 3m).'}),
    'parallel-syncs': countFlag('parallel syncs', 1, 100)({summary: 'Replicas resynchronised at once after a failover (default 1).'}),
    'name-prefix': Flags.string({summary: 'Prefix of new group names (default: the registry prefix).'}),
    group: Flags.string({summary: 'Only this group (its name or master host:port; repeat for more).', multiple: true}),
    'dry-run': dryRunFlag,
  }

  async run(): Promise<RegisterResult> {
    const {flags} = this
    const registry = await this.registry()
    if (!flags['dry-run']) await this.lock()
    const sentinels = await this.sentinels(flags.sentinel ?? [])
    const {instance} = await this.resolveConnections()
    const plan = await planRegister(registry, sentinels, {
      sentinels: flags.sentinel ?? [],
      settings: {
        quorum: flags.quorum,
        downAfterMs: flags['down-after'],
        failoverTimeoutMs: flags['failover-timeout'],
        parallelSyncs: flags['parallel-syncs'],
      },
      namePrefix: flags['name-prefix'] ?? flags.prefix,
      instanceCredentials: instance,
      only: flags.group,
    })
    this.render(plan)
    if (flags['dry-run']) {
      this.progress(paint.warn('Dry run: nothing changed.'))
      return {plan, applied: false, quorum: []}
    }
    const result = await applyRegister(registry, sentinels, plan, instance, (m) => this.progress(m))
    const failed = result.quorum.filter((q) => !q.ok)
    if (failed.length > 0) {
      return this.partial(
        result,
        `registered, but the Sentinels cannot authorise a failover of ${failed.map((q) => `${q.group} (${q.message})`).join('; ')}`,
      )
    }
    this.progress(
      `${plural(plan.groups.length, 'group')} handed to ${plural(plan.sentinels.length, 'Sentinel')}, quorum ${plan.settings.quorum}: ${paint.ok('CKQUORUM ok')}. Keep the registry following them with sentinel:follow.`,
    )
    return result
  }

  private render(plan: RegisterPlan): void {
    const {settings} = plan
    this.progress(
      `Sentinels ${plan.sentinels.join(', ')}: quorum ${settings.quorum}, down after ${settings.downAfterMs} ms, failover timeout ${settings.failoverTimeoutMs} ms, ${settings.parallelSyncs} parallel sync(s).`,
    )
    this.log(
      renderTable(
        ['GROUP', 'MASTER', 'REPLICAS', 'SHARDS', 'SENTINELS'],
        plan.groups.map((g) => {
          const fresh = g.actions.filter((a) => a.action === 'monitor').length
          const state = fresh === 0 ? 'monitored' : fresh === g.actions.length ? 'new' : `new on ${fresh}`
          return [
            g.name,
            g.master,
            g.replicas.join(', ') || paint.warn('none'),
            describeIds(g.shards),
            g.released ? `${state} (was released)` : state,
          ]
        }),
      ),
    )
    for (const g of plan.groups.filter((g) => g.replicas.length === 0))
      this.warn(`${g.master} has no replica: Sentinel has nothing to fail over to`)
  }
}

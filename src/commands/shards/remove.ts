import {Args, Flags} from '@oclif/core'

import {RegistryCommand} from '../../base-command.js'
import {dryRunFlag, shardIdArg, yesFlag} from '../../flags.js'
import {type RemovePlan, applyRemoval, planRemoval, recordRefusedRemoval, refuseRemoval} from '../../registry/manage.js'
import {paint, plural} from '../../ui/terminal.js'

export default class ShardsRemove extends RegistryCommand<typeof ShardsRemove> {
  static override summary = 'Remove a shard from the registry, or drain it (weight 0).'
  static override description = `Refused while hashes point at the shard (they would route nowhere), unless --force; the refusal is recorded in the history (shard.remove-refused). --drain sets its weight to 0 instead: it keeps serving its hashes and takes no new ones. The shard's data on its instance is never touched.`

  static override examples = [
    '<%= config.bin %> <%= command.id %> s042',
    '<%= config.bin %> <%= command.id %> s042 --drain',
    '<%= config.bin %> <%= command.id %> s042 --force --yes',
  ]

  static override args = {
    id: Args.string({description: 'Shard id.', required: true, parse: shardIdArg, ignoreStdin: true}),
  }

  static override flags = {
    drain: Flags.boolean({summary: 'Set the weight to 0 instead of removing.', exclusive: ['force']}),
    force: Flags.boolean({summary: 'Remove even though hashes still point at the shard.'}),
    'dry-run': dryRunFlag,
    yes: yesFlag,
  }

  async run() {
    const {flags} = this
    const registry = await this.registry()
    const make = () =>
      planRemoval(registry, this.args.id, {
        drain: flags.drain,
        onCounting: () => this.progress(`Counting the hashes assigned to ${this.args.id}...`),
      })
    const describe = (plan: RemovePlan) =>
      plan.action === 'drain'
        ? `drain shard ${plan.id} (weight 0: no new hashes; it keeps serving ${plural(plan.hashes, 'hash')})`
        : `remove shard ${plan.id}${plan.hashes > 0 ? `, leaving ${plural(plan.hashes, 'hash')} pointing at nothing` : ''}`
    let refused: RemovePlan | undefined
    const refuse = (plan: RemovePlan) => {
      if (plan.action === 'remove' && plan.hashes > 0 && !flags.force) {
        refused = plan
        throw refuseRemoval(plan)
      }
    }
    const drained = (plan: RemovePlan) => `Shard ${plan.id} is drained already (weight 0); nothing changed.`
    if (flags['dry-run']) {
      const plan = await make()
      refuse(plan)
      if (plan.alreadyDrained) {
        this.log(drained(plan))
        return {...plan}
      }
      this.log(`${paint.warn('Would')} ${describe(plan)} (dry run).`)
      return {...plan}
    }
    const {plan, confirmed} = await this.planThenLock(make, (plan) => {
      refuse(plan)
      const what = describe(plan)
      return plan.action === 'remove' ? `${what[0].toUpperCase()}${what.slice(1)}?` : undefined
    }).catch(async (error: unknown) => {
      // The refusal is recorded, as every refused operation is (a dry run records nothing).
      if (refused) await recordRefusedRemoval(registry, refused)
      throw error
    })
    if (!confirmed) {
      this.log('Nothing changed.')
      return {...plan}
    }
    const done = await applyRemoval(registry, plan)
    if (plan.alreadyDrained) this.log(drained(plan))
    else this.log(plan.action === 'drain' ? `Drained shard ${plan.id}.` : `Removed shard ${plan.id}.`)
    return done
  }
}

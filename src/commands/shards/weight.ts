import {Args, Flags} from '@oclif/core'

import {RegistryCommand} from '../../base-command.js'
import {dryRunFlag, shardIdArg, yesFlag} from '../../flags.js'
import {fleetOverview} from '../../fleet/overview.js'
import {usageError} from '../../errors.js'
import {type WeightChange, applyWeights, planWeight, proposeEvenWeights} from '../../registry/manage.js'
import {shares} from '../../registry/assign.js'
import {parseWeight} from '../../registry/schema.js'
import {formatCount, formatPercent, paint, plural, renderTable} from '../../ui/terminal.js'

export default class ShardsWeight extends RegistryCommand<typeof ShardsWeight> {
  static override summary = "Set a shard's weight, or propose weights that even out the fleet."
  static override description = `A shard's weight is its share of new assignments: probability weight / sum of weights; 0 takes it out of new assignments.

--even proposes weights that steer new hashes toward the emptier shards, measured by keys in each shard's database (--by keys, probed live) or by hashes assigned in the map (--by hashes), shows current and proposed side by side, and applies them on confirmation or --yes. Drained shards (weight 0) stay drained; --even itself never drains: a shard already fuller than the rest keeps a small weight (1, of a mean of 100), so a later --even weighs it again.`

  static override examples = [
    '<%= config.bin %> <%= command.id %> s042 2.5',
    '<%= config.bin %> <%= command.id %> s042 0',
    '<%= config.bin %> <%= command.id %> --even --by hashes',
    '<%= config.bin %> <%= command.id %> --even --yes --json',
  ]

  static override args = {
    id: Args.string({description: 'Shard id.', parse: shardIdArg, ignoreStdin: true}),
    weight: Args.string({description: 'New weight: a finite number >= 0.', ignoreStdin: true}),
  }

  static override flags = {
    even: Flags.boolean({summary: 'Propose weights that steer new assignments toward emptier shards.'}),
    by: Flags.string({summary: 'What --even measures.', options: ['keys', 'hashes'], default: 'keys'}),
    'dry-run': dryRunFlag,
    yes: yesFlag,
  }

  async run() {
    const {flags, args} = this
    const registry = await this.registry()
    if (flags.even && args.id !== undefined) throw usageError('--even takes no shard id or weight', 'run it alone: shards:weight --even')
    if (!flags.even && (args.id === undefined || args.weight === undefined))
      throw usageError('give a shard id and a weight, or --even', 'e.g. shards:weight s042 2')
    // A bad weight is a usage error before anything else. Whether the shard exists is read
    // under the lock: while another operator holds it, the answer is exit 4, as for every change.
    const weight = flags.even ? undefined : parseWeight(args.weight!)
    const make = async (): Promise<WeightChange[]> => {
      if (weight !== undefined) return [await planWeight(registry, args.id!, weight)]
      const overview = await fleetOverview(registry, await this.pool(), {probe: flags.by === 'keys', counts: flags.by === 'hashes'})
      const fill = new Map<string, number>()
      for (const s of overview.shards) {
        if (flags.by === 'keys' && !s.master.reachable) {
          throw usageError(
            `cannot measure shard ${s.id}: master ${s.master.address} unreachable`,
            'use --by hashes, or bring the master back',
          )
        }
        fill.set(s.id, (flags.by === 'keys' ? s.master.keys : s.hashes) ?? 0)
      }
      return proposeEvenWeights(new Map(overview.shards.map((s) => [s.id, s.weight])), fill)
    }
    const changedOf = (changes: WeightChange[]) => changes.filter((c) => c.current !== c.proposed)
    const show = (changes: WeightChange[]) => {
      if (!this.jsonEnabled()) this.render(changes, flags.even ? flags.by : undefined)
    }

    if (flags['dry-run']) {
      const changes = await make()
      show(changes)
      const changed = changedOf(changes)
      this.progress(changed.length === 0 ? 'Nothing to change.' : paint.warn(`Would change ${plural(changed.length, 'weight')} (dry run).`))
      return {applied: false, by: flags.even ? flags.by : undefined, changes}
    }
    const {plan: changes, confirmed} = await this.planThenLock(
      make,
      (changes) => {
        show(changes)
        const changed = changedOf(changes)
        return flags.even && changed.length > 0 ? `Apply ${plural(changed.length, 'new weight')}?` : undefined
      },
      (changes) => changes.map((c) => [c.id, c.current, c.proposed]),
    )
    const result = {applied: false, by: flags.even ? flags.by : undefined, changes}
    const changed = changedOf(changes)
    if (changed.length === 0) {
      this.progress('Nothing to change.')
      return result
    }
    if (!confirmed) {
      this.progress('Nothing changed.')
      return result
    }
    await applyWeights(registry, changes, flags.even ? {even: flags.by} : {})
    this.progress(`Changed ${plural(changed.length, 'weight')}.`)
    return {...result, applied: true}
  }

  private render(changes: WeightChange[], by: string | undefined): void {
    const current = shares(new Map(changes.map((c) => [c.id, c.current])))
    const proposed = shares(new Map(changes.map((c) => [c.id, c.proposed])))
    const share = (of: Map<string, number>, id: string) => formatPercent(of.get(id) ?? 0)
    const head = ['ID', ...(by ? [by.toUpperCase()] : []), 'WEIGHT', 'SHARE', 'NEW WEIGHT', 'NEW SHARE']
    const rows = changes.map((c) => {
      const mark = c.current === c.proposed ? (s: string) => s : paint.bold
      return [
        c.id,
        ...(by ? [formatCount(c.fill)] : []),
        String(c.current),
        share(current, c.id),
        mark(String(c.proposed)),
        share(proposed, c.id),
      ]
    })
    // A single change does not need its fleet-wide share.
    this.log(
      renderTable(
        by ? head : ['ID', 'WEIGHT', 'NEW WEIGHT'],
        by ? rows : changes.map((c) => [c.id, String(c.current), String(c.proposed)]),
      ),
    )
  }
}

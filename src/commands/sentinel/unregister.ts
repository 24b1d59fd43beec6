import {Flags} from '@oclif/core'

import {RegistryCommand} from '../../base-command.js'
import {usageError} from '../../errors.js'
import {dryRunFlag, sentinelFlag, yesFlag} from '../../flags.js'
import {readRecord} from '../../sentinel/record.js'
import {type UnregisterResult, unregister, unregisteredBefore} from '../../sentinel/register.js'
import {distinctAddresses} from '../../sentinel/sentinels.js'
import {paint, plural} from '../../ui/terminal.js'

export default class SentinelUnregister extends RegistryCommand<typeof SentinelUnregister> {
  static override summary = 'Take replication groups back from Redis Sentinel, and out of the registry.'
  static override description = `Removes each group (all the registry records, or those named with --group) from every Sentinel (SENTINEL REMOVE), then from the registry's record. From then on, nothing fails these instances over by itself: it asks first (--yes where no terminal can ask). A Sentinel that does not answer keeps monitoring: those groups stay recorded, and the command exits 3 naming them — run it again when the Sentinel is back. Run again once everything is removed (a --group the history says was unregistered included), it has nothing to do (exit 0); a group the registry never recorded is exit 2.`

  static override examples = [
    '<%= config.bin %> <%= command.id %> --group shards-s000 --dry-run',
    '<%= config.bin %> <%= command.id %> --group shards-s000 --yes',
    '<%= config.bin %> <%= command.id %>   # every group, after a confirmation',
  ]

  static override flags = {
    group: Flags.string({summary: 'Only this group (repeat for more); default: every recorded group.', multiple: true}),
    sentinel: sentinelFlag({summary: 'Remove the groups from this Sentinel too (repeat); the recorded ones always.'}),
    'dry-run': dryRunFlag,
    yes: yesFlag,
  }

  async run(): Promise<UnregisterResult & {applied: boolean}> {
    const {flags} = this
    const registry = await this.registry()
    const record = await readRecord(registry)
    const recorded = new Set(record?.groups.keys() ?? [])
    const names = flags.group ?? [...recorded].sort()
    const missing = names.filter((n) => !recorded.has(n))
    if (missing.length > 0) {
      // Run again after it worked: the same end state, nothing to do. A name never recorded is a mistake.
      const before = await unregisteredBefore(registry, missing)
      const unknown = missing.filter((n) => !before.has(n))
      if (unknown.length > 0)
        throw usageError(`the registry records no group ${unknown.join(', ')}`, `it records ${[...recorded].join(', ') || 'none'}`)
      for (const name of missing) {
        const event = before.get(name)!
        this.progress(`Nothing to do for ${name}: it was unregistered at ${event.at} by ${event.by}.`)
      }
    }
    const left = names.filter((n) => recorded.has(n))
    if (!record || left.length === 0) {
      if (!flags.group) this.progress('Nothing to unregister: the registry records no Sentinel group.')
      return {removed: [], kept: [], applied: false}
    }
    // Each Sentinel once, however the record (an older version's) or --sentinel spells it.
    const sentinels = await this.sentinels(distinctAddresses([...record.sentinels, ...(flags.sentinel ?? [])]))
    const what = `${left.join(', ')} from ${sentinels.keys.join(', ')} and from the registry`
    if (flags['dry-run']) {
      this.log(`Would remove ${what}.`)
      return {removed: [], kept: [], applied: false}
    }
    if (
      !(await this.confirm(
        `Remove ${what}? Nothing fails ${left.length === 1 ? 'its instances' : 'their instances'} over by itself afterwards.`,
      ))
    ) {
      this.progress('Nothing changed.')
      return {removed: [], kept: [], applied: false}
    }
    await this.lock()
    const result = await unregister(registry, sentinels, left)
    if (result.kept.length > 0) {
      return this.partial(
        {...result, applied: true},
        `still monitored: ${result.kept.map((k) => `${k.group} on ${k.sentinels.join(', ')}`).join('; ')} (run again when those Sentinels answer)`,
      )
    }
    this.progress(
      `Removed ${plural(result.removed.length, 'group')} from ${plural(sentinels.keys.length, 'Sentinel')}: ${paint.bold(result.removed.join(', '))}.`,
    )
    return {...result, applied: true}
  }
}

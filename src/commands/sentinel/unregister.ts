import {Flags} from '@oclif/core'

import {RegistryCommand} from '../../base-command.js'
import {usageError} from '../../errors.js'
import {dryRunFlag, sentinelFlag} from '../../flags.js'
import {readRecord} from '../../sentinel/record.js'
import {distinctAddresses} from '../../sentinel/sentinels.js'
import {type UnregisterResult, unregister} from '../../sentinel/register.js'
import {paint, plural} from '../../ui/terminal.js'

export default class SentinelUnregister extends RegistryCommand<typeof SentinelUnregister> {
  static override summary = 'Take replication groups back from Redis Sentinel, and out of the registry.'
  static override description = `Removes each group (all the registry records, or those named with --group) from every Sentinel (SENTINEL REMOVE), then from the registry's record. A Sentinel that does not answer keeps monitoring: those groups stay recorded, and the command exits 3 naming them — run it again when the Sentinel is back. Run again once everything is removed, it has nothing to do (exit 0). From then on, nothing fails these instances over by itself.`

  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> --group shards-s000 --dry-run']

  static override flags = {
    group: Flags.string({summary: 'Only this group (repeat for more); default: every recorded group.', multiple: true}),
    sentinel: sentinelFlag({summary: 'Remove the groups from this Sentinel too (repeat); the recorded ones always.'}),
    'dry-run': dryRunFlag,
  }

  async run(): Promise<UnregisterResult & {applied: boolean}> {
    const {flags} = this
    const registry = await this.registry()
    if (!flags['dry-run']) await this.lock()
    const record = await readRecord(registry)
    if (!record) {
      // Run again after it worked: the same end state, nothing to do.
      if (flags.group) throw usageError(`the registry records no group ${flags.group.join(', ')}`, 'it records no Sentinel at all')
      this.progress('Nothing to unregister: the registry records no Sentinel.')
      return {removed: [], kept: [], applied: false}
    }
    const names = flags.group ?? [...record.groups.keys()].sort()
    const unknown = names.filter((n) => !record.groups.has(n))
    if (unknown.length > 0)
      throw usageError(
        `the registry records no group ${unknown.join(', ')}`,
        `it records ${[...record.groups.keys()].join(', ') || 'none'}`,
      )
    // Each Sentinel once, however the record (an older version's) or --sentinel spells it.
    const sentinels = await this.sentinels(distinctAddresses([...record.sentinels, ...(flags.sentinel ?? [])]))
    if (flags['dry-run']) {
      this.log(`Would remove ${names.join(', ')} from ${sentinels.keys.join(', ')} and from the registry.`)
      return {removed: [], kept: [], applied: false}
    }
    const result = await unregister(registry, sentinels, names)
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

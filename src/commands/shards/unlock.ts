import {Flags} from '@oclif/core'

import {RegistryCommand} from '../../base-command.js'
import {dryRunFlag, yesFlag} from '../../flags.js'
import {breakLock, describeHolder, parseHolder} from '../../ops/lock.js'
import {Change} from '../../registry/registry.js'

export default class ShardsUnlock extends RegistryCommand<typeof ShardsUnlock> {
  static override summary = 'Break the operator lock on purpose, naming its holder.'
  static override description = `Every command that changes the registry holds a lease in it (P._lock) while it runs; a second operator fails at once with exit 4. A holder that died stops renewing and its lease expires by itself within 15 seconds (on the same host at once). Use this only when you know the holder is gone: an operation it left half-done is finished or rolled back by running it again (see shards:promote).

--holder makes a script safe: the lock is broken only if that holder (user@host, or its token) still holds it.`

  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> --holder alice@ops-1 --yes']

  static override flags = {
    holder: Flags.string({summary: 'Break it only if this holder (user@host or token) holds it.'}),
    'dry-run': dryRunFlag,
    yes: yesFlag,
  }

  async run() {
    const registry = await this.registry()
    const current = parseHolder(await registry.client.get(registry.keys.lock))
    if (!current && (await registry.client.exists(registry.keys.lock)) === 0) {
      this.progress('Nobody holds the lock.')
      return {broken: false, holder: null}
    }
    const who = current ? describeHolder(current) : 'an unknown holder'
    if (this.flags['dry-run']) {
      this.log(`The lock is held by ${who}; nothing changed (dry run).`)
      return {broken: false, holder: current ?? null}
    }
    if (!(await this.confirm(`Break the lock held by ${who}?`))) {
      this.progress('Lock left in place.')
      return {broken: false, holder: current ?? null}
    }
    const broken = await breakLock(registry.client, registry.keys.lock, this.flags.holder)
    await registry.apply(new Change(), 'lock.broken', {holder: current?.holder ?? null, since: current?.since ?? null})
    this.log(`Broke the lock held by ${who}.`)
    return {broken: broken !== undefined, holder: current ?? null}
  }
}

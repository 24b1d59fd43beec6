import {Flags} from '@oclif/core'

import {RegistryCommand} from '../../base-command.js'
import {dryRunFlag, yesFlag} from '../../flags.js'
import {type ReconcileRow, readStrays, reconcileStrays} from '../../ops/reconcile.js'
import {formatCount, paint, plural, renderTable} from '../../ui/terminal.js'

export default class ShardsReconcile extends RegistryCommand<typeof ShardsReconcile> {
  /** Holds the lock for long: renewed from a worker thread (see ops/lock-renewer.ts). */
  static longRunning = true
  static override summary = 'Move writes that landed on a moved database after a split to where the registry routes them.'
  static override description = `A client with stale routing (one that never reloads it, or heard of the split after its cut-over) can still get a write acknowledged on a moved database of the split's source. The split keeps those keys there, names them, exits 3, and records the database in P._strays. This command moves them, with MIGRATE (atomic per key), to the shard's master as the registry names it now.

A key the destination already has is a conflict: it stays on the source and is named, unless --replace (the stray write wins). A database that is empty afterwards leaves the record. Exit 3 while anything is left.`

  static override examples = [
    '<%= config.bin %> <%= command.id %> --dry-run',
    '<%= config.bin %> <%= command.id %> --yes',
    '<%= config.bin %> <%= command.id %> --replace --yes   # the stray writes win over the destination',
  ]

  static override flags = {
    replace: Flags.boolean({summary: 'Overwrite keys the destination already has (the stray write wins).'}),
    'dry-run': dryRunFlag,
    yes: yesFlag,
  }

  async run(): Promise<{strays: ReconcileRow[]; applied: boolean}> {
    const {flags} = this
    const registry = await this.registry()
    const pool = await this.pool()
    if ((await readStrays(registry)).length === 0) {
      this.progress('No stray writes are recorded: nothing to do.')
      return {strays: [], applied: false}
    }
    // Held to the end (released on every exit path); --dry-run changes nothing and needs none.
    if (!flags['dry-run']) await this.lock()
    const plan = await reconcileStrays(registry, pool, {dryRun: true, replace: flags.replace})
    this.render(plan)
    if (flags['dry-run']) {
      this.progress(paint.warn('Dry run: nothing changed.'))
      return {strays: plan, applied: false}
    }
    const keys = plan.reduce((n, r) => n + r.keys, 0)
    if (
      !(await this.confirm(
        `Move ${plural(keys, 'stray key')} to where the registry routes their shards${flags.replace ? ', overwriting what is there' : ''}?`,
      ))
    ) {
      this.progress('Nothing changed.')
      return {strays: plan, applied: false}
    }
    const rows = await reconcileStrays(registry, pool, {
      dryRun: false,
      replace: flags.replace,
      onProgress: (line) => this.progress(paint.dim(`  ${line}`)),
    })
    this.render(rows)
    const left = rows.filter((r) => !r.done)
    if (left.length > 0) {
      const why = left.map((r) =>
        r.to === null
          ? `${r.source}: shard ${r.shard} is not in the registry`
          : `${r.source}: ${plural(r.conflictCount, 'key')} the destination already has, e.g. ${r.conflicts.slice(0, 5).join(', ')}`,
      )
      return this.partial(
        {strays: rows, applied: true},
        `not everything could be moved: ${why.join('; ')} (--replace lets the stray writes win)`,
      )
    }
    this.log(
      `Moved ${plural(
        rows.reduce((n, r) => n + r.moved, 0),
        'key',
      )}; no stray writes are left.`,
    )
    return {strays: rows, applied: true}
  }

  private render(rows: ReconcileRow[]): void {
    if (this.jsonEnabled()) return
    this.log(
      renderTable(
        ['LANDED ON', 'SHARD', 'BELONGS ON', 'KEYS', 'MOVED', 'CONFLICTS'],
        rows.map((r) => [
          r.source,
          r.shard,
          r.to ?? paint.bad('not in the registry'),
          formatCount(r.keys),
          formatCount(r.moved),
          formatCount(r.conflictCount),
        ]),
      ),
    )
  }
}

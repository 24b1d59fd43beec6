import {readFile} from 'node:fs/promises'

import {Args, Flags} from '@oclif/core'

import {RegistryCommand} from '../../base-command.js'
import {usageError} from '../../errors.js'
import {dryRunFlag, yesFlag} from '../../flags.js'
import {type ImportDiff, applyDocument, diffDocument, parseDocument} from '../../registry/document.js'
import {paint, renderTable} from '../../ui/terminal.js'

export default class ShardsImport extends RegistryCommand<typeof ShardsImport> {
  /** Holds the lock for long: renewed from a worker thread (see ops/lock-renewer.ts). */
  static longRunning = true
  static override summary = 'Apply a registry document: show the difference, then change it in one atomic step.'
  static override description = `The document (from shards:export) is checked whole first — format, version, shape and content — and refused before anything changes if any part is wrong. The difference with the registry is shown (shards added, changed, removed with --prune; map entries set), and applied on confirmation or --yes in one atomic step with its event. "-" reads the document from stdin.`

  static override examples = [
    '<%= config.bin %> <%= command.id %> registry.json --dry-run',
    '<%= config.bin %> <%= command.id %> backup.json --yes',
    '<%= config.bin %> <%= command.id %> desired.json --prune --yes',
  ]

  static override args = {
    file: Args.string({description: 'The document, or - for stdin.', required: true, ignoreStdin: true}),
  }

  static override flags = {
    prune: Flags.boolean({summary: 'Remove shards that are not in the document (refused while hashes point at them).'}),
    'dry-run': dryRunFlag,
    yes: yesFlag,
  }

  async run(): Promise<{applied: boolean; diff: ImportDiff}> {
    const text = await this.read(this.args.file)
    const doc = parseDocument(text)
    const registry = await this.registry()
    const make = () => diffDocument(registry, doc, {prune: this.flags.prune})
    const count = ({diff, mapUpdates}: Awaited<ReturnType<typeof make>>) => diff.added.length + diff.changed.length + diff.removed.length + mapUpdates.length
    const show = ({diff}: Awaited<ReturnType<typeof make>>) => {
      if (!this.jsonEnabled()) this.render(diff)
    }
    if (this.flags['dry-run']) {
      const plan = await make()
      show(plan)
      this.progress(count(plan) === 0 ? 'The registry already matches the document.' : paint.warn('Dry run: nothing changed.'))
      return {applied: false, diff: plan.diff}
    }
    const {plan, confirmed} = await this.planThenLock(
      make,
      (plan) => {
        show(plan)
        const {diff, mapUpdates} = plan
        const destructive = diff.changed.length + diff.removed.length + diff.mapChanged > 0
        return count(plan) > 0 && destructive ? `Apply: ${diff.added.length} added, ${diff.changed.length} changed, ${diff.removed.length} removed, ${mapUpdates.length} map entries?` : undefined
      },
      ({diff, mapUpdates}) => ({diff, mapUpdates: mapUpdates.length}),
    )
    const {diff, mapUpdates} = plan
    if (count(plan) === 0) {
      this.progress('The registry already matches the document.')
      return {applied: false, diff}
    }
    if (!confirmed) {
      this.progress('Nothing changed.')
      return {applied: false, diff}
    }
    await applyDocument(registry, diff, mapUpdates)
    this.progress(`Imported: ${diff.added.length} added, ${diff.changed.length} changed, ${diff.removed.length} removed, ${mapUpdates.length} map entries.`)
    return {applied: true, diff}
  }

  private async read(file: string): Promise<string> {
    if (file === '-') {
      const chunks: Buffer[] = []
      for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
      return Buffer.concat(chunks).toString('utf8')
    }
    try {
      return await readFile(file, 'utf8')
    } catch (error) {
      throw usageError(`cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`)
    }
  }

  private render(diff: ImportDiff): void {
    const rows: string[][] = [
      ...diff.added.map((s) => [paint.ok('+'), s.id, `weight ${s.weight}, master ${s.master}${s.replicas.length ? `, replicas ${s.replicas.join(' ')}` : ''}`]),
      ...diff.changed.flatMap((c) => {
        const lines: string[][] = []
        for (const key of ['weight', 'master', 'replicas', 'persist', 'extra'] as const) {
          const before = JSON.stringify(c.before[key])
          const after = JSON.stringify(c.after[key])
          if (before !== after) lines.push([paint.warn('~'), c.id, `${key}: ${before} → ${after}`])
        }
        return lines
      }),
      ...diff.removed.map((id) => [paint.bad('-'), id, 'removed']),
    ]
    if (rows.length > 0) this.log(renderTable(['', 'SHARD', 'CHANGE'], rows))
    if (diff.mapSet + diff.mapChanged > 0) this.log(`map: ${diff.mapSet} entries added, ${diff.mapChanged} re-pointed`)
    this.progress(`${diff.unchanged} shards unchanged.`)
  }
}

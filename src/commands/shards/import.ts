import {constants, createWriteStream} from 'node:fs'
import {access, mkdtemp, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {pipeline} from 'node:stream/promises'

import {Args, Flags} from '@oclif/core'

import {RegistryCommand} from '../../base-command.js'
import {usageError} from '../../errors.js'
import {dryRunFlag, yesFlag} from '../../flags.js'
import {
  ATOMIC_MAP_ENTRIES,
  type ImportDiff,
  type ImportResult,
  applyDocument,
  diffDocument,
  mapOf,
  readDocumentFile,
  stagedParts,
  stagingKey,
} from '../../registry/document.js'
import {formatCount, paint, plural, renderTable} from '../../ui/terminal.js'

export default class ShardsImport extends RegistryCommand<typeof ShardsImport> {
  /** Holds the lock for long: renewed from a worker thread (see ops/lock-renewer.ts). */
  static longRunning = true
  static override summary =
    'Apply a registry document: show the difference, then apply it atomically (a large map change in atomic slices).'
  static override description = `The document (from shards:export) is checked whole first — format, version, shape and content — and refused before anything changes if any part is wrong. The difference with the registry is shown (shards added, changed, removed with --prune; map entries set), and applied on confirmation or --yes, atomically and with its event. "-" reads the document from stdin.

An existing assignment is never changed without --repoint: a map entry of the document that the registry assigns to another shard stays as it is, and is counted (exit 3: the registry does not match the document). With --repoint it is re-pointed, but only while it still holds the shard it was compared with. A hash the document brings that an application assigns meanwhile keeps the application's shard, and is counted too. --prune removes a shard only once no hash points at it: it is drained first, and counted again after the map is in. Map entries the document declares as orphans (pointing at a shard its registry no longer had) are imported as they are, and said.

Any size, in constant memory: the map is read a batch at a time, compared with the registry's a batch at a time, and staged in a hash of its own; onto an empty map it is renamed into place in the same atomic step as the shards. A change of more than ${ATOMIC_MAP_ENTRIES.toLocaleString('en-US')} map entries to an existing map is applied a slice of that size at a time (each slice atomic, every hash always routed to an existing shard), so that no single step keeps the registry from answering applications.`

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
    repoint: Flags.boolean({
      summary: 'Re-point hashes the registry assigns to another shard than the document (otherwise kept: exit 3).',
    }),
    'dry-run': dryRunFlag,
    yes: yesFlag,
  }

  async run(): Promise<{applied: boolean; diff: ImportDiff; steps?: number; kept?: number; notRemoved?: ImportResult['notRemoved']}> {
    const file = await this.source(this.args.file)
    const {doc, hasMap} = await readDocumentFile(file)
    const registry = await this.registry()
    const stage = stagingKey(registry, this.operatorToken)
    let applied = false
    // The staged map changes are this run's own: gone on every exit path unless applied.
    this.onCleanup(async () => {
      if (!applied) await registry.client.unlink(...stagedParts(stage)).catch(() => undefined)
    })
    const make = (staging: boolean) =>
      diffDocument(registry, doc, {
        prune: this.flags.prune,
        repoint: this.flags.repoint,
        map: hasMap ? mapOf(file, doc) : undefined,
        stage: staging ? stage : undefined,
      })
    type Plan = Awaited<ReturnType<typeof make>>
    const count = ({diff}: Plan) => diff.added.length + diff.changed.length + diff.removed.length + diff.mapSet + diff.mapChanged
    const show = ({diff}: Plan) => {
      if (!this.jsonEnabled()) this.render(diff)
    }
    if (this.flags['dry-run']) {
      const plan = await make(false)
      show(plan)
      this.progress(count(plan) === 0 ? this.matches(plan.diff) : paint.warn('Dry run: nothing changed.'))
      return {applied: false, diff: plan.diff}
    }
    const {plan, confirmed} = await this.planThenLock(
      () => make(true),
      (plan) => {
        show(plan)
        const {diff} = plan
        const destructive = diff.changed.length + diff.removed.length + diff.mapChanged > 0
        return count(plan) > 0 && destructive
          ? `Apply: ${diff.added.length} added, ${diff.changed.length} changed, ${diff.removed.length} removed, ${plural(diff.mapSet + diff.mapChanged, 'map entry', 'map entries')}?`
          : undefined
      },
      ({diff}) => diff,
    )
    const {diff} = plan
    if (count(plan) === 0) {
      this.progress(this.matches(diff))
      return this.unmatched({applied: false, diff}, diff, 0)
    }
    if (!confirmed) {
      this.progress('Nothing changed.')
      return {applied: false, diff}
    }
    const {steps, kept, notRemoved} = await applyDocument(registry, diff, {
      key: stage,
      entries: plan.staged,
      mapWasEmpty: plan.mapWasEmpty,
    })
    applied = true
    const sliced = steps > 1 ? ` in ${steps} steps` : ''
    const removed = diff.removed.length - notRemoved.length
    this.progress(
      `Imported: ${diff.added.length} added, ${diff.changed.length} changed, ${removed} removed, ${plural(plan.staged - kept, 'map entry', 'map entries')}${sliced}.`,
    )
    const result = {applied: true, diff, steps, kept, notRemoved}
    if (notRemoved.length > 0) {
      return this.partial(
        result,
        `not removed: ${notRemoved.map((n) => `${n.id} (${plural(n.hashes, 'hash points', 'hashes point')} at it)`).join(', ')}; hashes were assigned to ${notRemoved.length === 1 ? 'it' : 'them'} while the import ran, so ${notRemoved.length === 1 ? 'it stays' : 'they stay'}, drained (weight 0)`,
      )
    }
    return this.unmatched(result, diff, kept)
  }

  private matches(diff: ImportDiff): string {
    return diff.mapKept > 0 ? 'Nothing to import.' : 'The registry already matches the document.'
  }

  /** The registry does not match the document where existing assignments were kept: said, exit 3. */
  private unmatched<R extends object>(result: R, diff: ImportDiff, kept: number): R {
    const parts = [
      diff.mapKept > 0
        ? `${plural(diff.mapKept, 'hash is', 'hashes are')} assigned to another shard than the document says, and ${diff.mapKept === 1 ? 'stays' : 'stay'} there (--repoint moves them)`
        : '',
      kept > 0
        ? `${plural(kept, 'hash was', 'hashes were')} assigned or moved to another shard while the import ran, and keep that shard`
        : '',
    ].filter(Boolean)
    if (parts.length === 0) return result
    return this.partial(result, `the registry does not match the document: ${parts.join('; ')}`)
  }

  /** A file to read twice: the document itself, or stdin spooled to a temporary file. */
  private async source(file: string): Promise<string> {
    if (file !== '-') {
      try {
        await access(file, constants.R_OK)
      } catch (error) {
        throw usageError(`cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`)
      }
      return file
    }
    const dir = await mkdtemp(join(tmpdir(), 'shardctl-import-'))
    this.onCleanup(() => rm(dir, {recursive: true, force: true}))
    const spooled = join(dir, 'document.json')
    await pipeline(process.stdin, createWriteStream(spooled))
    return spooled
  }

  private render(diff: ImportDiff): void {
    const rows: string[][] = [
      ...diff.added.map((s) => [
        paint.ok('+'),
        s.id,
        `weight ${s.weight}, master ${s.master}${s.replicas.length ? `, replicas ${s.replicas.join(' ')}` : ''}`,
      ]),
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
    if (diff.mapSet + diff.mapChanged + diff.mapKept > 0) {
      const kept = diff.mapKept > 0 ? `, ${formatCount(diff.mapKept)} assigned elsewhere kept as they are (--repoint moves them)` : ''
      this.log(`map: ${formatCount(diff.mapSet)} added, ${formatCount(diff.mapChanged)} re-pointed${kept}`)
    }
    if (diff.mapOrphans > 0)
      this.warn(
        `${plural(diff.mapOrphans, 'map entry points', 'map entries point')} at a shard the document declares an orphan (gone from the registry it was exported from): imported as ${diff.mapOrphans === 1 ? 'it is' : 'they are'}`,
      )
    this.progress(`${diff.unchanged} shards unchanged.`)
  }
}

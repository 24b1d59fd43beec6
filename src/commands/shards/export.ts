import {randomBytes} from 'node:crypto'
import {createWriteStream, rmSync, statSync} from 'node:fs'
import {open, rename} from 'node:fs/promises'
import {basename, dirname, join, resolve} from 'node:path'
import type {Writable} from 'node:stream'
import {finished} from 'node:stream/promises'

import {Flags} from '@oclif/core'

import {RegistryCommand} from '../../base-command.js'
import {ShardctlError} from '../../errors.js'
import {type ExportResult, writeDocument} from '../../registry/document.js'
import {plural} from '../../ui/terminal.js'

export default class ShardsExport extends RegistryCommand<typeof ShardsExport> {
  static override summary = 'Write the registry as a versioned JSON document.'
  static override description = `Shards, addresses and weights; with --with-map the hash map too, streamed so that millions of entries take constant memory. shards:import reads it back. Without --out the document goes to stdout (it is JSON already; with --out and --json a summary is printed).

--out replaces the file only once the document is complete: it is written beside it under a temporary name and renamed into place, so a failed or interrupted export leaves the previous file as it was.

The map is read before the shards, so every entry points at a shard of the document; one that points at a shard the registry no longer has (removed with --force) is kept, declared as an orphan, and said. A shard added, removed or changed while the map was read is said too: the document holds the shards as they were at the end.`

  static override examples = [
    '<%= config.bin %> <%= command.id %> > registry.json',
    '<%= config.bin %> <%= command.id %> --with-map --out backup.json',
  ]

  static override flags = {
    'with-map': Flags.boolean({summary: 'Include the hash map (shard hash -> shard id).'}),
    out: Flags.string({char: 'o', summary: 'Write to this file instead of stdout (replaced only once complete).', helpValue: '<file>'}),
  }

  async run(): Promise<({out: string} & ExportResult) | undefined> {
    const registry = await this.registry()
    const withMap = this.flags['with-map']
    if (!this.flags.out) {
      this.tell(await writeDocument(registry, process.stdout, {withMap}))
      return undefined // the document is the output, under --json too
    }
    const result = await this.toFile(this.flags.out, (file) => writeDocument(registry, file, {withMap}))
    this.tell(result)
    this.progress(
      `Wrote ${plural(result.shards, 'shard')}${withMap ? ` and ${plural(result.mapEntries, 'map entry', 'map entries')}` : ''} to ${this.flags.out}.`,
    )
    return {out: this.flags.out, ...result}
  }

  /**
   * Write through a temporary file beside `out`, synced and renamed into place once
   * complete: the file an export replaces is a backup of the routing, never destroyed
   * by a failed or interrupted one (the temporary file goes on every exit path).
   */
  private async toFile<T>(out: string, fill: (file: Writable) => Promise<T>): Promise<T> {
    const target = resolve(out)
    const temp = join(dirname(target), `.${basename(target)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`)
    let placed = false
    const removeTemp = () => {
      if (!placed) rmSync(temp, {force: true})
    }
    this.onCleanup(async () => removeTemp())
    // `timeout` and service managers stop a run with SIGTERM: the temporary file goes then too.
    const onTerm = () => {
      removeTemp()
      process.exit(143)
    }
    process.once('SIGTERM', onTerm)
    try {
      let mode: number | undefined
      try {
        mode = statSync(target).mode & 0o777
      } catch {
        // a new file: the usual mode
      }
      const file = createWriteStream(temp, {flags: 'wx', mode})
      file.on('error', () => undefined) // seen by finished() below, or by the write that waits on it
      const result = await fill(file)
      file.end()
      await finished(file)
      const handle = await open(temp, 'r')
      await handle.sync().finally(() => handle.close())
      await rename(temp, target)
      placed = true
      return result
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code
      if (typeof code === 'string' && /^E[A-Z]+$/.test(code) && (error as NodeJS.ErrnoException).syscall !== undefined) {
        throw new ShardctlError(`cannot write ${out}: ${code}`, {
          code: 'EWRITE',
          hint: `${out} is as it was; check the directory and the disk`,
        })
      }
      throw error
    } finally {
      process.removeListener('SIGTERM', onTerm)
    }
  }

  /** What the export found besides the document: orphaned map entries, shards that changed while it read. */
  private tell(result: ExportResult): void {
    const orphans = Object.entries(result.orphans)
    if (orphans.length > 0) {
      const entries = orphans.reduce((n, [, count]) => n + count, 0)
      this.warn(
        `${plural(entries, 'map entry points', 'map entries point')} at ${orphans.length === 1 ? 'a shard' : 'shards'} the registry does not have (${orphans
          .map(([id, count]) => `${id}: ${count.toLocaleString('en-US')}`)
          .join(', ')}): written as they are, declared as orphans; shards:import brings them back the same`,
      )
    }
    const changed = result.changedMeanwhile
    if (changed) {
      const parts = [
        changed.added.length > 0 ? `added ${changed.added.join(', ')}` : '',
        changed.removed.length > 0 ? `removed ${changed.removed.join(', ')}` : '',
        changed.changed.length > 0 ? `changed ${changed.changed.join(', ')}` : '',
      ].filter(Boolean)
      this.warn(
        `the registry changed while it was read (shards ${parts.join('; ')}): the document holds the shards as they were at the end, and the map as it was read`,
      )
    }
  }
}

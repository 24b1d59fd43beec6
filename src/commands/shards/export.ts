import {createWriteStream} from 'node:fs'
import {finished} from 'node:stream/promises'

import {Flags} from '@oclif/core'

import {RegistryCommand} from '../../base-command.js'
import {writeDocument} from '../../registry/document.js'

export default class ShardsExport extends RegistryCommand<typeof ShardsExport> {
  static override summary = 'Write the registry as a versioned JSON document.'
  static override description = `Shards, addresses and weights; with --with-map the hash map too, streamed so that millions of entries take constant memory. shards:import reads it back. Without --out the document goes to stdout (it is JSON already; with --out and --json a summary is printed).`

  static override examples = [
    '<%= config.bin %> <%= command.id %> > registry.json',
    '<%= config.bin %> <%= command.id %> --with-map --out backup.json',
  ]

  static override flags = {
    'with-map': Flags.boolean({summary: 'Include the hash map (shard hash -> shard id).'}),
    out: Flags.string({char: 'o', summary: 'Write to this file instead of stdout.', helpValue: '<file>'}),
  }

  async run(): Promise<{out: string; shards: number; mapEntries: number} | undefined> {
    const registry = await this.registry()
    if (!this.flags.out) {
      await writeDocument(registry, process.stdout, {withMap: this.flags['with-map']})
      return undefined // the document is the output, under --json too
    }
    const file = createWriteStream(this.flags.out)
    const counts = await writeDocument(registry, file, {withMap: this.flags['with-map']})
    file.end()
    await finished(file)
    this.progress(
      `Wrote ${counts.shards} shards${this.flags['with-map'] ? ` and ${counts.mapEntries} map entries` : ''} to ${this.flags.out}.`,
    )
    return {out: this.flags.out, ...counts}
  }
}

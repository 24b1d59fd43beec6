import {Args, Flags} from '@oclif/core'

import {RegistryCommand} from '../../base-command.js'
import {usageError} from '../../errors.js'
import {formatAddress} from '../../registry/address.js'
import {checkHash, inBatches, lookupHashes} from '../../registry/assign.js'
import {readLineBatches, writeChunk} from '../../ui/lines.js'
import {paint, renderTable} from '../../ui/terminal.js'

interface LookupRow {
  hash: string
  shard: string | null
  master: string | null
}

interface LookupSummary {
  total: number
  found: number
  unassigned: number
}

export default class ShardsLookup extends RegistryCommand<typeof ShardsLookup> {
  static override summary = 'Look shard hashes up: their shard id and master address.'
  static override description = `Unassigned hashes are reported as such, and the command then exits 3. --stdin reads one hash per line and streams "hash<TAB>shard<TAB>master" ("-" where unassigned; NDJSON under --json, ending with a summary line).`

  static override examples = ['<%= config.bin %> <%= command.id %> user:1001', '<%= config.bin %> <%= command.id %> --stdin < hashes.txt']

  static override args = {
    hash: Args.string({description: 'Shard hashes to look up (or --stdin).', multiple: true, ignoreStdin: true}),
  }

  static override flags = {
    stdin: Flags.boolean({summary: 'Read hashes from standard input, one per line.'}),
  }

  async run(): Promise<(LookupSummary & {results: LookupRow[]}) | {summary: LookupSummary}> {
    const given = this.args.hash ?? []
    if (this.flags.stdin && given.length > 0) throw usageError('give hashes as arguments or with --stdin, not both')
    if (!this.flags.stdin && given.length === 0)
      throw usageError('no hashes given', 'pass hashes as arguments, or --stdin to read them one per line')
    const registry = await this.registry()
    // Masters come from one snapshot; a hash pointing at an unknown shard shows no master.
    const {shards} = await registry.snapshot()
    const masters = new Map(shards.map((s) => [s.id, formatAddress(s.master)]))
    const batches = this.flags.stdin ? readLineBatches(process.stdin, undefined, checkHash) : inBatches(given.map(checkHash))

    const summary: LookupSummary = {total: 0, found: 0, unassigned: 0}
    const rows: LookupRow[] = []
    const out = this.flags.stdin
    this.ndjson = out && this.jsonEnabled()
    const line = this.ndjson ? (r: LookupRow) => JSON.stringify(r) : (r: LookupRow) => `${r.hash}\t${r.shard ?? '-'}\t${r.master ?? '-'}`
    for await (const batch of lookupHashes(registry, batches)) {
      const found = batch.map(({hash, shard}) => ({hash, shard, master: shard === null ? null : (masters.get(shard) ?? null)}))
      summary.total += found.length
      for (const r of found) if (r.shard === null) summary.unassigned++
      summary.found = summary.total - summary.unassigned
      if (out) await writeChunk(process.stdout, `${found.map(line).join('\n')}\n`)
      else rows.push(...found)
    }
    if (out)
      this.progress(
        `${summary.total.toLocaleString('en-US')} hashes: ${summary.found.toLocaleString('en-US')} found, ${summary.unassigned.toLocaleString('en-US')} unassigned.`,
      )

    if (!out && !this.jsonEnabled()) {
      this.log(
        renderTable(
          ['HASH', 'SHARD', 'MASTER'],
          rows.map((r) => [r.hash, r.shard ?? paint.warn('unassigned'), r.master ?? '-']),
        ),
      )
    }
    const result = out ? {summary} : {...summary, results: rows}
    if (summary.unassigned > 0) this.partial(result, `${summary.unassigned} of ${summary.total} hashes are not assigned to any shard`)
    return result
  }
}

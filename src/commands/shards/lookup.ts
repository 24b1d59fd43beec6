import {Args, Flags} from '@oclif/core'

import {RegistryCommand} from '../../base-command.js'
import {usageError} from '../../errors.js'
import {formatAddress} from '../../registry/address.js'
import {checkHash, inBatches, lookupHashes} from '../../registry/assign.js'
import {readLineBatches, writeChunk} from '../../ui/lines.js'
import {paint, plural, renderTable} from '../../ui/terminal.js'

interface LookupRow {
  hash: string
  shard: string | null
  master: string | null
}

interface LookupSummary {
  total: number
  /** Assigned to a shard the registry has. */
  found: number
  unassigned: number
  /** Assigned to a shard the registry no longer has (removed with --force): routed nowhere. */
  orphaned: number
}

export default class ShardsLookup extends RegistryCommand<typeof ShardsLookup> {
  static override summary = 'Look shard hashes up: their shard id and master address.'
  static override description = `Unassigned hashes, and hashes assigned to a shard the registry no longer has (removed with --force), are reported as such, and the command then exits 3. --stdin reads one hash per line and streams "hash<TAB>shard<TAB>master" ("-" where unassigned; NDJSON under --json, ending with a summary line).`

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
    // A shard listed but unreadable still exists: its hashes are found, without a master.
    const {shards, broken} = await registry.snapshot()
    const masters = new Map(shards.map((s) => [s.id, formatAddress(s.master)]))
    const known = new Set([...masters.keys(), ...broken.map((b) => b.id)])
    const batches = this.flags.stdin ? readLineBatches(process.stdin, undefined, checkHash) : inBatches(given.map(checkHash))

    const summary: LookupSummary = {total: 0, found: 0, unassigned: 0, orphaned: 0}
    const rows: LookupRow[] = []
    const out = this.flags.stdin
    this.ndjson = out && this.jsonEnabled()
    const line = this.ndjson ? (r: LookupRow) => JSON.stringify(r) : (r: LookupRow) => `${r.hash}\t${r.shard ?? '-'}\t${r.master ?? '-'}`
    for await (const batch of lookupHashes(registry, batches)) {
      const found = batch.map(({hash, shard}) => ({hash, shard, master: shard === null ? null : (masters.get(shard) ?? null)}))
      summary.total += found.length
      for (const r of found) {
        if (r.shard === null) summary.unassigned++
        else if (!known.has(r.shard)) summary.orphaned++
      }
      summary.found = summary.total - summary.unassigned - summary.orphaned
      if (out) await writeChunk(process.stdout, `${found.map(line).join('\n')}\n`)
      else rows.push(...found)
    }
    if (out)
      this.progress(
        `${plural(summary.total, 'hash')}: ${summary.found.toLocaleString('en-US')} found, ${summary.unassigned.toLocaleString('en-US')} unassigned${summary.orphaned > 0 ? `, ${summary.orphaned.toLocaleString('en-US')} on a shard the registry does not have` : ''}.`,
      )

    if (!out && !this.jsonEnabled()) {
      this.log(
        renderTable(
          ['HASH', 'SHARD', 'MASTER'],
          rows.map((r) => [
            r.hash,
            r.shard === null ? paint.warn('unassigned') : known.has(r.shard) ? r.shard : paint.bad(`${r.shard} (not in the registry)`),
            r.master ?? '-',
          ]),
        ),
      )
    }
    const result = out ? {summary} : {...summary, results: rows}
    const missing = [
      summary.unassigned > 0
        ? `${summary.unassigned.toLocaleString('en-US')} of ${plural(summary.total, 'hash')} ${summary.unassigned === 1 ? 'is' : 'are'} not assigned to any shard`
        : '',
      summary.orphaned > 0
        ? `${summary.orphaned.toLocaleString('en-US')} of ${plural(summary.total, 'hash')} ${summary.orphaned === 1 ? 'points' : 'point'} at a shard the registry does not have (removed with --force?): routed nowhere`
        : '',
    ].filter(Boolean)
    if (missing.length > 0) this.partial(result, missing.join('; '))
    return result
  }
}

import {Args, Flags} from '@oclif/core'

import {RegistryCommand} from '../../base-command.js'
import {dryRunFlag, shardIdArg, yesFlag} from '../../flags.js'
import {usageError} from '../../errors.js'
import {
  type AssignResult,
  type Batches,
  WeightedPicker,
  assignHashes,
  checkHash,
  inBatches,
  lookupHashes,
  noWeightedShard,
} from '../../registry/assign.js'
import {BadLine, readLineBatches, writeChunk} from '../../ui/lines.js'
import {formatCount, paint, plural, renderTable} from '../../ui/terminal.js'

interface AssignSummary {
  total: number
  assigned: number
  existing: number
  /** With --shard: hashes that stay on another shard (up to 10 named in `elsewhereSample`). */
  elsewhere?: number
  elsewhereSample?: {hash: string; shard: string}[]
  dryRun: boolean
}

export default class ShardsAssign extends RegistryCommand<typeof ShardsAssign> {
  static override summary = 'Assign shard hashes to shards: weighted at random, or to a named shard.'
  static override description = `A hash with no shard yet gets one drawn at random with probability weight / sum of weights (weight 0 is never drawn), stored with an atomic set-if-absent: concurrent assigners always end with one answer. A hash that already has a shard keeps it and is reported as existing, unless --force with --shard moves it (after a yes: its keys stay on the shard it leaves, which the output, --json's "from" and the history name). A weight changed while it runs counts at once: a shard drained meanwhile gets no new hash from the next batch on.

--stdin reads one hash per line and streams, in pipelined batches with constant memory: fit for millions of lines. Each result is printed as "hash<TAB>shard" (NDJSON under --json, ending with a summary line).`

  static override examples = [
    '<%= config.bin %> <%= command.id %> user:1001 user:1002',
    '<%= config.bin %> <%= command.id %> user:1001 --shard s007',
    'cut -f1 users.tsv | <%= config.bin %> <%= command.id %> --stdin > assignments.tsv',
  ]

  static override args = {
    hash: Args.string({description: 'Shard hashes to assign (or --stdin).', multiple: true, ignoreStdin: true}),
  }

  static override flags = {
    shard: Flags.string({summary: 'Assign to this shard instead of drawing one.', parse: shardIdArg}),
    force: Flags.boolean({
      summary: 'With --shard: move hashes that already have a shard (asks first; --yes answers). Their keys stay where they are.',
      dependsOn: ['shard'],
    }),
    yes: yesFlag,
    stdin: Flags.boolean({summary: 'Read hashes from standard input, one per line.'}),
    quiet: Flags.boolean({char: 'q', summary: 'Print only the summary, not a line per hash.'}),
    'dry-run': dryRunFlag,
  }

  async run(): Promise<(AssignSummary & {results: AssignResult[]}) | {summary: AssignSummary}> {
    const {flags} = this
    const batches = this.batches(flags.stdin)
    const registry = await this.registry()
    // A hash that moves leaves its keys on the shard it was on: an overwrite of the routing, never without a yes.
    if (flags.force && !flags['dry-run']) {
      const question = `move the hashes given that already have a shard to ${flags.shard}? Their keys stay on the shard they are on now`
      if (!(await this.confirm(question))) {
        this.progress('Nothing changed.')
        return {summary: {total: 0, assigned: 0, existing: 0, dryRun: false}}
      }
    }
    const results = flags['dry-run'] ? this.dryRun(batches) : assignHashes(registry, batches, {shard: flags.shard, force: flags.force})
    const summary: AssignSummary = {total: 0, assigned: 0, existing: 0, dryRun: flags['dry-run']}
    const count = (batch: AssignResult[]) => {
      summary.total += batch.length
      for (const r of batch) {
        if (r.assigned) summary.assigned++
        else if (flags.shard !== undefined && r.shard !== flags.shard) {
          summary.elsewhere = (summary.elsewhere ?? 0) + 1
          if ((summary.elsewhereSample ??= []).length < 10) summary.elsewhereSample.push({hash: r.hash, shard: r.shard})
        }
      }
      summary.existing = summary.total - summary.assigned
    }

    if (!flags.stdin) {
      const all: AssignResult[] = []
      for await (const batch of results) {
        count(batch)
        all.push(...batch)
      }
      if (!this.jsonEnabled() && !flags.quiet) {
        const status = (r: AssignResult) =>
          r.from !== undefined
            ? paint.warn(`moved from ${r.from}`)
            : r.assigned
              ? paint.ok(flags['dry-run'] ? 'would assign' : 'assigned')
              : paint.dim('existing')
        this.log(
          renderTable(
            ['HASH', 'SHARD', 'STATUS'],
            all.map((r) => [r.hash, r.shard, status(r)]),
          ),
        )
      }
      this.progress(this.describe(summary))
      return this.ignoredShard({...summary, results: all}, summary)
    }

    // Streaming: one string written per batch, so output keeps pace with Redis.
    this.ndjson = this.jsonEnabled()
    const line = this.ndjson ? (r: AssignResult) => JSON.stringify(r) : (r: AssignResult) => `${r.hash}\t${r.shard}`
    try {
      for await (const batch of results) {
        count(batch)
        if (!flags.quiet) await writeChunk(process.stdout, `${batch.map(line).join('\n')}\n`)
      }
    } catch (error) {
      // A bad line stops the input; what came before it was assigned and printed. That
      // is a change, reported as partial (exit 3); with nothing new stored it is the usage error it is.
      if (!(error instanceof BadLine) || summary.assigned === 0) throw error
      this.progress(this.describe(summary))
      const before = `${plural(summary.total, 'hash')} before it ${summary.total === 1 ? 'was' : 'were'}`
      return this.partial(
        {summary: {...summary, stoppedAt: {line: error.line, error: error.message}}},
        `${error.message}; the ${before} assigned and printed above (${formatCount(summary.assigned)} new), nothing from that line on`,
      )
    }
    this.progress(this.describe(summary))
    return this.ignoredShard({summary}, summary)
  }

  /**
   * --shard asked for a shard some hashes are not on: they keep their assignment (it
   * never changes silently), and the run says so with exit 3 rather than "existing".
   */
  private ignoredShard<R extends object>(result: R, summary: AssignSummary): R {
    if (!summary.elsewhere) return result
    const named = summary.elsewhereSample!.map((e) => `${e.hash} (${e.shard})`).join(', ')
    const more =
      summary.elsewhere > summary.elsewhereSample!.length ? ` and ${summary.elsewhere - summary.elsewhereSample!.length} more` : ''
    const which = plural(summary.elsewhere, 'hash is', 'hashes are')
    return this.partial(
      result,
      `${which} already on another shard and stayed there, not on ${this.flags.shard}: ${named}${more}; move them with --force`,
    )
  }

  private batches(stdin: boolean): Batches {
    const given = this.args.hash ?? []
    if (stdin && given.length > 0) throw usageError('give hashes as arguments or with --stdin, not both')
    if (stdin) return readLineBatches(process.stdin, undefined, checkHash)
    if (given.length === 0) throw usageError('no hashes given', 'pass hashes as arguments, or --stdin to read them one per line')
    return inBatches(given.map(checkHash))
  }

  /** What would happen: existing assignments looked up, new ones drawn, nothing stored. */
  private async *dryRun(batches: Batches): AsyncGenerator<AssignResult[]> {
    const registry = await this.registry()
    const shard = this.flags.shard
    if (shard !== undefined) await registry.shard(shard)
    const picker = shard === undefined ? new WeightedPicker(await registry.weights()) : undefined
    if (picker?.empty) throw noWeightedShard()
    const move = this.flags.force && shard !== undefined
    // What this run would have stored: a hash given twice is assigned once, as the real run does
    // (only the hashes it would store are kept).
    const stored = new Map<string, string>()
    for await (const batch of lookupHashes(registry, batches)) {
      yield batch.map(({hash, shard: existing}): AssignResult => {
        const current = stored.get(hash) ?? existing
        if (current !== null && (!move || current === shard)) return {hash, shard: current, assigned: false}
        const id = shard ?? picker!.pick()
        stored.set(hash, id)
        return {hash, shard: id, assigned: true}
      })
    }
  }

  private describe(s: AssignSummary): string {
    const verb = s.dryRun ? 'would assign' : 'assigned'
    return `${plural(s.total, 'hash')}: ${s.assigned.toLocaleString('en-US')} ${verb}, ${s.existing.toLocaleString('en-US')} already assigned${s.dryRun ? ' (dry run)' : ''}.`
  }
}

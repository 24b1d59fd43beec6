import {Args, Flags} from '@oclif/core'

import {RegistryCommand} from '../../base-command.js'
import {usageError} from '../../errors.js'
import {close, connect} from '../../fleet/connect.js'
import {databaseCount} from '../../fleet/instance.js'
import {addressFlag, countFlag, parseDuration, shardIdArg} from '../../flags.js'
import {type ConnectTarget, formatAddress, instanceKey, sameInstance} from '../../registry/address.js'
import {formatDuration} from '../../ui/progress.js'
import {formatCount, paint, plural, renderTable} from '../../ui/terminal.js'
import type {DifferenceKind} from '../../verify/compare.js'
import {DIFFERENCE_KINDS, type VerifyProgress, type VerifyReport, verifyDatabases} from '../../verify/verify.js'

export type VerifyResult = VerifyReport & {shard: string}

export default class ShardsVerify extends RegistryCommand<typeof ShardsVerify> {
  static override summary = "Compare a shard's database with another copy while writes go on; exit 3 when they differ."
  static override description = `The shard's database is where the registry routes it (its master). The first round compares every key of it with the copy, and looks for keys only the copy has; each later round, after --interval, compares again only the keys that differed: a write in flight makes a key differ for a moment, a real difference stays. The comparison stops as soon as nothing differs, or after --rounds.

A key differs when it is missing on one side, has another type, another value, or an absolute expiry more than --ttl-tolerance apart. Values are compared by content, not by encoding (a listpack and a hashtable hash with the same fields are equal); keys with more than 512 elements (or 256 kB) are read in slices, never in one reply. --rate bounds the keys compared per second (a large key counts once per 100 elements), so that a verify in business hours does not weigh on either instance. Nothing is written to either side.

Exit 0 when the copies are equal, 3 when something still differs at the end (counted by kind, with a sample of keys).`

  static override examples = [
    '<%= config.bin %> <%= command.id %> s042 --against 10.0.0.9:6379/7',
    '<%= config.bin %> <%= command.id %> s042 --against 10.0.0.9:6379/7 --rate 5000 --rounds 5',
    '<%= config.bin %> <%= command.id %> s042 --against 10.0.0.9:6379/7 --json | jq .differences.value',
  ]

  static override args = {
    shard: Args.string({description: 'The shard whose database is compared.', required: true, parse: shardIdArg}),
  }

  static override flags = {
    against: addressFlag({
      summary: 'The other copy: host:port/db, or a redis:// URL (its credentials are used for it alone).',
      required: true,
    }),
    rounds: countFlag('number of rounds', 1, 100)({summary: 'Rounds in all, the first full one included.', default: 3}),
    interval: Flags.string({summary: 'Pause before each re-check round (ms, or 500ms, 2s).', default: '1s'}),
    rate: countFlag(
      'rate',
      1,
      100_000_000,
    )({summary: 'At most this many keys compared per second (default: no limit).', helpValue: '<keys/s>'}),
    'ttl-tolerance': Flags.string({
      summary: 'Expiry times this far apart still count as equal (ms, or 500ms, 2s; 0: only equal ones).',
      default: '1s',
    }),
    sample: countFlag('sample size', 0, 1000)({summary: 'Keys named per kind of difference.', default: 10}),
  }

  async run(): Promise<VerifyResult> {
    const {flags} = this
    const intervalMs = parseDuration(flags.interval, '--interval')
    const ttlToleranceMs = parseDuration(flags['ttl-tolerance'], '--ttl-tolerance', {zero: true})
    const registry = await this.registry()
    const pool = await this.pool()
    const shard = await registry.shard(this.args.shard)
    const against = flags.against
    if (sameInstance(shard.master, against) && shard.master.db === against.db) {
      throw usageError(`--against ${formatAddress(against)} is shard ${shard.id}'s own database`, 'name the other copy')
    }
    // Dedicated connections: the verify keeps them busy, and the other copy may have credentials of its own.
    const a = await pool.dedicated(shard.master)
    const b = hasOwnCredentials(against) ? await this.connectOwn(against) : await pool.dedicated(against)
    const databases = await databaseCount(b, against)
    if (against.db >= databases) {
      throw usageError(
        `--against ${instanceKey(against)} has ${plural(databases, 'database')}: there is no db ${against.db}`,
        'name a database it has',
      )
    }

    this.progress(`Comparing shard ${shard.id} (${formatAddress(shard.master)}) with ${formatAddress(against)}...`)
    const report = await verifyDatabases(
      {client: a, db: shard.master.db},
      {client: b, db: against.db},
      {
        rounds: flags.rounds,
        intervalMs,
        ratePerSecond: flags.rate,
        ttlToleranceMs,
        sampleSize: flags.sample,
        onProgress: this.progressLine(),
      },
    )
    const result: VerifyResult = {shard: shard.id, ...report}
    if (!this.jsonEnabled()) this.render(result)
    if (!report.equal) {
      return this.partial(
        result,
        `${plural(report.differing, 'key')} still ${report.differing === 1 ? 'differs' : 'differ'} after ${plural(report.rounds.length, 'round')}`,
      )
    }
    return result
  }

  private async connectOwn(target: ConnectTarget) {
    const {options} = await this.resolveConnections()
    const client = connect({...target, db: 0}, options)
    this.onCleanup(async () => close(await client.catch(() => undefined)))
    return client
  }

  /** One line per round as it ends; during a long first pass, one every few seconds. */
  private progressLine(): (p: VerifyProgress) => void {
    let last = performance.now()
    return (p) => {
      const now = performance.now()
      if (p.phase === 'wait') {
        this.progress(paint.dim(`  round ${p.round - 1} done: ${plural(p.differing, 'key')} differ; looking at them again`))
        return
      }
      if (now - last < 5000) return
      last = now
      const what = p.phase === 'only-in-b' ? 'keys of the copy looked up' : 'keys compared'
      this.progress(
        paint.dim(`  round ${p.round}: ${formatCount(p.done)} of ${formatCount(p.total)} ${what}, ${formatCount(p.differing)} differ`),
      )
    }
  }

  private render(r: VerifyResult): void {
    const rounds = r.rounds
      .map((x) =>
        x.round === 1
          ? `${plural(x.checked, 'key')} compared, ${formatCount(x.differing)} differed`
          : `${formatCount(x.checked)} re-checked, ${formatCount(x.differing)} still ${x.differing === 1 ? 'differs' : 'differ'}`,
      )
      .join('; ')
    const summary = `${formatCount(r.keys.a)} keys on ${r.a}, ${formatCount(r.keys.b)} on ${r.b}; ${plural(r.rounds.length, 'round')} (${rounds}) in ${formatDuration(r.durationMs)}`
    if (r.equal) {
      this.log(`${paint.ok('Equal')}: ${summary}`)
      return
    }
    const label: Record<DifferenceKind, string> = {
      missingInA: `missing on ${r.a}`,
      missingInB: `missing on ${r.b}`,
      type: 'type differs',
      value: 'value differs',
      ttl: `expiry differs (> ${formatDuration(r.ttlToleranceMs)})`,
    }
    const rows: string[][] = []
    for (const kind of DIFFERENCE_KINDS) {
      const {count, keys} = r.differences[kind]
      if (count === 0) continue
      keys.forEach((k, i) => rows.push([i === 0 ? label[kind] : '', i === 0 ? formatCount(count) : '', k.key, paint.dim(k.detail)]))
      if (keys.length === 0) rows.push([label[kind], formatCount(count), '', ''])
    }
    this.log(renderTable(['DIFFERENCE', 'KEYS', 'SAMPLE', 'DETAIL'], rows))
    if (r.unrechecked > 0)
      this.log(paint.warn(`${plural(r.unrechecked, 'key')} past the tracking limit were found once and not re-checked.`))
    this.log(`${paint.bad('Different')}: ${summary}`)
  }
}

function hasOwnCredentials(target: ConnectTarget): boolean {
  return target.username !== undefined || target.password !== undefined || target.tls !== undefined
}

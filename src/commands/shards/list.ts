import {Flags} from '@oclif/core'

import {RegistryCommand} from '../../base-command.js'
import {usageError} from '../../errors.js'
import {type FleetOverview, type InstanceOverview, type ShardOverview, fleetOverview} from '../../fleet/overview.js'
import {canonicalInstance, describeTarget, parseAddress, parseInstance} from '../../registry/address.js'
import {bar, formatBytes, formatCount, formatPercent, paint, plural, renderTable} from '../../ui/terminal.js'

const COLUMNS = ['id', 'weight', 'share', 'hashes', 'master', 'keys', 'replicas', 'status'] as const
type Column = (typeof COLUMNS)[number]
const SORTS = ['id', 'weight', 'share', 'keys', 'hashes', 'lag', 'master'] as const

export default class ShardsList extends RegistryCommand<typeof ShardsList> {
  static override summary = 'List every shard: weight, share of new assignments, master, replicas, live health.'
  static override description = `Reads the registry in one round trip and probes every instance once, in parallel (one connection per instance, not per shard): reachable, actual role, keys in the shard's database, replication link and lag in bytes.

--no-probe shows the registry alone. --counts adds the hashes assigned to each shard, streamed from the map with HSCAN.

At hundreds of shards: --filter narrows (instance=HOST:PORT, a master or replica of the shard; health=ok or health=problem; id=PREFIX*), --sort orders, --columns picks, and the replicas column is a short count unless --wide. --instances shows one line per instance instead — shards, keys, used memory against maxmemory, replicas and their lag, with a bar of keys (or --chart memory) — the view to decide what to split; --filter keeps the instances of the shards it keeps, --sort orders them by keys, lag, or address (id, master).

--exit-status makes a script's job easy: exit 3 when any shard listed has a problem, or cannot be read from the registry.`

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    '<%= config.bin %> <%= command.id %> --instances',
    '<%= config.bin %> <%= command.id %> --filter instance=10.0.0.5:6379 --sort keys',
    '<%= config.bin %> <%= command.id %> --filter health=problem --exit-status',
    '<%= config.bin %> <%= command.id %> --columns id,master,keys --counts',
    '<%= config.bin %> <%= command.id %> --no-probe --json | jq ".shards[].id"',
  ]

  static override flags = {
    probe: Flags.boolean({summary: 'Probe every instance (--no-probe: registry only).', default: true, allowNo: true}),
    counts: Flags.boolean({summary: 'Count the hashes assigned to each shard (scans the whole map).', default: false}),
    filter: Flags.string({
      summary: 'Only shards matching: instance=HOST:PORT, health=ok|problem, id=PREFIX* (repeat: all must match).',
      multiple: true,
      helpValue: '<expr>',
    }),
    sort: Flags.string({summary: 'Order of the shards.', options: [...SORTS], default: 'id'}),
    columns: Flags.string({summary: `Columns to show, comma-separated: ${COLUMNS.join(',')}.`, helpValue: '<list>'}),
    wide: Flags.boolean({summary: 'Every replica with its address and lag (default: a short count).', default: false}),
    instances: Flags.boolean({summary: 'One line per instance: shards, keys, memory, replicas, lag, and a bar chart.', default: false}),
    chart: Flags.string({summary: 'With --instances: what the bars show.', options: ['keys', 'memory'], default: 'keys'}),
    'exit-status': Flags.boolean({summary: 'Exit 3 when any shard listed has a problem or is unreadable.', default: false}),
  }

  async run(): Promise<FleetOverview & {registry: string; prefix: string}> {
    const {flags} = this
    const columns = this.columnsWanted()
    const filters = (flags.filter ?? []).map(parseFilter)
    if (this.given('chart') && !flags.instances)
      throw usageError('--chart draws the bars of --instances', 'add --instances, or leave --chart out')
    if (flags.instances && this.given('sort') && !(INSTANCE_SORTS as readonly string[]).includes(flags.sort))
      throw usageError(`--sort ${flags.sort} orders shards, not instances`, `with --instances, sort by ${INSTANCE_SORTS.join(', ')}`)
    const registry = await this.registry()
    // Sorting by hashes, or showing them, needs them counted.
    const counts = flags.counts || flags.sort === 'hashes' || (flags.columns !== undefined && columns.includes('hashes'))
    const overview = await fleetOverview(registry, await this.pool(), {
      probe: flags.probe || flags.instances,
      counts,
      instances: flags.instances,
    })
    overview.shards = sortShards(
      overview.shards.filter((s) => filters.every((f) => f(s))),
      flags.sort as (typeof SORTS)[number],
    )
    if (overview.instanceRows) {
      // The instances of the shards the filter kept, in the order asked for.
      const kept = filters.length === 0 ? undefined : instancesOf(overview.shards)
      const rows = overview.instanceRows.filter((row) => kept?.has(canonicalInstance(parseInstance(row.instance))) ?? true)
      overview.instanceRows = this.given('sort') ? sortInstances(rows, flags.sort as InstanceSort) : rows
    }
    if (!this.jsonEnabled()) {
      if (flags.instances) this.renderInstances(overview)
      else this.render(overview, columns)
    }
    const result = {registry: describeTarget(flags.registry), prefix: flags.prefix, ...overview}
    // A shard the registry cannot describe (overview.broken) is always listed, as a warning: it gates too.
    const unhealthy = [...overview.shards.filter((s) => s.problems.length > 0), ...overview.broken]
    if (flags['exit-status'] && unhealthy.length > 0) {
      return this.partial(
        result,
        `${plural(unhealthy.length, 'shard')} with problems: ${unhealthy
          .slice(0, 5)
          .map((s) => s.id)
          .join(', ')}${unhealthy.length > 5 ? ', ...' : ''}`,
      )
    }
    return result
  }

  private columnsWanted(): Column[] {
    if (this.flags.columns === undefined) return [...COLUMNS]
    const wanted = this.flags.columns.split(',').map((c) => c.trim().toLowerCase())
    const unknown = wanted.filter((c) => !(COLUMNS as readonly string[]).includes(c))
    if (unknown.length > 0) throw usageError(`unknown column "${unknown[0]}"`, `choose from ${COLUMNS.join(', ')}`)
    // Each column once, in the order first asked for.
    return [...new Set(wanted)] as Column[]
  }

  private render(overview: FleetOverview, wanted: Column[]): void {
    if (overview.shards.length === 0 && overview.broken.length === 0) {
      const filtered = (this.flags.filter ?? []).length > 0
      this.progress(
        filtered
          ? 'No shard matches the filter.'
          : `No shards under "${this.flags.prefix}" in ${describeTarget(this.flags.registry)}. Add some with shards:add or shards:init.`,
      )
      return
    }
    const columns = wanted.filter((c) =>
      c === 'hashes' ? overview.shards[0]?.hashes !== undefined : c === 'keys' || c === 'status' ? overview.probed : true,
    )
    const cell: Record<Column, (s: ShardOverview) => string> = {
      id: (s) => s.id,
      weight: (s) => String(s.weight),
      share: (s) => formatPercent(s.share),
      hashes: (s) => formatCount(s.hashes),
      master: (s) => s.master.address,
      keys: (s) => (s.master.reachable ? formatCount(s.master.keys) : '-'),
      replicas: (s) => this.replicas(s, overview.probed),
      status: (s) => (s.problems.length === 0 ? paint.ok('ok') : paint.bad(s.problems.join('; '))),
    }
    this.log(
      renderTable(
        columns.map((c) => c.toUpperCase()),
        overview.shards.map((s) => columns.map((c) => cell[c](s))),
      ),
    )

    const problems = overview.shards.filter((s) => s.problems.length > 0).length
    const summary = [
      `${plural(overview.shards.length, 'shard')} on ${plural(overview.instances, 'instance')}`,
      `total weight ${Number.isFinite(overview.totalWeight) ? overview.totalWeight : 'beyond 1.8e308'}`,
    ]
    if (overview.probed) summary.push(problems === 0 ? paint.ok('all healthy') : paint.bad(`${problems} with problems`))
    if (overview.orphanHashes) summary.push(paint.warn(`${plural(overview.orphanHashes, 'hash points', 'hashes point')} at unknown shards`))
    this.progress(summary.join(', '))
    for (const b of overview.broken) this.warn(`shard ${b.id} is not readable: ${b.problems.join('; ')}`)
  }

  /** Each replica with its lag (--wide), or a short count that keeps the table within 80 columns. */
  private replicas(s: ShardOverview, probed: boolean): string {
    if (s.replicas.length === 0) return paint.dim('none')
    if (this.flags.wide || !probed) {
      return s.replicas
        .map((r) => {
          const label = r.kind === 'persist' ? `${r.address} (persist)` : r.address
          if (!probed) return label
          if (!r.reachable) return `${label} ${paint.bad('down')}`
          if (!r.followsMaster || !r.linkUp) return `${label} ${paint.bad(r.followsMaster ? 'link down' : 'not following')}`
          return `${label} ${paint.dim(`lag ${formatCount(r.lagBytes)}B`)}`
        })
        .join('\n')
    }
    const ok = s.replicas.filter((r) => r.reachable && r.followsMaster && r.linkUp)
    const lag = Math.max(0, ...ok.map((r) => r.lagBytes ?? 0))
    const text = `${ok.length}/${s.replicas.length} ok${ok.length > 0 ? `, lag ${formatBytes(lag)}` : ''}`
    return ok.length === s.replicas.length ? text : paint.bad(text)
  }

  private renderInstances(overview: FleetOverview): void {
    const rows = overview.instanceRows ?? []
    if (rows.length === 0) {
      this.progress(`No shards under "${this.flags.prefix}" in ${describeTarget(this.flags.registry)}.`)
      return
    }
    const byMemory = this.flags.chart === 'memory'
    const measure = (r: InstanceOverview) => (byMemory ? r.usedMemory : r.keys) ?? 0
    const most = Math.max(1, ...rows.map(measure))
    const memory = (r: InstanceOverview) =>
      r.usedMemory === undefined ? '-' : `${formatBytes(r.usedMemory)}${r.maxMemory ? ` of ${formatBytes(r.maxMemory)}` : ''}`
    this.log(
      renderTable(
        ['INSTANCE', 'ROLE', 'SHARDS', 'KEYS', 'MEMORY', 'REPLICAS', 'LAG', byMemory ? 'MEMORY' : 'KEYS'],
        rows.map((r) => [
          r.instance,
          r.reachable ? (r.role ?? '?') : paint.bad('down'),
          String(r.shards),
          formatCount(r.keys),
          r.maxMemory && r.usedMemory !== undefined && r.usedMemory > 0.9 * r.maxMemory ? paint.bad(memory(r)) : memory(r),
          r.replicas === undefined ? '-' : String(r.replicas),
          r.maxLagBytes === undefined ? '-' : formatBytes(r.maxLagBytes),
          bar(measure(r) / most, 20),
        ]),
        ['left', 'left', 'right', 'right', 'right', 'right', 'right', 'left'],
      ),
    )
    this.progress(`${plural(rows.length, 'instance')}, ${plural(overview.shards.length, 'shard')}`)
  }
}

/** What --instances rows can be sorted by: id and master are the instance's address. */
const INSTANCE_SORTS = ['id', 'master', 'keys', 'lag'] as const
type InstanceSort = (typeof INSTANCE_SORTS)[number]

/** Every instance a shard lives on (master, replicas), in canonical spelling. */
function instancesOf(shards: ShardOverview[]): Set<string> {
  return new Set(shards.flatMap((s) => [s.master, ...s.replicas].map((n) => canonicalInstance(parseAddress(n.address)))))
}

function sortInstances(rows: InstanceOverview[], by: InstanceSort): InstanceOverview[] {
  const numeric = new Intl.Collator('en', {numeric: true})
  const key: Record<InstanceSort, (r: InstanceOverview) => number> = {
    id: () => 0,
    master: () => 0,
    keys: (r) => -(r.keys ?? -1),
    lag: (r) => -(r.maxLagBytes ?? -1),
  }
  return [...rows].sort((a, b) => key[by](a) - key[by](b) || numeric.compare(a.instance, b.instance))
}

/** A --filter expression as a test on a shard. */
function parseFilter(expression: string): (s: ShardOverview) => boolean {
  const match = /^(instance|health|id)=(.+)$/.exec(expression.trim())
  if (!match) throw usageError(`invalid filter "${expression}"`, 'use instance=HOST:PORT, health=ok|problem or id=PREFIX*')
  const [, key, value] = match
  if (key === 'instance') {
    // Compared by what the instance is, however spelled (LOCALHOST is 127.0.0.1).
    const wanted = canonicalInstance(parseInstance(value))
    const on = (address: string) => canonicalInstance(parseAddress(address)) === wanted
    return (s) => on(s.master.address) || s.replicas.some((r) => on(r.address))
  }
  if (key === 'health') {
    if (value !== 'ok' && value !== 'problem') throw usageError(`invalid filter "${expression}"`, 'health=ok or health=problem')
    return (s) => (s.problems.length === 0) === (value === 'ok')
  }
  const prefix = value.endsWith('*') ? value.slice(0, -1) : undefined
  return (s) => (prefix === undefined ? s.id === value : s.id.startsWith(prefix))
}

function sortShards(shards: ShardOverview[], by: (typeof SORTS)[number]): ShardOverview[] {
  const lag = (s: ShardOverview) => Math.max(0, ...s.replicas.map((r) => r.lagBytes ?? 0))
  const key: Record<(typeof SORTS)[number], (s: ShardOverview) => number | string> = {
    id: () => 0,
    weight: (s) => -s.weight,
    share: (s) => -s.share,
    keys: (s) => -(s.master.keys ?? -1),
    hashes: (s) => -(s.hashes ?? -1),
    lag: (s) => -lag(s),
    master: (s) => s.master.address,
  }
  // Stable: shards with the same key stay in id order. Addresses compare their numbers
  // as numbers: 10.0.0.9 before 10.0.0.10, db 2 before db 10.
  const numeric = new Intl.Collator('en', {numeric: true})
  return [...shards].sort((a, b) => {
    const [x, y] = [key[by](a), key[by](b)]
    if (typeof x === 'string' && typeof y === 'string') return numeric.compare(x, y)
    return x < y ? -1 : x > y ? 1 : 0
  })
}

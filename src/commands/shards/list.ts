import {Flags} from '@oclif/core'

import {RegistryCommand} from '../../base-command.js'
import {type FleetOverview, type ShardOverview, fleetOverview} from '../../fleet/overview.js'
import {formatAddress} from '../../registry/address.js'
import {formatCount, formatPercent, paint, renderTable} from '../../ui/terminal.js'

export default class ShardsList extends RegistryCommand<typeof ShardsList> {
  static override summary = 'List every shard: weight, share of new assignments, master, replicas, live health.'
  static override description = `Reads the registry in one round trip and probes every instance once, in parallel (one connection per instance, not per shard): reachable, actual role, keys in the shard's database, replication link and lag in bytes.

--no-probe shows the registry alone. --counts adds the hashes assigned to each shard, streamed from the map with HSCAN.`

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    '<%= config.bin %> <%= command.id %> --counts',
    '<%= config.bin %> <%= command.id %> --no-probe --json | jq ".shards[].id"',
  ]

  static override flags = {
    probe: Flags.boolean({summary: 'Probe every instance (--no-probe: registry only).', default: true, allowNo: true}),
    counts: Flags.boolean({summary: 'Count the hashes assigned to each shard (scans the whole map).', default: false}),
  }

  async run(): Promise<FleetOverview & {registry: string; prefix: string}> {
    const registry = await this.registry()
    const overview = await fleetOverview(registry, await this.pool(), {probe: this.flags.probe, counts: this.flags.counts})
    if (!this.jsonEnabled()) this.render(overview)
    return {registry: formatAddress(this.flags.registry), prefix: this.flags.prefix, ...overview}
  }

  private render(overview: FleetOverview): void {
    if (overview.shards.length === 0 && overview.broken.length === 0) {
      this.progress(`No shards under "${this.flags.prefix}" in ${formatAddress(this.flags.registry)}. Add some with shards:add or shards:init.`)
      return
    }
    const head = ['ID', 'WEIGHT', 'SHARE', ...(overview.shards[0]?.hashes === undefined ? [] : ['HASHES']), 'MASTER']
    if (overview.probed) head.push('KEYS')
    head.push('REPLICAS', ...(overview.probed ? ['STATUS'] : []))
    const rows = overview.shards.map((s) => this.row(s, overview.probed))
    this.log(renderTable(head, rows))

    const problems = overview.shards.filter((s) => s.problems.length > 0).length
    const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`
    const summary = [`${plural(overview.shards.length, 'shard')} on ${plural(overview.instances, 'instance')}`, `total weight ${overview.totalWeight}`]
    if (overview.probed) summary.push(problems === 0 ? paint.ok('all healthy') : paint.bad(`${problems} with problems`))
    if (overview.orphanHashes) summary.push(paint.warn(`${formatCount(overview.orphanHashes)} hashes point at unknown shards`))
    this.progress(summary.join(', '))
    for (const b of overview.broken) this.warn(`shard ${b.id} is not readable: ${b.problems.join('; ')}`)
  }

  private row(s: ShardOverview, probed: boolean): string[] {
    const replicas = s.replicas
      .map((r) => {
        const label = r.kind === 'persist' ? `${r.address} (persist)` : r.address
        if (!probed) return label
        if (!r.reachable) return `${label} ${paint.bad('down')}`
        if (!r.followsMaster || !r.linkUp) return `${label} ${paint.bad(r.followsMaster ? 'link down' : 'not following')}`
        return `${label} ${paint.dim(`lag ${formatCount(r.lagBytes)}B`)}`
      })
      .join('\n')
    const row = [s.id, String(s.weight), formatPercent(s.share)]
    if (s.hashes !== undefined) row.push(formatCount(s.hashes))
    row.push(s.master.address)
    if (probed) row.push(s.master.reachable ? formatCount(s.master.keys) : '-')
    row.push(replicas || paint.dim('none'))
    if (probed) row.push(s.problems.length === 0 ? paint.ok('ok') : paint.bad(s.problems.join('; ')))
    return row
  }
}

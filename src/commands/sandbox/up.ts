import {Flags} from '@oclif/core'

import {ShardctlCommand} from '../../base-command.js'
import {countFlag, dryRunFlag, prefixFlag} from '../../flags.js'
import {defaultSandboxDir, planSandbox, sandboxUp} from '../../sandbox/fleet.js'
import {paint, plural, renderTable} from '../../ui/terminal.js'

export const sandboxDirFlag = Flags.string({
  summary: 'Where the sandbox keeps its data and its record of processes.',
  env: 'SHARDCTL_SANDBOX_DIR',
  defaultHelp: async () => '~/.shardctl/sandbox',
})

export default class SandboxUp extends ShardctlCommand<typeof SandboxUp> {
  static override summary = 'Start a local fleet of real redis-server processes with shards registered.'
  static override description = `Starts a registry, N instances each with R replicas, and registers S shards spread over the instances' databases. With --sentinels, Redis Sentinels start beside them (ports after the instances') and the fleet is registered with them (down after 5 s), so that killing a master shows the whole story with sentinel:follow running. The processes outlive the command and are recorded in the sandbox directory, so that sandbox:down stops exactly them. Needs redis-server on PATH (Debian: apt-get install redis-server).`

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    '<%= config.bin %> <%= command.id %> --instances 3 --replicas 2 --shards 60 --port 7100',
    '<%= config.bin %> <%= command.id %> --sentinels 3',
    'export SHARDCTL_REGISTRY=$(<%= config.bin %> <%= command.id %> --json | jq -r .registry)',
  ]

  static override baseFlags = {...ShardctlCommand.baseFlags, prefix: prefixFlag()}

  static override flags = {
    instances: countFlag('instances', 1, 64)({summary: 'Shard instances (masters).', default: 2}),
    replicas: countFlag('replicas', 0, 8)({summary: 'Replicas per instance.', default: 1}),
    shards: countFlag('shards', 0, 100_000)({summary: 'Shards, spread over the instances.', default: 8}),
    sentinels: countFlag(
      'sentinels',
      0,
      9,
    )({summary: 'Redis Sentinels to start beside the fleet, which is registered with them.', default: 0}),
    port: countFlag('port', 1024, 65_000)({summary: 'First port: the registry; instances and replicas follow.', default: 7000}),
    dir: sandboxDirFlag,
    'dry-run': dryRunFlag,
  }

  async run() {
    const {flags} = this
    const dir = flags.dir ?? defaultSandboxDir()
    if (flags['dry-run']) {
      // Refused as the real run would refuse it (a sandbox running there, a busy port), with its exit code.
      const {plan, nodes} = await planSandbox({
        dir,
        basePort: flags.port,
        instances: flags.instances,
        replicas: flags.replicas,
        sentinels: flags.sentinels,
      })
      this.log(
        renderTable(
          ['ROLE', 'PORT', 'REPLICA'],
          nodes.map((n) => [n.role, String(n.port), n.replicaOf === undefined ? '' : `of ${n.replicaOf}`]),
        ),
      )
      this.progress(
        `Would start ${plural(nodes.length, 'redis-server process')} with ${plural(flags.shards, 'shard')}; data in ${dir} (dry run).`,
      )
      return {registry: `redis://127.0.0.1:${plan.registry}/0`, prefix: flags.prefix, dir, nodes, dryRun: true}
    }
    const state = await sandboxUp({
      dir,
      basePort: flags.port,
      instances: flags.instances,
      replicas: flags.replicas,
      shards: flags.shards,
      sentinels: flags.sentinels,
      prefix: flags.prefix,
      onProgress: (m) => this.progress(m),
    })
    const masters = state.nodes.filter((n) => n.role === 'master').length
    const replicas = state.nodes.filter((n) => n.role === 'replica').length
    const sentinels = state.nodes.filter((n) => n.role === 'sentinel').length
    this.progress(
      `Sandbox up: registry, ${plural(masters, 'instance')}, ${plural(replicas, 'replica')}, ${plural(flags.shards, 'shard')}${sentinels > 0 ? `, ${plural(sentinels, 'Sentinel')} with the fleet registered` : ''}. Data in ${dir}.`,
    )
    this.progress(`Point shardctl at it:`)
    this.log(`export SHARDCTL_REGISTRY=${state.registryUrl}`)
    if (flags.prefix !== 'shards') this.log(`export SHARDCTL_PREFIX=${flags.prefix}`)
    this.progress(paint.dim('Then: shardctl shards:list   ·   stop it with: shardctl sandbox:down'))
    if (sentinels > 0)
      this.progress(paint.dim('Keep the registry following Sentinel: shardctl sentinel:follow   ·   then kill a master and watch'))
    return {registry: state.registryUrl, prefix: state.prefix, dir, nodes: state.nodes}
  }
}

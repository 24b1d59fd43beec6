import {Flags} from '@oclif/core'

import {ShardctlCommand} from '../../base-command.js'
import {countFlag, dryRunFlag, prefixFlag} from '../../flags.js'
import {defaultSandboxDir, planPorts, sandboxUp} from '../../sandbox/fleet.js'
import {paint, plural, renderTable} from '../../ui/terminal.js'

export const sandboxDirFlag = Flags.string({
  summary: 'Where the sandbox keeps its data and its record of processes.',
  env: 'SHARDCTL_SANDBOX_DIR',
  defaultHelp: async () => '~/.shardctl/sandbox',
})

export default class SandboxUp extends ShardctlCommand<typeof SandboxUp> {
  static override summary = 'Start a local fleet of real redis-server processes with shards registered.'
  static override description = `Starts a registry, N instances each with R replicas, and registers S shards spread over the instances' databases. The processes outlive the command and are recorded in the sandbox directory, so that sandbox:down stops exactly them. Needs redis-server on PATH (Debian: apt-get install redis-server).`

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    '<%= config.bin %> <%= command.id %> --instances 3 --replicas 2 --shards 60 --port 7100',
    'export SHARDCTL_REGISTRY=$(<%= config.bin %> <%= command.id %> --json | jq -r .registry)',
  ]

  static override baseFlags = {...ShardctlCommand.baseFlags, prefix: prefixFlag()}

  static override flags = {
    instances: countFlag('instances', 1, 64)({summary: 'Shard instances (masters).', default: 2}),
    replicas: countFlag('replicas', 0, 8)({summary: 'Replicas per instance.', default: 1}),
    shards: countFlag('shards', 0, 100_000)({summary: 'Shards, spread over the instances.', default: 8}),
    port: countFlag('port', 1024, 65_000)({summary: 'First port: the registry; instances and replicas follow.', default: 7000}),
    dir: sandboxDirFlag,
    'dry-run': dryRunFlag,
  }

  async run() {
    const {flags} = this
    const dir = flags.dir ?? defaultSandboxDir()
    if (flags['dry-run']) {
      const plan = planPorts({basePort: flags.port, instances: flags.instances, replicas: flags.replicas})
      const rows = [
        ['registry', String(plan.registry), ''],
        ...plan.instances.flatMap((i) => [
          ['master', String(i.port), ''],
          ...i.replicas.map((r) => ['replica', String(r), `of ${i.port}`]),
        ]),
      ]
      this.log(renderTable(['ROLE', 'PORT', 'REPLICA'], rows))
      this.progress(
        `Would start ${plural(rows.length, 'redis-server process')} with ${plural(flags.shards, 'shard')}; data in ${dir} (dry run).`,
      )
      return {registry: `redis://127.0.0.1:${plan.registry}/0`, prefix: flags.prefix, dir, nodes: [], dryRun: true}
    }
    const state = await sandboxUp({
      dir,
      basePort: flags.port,
      instances: flags.instances,
      replicas: flags.replicas,
      shards: flags.shards,
      prefix: flags.prefix,
      onProgress: (m) => this.progress(m),
    })
    const masters = state.nodes.filter((n) => n.role === 'master').length
    const replicas = state.nodes.filter((n) => n.role === 'replica').length
    this.progress(
      `Sandbox up: registry, ${plural(masters, 'instance')}, ${plural(replicas, 'replica')}, ${plural(flags.shards, 'shard')}. Data in ${dir}.`,
    )
    this.progress(`Point shardctl at it:`)
    this.log(`export SHARDCTL_REGISTRY=${state.registryUrl}`)
    if (flags.prefix !== 'shards') this.log(`export SHARDCTL_PREFIX=${flags.prefix}`)
    this.progress(paint.dim('Then: shardctl shards:list   ·   stop it with: shardctl sandbox:down'))
    return {registry: state.registryUrl, prefix: state.prefix, dir, nodes: state.nodes}
  }
}

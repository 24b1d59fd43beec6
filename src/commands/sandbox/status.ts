import {ShardctlCommand} from '../../base-command.js'
import {defaultSandboxDir, sandboxStatus} from '../../sandbox/fleet.js'
import {isAlive, isOurRedis} from '../../sandbox/redis-process.js'
import {readSpawned, spawnedFor} from '../../sandbox/spawn.js'
import {paint, plural, renderTable} from '../../ui/terminal.js'
import {sandboxDirFlag} from './up.js'

export default class SandboxStatus extends ShardctlCommand<typeof SandboxStatus> {
  static override summary = 'Show the sandbox processes and whether they run.'
  static override description = 'Exits 3 when some recorded process is no longer running.'
  static override examples = ['<%= config.bin %> <%= command.id %>']
  static override flags = {dir: sandboxDirFlag}

  async run() {
    const dir = this.flags.dir ?? defaultSandboxDir()
    const {state, nodes} = await sandboxStatus(dir)
    const all = readSpawned()
    const mine = new Set(
      spawnedFor(
        nodes.map((n) => n.port),
        all,
      ),
    )
    // What --spawn started for splits of this sandbox; those of other fleets are not its business.
    const spawned = all
      .filter((i) => mine.has(i.port))
      .map((i) => ({...i, running: isAlive(i.pid) && isOurRedis(i.pid, i.port), stoppedWithSandbox: true}))
    const result = {dir, running: nodes.filter((n) => n.running).length, registry: state?.registryUrl ?? null, nodes, spawned}
    if (!state && spawned.length === 0) {
      this.progress(`No sandbox in ${dir}. Start one with sandbox:up.`)
      return result
    }
    if (!this.jsonEnabled()) {
      const state_ = (running: boolean) => (running ? paint.ok('running') : paint.bad('stopped'))
      const rows = [
        ...nodes.map((n) => [
          n.role,
          `127.0.0.1:${n.port}`,
          n.replicaOf ? `of 127.0.0.1:${n.replicaOf}` : '',
          String(n.pid),
          state_(n.running),
        ]),
        ...spawned.map((i) => ['spawned', `127.0.0.1:${i.port}`, `for the split of ${i.forSplitOf}`, String(i.pid), state_(i.running)]),
      ]
      this.log(renderTable(['ROLE', 'ADDRESS', 'REPLICA', 'PID', 'STATE'], rows))
      if (state) this.progress(`Registry: ${state.registryUrl} (prefix ${state.prefix}). Data in ${dir}.`)
      if (spawned.length > 0)
        this.progress(
          `${plural(spawned.length, 'instance')} started by shards:split --spawn for this sandbox; sandbox:down stops them too.`,
        )
    }
    const stopped = nodes.length - result.running
    if (stopped > 0)
      this.partial(result, `${stopped} of ${plural(nodes.length, 'sandbox process')} ${stopped === 1 ? 'is' : 'are'} not running`)
    return result
  }
}

import {ShardctlCommand} from '../../base-command.js'
import {defaultSandboxDir, sandboxStatus} from '../../sandbox/fleet.js'
import {paint, renderTable} from '../../ui/terminal.js'
import {sandboxDirFlag} from './up.js'

export default class SandboxStatus extends ShardctlCommand<typeof SandboxStatus> {
  static override summary = 'Show the sandbox processes and whether they run.'
  static override description = 'Exits 3 when some recorded process is no longer running.'
  static override examples = ['<%= config.bin %> <%= command.id %>']
  static override flags = {dir: sandboxDirFlag}

  async run() {
    const dir = this.flags.dir ?? defaultSandboxDir()
    const {state, nodes} = await sandboxStatus(dir)
    const result = {dir, running: nodes.filter((n) => n.running).length, registry: state?.registryUrl ?? null, nodes}
    if (!state) {
      this.progress(`No sandbox in ${dir}. Start one with sandbox:up.`)
      return result
    }
    if (!this.jsonEnabled()) {
      const rows = nodes.map((n) => [
        n.role,
        `127.0.0.1:${n.port}`,
        n.replicaOf ? `of 127.0.0.1:${n.replicaOf}` : '',
        String(n.pid),
        n.running ? paint.ok('running') : paint.bad('stopped'),
      ])
      this.log(renderTable(['ROLE', 'ADDRESS', 'REPLICA', 'PID', 'STATE'], rows))
      this.progress(`Registry: ${state.registryUrl} (prefix ${state.prefix}). Data in ${dir}.`)
    }
    const stopped = nodes.length - result.running
    if (stopped > 0) this.partial(result, `${stopped} of ${nodes.length} sandbox processes are not running`)
    return result
  }
}

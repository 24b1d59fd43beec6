import {Flags} from '@oclif/core'

import {ShardctlCommand} from '../../base-command.js'
import {dryRunFlag} from '../../flags.js'
import {defaultSandboxDir, sandboxDown, sandboxStatus} from '../../sandbox/fleet.js'
import {sandboxDirFlag} from './up.js'

export default class SandboxDown extends ShardctlCommand<typeof SandboxDown> {
  static override summary = 'Stop the sandbox processes and remove their data.'
  static override description = 'Stops exactly the processes sandbox:up recorded (a reused pid is never signalled), then removes the data they kept in the sandbox directory, unless --keep-data.'
  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> --keep-data']
  static override flags = {
    dir: sandboxDirFlag,
    'keep-data': Flags.boolean({summary: "Keep the instances' data directories."}),
    'dry-run': dryRunFlag,
  }

  async run() {
    const dir = this.flags.dir ?? defaultSandboxDir()
    if (this.flags['dry-run']) {
      const {nodes} = await sandboxStatus(dir)
      const running = nodes.filter((n) => n.running)
      this.log(running.length === 0 ? `No sandbox process runs from ${dir}.` : `Would stop ${running.map((n) => `${n.role} 127.0.0.1:${n.port} (pid ${n.pid})`).join(', ')}.`)
      return {stopped: 0, dir, wouldStop: running.map((n) => ({port: n.port, pid: n.pid}))}
    }
    const result = await sandboxDown(dir, {keepData: this.flags['keep-data']})
    this.progress(result.stopped === 0 ? `No sandbox process was running from ${dir}.` : `Stopped ${result.stopped} redis-server processes.`)
    return result
  }
}

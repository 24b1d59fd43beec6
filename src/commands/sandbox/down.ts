import {Flags} from '@oclif/core'

import {ShardctlCommand} from '../../base-command.js'
import {defaultSandboxDir, sandboxDown} from '../../sandbox/fleet.js'
import {sandboxDirFlag} from './up.js'

export default class SandboxDown extends ShardctlCommand<typeof SandboxDown> {
  static override summary = 'Stop the sandbox processes and remove their data.'
  static override description = 'Stops exactly the processes sandbox:up recorded (a reused pid is never signalled), then removes the data they kept in the sandbox directory, unless --keep-data.'
  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> --keep-data']
  static override flags = {
    dir: sandboxDirFlag,
    'keep-data': Flags.boolean({summary: "Keep the instances' data directories."}),
  }

  async run() {
    const dir = this.flags.dir ?? defaultSandboxDir()
    const result = await sandboxDown(dir, {keepData: this.flags['keep-data']})
    this.progress(result.stopped === 0 ? `No sandbox process was running from ${dir}.` : `Stopped ${result.stopped} redis-server processes.`)
    return result
  }
}

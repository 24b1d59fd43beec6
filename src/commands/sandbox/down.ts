import {Flags} from '@oclif/core'

import {ShardctlCommand} from '../../base-command.js'
import {dryRunFlag} from '../../flags.js'
import {defaultSandboxDir, sandboxDown, sandboxStatus} from '../../sandbox/fleet.js'
import {isAlive} from '../../sandbox/redis-process.js'
import {readSpawned, spawnedFor, stopSpawned} from '../../sandbox/spawn.js'
import {plural} from '../../ui/terminal.js'
import {sandboxDirFlag} from './up.js'

export default class SandboxDown extends ShardctlCommand<typeof SandboxDown> {
  static override summary = 'Stop the sandbox processes and remove their data.'
  static override description =
    'Stops exactly the processes sandbox:up recorded, and those shards:split --spawn started to split them (a reused pid is never signalled), then removes the data they kept in the sandbox directory, unless --keep-data.'
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
      const all = readSpawned()
      const mine = spawnedFor(
        nodes.map((n) => n.port),
        all,
      )
      const running = [
        ...nodes.filter((n) => n.running).map((n) => ({...n, label: n.role})),
        ...all.filter((i) => mine.includes(i.port) && isAlive(i.pid)).map((i) => ({...i, label: 'spawned'})),
      ]
      this.log(
        running.length === 0
          ? `No sandbox process runs from ${dir}.`
          : `Would stop ${running.map((n) => `${n.label} 127.0.0.1:${n.port} (pid ${n.pid})`).join(', ')}.`,
      )
      return {stopped: 0, dir, wouldStop: running.map((n) => ({port: n.port, pid: n.pid}))}
    }
    const {nodes} = await sandboxStatus(dir)
    const result = await sandboxDown(dir, {keepData: this.flags['keep-data']})
    const spawned = await stopSpawned(spawnedFor(nodes.map((n) => n.port)))
    const stopped = result.stopped + spawned
    this.progress(
      stopped === 0
        ? `No sandbox process was running from ${dir}.`
        : `Stopped ${plural(stopped, 'redis-server process')}${spawned > 0 ? ` (${spawned} started by shards:split --spawn)` : ''}.`,
    )
    return {...result, stopped, spawned}
  }
}

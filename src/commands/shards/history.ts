import {RegistryCommand} from '../../base-command.js'
import {countFlag} from '../../flags.js'
import {describeEvent, readHistory} from '../../registry/history.js'
import {HISTORY_LIMIT} from '../../registry/registry.js'
import {renderTable} from '../../ui/terminal.js'

export default class ShardsHistory extends RegistryCommand<typeof ShardsHistory> {
  static override summary = 'Show the audit log: every change shardctl made to the registry.'
  static override description = `Each entry is written by the same atomic step that made the change, and is the event published to application servers: when, who (user@host), which command, what changed. Refused and aborted operations are recorded as such. A run of shards:assign is one entry however many hashes it assigned (hashes.assigned: how many, per shard, and with --force how many moved from another shard). The registry keeps the last ${HISTORY_LIMIT.toLocaleString('en-US')} entries (P._history).`

  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> --limit 5 --json']

  static override flags = {
    limit: countFlag('limit', 1, HISTORY_LIMIT)({summary: 'How many entries, newest first.', default: 20}),
  }

  async run() {
    const events = await readHistory(await this.registry(), this.flags.limit)
    if (!this.jsonEnabled()) {
      if (events.length === 0) this.progress('No history yet.')
      // Cut to fit a terminal; whole in a pipe, where a script or a file reads it.
      else
        this.log(
          renderTable(
            ['AT', 'BY', 'COMMAND', 'CHANGE', 'DETAILS'],
            events.map((e) => [...[e.at, e.by, e.command, e.type].map(field), describeEvent(e, process.stdout.isTTY ? 100 : Infinity)]),
          ),
        )
    }
    return {events}
  }
}

/** A common field as a cell: "-" where an entry lacks it (written by hand, or by another tool), never "undefined". */
function field(value: unknown): string {
  if (value === undefined || value === null || value === '') return '-'
  return typeof value === 'string' ? value : JSON.stringify(value)
}

import {RegistryCommand} from '../../base-command.js'
import {durationFlag} from '../../flags.js'
import {type FollowerEvent, Follower} from '../../sentinel/follow.js'
import {paint} from '../../ui/terminal.js'

export default class SentinelFollow extends RegistryCommand<typeof SentinelFollow> {
  static override summary = "Keep the registry following Sentinel's failovers (long-running)."
  static override description = `Runs until stopped (SIGTERM: exit 0). Hears every Sentinel the registry records (sentinel:register) and looks at every group again each --interval, since events can be missed.

A group moves only on evidence: a majority of the Sentinels agree on its master and config epoch, the epoch is newer than the one the registry recorded, and the new master answers ROLE as a master. Then, in one compare-and-set step with its event (sentinel.failover), every shard whose master was the old instance moves to the new one with its database number, the new master leaves the replicas, and the epoch is recorded. The old master leaves the shards; once it replicates the new master again (Sentinel turns it back into a replica when it returns), it is named as a replica again (sentinel.replica-rejoined).

Several followers at once change the registry once; a stale or late Sentinel (one that was stopped or cut off during the failover) finds nothing newer to do. A group released for a promote or a split is left alone until it is handed back.

Each event is a line on stdout (with --json, one JSON document per line). Exits 1, saying why, when no majority of the Sentinels (or the registry) has answered for --max-no-majority: a supervisor (systemd, Kubernetes) starts it again. See docs/sentinel.md for a systemd unit and a Kubernetes Deployment.`

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    '<%= config.bin %> <%= command.id %> --json >> /var/log/shardctl-follow.ndjson',
    '<%= config.bin %> <%= command.id %> --interval 2s --max-no-majority 2m',
  ]

  static override flags = {
    interval: durationFlag({summary: 'How often every group is looked at, events or not.', default: 1000, defaultHelp: async () => '1s'}),
    'max-no-majority': durationFlag({
      summary: 'Exit (1) when no majority of the Sentinels, or the registry, has answered for this long.',
      default: 60_000,
      defaultHelp: async () => '60s',
    }),
  }

  async run(): Promise<FollowerEvent> {
    const {flags} = this
    this.ndjson = true
    const registry = await this.registry()
    const pool = await this.pool()
    const {sentinel, options} = await this.resolveConnections()
    const stop = new AbortController()
    const onTerm = () => stop.abort()
    process.once('SIGTERM', onTerm)
    this.onCleanup(async () => void process.removeListener('SIGTERM', onTerm))
    const follower = new Follower(registry, pool, sentinel, options, {
      intervalMs: flags.interval,
      maxNoMajorityMs: flags['max-no-majority'],
      signal: stop.signal,
      onEvent: (event) => this.show(event),
    })
    await follower.run()
    return {type: 'stopped', at: new Date().toISOString(), reason: 'SIGTERM'}
  }

  private show(event: FollowerEvent): void {
    if (this.jsonEnabled()) {
      this.logJson(event)
      return
    }
    const {type, at, ...details} = event
    const time = paint.dim(at.slice(11, 23))
    const text = (() => {
      switch (type) {
        case 'started':
          return `following ${(details.groups as string[]).length} group(s) on Sentinels ${(details.sentinels as string[]).join(', ')}; exits after ${details.exitsAfterNoMajorityMs} ms without a majority`
        case 'failover-followed':
          return paint.ok(
            `${details.group}: ${details.from} → ${details.to} (epoch ${details.epoch}, ${details.sentinels} Sentinels agree): ${(details.shards as string[]).length} shard(s) moved`,
          )
        case 'replica-rejoined':
          return paint.ok(
            `${details.group}: ${(details.replicas as string[]).join(', ')} replicate ${details.master} again: named as replica(s)`,
          )
        case 'sentinel-event':
          return paint.dim(`${details.sentinel} ${details.event} ${details.detail}`)
        case 'waiting':
        case 'ignored':
        case 'released':
        case 'error':
          return `${details.group ? `${details.group}: ` : ''}${type === 'error' ? paint.bad(String(details.reason)) : String(details.reason)}`
        default:
          // The type is said once, in bold, at the head of the line: here only what it carries.
          return Object.keys(details).length > 0 ? JSON.stringify(details) : ''
      }
    })()
    this.log([time, type === 'sentinel-event' ? '' : paint.bold(type), text].filter(Boolean).join(' '))
  }
}

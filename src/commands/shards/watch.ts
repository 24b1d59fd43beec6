import {RegistryCommand} from '../../base-command.js'
import {ShardctlError, usageError} from '../../errors.js'
import {type ScriptedRedis, connect} from '../../fleet/connect.js'
import type {ReplicationInfo} from '../../fleet/info.js'
import {follows, replicationOf} from '../../fleet/replication.js'
import {countFlag, instanceFlag} from '../../flags.js'
import {instanceKey} from '../../registry/address.js'
import {describeEvent} from '../../registry/history.js'
import {type RegistryEvent, isEventOf} from '../../registry/registry.js'
import {registryKeys} from '../../registry/schema.js'
import {paint} from '../../ui/terminal.js'

export default class ShardsWatch extends RegistryCommand<typeof ShardsWatch> {
  static override summary = 'Stream registry events: one line per change, until interrupted.'
  static override description = `Subscribes to the registry's event channel (P._events), on which every change shardctl makes is published by the same atomic step that makes it, and prints one line per event: when, what, what changed, who. Events of a registry in another database of the same server (pub/sub ignores databases) or under another prefix are left out: each event names its registry (db, prefix). With --json, one JSON document per line (NDJSON), exactly as published.

--via HOST:PORT listens on a replica of the registry instead: Redis replicates PUBLISH, so an event seen there has reached two servers. The replica must follow the registry, or the command refuses; its replication is checked again with every heartbeat, and the watch ends (exit 1, naming the replica and what it became) when it no longer follows the registry (REPLICAOF NO ONE, a failover, another master) or its link to the registry stays down for longer than --timeout: events would no longer reach it.

The connection is checked with a PING every half --timeout; losing it ends the command with exit 1 and a line naming the host, never a silent hang. --count N stops after N events.`

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    '<%= config.bin %> <%= command.id %> --via 10.0.0.3:6379',
    '<%= config.bin %> <%= command.id %> --json | jq -c "select(.type == \\"shards.added\\")"',
    '<%= config.bin %> <%= command.id %> --count 1 --json   # wait for the next change',
  ]

  static override flags = {
    via: instanceFlag({summary: 'Listen on this replica of the registry (host:port): events seen there reached two servers.'}),
    count: countFlag('count', 1, 1_000_000_000)({summary: 'Stop after this many events.'}),
  }

  async run(): Promise<void> {
    const {flags} = this
    this.ndjson = this.jsonEnabled()
    const {registry: target, options} = await this.resolveConnections()
    let where = instanceKey(target)
    let subscriber: ScriptedRedis
    /** With --via: a connection of its own to the replica (a subscribed one can only PING), to ask whom it follows. */
    let control: ScriptedRedis | undefined
    if (flags.via) {
      where = instanceKey(flags.via)
      const via = {...target, host: flags.via.host, port: flags.via.port}
      const opened = await connect(via, options)
      control = opened
      this.onCleanup(async () => opened.disconnect())
      const actually = notFollowing(await replicationOf(opened), target)
      if (actually) {
        throw usageError(
          `--via ${where} is not a replica of the registry ${instanceKey(target)}: it is ${actually}`,
          'name a replica of the registry, or leave --via out',
        )
      }
      subscriber = await connect(via, options)
      this.onCleanup(async () => subscriber.disconnect())
    } else {
      subscriber = await connect(target, options)
      this.onCleanup(async () => subscriber.disconnect())
    }
    const channel = registryKeys(flags.prefix).events
    const wanted = flags.count
    let seen = 0
    // Listening before subscribing: an event arriving with the subscription's reply is
    // printed, not dropped. Several events can arrive in one socket read: past --count,
    // the rest are ignored.
    let finished: () => void = () => undefined
    const ended = new Promise<void>((resolve) => {
      finished = resolve
    })
    subscriber.on('message', (_channel: string, message: string) => {
      if (wanted !== undefined && seen >= wanted) return
      const event = parseEvent(message)
      // Pub/sub ignores databases: an event of the registry in another database of this server is not ours.
      if (event && !isEventOf(event, target.db, flags.prefix)) return
      this.print(message, event)
      seen++
      if (wanted !== undefined && seen >= wanted) finished()
    })
    await subscriber.subscribe(channel)
    this.progress(`Watching ${channel} on ${where}${flags.via ? ' (a replica of the registry)' : ''}. Ctrl-C to stop.`)

    await new Promise<void>((resolve, reject) => {
      let over = false
      const stop = () => {
        over = true
        clearInterval(heartbeat)
        subscriber.removeAllListeners('end')
        control?.removeAllListeners('end')
      }
      const end = (error: ShardctlError) => {
        if (over) return
        stop()
        reject(error)
      }
      const lost = (cause?: Error) =>
        end(
          new ShardctlError(`lost the connection to ${where}${cause ? `: ${cause.message}` : ''}`, {
            code: 'ECONNLOST',
            hint: 'check the host, then watch again',
          }),
        )
      // --via: a replica that stops following the registry hears none of its events.
      // Asked at every heartbeat; one question at a time.
      let asking = false
      let linkDownSince: number | undefined
      const checkVia = async (client: ScriptedRedis) => {
        if (asking || over) return
        asking = true
        try {
          const replication = await replicationOf(client)
          const deaf = (what: string) =>
            end(
              new ShardctlError(`--via ${where} ${what}: events published on the registry no longer reach it`, {
                code: 'EDEAF',
                hint: 'watch again through a replica that follows the registry, or without --via',
              }),
            )
          const actually = notFollowing(replication, target)
          if (actually) {
            deaf(`no longer follows the registry ${instanceKey(target)}: it is now ${actually}`)
            return
          }
          if (replication.linkUp) linkDownSince = undefined
          else {
            linkDownSince ??= Date.now()
            if (Date.now() - linkDownSince > options.timeoutMs)
              deaf(`has lost its link to the registry ${instanceKey(target)} for more than ${options.timeoutMs} ms`)
          }
        } catch (error) {
          lost(error as Error)
        } finally {
          asking = false
        }
      }
      // Subscribed, the connection is otherwise silent: a PING proves it is alive, and
      // keeps the socket from reaching its idle timeout.
      const heartbeat = setInterval(
        () => {
          subscriber.ping().catch((error: Error) => lost(error))
          if (control) void checkVia(control)
        },
        Math.max(50, Math.floor(options.timeoutMs / 2)),
      )
      subscriber.on('end', () => lost())
      control?.on('end', () => lost())
      void ended.then(() => {
        stop()
        resolve()
      })
    })
  }

  private print(message: string, event: RegistryEvent | undefined): void {
    if (this.ndjson) {
      this.logJson(event ?? {raw: message})
      return
    }
    if (!event) {
      this.log(`${new Date().toISOString()} ${paint.warn('(not JSON)')} ${message}`)
      return
    }
    const at = typeof event.at === 'string' && event.at !== '' ? event.at : new Date().toISOString()
    const by = event.by ? paint.dim(` by ${event.by}${event.command ? ` (${event.command})` : ''}`) : ''
    this.log(`${at} ${paint.bold(String(event.type ?? 'event'))} ${describeEvent(event)}${by}`)
  }
}

/** What an instance is instead of a replica of the registry (for a line naming it), or undefined when it follows it. */
function notFollowing(replication: ReplicationInfo, registry: {host: string; port: number}): string | undefined {
  if (follows(replication, registry)) return undefined
  return replication.role === 'slave' ? `a replica of ${replication.masterHost}:${replication.masterPort}` : `a ${replication.role}`
}

/** An event as published, or undefined when the message is not a JSON object (printed as it came). */
function parseEvent(message: string): RegistryEvent | undefined {
  try {
    const parsed = JSON.parse(message) as unknown
    if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) return parsed as RegistryEvent
  } catch {
    // not JSON
  }
  return undefined
}

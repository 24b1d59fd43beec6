/**
 * An application's side of the registry, in one small class: how to route a request
 * to its shard so that promotes and splits lose nothing (README: "For application
 * developers"). Written with ioredis; the same rules hold for any client library.
 *
 *   const router = await ShardRouter.open({registry: 'redis://10.0.0.2:6379/0'})
 *   await router.write('user:42', (redis) => redis.set('user:42:name', 'Ada'))
 *   const name = await router.read('user:42', (redis) => redis.get('user:42:name'))
 *
 * The rules it follows:
 *   1. routing comes from the registry: P.map (hash -> shard), P.<id>.master;
 *   2. every event on P._events reloads the routing it names (all of it when unsure);
 *   3. a write that fails with READONLY, NOREPLICAS or a dropped connection reloads
 *      that shard's routing and is retried, a bounded number of times;
 *   4. connections to shards never queue commands while disconnected and never
 *      resend them by themselves (the registry decides where a retry goes).
 */
import {Redis} from 'ioredis'

export interface RouterOptions {
  /** The registry, redis://host:port/db. */
  registry: string
  prefix?: string
  /** How many times a failed write is re-routed and retried before the error is the caller's. */
  retries?: number
}

/**
 * Errors after which the routing may have changed under the application. A connection
 * killed while a command was in flight (a split holding clients off a moved database
 * does that) fails the command with ioredis's "max retries per request" error: the
 * command was not acknowledged, so it is re-routed like the others.
 */
const REROUTE = /READONLY|NOREPLICAS|Connection is closed|Stream isn't writeable|ECONNREFUSED|ECONNRESET|EPIPE|max retries per request/

export class ShardRouter {
  /** shard id -> master address host:port/db */
  private readonly masters = new Map<string, string>()
  /** hash -> shard id, as far as looked up */
  private readonly shardOf = new Map<string, string>()
  private readonly connections = new Map<string, Redis>()

  private constructor(
    private readonly registry: Redis,
    private readonly events: Redis,
    private readonly prefix: string,
    private readonly retries: number,
  ) {}

  static async open(options: RouterOptions): Promise<ShardRouter> {
    const registry = new Redis(options.registry, {maxRetriesPerRequest: 2})
    const events = registry.duplicate()
    const router = new ShardRouter(registry, events, options.prefix ?? 'shards', options.retries ?? 50)
    events.on('message', (_channel: string, message: string) => void router.onEvent(message))
    // A lost subscription may have missed events: reload everything once it is back.
    events.on('ready', () => void router.reloadAll())
    await events.subscribe(`${router.prefix}._events`)
    await router.reloadAll()
    return router
  }

  async close(): Promise<void> {
    for (const c of [this.registry, this.events, ...this.connections.values()]) c.disconnect()
    this.connections.clear()
  }

  /** Run a write against the hash's shard; re-route and retry when the shard moved under it. */
  async write<T>(hash: string, command: (redis: Redis) => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const shard = await this.shard(hash)
      try {
        return await command(await this.master(shard))
      } catch (error) {
        if (!REROUTE.test((error as Error).message) || attempt >= this.retries) throw error
        await this.reload(shard)
        await new Promise((resolve) => setTimeout(resolve, Math.min(100, 2 ** attempt)))
      }
    }
  }

  /** Reads follow the same routing (a replica could serve them; the master is always right). */
  read<T>(hash: string, command: (redis: Redis) => Promise<T>): Promise<T> {
    return this.write(hash, command)
  }

  /** The shard of a hash: looked up once, assigned by shards:assign (or the application's own set-if-absent). */
  private async shard(hash: string): Promise<string> {
    let shard = this.shardOf.get(hash)
    if (!shard) {
      shard = (await this.registry.hget(`${this.prefix}.map`, hash)) ?? undefined
      if (!shard) throw new Error(`hash ${hash} has no shard: assign it first (shardctl shards:assign ${hash})`)
      this.shardOf.set(hash, shard)
    }
    return shard
  }

  private async master(shard: string): Promise<Redis> {
    let address = this.masters.get(shard)
    if (!address) {
      await this.reload(shard)
      address = this.masters.get(shard)
      if (!address) throw new Error(`shard ${shard} is not in the registry`)
    }
    let client = this.connections.get(address)
    if (!client) {
      const [, host, port, db] = /^(.+):(\d+)\/(\d+)$/.exec(address)!
      client = new Redis({
        host: host.replace(/^\[|\]$/g, ''),
        port: Number(port),
        db: Number(db),
        // Never queue or resend by itself: a command that could not be sent fails, and
        // write() decides where it goes next (the registry may have moved the shard).
        enableOfflineQueue: false,
        autoResendUnfulfilledCommands: false,
        maxRetriesPerRequest: 0,
      })
      client.on('error', () => undefined) // reported through the failing command
      this.connections.set(address, client)
    }
    return client
  }

  private async reload(shard: string): Promise<void> {
    const master = await this.registry.hget(`${this.prefix}.${shard}`, 'master')
    if (master) this.masters.set(shard, master)
    else this.masters.delete(shard)
  }

  private async reloadAll(): Promise<void> {
    const ids = await this.registry.zrange(`${this.prefix}.list`, '0', '-1')
    await Promise.all(ids.map((id) => this.reload(id)))
  }

  /** Events name the shards they touch; reload those (everything, when an event names none). */
  private async onEvent(message: string): Promise<void> {
    let event: Record<string, unknown>
    try {
      event = JSON.parse(message)
    } catch {
      return this.reloadAll()
    }
    const named = [event.shards, event.ids, event.id ? [event.id] : undefined, event.moves ? Object.keys(event.moves) : undefined].find(
      Array.isArray,
    ) as string[] | undefined
    if (event.type === 'hashes.assigned' || event.type === 'weights.changed') return
    if (named && named.length > 0) await Promise.all(named.map((id) => this.reload(id)))
    else await this.reloadAll()
  }
}

import {Redis} from 'ioredis'

import {until} from './cli.js'

/**
 * An application server in miniature: routes each write by the registry, writes
 * continuously, and on READONLY or a broken connection re-reads the registry and
 * retries the same write. It counts only acknowledged writes: after an operation,
 * every one of them must be readable where the registry says its shard lives.
 */
export class ContinuousWriter {
  /** Acknowledged writes per shard: key -> value. */
  readonly acked = new Map<string, string[]>()
  /** Time of each failed attempt, and the longest gap between two acks, in ms. */
  errors = 0
  maxGapMs = 0
  private running = false
  private loops: Promise<void>[] = []
  private readonly clients = new Map<string, Redis>()

  constructor(
    private readonly registry: Redis,
    private readonly shards: string[],
    /**
     * confirm 'all': a write counts once every replica of its master has it too (WAIT), the "confirmed on two servers"
     * pattern. Under Sentinel a single replica's confirmation is not enough: it elects the replica with the best offset
     * it last read (INFO, up to 5 s old), not necessarily the one that confirmed. tag: in every key, so that two
     * writers can share the shards.
     */
    private readonly options: {prefix?: string; valueSize?: number; confirm?: 'all'; tag?: string} = {},
  ) {}

  start(): void {
    this.running = true
    this.loops = this.shards.map((shard) => this.loop(shard))
  }

  /** Writes acknowledged so far. */
  get total(): number {
    return [...this.acked.values()].reduce((n, keys) => n + keys.length, 0)
  }

  /** Stop writing and wait for the writes in flight. Returns the number acknowledged. */
  async stop(): Promise<number> {
    this.running = false
    await Promise.all(this.loops)
    for (const client of this.clients.values()) client.disconnect()
    this.clients.clear()
    return this.total
  }

  /** Wait until at least n writes are acknowledged (bounded). */
  async waitFor(n: number): Promise<void> {
    for (let i = 0; i < 12_000; i++) {
      if (this.total >= n) return
      await new Promise((r) => setTimeout(r, 5))
    }
    throw new Error(`writer never reached ${n} acknowledged writes (at ${this.total})`)
  }

  /**
   * Once an operation is over: every shard takes writes again (each acknowledges `n`
   * more where the registry now routes it), then the writer stops.
   */
  async resumesThenStop(n = 50): Promise<void> {
    const marks = new Map([...this.acked].map(([shard, keys]) => [shard, keys.length]))
    for (let i = 0; i < 12_000; i++) {
      if ([...this.acked].every(([shard, keys]) => keys.length >= marks.get(shard)! + n)) break
      await new Promise((r) => setTimeout(r, 5))
    }
    const stalled = [...this.acked].filter(([shard, keys]) => keys.length < marks.get(shard)! + n).map(([shard]) => shard)
    await this.stop()
    if (stalled.length > 0) throw new Error(`writes did not resume on ${stalled.join(', ')}`)
  }

  private async route(shard: string): Promise<Redis> {
    const master = await this.registry.hget(`${this.options.prefix ?? 'shards'}.${shard}`, 'master')
    const [, host, port, db] = /^(.+):(\d+)\/(\d+)$/.exec(master!)!
    const key = `${host}:${port}/${db}`
    let client = this.clients.get(key)
    if (!client) {
      client = new Redis({
        host,
        port: Number(port),
        db: Number(db),
        protocol: 2,
        maxRetriesPerRequest: 0,
        enableOfflineQueue: true,
        retryStrategy: () => 50,
      })
      client.on('error', () => undefined)
      this.clients.set(key, client)
    }
    return client
  }

  private async loop(shard: string): Promise<void> {
    const keys: string[] = []
    this.acked.set(shard, keys)
    const value = 'v'.repeat(this.options.valueSize ?? 8)
    let client = await this.route(shard)
    let seq = 0
    let last = Date.now()
    const deadline = Date.now() + 120_000 // bounded: a writer never outlives a test
    while (this.running && Date.now() < deadline) {
      const key = `w:${this.options.tag ?? ''}${shard}:${seq}`
      try {
        await client.set(key, value)
        if (this.options.confirm) await confirmedByAll(client)
        keys.push(key)
        seq++
        const now = Date.now()
        this.maxGapMs = Math.max(this.maxGapMs, now - last)
        last = now
      } catch {
        this.errors++
        await new Promise((r) => setTimeout(r, 2))
        client = await this.route(shard)
      }
    }
  }
}

/** A writer on these shards, started and proven to write (n acknowledged writes). */
export async function startedWriter(registry: Redis, shards: string[], n = 300): Promise<ContinuousWriter> {
  const writer = new ContinuousWriter(registry, shards)
  writer.start()
  await writer.waitFor(n)
  return writer
}

/** WAIT for every replica the master has now (ROLE); fewer confirmations than that is a failed write. */
async function confirmedByAll(client: Redis): Promise<void> {
  const role = (await client.call('ROLE')) as [string, number, unknown[]]
  const replicas = Array.isArray(role[2]) ? role[2].length : 0
  if (replicas === 0) throw new Error('no replica to confirm the write')
  if (Number(await client.call('WAIT', String(replicas), '1000')) < replicas) throw new Error('not confirmed by every replica')
}

/** Once an operation is over: writes flow again on every shard, then the keys acknowledged but missing where the registry routes. */
export async function lostWrites(registry: Redis, writer: ContinuousWriter): Promise<string[]> {
  await writer.resumesThenStop()
  return missingWrites(registry, writer)
}

/** Keys of the writer missing on the instance the registry names for their shard. */
export async function missingWrites(registry: Redis, writer: {acked: Map<string, string[]>}, prefix = 'shards'): Promise<string[]> {
  const missing: string[] = []
  for (const [shard, keys] of writer.acked) {
    const master = await registry.hget(`${prefix}.${shard}`, 'master')
    const [, host, port, db] = /^(.+):(\d+)\/(\d+)$/.exec(master!)!
    const client = new Redis({host, port: Number(port), db: Number(db), protocol: 2})
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000)
      const present = await client.exists(...batch).catch(() => -1)
      if (present !== batch.length) {
        const values = await client.mget(...batch)
        values.forEach((v, j) => {
          if (v === null) missing.push(batch[j])
        })
      }
    }
    client.disconnect()
  }
  return missing
}

/**
 * An application written the way real client libraries behave: it routes by a
 * routing table it caches, reloads it when it hears a registry event (late, as
 * through a lagging registry replica) and when a command fails with an error it can
 * see; but a dropped connection is reconnected silently and the command sent again
 * to the same address, as redis-py does (here: ioredis with retries and its offline
 * queue on). Every acknowledged write is recorded, as in ContinuousWriter.
 */
export class LateHearingWriter {
  readonly acked = new Map<string, string[]>()
  /** Reloads caused by an event, and by an error the application saw. */
  reloads = {onEvent: 0, onError: 0}
  /** Events received: each is heard (a reload) hearsAfterMs later. */
  private received = 0
  private running = false
  private loops: Promise<void>[] = []
  private readonly clients = new Map<string, Redis>()
  private readonly routes = new Map<string, string>()
  private subscriber?: Redis

  constructor(
    private readonly registry: Redis,
    private readonly shards: string[],
    /**
     * everyMs: a pause after each acknowledged write (an application that writes now and then).
     * connections: connections per shard, each writing on its own (an application's pool):
     * when the instance closes them, one is usually back while the others reconnect.
     */
    private readonly options: {hearsAfterMs: number; prefix?: string; everyMs?: number; connections?: number},
  ) {}

  get total(): number {
    return [...this.acked.values()].reduce((n, keys) => n + keys.length, 0)
  }

  async start(): Promise<void> {
    for (const shard of this.shards) await this.reload(shard)
    const prefix = this.options.prefix ?? 'shards'
    this.subscriber = this.registry.duplicate()
    this.subscriber.on('error', () => undefined)
    this.subscriber.on('message', () => {
      this.received++
      setTimeout(() => {
        this.reloads.onEvent++
        for (const shard of this.shards) void this.reload(shard)
      }, this.options.hearsAfterMs)
    })
    await this.subscriber.subscribe(`${prefix}._events`)
    this.running = true
    const pool = Array.from({length: this.options.connections ?? 1}, (_, i) => i)
    for (const shard of this.shards) this.acked.set(shard, [])
    this.loops = this.shards.flatMap((shard) => pool.map((connection) => this.loop(shard, connection)))
  }

  async waitFor(n: number): Promise<void> {
    for (let i = 0; i < 12_000 && this.total < n; i++) await new Promise((r) => setTimeout(r, 5))
    if (this.total < n) throw new Error(`writer never reached ${n} acknowledged writes (at ${this.total})`)
  }

  /** Until every event received so far has been heard (its reload made), however long after it came. */
  async heardAll(): Promise<void> {
    await until(`the late client heard every event (${this.received} received)`, () => this.reloads.onEvent >= this.received)
  }

  async stop(): Promise<number> {
    this.running = false
    await Promise.all(this.loops)
    this.subscriber?.disconnect()
    for (const client of this.clients.values()) client.disconnect()
    this.clients.clear()
    return this.total
  }

  private async reload(shard: string): Promise<void> {
    const master = await this.registry.hget(`${this.options.prefix ?? 'shards'}.${shard}`, 'master')
    if (master) this.routes.set(shard, master)
  }

  private client(address: string, connection: number): Redis {
    let client = this.clients.get(`${address}#${connection}`)
    if (!client) {
      const [, host, port, db] = /^(.+):(\d+)\/(\d+)$/.exec(address)!
      client = new Redis({
        host,
        port: Number(port),
        db: Number(db),
        protocol: 2,
        maxRetriesPerRequest: null,
        enableOfflineQueue: true,
        retryStrategy: () => 5,
      })
      client.on('error', () => undefined) // reconnects by itself: the application never hears of it
      this.clients.set(`${address}#${connection}`, client)
    }
    return client
  }

  private async loop(shard: string, connection: number): Promise<void> {
    const keys = this.acked.get(shard)!
    let seq = 0
    const deadline = Date.now() + 120_000
    while (this.running && Date.now() < deadline) {
      const key = `late:${shard}:${connection}:${seq}`
      try {
        await this.client(this.routes.get(shard)!, connection).set(key, 'v')
        keys.push(key)
        seq++
        if (this.options.everyMs) await new Promise((r) => setTimeout(r, this.options.everyMs))
      } catch {
        this.reloads.onError++
        await new Promise((r) => setTimeout(r, 2))
        await this.reload(shard)
      }
    }
  }
}

/**
 * An operation run while an application that reconnects by itself and hears of it 1 s late
 * writes (LateHearingWriter, three connections a shard): until it hears, its pool is back on
 * the source within milliseconds of each cut, far inside --quiet, so the hold must last until
 * it has heard. Once the operation is over and the application has written 300 more: the
 * operation's outcome, the acknowledged writes missing where the registry routes, and how
 * often it reloaded on hearing.
 */
export async function whileHearingLate<T>(
  registry: Redis,
  shards: string[],
  operation: () => Promise<T>,
): Promise<{done: T; missing: string[]; heard: number}> {
  const app = new LateHearingWriter(registry, shards, {hearsAfterMs: 1000, connections: 3})
  await app.start()
  await app.waitFor(300)
  const done = await operation()
  // Heard late, then written on: the writes after hearing must land where the registry routes.
  await app.heardAll()
  await app.waitFor(app.total + 300)
  await app.stop()
  return {done, missing: await missingWrites(registry, app), heard: app.reloads.onEvent}
}

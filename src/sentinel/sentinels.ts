import {lookup} from 'node:dns/promises'
import {isIP} from 'node:net'

import {ShardctlError, usageError} from '../errors.js'
import {type ConnectOptions, type ScriptedRedis, close} from '../fleet/connect.js'
import {type Endpoint, canonicalInstance, instanceKey} from '../registry/address.js'
import {type Agreement, gatherViews} from './quorum.js'
import {type SentinelCredentials, type SentinelView, connectSentinel, unreachableView, viewOf} from './sentinel.js'

/**
 * The Sentinels a fleet is handed to: one connection each, opened on first use and
 * closed together. Every question goes to all of them at once; each answer (or its
 * failure) is kept per Sentinel, so that a caller can say which one refused.
 */
export class Sentinels {
  private readonly clients = new Map<string, Promise<ScriptedRedis>>()
  /** Each Sentinel once, whatever the list given (a record an older version wrote may name one twice). */
  readonly endpoints: Endpoint[]

  constructor(
    endpoints: Endpoint[],
    private readonly credentials: SentinelCredentials,
    private readonly options: ConnectOptions,
  ) {
    this.endpoints = distinctAddresses(endpoints)
  }

  get keys(): string[] {
    return this.endpoints.map(instanceKey)
  }

  client(sentinel: Endpoint): Promise<ScriptedRedis> {
    const key = instanceKey(sentinel)
    let client = this.clients.get(key)
    if (!client) {
      client = connectSentinel(sentinel, this.credentials, this.options)
      // A failed connection is tried again next time (a Sentinel back from a restart).
      client.catch(() => this.clients.delete(key))
      this.clients.set(key, client)
    }
    return client
  }

  /** Run `fn` on every Sentinel at once: each one's result, or why it failed. */
  async each<T>(fn: (client: ScriptedRedis, sentinel: Endpoint) => Promise<T>): Promise<{sentinel: string; value?: T; error?: Error}[]> {
    return Promise.all(
      this.endpoints.map(async (sentinel) => {
        try {
          return {sentinel: instanceKey(sentinel), value: await fn(await this.client(sentinel), sentinel)}
        } catch (error) {
          // A connection that died (the Sentinel went silent past the timeout) is opened anew next time.
          const client = await this.clients.get(instanceKey(sentinel))?.catch(() => undefined)
          if (client && client.status !== 'ready') this.drop(sentinel)
          return {sentinel: instanceKey(sentinel), error: error as Error}
        }
      }),
    )
  }

  /** Like each(), but the first failure is thrown, naming its Sentinel. */
  async all<T>(what: string, fn: (client: ScriptedRedis, sentinel: Endpoint) => Promise<T>): Promise<T[]> {
    const results = await this.each(fn)
    const failed = results.find((r) => r.error)
    if (failed) throw failedOn(failed.sentinel, what, failed.error!)
    return results.map((r) => r.value as T)
  }

  /** What each Sentinel says about a name, settled as soon as a majority agrees. */
  views(name: string): Promise<{views: SentinelView[]; agreed?: Agreement}> {
    return gatherViews(
      this.endpoints.map(async (sentinel) => {
        const key = instanceKey(sentinel)
        try {
          return await viewOf(await this.client(sentinel), key, name)
        } catch (error) {
          // A connection that failed is opened anew next time.
          this.drop(sentinel)
          return unreachableView(key, error as Error)
        }
      }),
      this.endpoints.length,
    )
  }

  /** Forget a Sentinel's connection (it failed): the next question opens a new one. */
  drop(sentinel: Endpoint): void {
    const key = instanceKey(sentinel)
    const client = this.clients.get(key)
    this.clients.delete(key)
    void client?.then(close, () => undefined)
  }

  async close(): Promise<void> {
    const pending = [...this.clients.values()]
    this.clients.clear()
    await Promise.all(pending.map(async (p) => close(await p.catch(() => undefined))))
  }
}

/** Each address once, compared canonically (localhost and 127.0.0.1 are one): the first spelling kept. */
export function distinctAddresses(endpoints: Endpoint[]): Endpoint[] {
  const seen = new Set<string>()
  return endpoints.filter((e) => !seen.has(canonicalInstance(e)) && Boolean(seen.add(canonicalInstance(e))))
}

/** The first Sentinel named twice in a list, in two spellings (or the same twice), if any. */
export function namedTwice(endpoints: Endpoint[]): [Endpoint, Endpoint] | undefined {
  const first = new Map<string, Endpoint>()
  for (const e of endpoints) {
    const before = first.get(canonicalInstance(e))
    if (before) return [before, e]
    first.set(canonicalInstance(e), e)
  }
  return undefined
}

/** A Sentinel's failure, in one line naming it. */
export function failedOn(sentinel: string, what: string, error: Error): ShardctlError {
  if (error instanceof ShardctlError) return error
  return new ShardctlError(`Sentinel ${sentinel} refused ${what}: ${error.message.replace(/^.*?refused SENTINEL: /, '')}`, {
    code: 'ESENTINEL',
    cause: error,
  })
}

/** SENTINEL MONITOR takes an IP address: a host name is looked up once, here. */
export async function ipOf(instance: Endpoint): Promise<Endpoint> {
  if (isIP(instance.host)) return instance
  try {
    const {address} = await lookup(instance.host)
    return {host: address, port: instance.port}
  } catch {
    throw usageError(
      `cannot resolve ${instanceKey(instance)} to an IP address for Sentinel`,
      'Sentinel monitors IP addresses: check the host name',
    )
  }
}

/** Whether an address Sentinel reports (always an IP) is this registry instance (which may be a name). */
export async function sameInstance(reported: Endpoint, instance: Endpoint): Promise<boolean> {
  if (reported.port !== instance.port) return false
  if (reported.host === instance.host) return true
  const loopback = (h: string) => h === '127.0.0.1' || h === '::1' || h === 'localhost'
  if (loopback(reported.host) && loopback(instance.host)) return true
  return (await ipOf(instance).catch(() => instance)).host === reported.host
}

import type {Redis} from 'ioredis'

import {type ConnectOptions, type ScriptedRedis, connect} from '../fleet/connect.js'
import {parseInfo} from '../fleet/info.js'
import type {Credentials, Endpoint} from '../registry/address.js'

/**
 * Talking to one Redis Sentinel: what it believes about a master name, what it
 * monitors, and the few commands shardctl sends it. The replies are Sentinel's own
 * flat lists; the parsing is here, once.
 */

/** How to reach the Sentinels: their own credentials (SHARDCTL_SENTINEL_USER / _PASSWORD) and TLS. */
export type SentinelCredentials = Credentials

export function connectSentinel(sentinel: Endpoint, credentials: SentinelCredentials, options: ConnectOptions): Promise<ScriptedRedis> {
  return connect({...credentials, host: sentinel.host, port: sentinel.port, db: 0}, {...options, kind: 'Sentinel'})
}

/** What one Sentinel says about a master name. */
export interface SentinelView {
  /** The Sentinel, host:port. */
  sentinel: string
  /** It answered. */
  reachable: boolean
  /** Its own id (SENTINEL MYID): one Sentinel listed under two addresses answers with one id, and is one vote. */
  id?: string
  error?: string
  /** It monitors the name. */
  monitors: boolean
  /**
   * The master's address (GET-MASTER-ADDR-BY-NAME: during a failover the leader already
   * gives the promoted replica here, while SENTINEL MASTER still shows the old address).
   */
  master?: Endpoint
  /** The master's config epoch: a failover raises it. */
  epoch?: number
  /** Sentinel's flags for the master: master, s_down, o_down, failover_in_progress... */
  flags?: string[]
  /** Other Sentinels it knows for this master, replicas it knows, and the quorum it was given. */
  otherSentinels?: number
  replicas?: number
  quorum?: number
}

/** A flat reply [k1, v1, k2, v2...] as a record. */
export function fieldsOf(flat: unknown): Record<string, string> {
  const out: Record<string, string> = {}
  if (!Array.isArray(flat)) return out
  for (let i = 0; i + 1 < flat.length; i += 2) out[String(flat[i])] = String(flat[i + 1])
  return out
}

/**
 * One Sentinel's view of a name: the address and the epoch read in one round trip
 * (two commands written together, run back to back by the Sentinel), so they belong
 * to the same moment of its state.
 */
export async function viewOf(client: Redis, sentinel: string, name: string): Promise<SentinelView> {
  const replies =
    (await client
      .pipeline()
      .call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', name)
      .call('SENTINEL', 'MASTER', name)
      .call('SENTINEL', 'MYID')
      .exec()) ?? []
  const [addrError, addr] = replies[0] ?? [new Error('no reply'), null]
  const [masterError, master] = replies[1] ?? [new Error('no reply'), null]
  const [idError, id] = replies[2] ?? [new Error('no reply'), null]
  if (addrError) throw addrError
  // A Sentinel too old for MYID (before Redis 6.2) is known by its address alone.
  const identity = idError || typeof id !== 'string' ? {} : {id}
  if (addr === null || (masterError && /No such master/i.test(masterError.message)))
    return {sentinel, reachable: true, monitors: false, ...identity}
  if (masterError) throw masterError
  const [ip, port] = addr as [string, string]
  const fields = fieldsOf(master)
  return {
    sentinel,
    reachable: true,
    ...identity,
    monitors: true,
    master: {host: ip, port: Number(port)},
    epoch: Number(fields['config-epoch'] ?? 0),
    flags: (fields.flags ?? '').split(',').filter(Boolean),
    otherSentinels: Number(fields['num-other-sentinels'] ?? 0),
    replicas: Number(fields['num-slaves'] ?? 0),
    quorum: Number(fields.quorum ?? 0),
  }
}

/** A Sentinel's own id (SENTINEL MYID); undefined from a Sentinel too old to say. */
export async function sentinelId(client: Redis): Promise<string | undefined> {
  try {
    const id = await client.call('SENTINEL', 'MYID')
    return typeof id === 'string' ? id : undefined
  } catch (error) {
    if (/unknown|syntax/i.test((error as Error).message)) return undefined
    throw error
  }
}

/** A view for a Sentinel that did not answer. */
export function unreachableView(sentinel: string, error: Error): SentinelView {
  return {sentinel, reachable: false, monitors: false, error: error.message}
}

/** Every master a Sentinel monitors: name, address, flags, epoch. */
export interface MonitoredMaster {
  name: string
  master: Endpoint
  epoch: number
  flags: string[]
  quorum: number
}

export async function monitoredMasters(client: Redis): Promise<MonitoredMaster[]> {
  const reply = (await client.call('SENTINEL', 'MASTERS')) as unknown[]
  return reply.map((flat) => {
    const f = fieldsOf(flat)
    return {
      name: f.name,
      master: {host: f.ip, port: Number(f.port)},
      epoch: Number(f['config-epoch'] ?? 0),
      flags: (f.flags ?? '').split(',').filter(Boolean),
      quorum: Number(f.quorum ?? 0),
    }
  })
}

/** A replica as a Sentinel knows it. */
export interface KnownReplica {
  instance: Endpoint
  flags: string[]
  /** Its link to the master is up, as the replica itself reports. */
  linkOk: boolean
  priority: number
}

export async function knownReplicas(client: Redis, name: string): Promise<KnownReplica[]> {
  const reply = (await client.call('SENTINEL', 'REPLICAS', name)) as unknown[]
  return reply.map((flat) => {
    const f = fieldsOf(flat)
    return {
      instance: {host: f.ip, port: Number(f.port)},
      flags: (f.flags ?? '').split(',').filter(Boolean),
      linkOk: f['master-link-status'] === 'ok',
      priority: Number(f['slave-priority'] ?? f['replica-priority'] ?? 100),
    }
  })
}

/** A replica Sentinel believes down (or cannot reach). */
export function isDown(flags: string[]): boolean {
  return flags.some((f) => f === 's_down' || f === 'o_down' || f === 'disconnected')
}

/** CKQUORUM: whether this Sentinel sees enough peers to authorise a failover of the name. */
export async function checkQuorum(client: Redis, name: string): Promise<{ok: boolean; message: string}> {
  try {
    const reply = String(await client.call('SENTINEL', 'CKQUORUM', name))
    return {ok: true, message: reply.replace(/^\+?OK\s*/, '')}
  } catch (error) {
    return {ok: false, message: (error as Error).message.replace(/^.*?refused CKQUORUM: /, '').replace(/^NOQUORUM\s*/, '')}
  }
}

/** Whether the Sentinel is in TILT mode (its clock jumped, or it was stopped): it acts on nothing meanwhile. */
export async function inTilt(client: Redis): Promise<boolean> {
  return parseInfo(await client.info('sentinel')).sentinel_tilt === '1'
}

/** Sentinel's settings for a monitored master, as shardctl gives them. */
export interface MonitorSettings {
  quorum: number
  downAfterMs: number
  failoverTimeoutMs: number
  parallelSyncs: number
}

/**
 * MONITOR the name at ip:port, then SET its timings and the instance's credentials.
 * The password goes to the Sentinel (which keeps it in its own config file, as it
 * must to reach the instance); it is never in a reply or a message.
 */
export async function monitor(
  client: Redis,
  name: string,
  at: Endpoint,
  settings: MonitorSettings,
  credentials: Credentials,
): Promise<void> {
  await client.call('SENTINEL', 'MONITOR', name, at.host, String(at.port), String(settings.quorum))
  await configure(client, name, settings, credentials)
}

export async function configure(client: Redis, name: string, settings: MonitorSettings, credentials: Credentials): Promise<void> {
  const args = [
    'down-after-milliseconds',
    String(settings.downAfterMs),
    'failover-timeout',
    String(settings.failoverTimeoutMs),
    'parallel-syncs',
    String(settings.parallelSyncs),
    'quorum',
    String(settings.quorum),
  ]
  if (credentials.password !== undefined) args.push('auth-pass', credentials.password)
  if (credentials.username !== undefined) args.push('auth-user', credentials.username)
  await client.call('SENTINEL', 'SET', name, ...args)
}

/** REMOVE the name; a Sentinel that does not know it has nothing to remove. */
export async function removeName(client: Redis, name: string): Promise<'removed' | 'absent'> {
  try {
    await client.call('SENTINEL', 'REMOVE', name)
    return 'removed'
  } catch (error) {
    if (/No such master/i.test((error as Error).message)) return 'absent'
    throw error
  }
}

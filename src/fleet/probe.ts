import {instanceKey, type ShardAddress} from '../registry/address.js'
import type {Shard} from '../registry/schema.js'
import type {ConnectionPool} from './connect.js'
import {follows} from './replication.js'
import {type InfoFields, type ReplicationInfo, parseInfo, parseKeyspace, parseReplication} from './info.js'

/** What one instance says about itself. */
export interface InstanceState {
  instance: string
  reachable: boolean
  error?: string
  replication?: ReplicationInfo
  keysByDb?: Map<number, number>
  /** Every INFO field read (replication, keyspace, and persistence/server when asked). */
  info?: InfoFields
  /** CONFIG GET results, when asked; undefined when CONFIG is refused (ACL, renamed). */
  config?: Record<string, string>
  configError?: string
}

export interface ProbeOptions {
  /** Also read INFO persistence and server (AOF/RDB state, the server's clock). */
  persistence?: boolean
  /** Also read INFO memory (used_memory, maxmemory). */
  memory?: boolean
  /** Also read these settings with CONFIG GET, where the ACL allows it. */
  config?: string[]
}

/**
 * Ask every instance, in parallel and with one connection each, for its replication
 * state and keyspace — and what else is asked — in one round trip. An unreachable
 * instance is a result, not an error.
 */
export async function probeInstances(
  instances: Iterable<{host: string; port: number}>,
  pool: ConnectionPool,
  options: ProbeOptions = {},
): Promise<Map<string, InstanceState>> {
  const unique = new Map<string, {host: string; port: number}>()
  for (const instance of instances) unique.set(instanceKey(instance), instance)
  // INFO server always: its run_id tells two names of one server apart from two servers.
  const sections = [
    'replication',
    'keyspace',
    'server',
    ...(options.persistence ? ['persistence'] : []),
    ...(options.memory ? ['memory'] : []),
  ]
  const settings = options.config ?? []
  const states = await mapLimited([...unique], PROBE_CONCURRENCY, async ([key, instance]): Promise<InstanceState> => {
    try {
      const client = await pool.get(instance)
      const pipeline = client.pipeline()
      for (const section of sections) pipeline.info(section)
      for (const name of settings) pipeline.config('GET', name)
      const replies = (await pipeline.exec()) ?? []
      const infoReplies = replies.slice(0, sections.length)
      const failed = infoReplies.find(([error]) => error)
      if (failed) throw failed[0]
      const info = parseInfo(infoReplies.map(([, text]) => String(text)).join('\n'))
      const state: InstanceState = {
        instance: key,
        reachable: true,
        replication: parseReplication(info),
        keysByDb: parseKeyspace(info),
        info,
      }
      if (settings.length > 0) {
        const configReplies = replies.slice(sections.length)
        const refused = configReplies.find(([error]) => error)
        if (refused) state.configError = (refused[0] as Error).message.split('\n')[0]
        else state.config = Object.fromEntries(configReplies.flatMap(([, pair]) => toPairs(pair as string[])))
      }
      return state
    } catch (error) {
      return {instance: key, reachable: false, error: (error as Error).message}
    }
  })
  return new Map(states.map((s) => [s.instance, s]))
}

/** Instances probed at once: enough to hide round trips, few enough for a fleet of hundreds (sockets, memory). */
const PROBE_CONCURRENCY = 64

/** map() over items with at most `limit` calls in flight; results in input order. */
export async function mapLimited<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length)
  let next = 0
  const worker = async () => {
    while (next < items.length) {
      const i = next++
      results[i] = await fn(items[i])
    }
  }
  await Promise.all(Array.from({length: Math.min(limit, items.length)}, worker))
  return results
}

function toPairs(flat: string[]): [string, string][] {
  const pairs: [string, string][] = []
  for (let i = 0; i + 1 < flat.length; i += 2) pairs.push([flat[i], flat[i + 1]])
  return pairs
}

export interface NodeHealth {
  address: string
  /** Undefined when the instance was not probed. */
  reachable?: boolean
  error?: string
  /** The role the instance reports, which may differ from what the registry says. */
  role?: string
  keys?: number
}

export interface ReplicaHealth extends NodeHealth {
  /** Replicates the shard's master, as the registry names it. */
  followsMaster?: boolean
  linkUp?: boolean
  /** Bytes of replication stream the replica has not processed yet. */
  lagBytes?: number
}

export interface ShardHealth {
  master: NodeHealth
  replicas: ReplicaHealth[]
}

function nodeHealth(address: ShardAddress, label: string, states: Map<string, InstanceState>): NodeHealth {
  const state = states.get(instanceKey(address))
  if (!state?.reachable) return {address: label, reachable: false, error: state?.error}
  return {address: label, reachable: true, role: state.replication?.role, keys: state.keysByDb?.get(address.db) ?? 0}
}

/** Combine instance states into one shard's view: master and replicas. */
export function shardHealth(shard: Shard, states: Map<string, InstanceState>, format: (a: ShardAddress) => string): ShardHealth {
  const master = nodeHealth(shard.master, format(shard.master), states)
  const masterState = states.get(instanceKey(shard.master))
  const replicas = [...shard.replicas, ...shard.persist].map((replica): ReplicaHealth => {
    const node: ReplicaHealth = nodeHealth(replica, format(replica), states)
    const repl = states.get(instanceKey(replica))?.replication
    if (!node.reachable || !repl) return node
    node.followsMaster = follows(repl, shard.master)
    node.linkUp = repl.role === 'slave' ? Boolean(repl.linkUp) : false
    if (node.followsMaster && masterState?.replication && node.linkUp) {
      node.lagBytes = Math.max(0, masterState.replication.offset - repl.offset)
    }
    return node
  })
  return {master, replicas}
}

/** Why a node did not answer, in a word for a STATUS cell: its credentials were refused, TLS failed, or it could not be reached. */
export function unreachableWord(error: string | undefined): string {
  if (error === undefined) return 'unreachable'
  if (/^authentication failed/.test(error)) return 'auth failed'
  if (/^the TLS handshake|: TLS failed/.test(error))
    return /plain Redis, not TLS/.test(error) ? 'TLS failed: speaks plain Redis' : 'TLS failed'
  return 'unreachable'
}

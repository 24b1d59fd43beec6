import {instanceKey, type ShardAddress} from '../registry/address.js'
import type {Shard} from '../registry/schema.js'
import type {ConnectionPool} from './connect.js'
import {type ReplicationInfo, parseInfo, parseKeyspace, parseReplication} from './info.js'

/** What one instance says about itself. */
export interface InstanceState {
  instance: string
  reachable: boolean
  error?: string
  replication?: ReplicationInfo
  keysByDb?: Map<number, number>
}

/**
 * Ask every instance, in parallel and with one connection each, for its replication
 * state and keyspace: two INFO sections in one round trip. An unreachable instance is
 * a result, not an error.
 */
export async function probeInstances(
  instances: Iterable<{host: string; port: number}>,
  pool: ConnectionPool,
): Promise<Map<string, InstanceState>> {
  const unique = new Map<string, {host: string; port: number}>()
  for (const instance of instances) unique.set(instanceKey(instance), instance)
  const states = await Promise.all(
    [...unique].map(async ([key, instance]): Promise<InstanceState> => {
      try {
        const client = await pool.get(instance)
        const replies = (await client.pipeline().info('replication').info('keyspace').exec()) ?? []
        const failed = replies.find(([error]) => error)
        if (failed) throw failed[0]
        const info = parseInfo(`${replies[0][1]}\n${replies[1][1]}`)
        return {instance: key, reachable: true, replication: parseReplication(info), keysByDb: parseKeyspace(info)}
      } catch (error) {
        return {instance: key, reachable: false, error: (error as Error).message}
      }
    }),
  )
  return new Map(states.map((s) => [s.instance, s]))
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
    node.followsMaster = repl.role === 'slave' && repl.masterPort === shard.master.port && sameHost(repl.masterHost, shard.master.host)
    node.linkUp = repl.role === 'slave' ? Boolean(repl.linkUp) : false
    if (node.followsMaster && masterState?.replication && node.linkUp) {
      node.lagBytes = Math.max(0, masterState.replication.offset - repl.offset)
    }
    return node
  })
  return {master, replicas}
}

const LOCAL = new Set(['127.0.0.1', 'localhost', '::1'])

function sameHost(reported: string | undefined, registered: string): boolean {
  if (reported === undefined) return false
  if (reported === registered) return true
  return LOCAL.has(reported) && LOCAL.has(registered)
}

import {connect as netConnect} from 'node:net'
import {connect as tlsConnect} from 'node:tls'
import {setTimeout as sleep} from 'node:timers/promises'

import {AbstractConnector, type Redis, type RedisOptions} from 'ioredis'

import {ShardctlError} from '../errors.js'
import {type ConnectOptions, close, connect, tlsOptions} from '../fleet/connect.js'
import {type ConnectTarget, type Endpoint, instanceKey} from '../registry/address.js'
import {disagreement, gatherViews} from './quorum.js'
import {connectSentinel, unreachableView, viewOf} from './sentinel.js'

/**
 * The registry behind Sentinel: each connection (the first, and every one after a
 * lost connection) goes to the instance a majority of the Sentinels agree is the
 * master, once it answers ROLE as a master. A command in flight when the connection
 * drops fails (it is never sent twice: its caller finds out from the registry whether
 * it took); a command issued while the master is being found again waits for it, up
 * to the command timeout. So a registry that fails over in the middle of a command is
 * found again at its new address, and a Sentinel that is stale, or the old master
 * back from the dead, is never mistaken for it.
 */

/** How long to wait between two attempts to find the master while the Sentinels disagree or it does not answer. */
const RETRY_MS = 100

/**
 * Find the master: a majority of the Sentinels agreeing on its address and epoch, and
 * the instance itself answering ROLE as a master (a Sentinel's word alone is not enough:
 * Codis's users met split brains by trusting it).
 */
export async function findMaster(target: ConnectTarget, options: ConnectOptions): Promise<Endpoint> {
  const route = target.sentinel!
  const total = route.sentinels.length
  const sentinelOptions = {...options, clientName: `${options.clientName ?? 'shardctl'}-route`}
  const asks = route.sentinels.map(async (s) => {
    const key = instanceKey(s)
    let client
    try {
      client = await connectSentinel(s, {tls: target.tls, ...route.credentials}, sentinelOptions)
      return await viewOf(client, key, route.name)
    } catch (error) {
      return unreachableView(key, error as Error)
    } finally {
      await close(client)
    }
  })
  const {views, agreed} = await gatherViews(asks, total)
  if (!agreed) {
    const refused = views.find((v) => !v.reachable && /authentication failed/.test(v.error ?? ''))
    throw new ShardctlError(`cannot find the registry's master "${route.name}": ${disagreement(views, total)}`, {
      code: refused ? 'EAUTH' : 'ENOMAJORITY',
      hint: refused
        ? 'check SHARDCTL_SENTINEL_PASSWORD (and SHARDCTL_SENTINEL_USER)'
        : 'check the Sentinels named in the registry URL; during a failover this settles within seconds',
    })
  }
  const master = agreed.master
  let client
  try {
    client = await connect({...target, sentinel: undefined, host: master.host, port: master.port, db: 0}, options)
    const role = (await client.call('ROLE')) as unknown[]
    if (role[0] !== 'master') {
      throw new ShardctlError(`${instanceKey(master)}, the registry's master by the Sentinels, answers as a ${String(role[0])}`, {
        code: 'ENOTMASTER',
        hint: 'a failover is under way: this settles within seconds',
      })
    }
  } finally {
    await close(client)
  }
  return master
}

/** Failures worth waiting out (a failover under way), rather than reported at once. */
function isTransient(error: ShardctlError): boolean {
  return error.code !== 'EAUTH' && error.code !== 'ETLS' && error.code !== 'EPROTOCOL'
}

/**
 * An ioredis connector that connects to the master findMaster finds. The first
 * connection gives up after the connect timeout; later ones (reconnections after a
 * lost connection) keep trying while the client lives, each command bounded by its
 * own timeout meanwhile.
 */
function masterConnector(target: ConnectTarget, options: ConnectOptions) {
  return class MasterConnector extends AbstractConnector {
    private connectedOnce = false

    private readonly redisOptions: RedisOptions

    constructor(redisOptions: unknown) {
      super((redisOptions as RedisOptions).disconnectTimeout ?? 2000)
      this.redisOptions = redisOptions as RedisOptions
    }

    async connect(): Promise<NonNullable<AbstractConnector['stream']>> {
      this.connecting = true
      const deadline = this.connectedOnce ? Infinity : Date.now() + options.timeoutMs
      let master: Endpoint
      for (;;) {
        try {
          master = await findMaster(target, options)
          break
        } catch (error) {
          const failure = error as ShardctlError
          if (!this.connecting) throw new Error('Connection is closed.')
          if (!isTransient(failure) || Date.now() + RETRY_MS > deadline) throw failure
          await sleep(RETRY_MS)
          if (!this.connecting) throw new Error('Connection is closed.')
        }
      }
      this.connectedOnce = true
      // Where the client is now: for messages, and for a caller that must not act on the registry's own instance.
      this.redisOptions.host = master.host
      this.redisOptions.port = master.port
      const stream = target.tls
        ? tlsConnect({host: master.host, port: master.port, ...tlsOptions(master.host, options.tls)})
        : netConnect({host: master.host, port: master.port})
      stream.once('error', (error) => {
        this.firstError = error
      })
      this.stream = stream
      return stream
    }
  }
}

/** The ioredis options that make a client follow the registry's master through Sentinel. */
export function followTheMaster(target: ConnectTarget, options: ConnectOptions): Partial<RedisOptions> {
  return {
    Connector: masterConnector(target, options),
    // Reconnect (through the Sentinels) after a lost connection...
    retryStrategy: () => RETRY_MS,
    // ...holding the commands issued meanwhile, each bounded by commandTimeout...
    enableOfflineQueue: true,
    // ...while a command in flight when the connection dropped fails at once, never sent twice.
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
  }
}

/** The registry in messages: the master it is connected to, and the name it is found by. */
export function describeMaster(target: ConnectTarget, client: Redis): string {
  const {host, port} = client.options
  const at = host ? `${instanceKey({host, port: port ?? 0})}, ` : ''
  return `the registry (${at}master "${target.sentinel!.name}" via Sentinel)`
}

import {createConnection, isIP} from 'node:net'
import {type ConnectionOptions} from 'node:tls'

import {Redis, type RedisOptions} from 'ioredis'

import {ExitCode, ShardctlError, usageError} from '../errors.js'
import {luaScripts} from '../lua/scripts.generated.js'
import {type ConnectTarget, endpointOf, instanceKey} from '../registry/address.js'
import {cutConnectionsNamed} from './clients.js'

/** TLS material, read once; used for every connection whose target asks for TLS. */
export interface TlsSettings {
  ca?: Buffer
  cert?: Buffer
  key?: Buffer
  /** Skip certificate verification (warned about by the caller). */
  insecure?: boolean
}

export interface ConnectOptions {
  /** Connect and command timeout, in milliseconds. */
  timeoutMs: number
  tls?: TlsSettings
  /** A name shown in `CLIENT LIST`, so an operator can see who is connected. */
  clientName?: string
  /** Prefix the host to the instance's own error replies too (instance connections; the registry's are interpreted). */
  nameHostInReplies?: boolean
  /**
   * For bulk transfers (a restore's copy sends thousands of commands a second): no timer
   * per command; a server that stops answering is still noticed by the socket timeout.
   */
  bulk?: boolean
  /** What the host is, for messages: "Sentinel" for a Sentinel. */
  kind?: string
}

export const DEFAULT_TIMEOUT_MS = 5000

/** What the registry's Lua scripts look like on a client. */
export type ScriptedRedis = Redis & {
  apply(numKeys: number, ...args: (string | number | Buffer)[]): Promise<number>
  assign(...args: string[]): Promise<string[]>
  lockAcquire(key: string, value: string, leaseMs: string, deadValue: string): Promise<'OK' | [string, number]>
  lockRenew(key: string, value: string, leaseMs: string): Promise<number>
  journal(lockKey: string, journalKey: string, lockValue: string, json: string, leaseMs: string): Promise<string>
  flushDbs(numKeys: number, ...dbs: string[]): Promise<number>
  countMap(map: string, cursor: string, count: string): Promise<string[]>
  dumpKeysBuffer(numKeys: number, ...keys: Buffer[]): Promise<(Buffer | number | null)[]>
  stageOnceBuffer(key: string, ...pairs: (string | Buffer)[]): Promise<Buffer | null>
}

/** The options of a TLS connection to `host`: for ioredis and for the raw sockets of the replication client. */
export function tlsOptions(host: string, tls: TlsSettings | undefined): ConnectionOptions {
  return {
    ca: tls?.ca,
    cert: tls?.cert,
    key: tls?.key,
    rejectUnauthorized: !tls?.insecure,
    // Verify an IP address against the certificate's IP names, not as a host name.
    ...(isIP(host) ? {} : {servername: host}),
  }
}

/**
 * One way to open a Redis connection for a command-line tool: fail fast instead of
 * retrying forever, never queue commands while offline, and report the real cause
 * (ECONNREFUSED, WRONGPASS, ...) together with the host it came from.
 */
export async function connect(target: ConnectTarget, options: ConnectOptions): Promise<ScriptedRedis> {
  // Loaded only for a registry behind Sentinel: the master is found at each connection.
  const throughSentinel = target.sentinel ? await import('../sentinel/route.js') : undefined
  const redisOptions: RedisOptions = {
    host: target.host,
    port: target.port,
    db: target.db,
    username: target.username,
    password: target.password,
    tls: target.tls ? tlsOptions(target.host, options.tls) : undefined,
    protocol: 2,
    lazyConnect: true,
    connectTimeout: options.timeoutMs,
    commandTimeout: options.bulk ? undefined : options.timeoutMs,
    socketTimeout: options.timeoutMs,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    enableReadyCheck: false,
    retryStrategy: () => null,
    reconnectOnError: () => false,
    connectionName: options.clientName ?? 'shardctl',
    ...throughSentinel?.followTheMaster(target, options),
  }
  const client = new Redis(redisOptions) as ScriptedRedis
  const where = () => (target.sentinel ? throughSentinel!.describeMaster(target, client) : describeHost(target, options))
  let cause: Error | undefined
  client.on('error', (error: Error) => {
    cause ??= error
  })
  try {
    await client.connect()
    // Proves the credentials too: AUTH failures surface here, with the host, not on a later command.
    await client.ping()
  } catch (error) {
    client.disconnect()
    const why = cause ?? (error as Error)
    // Through Sentinel, the route says what failed (no majority, a master that is a replica...).
    if (why instanceof ShardctlError) throw why
    throw target.tls && !target.sentinel ? await tlsFailure(target, why, options) : unreachable(target, why, options.kind)
  }
  if (target.db > 0) {
    // ioredis selects the database on connect but only reports a refusal as an event,
    // and the connection stays on db 0: ask again, and say it plainly when it does not exist.
    try {
      await client.select(target.db)
    } catch (error) {
      const message = (error as Error).message
      if (/out of range/i.test(message)) {
        const reply = (await client.config('GET', 'databases').catch(() => [])) as string[]
        client.disconnect()
        const has = reply[1] === undefined ? '' : ` (it has ${reply[1]}: 0 to ${Number(reply[1]) - 1})`
        throw usageError(
          `database ${target.db} does not exist on ${where()}${has}`,
          'the part after / is a database number below the instance\'s "databases" setting',
        )
      }
      client.disconnect()
      throw unreachable(target, error as Error, options.kind)
    }
  }
  for (const [name, script] of Object.entries(luaScripts)) {
    client.defineCommand(name, {lua: script.lua, numberOfKeys: script.numberOfKeys})
  }
  nameTheHost(client, where, options)
  return client
}

function describeHost(target: {host: string; port: number}, options: Pick<ConnectOptions, 'kind'>): string {
  return options.kind ? `${options.kind} ${instanceKey(target)}` : instanceKey(target)
}

/**
 * Make every failure of a command say which host it came from: ioredis says only
 * "Command timed out" or "Connection is closed." (SPEC §4.5). Pipelines and MULTI
 * (which pass a stream) keep their per-command results; their callers name the host.
 */
function nameTheHost(client: Redis, where: () => string, options: ConnectOptions): void {
  const send = client.sendCommand.bind(client)
  client.sendCommand = (command: {name: string}, stream?: unknown, node?: unknown) => {
    const reply = (send as (c: unknown, s?: unknown, n?: unknown) => Promise<unknown>)(command, stream, node)
    if (stream !== undefined) return reply
    return reply.catch((error: Error) => {
      throw commandFailed(error, where(), command.name, options)
    })
  }
}

/** A failed command as one line naming the host; the instance's own reply stays readable in it. */
export function commandFailed(
  error: Error,
  where: string,
  command: string,
  options: Pick<ConnectOptions, 'timeoutMs' | 'nameHostInReplies'>,
): Error {
  if (error instanceof ShardctlError) return error
  const name = command.toUpperCase()
  if (/^Command timed out/.test(error.message)) {
    return new ShardctlError(`${where} did not answer ${name} within ${options.timeoutMs} ms`, {
      code: 'ETIMEOUT',
      hint: 'check that the host is up and not overloaded, or raise --timeout',
      cause: error,
    })
  }
  // MaxRetriesPerRequestError: a connection that reconnects by itself (through Sentinel) lost this command.
  if (
    error.message === 'Connection is closed.' ||
    /Stream isn't writeable/.test(error.message) ||
    error.name === 'MaxRetriesPerRequestError'
  ) {
    return new ShardctlError(`lost the connection to ${where} (during ${name})`, {
      code: 'ECONNLOST',
      hint: 'check that the host is up',
      cause: error,
    })
  }
  if (options.nameHostInReplies && error.name === 'ReplyError') {
    const named = new Error(`${where} refused ${name}: ${error.message}`, {cause: error})
    named.name = 'ReplyError'
    return named
  }
  return error
}

/**
 * Open again, in place, a connection that died: its host went silent past the timeout
 * or dropped it, and (retryStrategy: null) ioredis never reconnects by itself. Only on
 * request, never by itself: a run that lost its lock must not come back through a
 * connection its successor cut, so the caller proves its lock right after. Once open,
 * the run's older connections to that server are cut (see cutEarlierSelves).
 */
export async function reopen(client: ScriptedRedis): Promise<void> {
  if (client.status !== 'end' && client.status !== 'close') return
  const where = {host: client.options.host ?? '', port: client.options.port ?? 0}
  let cause: Error | undefined
  const onError = (error: Error) => {
    cause ??= error
  }
  client.on('error', onError)
  try {
    await client.connect()
    await client.ping()
  } catch (error) {
    if (client.status !== 'end') client.disconnect()
    throw unreachable(where, cause ?? (error as Error))
  } finally {
    client.off('error', onError)
  }
  await cutEarlierSelves(client)
}

/**
 * On a connection just opened again: cut every other connection of the same name on
 * that server (this run's: connections are named after the run's lock). A command
 * sent on a connection before it died may still wait, unread, in the server's input
 * (a host that was frozen reads it when it wakes up); it must never run after the
 * facts read on the new connection. Once cut, it never will. Without the rights to
 * list and kill clients (a restricted ACL user), the old connection is only closed on
 * this side.
 */
async function cutEarlierSelves(client: ScriptedRedis): Promise<void> {
  const name = client.options.connectionName
  if (!name) return
  try {
    await cutConnectionsNamed(client, name, Number(await client.call('CLIENT', 'ID')))
  } catch (error) {
    if ((error as Error).name !== 'ReplyError') throw error
  }
}

/** Close a client without leaving the process waiting on it. */
export async function close(client: Redis | undefined): Promise<void> {
  if (!client || client.status === 'end') return
  if (client.status !== 'ready') {
    client.disconnect()
    return
  }
  try {
    await client.quit()
  } catch {
    client.disconnect()
  }
}

/**
 * A TLS connection that failed without a clear reason (no answer within the timeout, a
 * reset): most often a server that does not speak TLS on that port, which waits for a
 * newline in the handshake's bytes. Said as a TLS failure, and proven where it answers
 * plain Redis; a refused connection, an unknown host or a refused password are what they are.
 */
async function tlsFailure(target: {host: string; port: number}, cause: Error, options: ConnectOptions): Promise<ShardctlError> {
  const {kind} = describeCause(cause)
  if (kind !== 'timeout' && kind !== 'other') return unreachable(target, cause, options.kind)
  const where = describeHost(target, options)
  const failed = kind === 'timeout' ? `did not complete within ${options.timeoutMs} ms` : `failed (${cause.message})`
  const plain = await answersPlainRedis(target, Math.min(options.timeoutMs, 1000))
  return new ShardctlError(
    plain
      ? `the TLS handshake with ${where} ${failed}: it speaks plain Redis, not TLS`
      : `the TLS handshake with ${where} ${failed}: the server may not speak TLS on this port`,
    {
      code: 'ETLS',
      exitCode: ExitCode.unexpected,
      hint: plain
        ? 'use redis:// (for instances: --no-instance-tls), or the port where it speaks TLS'
        : 'check that this port speaks TLS (tls-port in redis.conf), or raise --timeout',
      cause,
    },
  )
}

/** Whether a server answers a plain PING (with PONG, or an error such as NOAUTH) within `ms`. */
function answersPlainRedis(target: {host: string; port: number}, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({host: target.host, port: target.port})
    const done = (answer: boolean) => {
      clearTimeout(timer)
      socket.destroy()
      resolve(answer)
    }
    const timer = setTimeout(() => done(false), ms)
    socket.on('connect', () => socket.write('PING\r\n'))
    socket.on('data', (data: Buffer) => done(data[0] === 0x2b || data[0] === 0x2d)) // "+" or "-"
    socket.on('error', () => done(false))
  })
}

/** Why a connection failed, in words that say what is true (a refused connection is not slow). */
export function unreachable(target: {host: string; port: number}, cause: Error, hostKind?: string): ShardctlError {
  const where = describeHost(target, {kind: hostKind})
  const {kind, text} = describeCause(cause)
  const say = (message: string, code: string, hint: string) =>
    new ShardctlError(message, {code, exitCode: ExitCode.unexpected, hint, cause})
  switch (kind) {
    case 'auth': {
      return say(
        `authentication failed for ${where}: ${text}`,
        'EAUTH',
        hostKind === 'Sentinel'
          ? 'it answers: check SHARDCTL_SENTINEL_PASSWORD (and SHARDCTL_SENTINEL_USER)'
          : 'it answers: check the username and password for this instance',
      )
    }
    case 'protocol': {
      return say(`${where} does not speak the Redis protocol (${text})`, 'EPROTOCOL', 'check the port: another service listens there')
    }
    case 'timeout': {
      return say(`cannot reach ${where}: timed out`, 'EUNREACHABLE', 'check that the host is up and not overloaded, or raise --timeout')
    }
    case 'refused': {
      return say(
        `cannot reach ${where}: connection refused`,
        'EUNREACHABLE',
        'nothing listens there: check that redis-server runs and the address and port are right',
      )
    }
    case 'dns': {
      return say(`cannot reach ${where}: host name not found`, 'EUNREACHABLE', 'check the host name')
    }
    case 'tls': {
      return say(
        `cannot reach ${where}: ${text}`,
        'ETLS',
        'check --tls-ca (and --tls-cert/--tls-key), or whether this instance speaks TLS at all',
      )
    }
    default: {
      return say(`cannot reach ${where}: ${text}`, 'EUNREACHABLE', 'check that the host is up and the address is right')
    }
  }
}

function describeCause(error: Error & {code?: string}): {
  kind: 'auth' | 'protocol' | 'timeout' | 'refused' | 'dns' | 'tls' | 'other'
  text: string
} {
  const message = error.message.replace(/^ReplyError: /, '').split('\n')[0]
  if (/WRONGPASS|NOAUTH|NOPERM|invalid password|invalid username-password/i.test(message)) return {kind: 'auth', text: message}
  if (/Protocol error|unexpected reply|unknown reply|Unknown RESP type|ERR unknown command 'HELLO'/i.test(message))
    return {kind: 'protocol', text: message.replace(/\. Please report this\.$/, '')}
  if (error.code === 'ECONNREFUSED') return {kind: 'refused', text: 'connection refused'}
  if (error.code === 'ENOTFOUND' || error.code === 'EAI_AGAIN') return {kind: 'dns', text: 'host name not found'}
  if (error.code === 'ETIMEDOUT' || /timed? ?out/i.test(message)) return {kind: 'timeout', text: 'timed out'}
  if (error.code === 'EHOSTUNREACH' || error.code === 'ENETUNREACH') return {kind: 'other', text: 'host unreachable'}
  if (/certificate|self.signed|SSL|TLS|ssl3_|wrong version number/i.test(`${error.code ?? ''} ${message}`))
    return {kind: 'tls', text: `TLS failed (${message})`}
  return {kind: 'other', text: message}
}

/**
 * Connections to shard instances, one per instance (never one per shard: a hundred
 * shards on one instance share a socket). Every client is closed by closeAll().
 */
export class ConnectionPool {
  private readonly clients = new Map<string, Promise<ScriptedRedis>>()

  constructor(
    private readonly options: ConnectOptions,
    private readonly credentials: (target: {host: string; port: number}) => Omit<ConnectTarget, 'host' | 'port' | 'db'> = () => ({}),
  ) {}

  /** The instance's connection, on db 0; callers address dbs with SELECT in a pipeline or MULTI. */
  get(instance: {host: string; port: number}): Promise<ScriptedRedis> {
    const key = instanceKey(instance)
    let client = this.clients.get(key)
    if (!client) {
      client = this.open(instance)
      this.clients.set(key, client)
    }
    return client
  }

  private open(instance: {host: string; port: number}): Promise<ScriptedRedis> {
    return connect(
      {...this.credentials(instance), host: instance.host, port: instance.port, db: 0},
      {...this.options, nameHostInReplies: true},
    )
  }

  /**
   * Open afresh, in parallel, every connection that failed or died (a connection never
   * comes back by itself: see reopen), cutting the run's older connections on each
   * server. For a run that heals an operation, at the start of each attempt, before it
   * proves its lock again. One that still cannot be opened stays failed, for get() to
   * report; the dead client objects stay dead.
   */
  async revive(): Promise<void> {
    await Promise.all(
      [...this.clients].map(async ([key, pending]) => {
        const client = await pending.catch(() => undefined)
        if (client?.status === 'ready') return
        const fresh = this.open(endpointOf(key)).then(async (c) => {
          await cutEarlierSelves(c).catch(async (error: Error) => {
            await close(c)
            throw error
          })
          return c
        })
        this.clients.set(key, fresh)
        await fresh.catch(() => undefined)
      }),
    )
  }

  /**
   * A connection of its own (a subscriber, a blocking command), with the pool's
   * credentials and options, also closed by closeAll().
   */
  dedicated(instance: {host: string; port: number}, overrides: Partial<ConnectOptions> = {}): Promise<ScriptedRedis> {
    const client = connect(
      {...this.credentials(instance), host: instance.host, port: instance.port, db: 0},
      {...this.options, nameHostInReplies: true, ...overrides},
    )
    this.extra.add(client)
    return client
  }

  private readonly extra = new Set<Promise<ScriptedRedis>>()

  /** The credentials this pool uses for an instance (for a command one instance sends another: MIGRATE). */
  credentialsOf(instance: {host: string; port: number}): Omit<ConnectTarget, 'host' | 'port' | 'db'> {
    return this.credentials(instance)
  }

  async closeAll(): Promise<void> {
    const pending = [...this.clients.values(), ...this.extra]
    this.clients.clear()
    this.extra.clear()
    await Promise.all(pending.map(async (p) => close(await p.catch(() => undefined))))
  }
}

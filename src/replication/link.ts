import {type Socket, connect as netConnect} from 'node:net'
import {connect as tlsConnect} from 'node:tls'

import {ShardctlError} from '../errors.js'
import {type TlsSettings, commandFailed, tlsOptions, unreachable} from '../fleet/connect.js'
import {type ConnectTarget, instanceKey} from '../registry/address.js'

/**
 * A raw socket to a Redis master, for the part of the replication protocol that a client
 * library cannot speak: after SYNC or PSYNC the master stops answering in RESP and sends a
 * snapshot, then its replication stream. This module opens the socket (TCP or TLS, as
 * src/fleet/connect.ts targets say), authenticates, and exchanges the handshake's one-line
 * replies; then it hands the socket over (`takeOver`) to the snapshot taker or the replica
 * client, with any bytes it had already read.
 */

export interface LinkOptions {
  /** Connect and handshake timeout, in milliseconds (a reply not given within it fails). */
  timeoutMs: number
  tls?: TlsSettings
  /** Abandon the link: the socket is closed and whatever waits on it fails. */
  signal?: AbortSignal
}

/** One-line replies only: the handshake never gets anything else. */
type Reply = {ok: string} | {error: string}

export class ReplicationLink {
  private buffered: Buffer = Buffer.alloc(0)
  private waiting: {resolve: (reply: Reply) => void; reject: (error: Error) => void; name: string}[] = []
  private failure: Error | undefined
  private closed = false
  private taken = false
  private failureListener: ((error: Error) => void) | undefined
  /** What the link is doing, for messages: "the snapshot", "the replication stream". */
  phase = 'the handshake'

  private constructor(
    readonly socket: Socket,
    readonly where: string,
    private readonly options: LinkOptions,
  ) {
    socket.on('data', this.onData)
    socket.on('close', () => {
      if (this.closed) return
      this.fail(commandFailed(new Error('Connection is closed.'), where, this.current(), options))
    })
    socket.on('timeout', () => {
      if (!this.taken) this.fail(commandFailed(new Error('Command timed out'), where, this.current(), options))
      else this.fail(this.silence())
    })
    socket.setTimeout(options.timeoutMs)
  }

  /** Connect and authenticate. Fails with one line naming the host: refused, timed out, wrong password, TLS. */
  static async open(target: ConnectTarget, options: LinkOptions): Promise<ReplicationLink> {
    const where = instanceKey(target)
    options.signal?.throwIfAborted()
    const socket = await new Promise<Socket>((resolve, reject) => {
      const socket = target.tls
        ? tlsConnect({host: target.host, port: target.port, ...tlsOptions(target.host, options.tls)})
        : netConnect({host: target.host, port: target.port})
      const timer = setTimeout(() => {
        socket.destroy()
        reject(unreachable(target, Object.assign(new Error('timed out'), {code: 'ETIMEDOUT'})))
      }, options.timeoutMs)
      socket.once(target.tls ? 'secureConnect' : 'connect', () => {
        clearTimeout(timer)
        socket.removeAllListeners('error')
        resolve(socket)
      })
      socket.once('error', (error) => {
        clearTimeout(timer)
        socket.destroy()
        reject(unreachable(target, error))
      })
    })
    socket.setNoDelay(true)
    const link = new ReplicationLink(socket, where, options)
    socket.on('error', (error) => link.fail(unreachable(target, error)))
    if (options.signal) {
      const abort = () => link.fail(new ShardctlError(`stopped reading from ${where}`, {code: 'EABORTED'}))
      options.signal.addEventListener('abort', abort, {once: true})
      socket.once('close', () => options.signal?.removeEventListener('abort', abort))
    }
    if (target.password !== undefined) {
      const args = target.username === undefined ? ['AUTH', target.password] : ['AUTH', target.username, target.password]
      const reply = await link.call(args)
      if ('error' in reply) {
        link.close()
        throw unreachable(target, new Error(reply.error))
      }
    }
    return link
  }

  /** Send a command and wait for its one-line reply; a refusal is returned, not thrown (some are not fatal). */
  call(args: string[]): Promise<Reply> {
    if (this.failure) return Promise.reject(this.failure)
    return new Promise<Reply>((resolve, reject) => {
      this.waiting.push({resolve, reject, name: args[0] === 'REPLCONF' ? `REPLCONF ${args[1]}` : args[0]})
      this.send(args)
    })
  }

  /** Send a command whose reply is not awaited (SYNC, PSYNC, REPLCONF ACK). */
  send(args: string[]): void {
    if (!this.failure && !this.closed) this.socket.write(encodeCommand(args))
  }

  /** A refusal as one line naming the host and the command, the instance's own words kept. */
  refused(command: string, reply: {error: string}): Error {
    const error = new Error(reply.error)
    error.name = 'ReplyError'
    return commandFailed(error, this.where, command, {...this.options, nameHostInReplies: true})
  }

  /**
   * Hand the socket's bytes over: from now on `onBytes` receives them (the bytes read past
   * the last handshake reply first), `onFailure` hears of a lost connection, an idle
   * timeout or an abort, and the handshake's timeout no longer applies.
   */
  takeOver(phase: string, handlers: {onBytes: (chunk: Buffer) => void; onFailure: (error: Error) => void}): void {
    this.taken = true
    this.phase = phase
    this.failureListener = handlers.onFailure
    this.socket.removeListener('data', this.onData)
    this.socket.setTimeout(0)
    const rest = this.buffered
    this.buffered = Buffer.alloc(0)
    if (this.failure) {
      handlers.onFailure(this.failure)
      return
    }
    this.socket.on('data', handlers.onBytes)
    if (rest.length > 0) handlers.onBytes(rest)
  }

  /**
   * Fail when the master sends nothing for `ms` (0: never). Masters send keep-alives (a
   * newline each second before the snapshot, a PING every repl-ping-replica-period after),
   * so silence means a dead link. Only while reading: a link paused by back-pressure is
   * silent by our own choice.
   */
  idleTimeout(ms: number): void {
    this.idleMs = ms
    this.socket.setTimeout(ms)
  }

  private idleMs = 0

  private silence(): ShardctlError {
    const ms = this.idleMs
    return new ShardctlError(`${this.where} sent nothing for ${ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`} during ${this.phase}`, {
      code: 'ETIMEOUT',
      hint: 'check that the host is up and not overloaded',
    })
  }

  /** Close the socket on purpose: no failure is reported. */
  close(): void {
    this.closed = true
    this.socket.destroy()
  }

  /** Fail whatever waits, once, and close the socket. */
  fail(error: Error): void {
    if (this.failure || this.closed) return
    this.failure = error
    for (const waiter of this.waiting.splice(0)) waiter.reject(error)
    this.socket.destroy()
    this.failureListener?.(error)
  }

  private current(): string {
    return this.taken ? this.phase : (this.waiting[0]?.name ?? this.phase)
  }

  private readonly onData = (chunk: Buffer): void => {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk])
    for (;;) {
      const newline = this.buffered.indexOf(0x0a)
      if (newline === -1 || this.waiting.length === 0) break
      const line = this.buffered.subarray(0, newline).toString('utf8').replace(/\r$/, '')
      this.buffered = this.buffered.subarray(newline + 1)
      const waiter = this.waiting.shift()!
      if (line.startsWith('+')) waiter.resolve({ok: line.slice(1)})
      else if (line.startsWith('-')) waiter.resolve({error: line.slice(1)})
      else {
        this.fail(
          new ShardctlError(`${this.where} does not speak the Redis protocol (it answered ${JSON.stringify(line.slice(0, 40))})`, {
            code: 'EPROTOCOL',
            hint: 'check the port: another service listens there',
          }),
        )
        return
      }
    }
    if (this.buffered.length > 64 * 1024)
      this.fail(new ShardctlError(`${this.where} sent more than a reply to the handshake`, {code: 'EPROTOCOL'}))
  }
}

/** A command in RESP, as a client sends it: an array of bulk strings. */
export function encodeCommand(args: (string | Buffer)[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)]
  for (const arg of args) {
    const bytes = typeof arg === 'string' ? Buffer.from(arg) : arg
    parts.push(Buffer.from(`$${bytes.length}\r\n`), bytes, Buffer.from('\r\n'))
  }
  return Buffer.concat(parts)
}

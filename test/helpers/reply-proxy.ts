import {type Server, type Socket, createServer, connect} from 'node:net'

import {CommandParser, ReplyParser} from '../../src/copy/resp.js'

/**
 * A redis-server seen through a loopback proxy that passes every byte as it is, except
 * the replies to the commands `rewrite` picks: for a command (its name, upper case), a
 * function from the reply's bytes to the bytes the client gets instead, or undefined to
 * leave it alone.
 */
export interface ReplyProxy {
  port: number
  close: () => Promise<void>
}

export type ClockProxy = ReplyProxy

export async function startReplyProxy(
  redisPort: number,
  rewrite: (command: string) => ((reply: Buffer) => Buffer) | undefined,
): Promise<ReplyProxy> {
  const sockets = new Set<Socket>()
  const server: Server = createServer((client) => {
    const upstream = connect(redisPort, '127.0.0.1')
    sockets.add(client).add(upstream)
    // What to do with each reply, in the order of the commands sent: replies come in that order.
    const pending: (((reply: Buffer) => Buffer) | undefined)[] = []
    const commands = new CommandParser((args) => {
      if (args.length > 0) pending.push(rewrite(args[0].toString('latin1').toUpperCase()))
    })
    const replies = new ReplyParser((_reply, bytes) => {
      const change = pending.shift()
      client.write(change ? change(bytes) : bytes)
    })
    client.on('data', (chunk) => {
      commands.feed(chunk)
      upstream.write(chunk)
    })
    upstream.on('data', (chunk) => replies.feed(chunk))
    const end = () => {
      client.destroy()
      upstream.destroy()
      sockets.delete(client)
      sockets.delete(upstream)
    }
    for (const socket of [client, upstream]) {
      socket.on('close', end)
      socket.on('error', end)
    }
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const {port} = server.address() as {port: number}
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      }),
  }
}

/**
 * A redis-server seen through a loopback proxy whose clock is `shiftMs` off: the replies
 * to TIME are moved by the shift. (libfaketime cannot run Debian's redis-server: its
 * jemalloc calls clock_gettime before libfaketime is ready, and the server never starts.)
 */
export async function startClockProxy(redisPort: number, shiftMs: number): Promise<ClockProxy> {
  return startReplyProxy(redisPort, (command) => (command === 'TIME' ? (reply) => shifted(reply, shiftMs) : undefined))
}

/** A TIME reply (*2, seconds, microseconds) moved by `shiftMs`. */
function shifted(reply: Buffer, shiftMs: number): Buffer {
  const [seconds, micros] = reply
    .toString('latin1')
    .split('\r\n')
    .filter((line) => /^\d+$/.test(line))
    .map(BigInt)
  const at = seconds * 1_000_000n + micros + BigInt(Math.round(shiftMs * 1000))
  const s = String(at / 1_000_000n)
  const us = String(at % 1_000_000n)
  return Buffer.from(`*2\r\n$${s.length}\r\n${s}\r\n$${us.length}\r\n${us}\r\n`, 'latin1')
}

import {type Server, type Socket, createServer, connect} from 'node:net'

import {CommandParser, ReplyParser} from '../../src/copy/resp.js'

/**
 * A redis-server seen through a loopback proxy whose clock is `shiftMs` off: every byte
 * passes as it is, except the replies to TIME, moved by the shift. (libfaketime cannot
 * run Debian's redis-server: its jemalloc calls clock_gettime before libfaketime is
 * ready, and the server never starts.)
 */
export interface ClockProxy {
  port: number
  close: () => Promise<void>
}

export async function startClockProxy(redisPort: number, shiftMs: number): Promise<ClockProxy> {
  const sockets = new Set<Socket>()
  const server: Server = createServer((client) => {
    const upstream = connect(redisPort, '127.0.0.1')
    sockets.add(client).add(upstream)
    // Which of the commands sent, in order, are TIME: their replies come in the same order.
    const isTime: boolean[] = []
    const commands = new CommandParser((args) => {
      if (args.length > 0) isTime.push(args[0].toString('latin1').toUpperCase() === 'TIME')
    })
    const replies = new ReplyParser((_reply, bytes) => client.write(isTime.shift() ? shifted(bytes, shiftMs) : bytes))
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

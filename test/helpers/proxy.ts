import {type Server, type Socket, createServer, connect} from 'node:net'

/**
 * Failure injection on the wire, for the faults a real network and a busy registry
 * bring: a TCP proxy in front of a real redis-server whose replies can be delayed or
 * held back, and a host that accepts connections and never answers.
 */

export interface ReplyDelayProxy {
  port: number
  /** Every reply from now on reaches the client this much later (order kept). */
  delayMs: number
  /** Hold every reply from now on until release() (a stalled registry). */
  stall: () => void
  release: () => void
  /** Hold every reply for `ms` from now, then let them all through: a registry answering seconds late, once. */
  stallFor: (ms: number) => void
  /** Every reply chunk passes through this first (a test's hook to alter the bytes, or to stall at a precise point). */
  transform?: (chunk: Buffer) => Buffer
  close: () => Promise<void>
}

/** Start a proxy on a free loopback port that forwards to 127.0.0.1:targetPort. */
export async function startReplyDelayProxy(targetPort: number): Promise<ReplyDelayProxy> {
  const sockets = new Set<Socket>()
  let stalled = false
  const held: (() => void)[] = []
  const proxy: ReplyDelayProxy = {
    port: 0,
    delayMs: 0,
    stall() {
      stalled = true
    },
    release() {
      stalled = false
      for (const send of held.splice(0)) send()
    },
    stallFor(ms: number) {
      proxy.stall()
      setTimeout(() => proxy.release(), ms)
    },
    close: () => closeServer(server, sockets),
  }
  const server = createServer((client) => {
    const upstream = connect(targetPort, '127.0.0.1')
    sockets.add(client).add(upstream)
    client.on('data', (chunk) => upstream.write(chunk))
    // Each reply chunk leaves no earlier than the one before it: delays never reorder.
    let lastSend = 0
    upstream.on('data', (received: Buffer) => {
      const chunk = proxy.transform ? proxy.transform(received) : received
      const send = () => {
        if (!client.destroyed && !client.writableEnded) client.write(chunk)
      }
      if (stalled) {
        held.push(send)
        return
      }
      const at = Math.max(Date.now() + proxy.delayMs, lastSend)
      lastSend = at
      if (at <= Date.now() && held.length === 0) send()
      else setTimeout(send, at - Date.now())
    })
    const end = () => {
      client.destroy()
      upstream.destroy()
    }
    client.on('close', end).on('error', end)
    upstream.on('error', end)
    // The server closed (a replica's snapshot sent in full): what is on its way to a slow client still arrives.
    upstream.on('close', () => client.end())
  })
  proxy.port = await listen(server)
  return proxy
}

/**
 * A host that accepts connections, reads everything, and never answers (the worst
 * kind), or answers every read with `reply` (another service on a Redis port).
 */
export async function startSilentServer(reply?: string): Promise<{port: number; close: () => Promise<void>}> {
  const sockets = new Set<Socket>()
  const server = createServer((socket) => {
    sockets.add(socket)
    socket.on('data', () => {
      if (reply !== undefined && !socket.destroyed) socket.write(reply)
    })
    socket.on('error', () => undefined)
  })
  return {port: await listen(server), close: () => closeServer(server, sockets)}
}

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return (server.address() as {port: number}).port
}

async function closeServer(server: Server, sockets: Set<Socket>): Promise<void> {
  for (const socket of sockets) socket.destroy()
  sockets.clear()
  await new Promise<void>((resolve) => server.close(() => resolve()))
}

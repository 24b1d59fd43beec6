import {mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {Redis} from 'ioredis'

import {parseInfo, parseReplication} from '../../src/fleet/info.js'
import {reachesOffset, waitForStreaming as streaming} from '../../src/fleet/replication.js'
import {type RedisProcess, freePort, portIsFree, startRedis, stopRedis} from '../../src/sandbox/redis-process.js'

/**
 * Real redis-server processes for tests: free loopback ports, a temp directory each,
 * always stopped (by the test's own cleanup, and by the root hook as a last resort).
 */

const running = new Set<TestServer>()

export interface TestServer extends RedisProcess {
  url: string
  address: (db?: number) => string
  client: (db?: number) => Redis
  stop: () => Promise<void>
}

const clients = new Set<Redis>()

export async function startServer(args: string[] = []): Promise<TestServer> {
  for (let attempt = 0; ; attempt++) {
    const port = await freePort()
    const dir = mkdtempSync(join(tmpdir(), `shardctl-test-${port}-`))
    try {
      const proc = await startRedis({port, dir, args})
      const server: TestServer = {
        ...proc,
        url: `redis://127.0.0.1:${port}/0`,
        address: (db = 0) => `127.0.0.1:${port}/${db}`,
        client(db = 0) {
          const client = new Redis({port, host: '127.0.0.1', db, protocol: 2, maxRetriesPerRequest: 1, lazyConnect: false})
          client.on('error', () => undefined) // a server stopped on purpose is not news
          clients.add(client)
          return client
        },
        async stop() {
          running.delete(server)
          // The server as it is now: restarted, it has another pid (see test/helpers/sentinel.ts).
          await stopRedis(server)
          rmSync(dir, {recursive: true, force: true})
        },
      }
      running.add(server)
      return server
    } catch (error) {
      rmSync(dir, {recursive: true, force: true})
      // Another process may have taken the port between freePort() and the start.
      if (attempt >= 3) throw error
    }
  }
}

/** A master with `replicas` replicas, each proven to apply the live stream. */
export async function startReplicated(replicas: number, args: string[] = []): Promise<{master: TestServer; replicas: TestServer[]}> {
  const master = await startServer(args)
  const followers = await Promise.all(
    Array.from({length: replicas}, () => startServer([...args, '--replicaof', '127.0.0.1', String(master.port)])),
  )
  for (const replica of followers) await waitForStreaming(replica, master)
  return {master, replicas: followers}
}

/**
 * Wait until `replica` applies what `master` sends now: the product's own readiness
 * rule (a link that is up is not yet streaming after a diskless sync).
 */
export async function waitForStreaming(replica: TestServer, master: TestServer): Promise<void> {
  const ok = await withClients([replica, master], ([r, m]) => streaming(m, r, Date.now() + 60_000))
  if (!ok) throw new Error(`replica on ${replica.port} never applied the stream of ${master.port}`)
}

/** Wait until `replica` has processed everything `master` has sent so far. */
export async function waitForCatchUp(replica: TestServer, master: TestServer): Promise<void> {
  const ok = await withClients([replica, master], async ([r, m]) =>
    reachesOffset(r, parseReplication(parseInfo(await m.info('replication'))).offset, Date.now() + 60_000),
  )
  if (!ok) throw new Error(`replica on ${replica.port} never caught up with ${master.port}`)
}

/** Clients on db 0 of some servers for the length of `fn`. */
export async function withClients<T>(servers: TestServer[], fn: (clients: Redis[]) => Promise<T>): Promise<T> {
  const opened = servers.map((s) => s.client())
  try {
    return await fn(opened)
  } finally {
    for (const c of opened) {
      c.disconnect()
      clients.delete(c)
    }
  }
}

export async function stopAll(): Promise<void> {
  for (const client of clients) client.disconnect()
  clients.clear()
  await Promise.all([...running].map((s) => s.stop()))
}

/**
 * Stop every redis-server whose working directory is under `dir`: what a command
 * under test started there (split --spawn), even when the test failed before it
 * learned the pids.
 */
export async function stopServersIn(dir: string): Promise<void> {
  const found: {pid: number; port: number}[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const cwd = readlinkSync(`/proc/${entry}/cwd`).replace(/ \(deleted\)$/, '')
      const port = /redis-server\S*\s+\S*:(\d+)/.exec(readFileSync(`/proc/${entry}/cmdline`, 'utf8').replaceAll('\0', ' '))?.[1]
      if (port !== undefined && (cwd === dir || cwd.startsWith(`${dir}/`))) found.push({pid: Number(entry), port: Number(port)})
    } catch {
      // gone, or not ours to read
    }
  }
  await Promise.all(found.map((p) => stopRedis(p)))
}

/** Every key of a Redis db with its type and content: compare before/after to prove "no change". */
export async function dumpDb(client: Redis): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {}
  const keys = (await client.keys('*')).sort()
  for (const key of keys) {
    const type = await client.type(key)
    if (type === 'hash') out[key] = {type, value: await client.hgetall(key)}
    else if (type === 'zset') out[key] = {type, value: await client.zrange(key, '0', '-1', 'WITHSCORES')}
    else if (type === 'list') out[key] = {type, value: await client.lrange(key, 0, -1)}
    else if (type === 'string') out[key] = {type, value: await client.get(key)}
    else if (type === 'set') out[key] = {type, value: (await client.smembers(key)).sort()}
    else out[key] = {type}
  }
  return out
}

/** A run of consecutive ports that are all free now (below the ephemeral range, where other tests' servers are). */
export async function freeRange(count: number): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const start = 20_000 + ((await freePort()) % 12_000)
    const free = await Promise.all(Array.from({length: count}, (_, i) => portIsFree(start + i)))
    if (free.every(Boolean)) return start
  }
  throw new Error(`no ${count} consecutive free ports`)
}

import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {Redis} from 'ioredis'

import {parseInfo, parseReplication} from '../../src/fleet/info.js'
import {type RedisProcess, freePort, startRedis, stopRedis} from '../../src/sandbox/redis-process.js'

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
          await stopRedis(proc)
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

/** A master with `replicas` replicas, links up. */
export async function startReplicated(replicas: number, args: string[] = []): Promise<{master: TestServer; replicas: TestServer[]}> {
  const master = await startServer(args)
  const followers = await Promise.all(
    Array.from({length: replicas}, () => startServer([...args, '--replicaof', '127.0.0.1', String(master.port)])),
  )
  for (const replica of followers) await waitForLink(replica)
  return {master, replicas: followers}
}

export async function waitForLink(server: TestServer): Promise<void> {
  const client = server.client()
  try {
    for (let i = 0; i < 1000; i++) {
      if (parseReplication(parseInfo(await client.info('replication'))).linkUp) return
      await sleep(20)
    }
    throw new Error(`replica on ${server.port} never linked up`)
  } finally {
    client.disconnect()
    clients.delete(client)
  }
}

export async function stopAll(): Promise<void> {
  for (const client of clients) client.disconnect()
  clients.clear()
  await Promise.all([...running].map((s) => s.stop()))
}

/** Every key of a Redis db with its type and content: compare before/after to prove "no change". */
export async function dumpDb(client: Redis): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {}
  const keys = (await client.keys('*')).sort()
  for (const key of keys) {
    const type = await client.type(key)
    if (type === 'hash') out[key] = {type, value: await client.hgetall(key)}
    else if (type === 'zset') out[key] = {type, value: await client.zrange(key, 0, -1, 'WITHSCORES')}
    else if (type === 'list') out[key] = {type, value: await client.lrange(key, 0, -1)}
    else if (type === 'string') out[key] = {type, value: await client.get(key)}
    else if (type === 'set') out[key] = {type, value: (await client.smembers(key)).sort()}
    else out[key] = {type}
  }
  return out
}

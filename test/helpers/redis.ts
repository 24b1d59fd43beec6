import {mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {Redis} from 'ioredis'

import {parseInfo, parseReplication} from '../../src/fleet/info.js'
import {reachesOffset, waitForStreaming as streaming} from '../../src/fleet/replication.js'
import {isStopped} from './cli.js'
import {type RedisProcess, freePort, isAlive, portIsFree, startRedis, stopRedis} from '../../src/sandbox/redis-process.js'

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

/**
 * Servers that the tests of one describe share, made as good as new before each test: starting
 * a server (and syncing its replicas) costs more than putting one back. `layout[i]` is the
 * index of the server that server i replicates, or null for a master. Before each test
 * (`fresh()`), every server has the settings it started with, no data, no paused or connected
 * clients, and each replica streams from its master again (resynced only if a test broke its
 * link). A server that a test stopped, killed, froze or changed beyond that (ACL users, its
 * append-only file) is started afresh instead; so is any server whose reset fails. `args`:
 * the redis-server arguments every one of them starts with.
 */
export interface SharedServers {
  fresh: () => Promise<TestServer[]>
  /** How many servers were started, and how many resets took the place of a start. */
  readonly counts: {started: number; reset: number}
}

/** How long a reset replica may take to stream again before it is started afresh instead. */
const RESYNC_MS = 15_000

/** Settings that follow from the role, set back by REPLICAOF rather than CONFIG SET. */
const ROLE_SETTINGS = new Set(['replicaof', 'slaveof'])

export function useSharedServers(layout: (number | null)[], args: string[] = []): SharedServers {
  const servers: (TestServer | undefined)[] = layout.map(() => undefined)
  const baselines = new Map<TestServer, {config: Map<string, string>; acl: string[]}>()
  const counts = {started: 0, reset: 0}

  async function start(i: number): Promise<TestServer> {
    const of = layout[i]
    const server = await startServer(of === null ? args : [...args, '--replicaof', '127.0.0.1', String(servers[of]!.port)])
    counts.started++
    const baseline = await withClients([server], async ([c]) => ({
      config: pairs(await c.config('GET', '*')),
      acl: (await c.call('ACL', 'LIST')) as string[],
    }))
    baselines.set(server, baseline)
    servers[i] = server
    return server
  }

  /** Put a live server back as it started; false if it cannot be (then it is started afresh). */
  async function reset(server: TestServer, masterPort: number | undefined): Promise<boolean> {
    if (!isAlive(server.pid) || isStopped(server.pid)) return false
    const baseline = baselines.get(server)!
    const c = new Redis({
      port: server.port,
      host: '127.0.0.1',
      protocol: 2,
      commandTimeout: 5000,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    })
    c.on('error', () => undefined)
    try {
      if (JSON.stringify(await c.call('ACL', 'LIST')) !== JSON.stringify(baseline.acl)) return false
      await c.call('CLIENT', 'UNPAUSE')
      const now = pairs(await c.config('GET', '*'))
      const changed = [...baseline.config].filter(([k, v]) => !ROLE_SETTINGS.has(k) && now.get(k) !== v).flat()
      // An append-only file switched back on is rewritten in the background: a start is cleaner.
      if (changed.includes('appendonly')) return false
      if (changed.length > 0) await c.config('SET', ...(changed as [string, string]))
      const info = parseReplication(parseInfo(await c.info('replication')))
      if (masterPort === undefined) {
        if (info.role !== 'master') await c.replicaof('NO', 'ONE')
        await c.flushall()
        await c.call('FUNCTION', 'FLUSH')
      } else if (info.role !== 'slave' || info.masterPort !== masterPort || !info.linkUp) {
        await c.replicaof('127.0.0.1', masterPort)
      }
      await c.call('SCRIPT', 'FLUSH')
      await c.config('RESETSTAT')
      await c.call('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes')
      await c.call('CLIENT', 'KILL', 'TYPE', 'pubsub')
      return true
    } catch {
      return false
    } finally {
      c.disconnect()
    }
  }

  async function fresh(): Promise<TestServer[]> {
    // Masters first: a replica is reset against its master's (possibly new) port.
    const order = layout.map((of, i) => ({of, i})).sort((a, b) => Number(a.of !== null) - Number(b.of !== null))
    for (const {of, i} of order) {
      const server = servers[i]
      const masterPort = of === null ? undefined : servers[of]!.port
      if (server && (await reset(server, masterPort))) {
        counts.reset++
        continue
      }
      if (server) await server.stop()
      await start(i)
    }
    for (const [i, of] of layout.entries()) {
      if (of === null) continue
      const [replica, master] = [servers[i]!, servers[of]!]
      if (await withClients([replica, master], ([r, m]) => streaming(m, r, Date.now() + RESYNC_MS))) continue
      // A link a test broke that does not come back (seen once, on a loaded machine): a start.
      const state = await withClients([replica], async ([c]) => (await c.info('replication')).replace(/\s+/g, ' ').trim())
      process.stderr.write(
        `shared replica on ${replica.port} did not stream from ${master.port} after its reset (${state}): started afresh\n`,
      )
      await replica.stop()
      await waitForStreaming(await start(i), master)
    }
    // Whatever a test left behind is gone, everywhere (a replica's copy included). A server that
    // persists saves now: its last save and the changes since count from here, as from a start.
    for (const server of servers) {
      const config = baselines.get(server!)!.config
      await withClients([server!], async ([c]) => {
        const keyspace = (await c.info('keyspace')).split('\n').filter((l) => /^db\d+:/.test(l))
        if (keyspace.length > 0) throw new Error(`server on ${server!.port} still holds data after its reset: ${keyspace.join(' ')}`)
        if (config.get('save') !== '' || config.get('appendonly') === 'yes') await c.save()
      })
    }
    return servers as TestServer[]
  }

  after(async () => {
    if (process.env.SHARDCTL_TEST_TIMES === '1') process.stderr.write(`shared servers: ${counts.started} started, ${counts.reset} reset\n`)
    await Promise.all(servers.filter((s) => s !== undefined).map((s) => s.stop()))
  })
  return {fresh, counts}
}

function pairs(flat: string[]): Map<string, string> {
  const map = new Map<string, string>()
  for (let i = 0; i + 1 < flat.length; i += 2) map.set(flat[i], flat[i + 1])
  return map
}

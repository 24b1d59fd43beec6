import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {Redis} from 'ioredis'

import {type RedisProcess, freePort, startRedis, startSentinel, stopRedis} from '../../src/sandbox/redis-process.js'
import {until} from './cli.js'
import {type TestServer} from './redis.js'

/**
 * Real Redis Sentinels for tests: each on a free loopback port, with a configuration
 * file of its own (a Sentinel rewrites it), started once per test file and shared by
 * its tests. Small timings, so that a failover takes seconds; every wait is on a
 * condition Sentinel reports (num-other-sentinels, num-slaves, its master address).
 */

/** Timings for tests: a master is down after 1 s, a failover may take 3 s before it is retried. */
export const TEST_TIMINGS = {downAfterMs: 1000, failoverTimeoutMs: 3000}

export interface TestSentinel extends RedisProcess {
  address: string
  /** A fresh client (closed by the caller or at the end of the file). */
  client: () => Redis
  /** SIGSTOP / SIGCONT: a Sentinel frozen in the middle of things, then back with its stale view. */
  pause: () => void
  resume: () => void
  paused?: boolean
  stop: () => Promise<void>
}

export interface SentinelSet {
  sentinels: TestSentinel[]
  /** `--sentinel host:port` for each. */
  flags: () => string[]
  /** The registry URL of a master monitored under `name`. */
  url: (name: string, db?: number) => string
  /** MONITOR `name` on every Sentinel, by hand (as an operator would for the registry itself). */
  monitor: (name: string, master: TestServer, quorum?: number) => Promise<void>
  /** Wait until every (running) Sentinel knows the others and at least `replicas` replicas of `name`. */
  settled: (name: string, replicas: number) => Promise<void>
  /** Wait until every running Sentinel names `port` as the master of `name`. */
  agreeOn: (name: string, port: number) => Promise<void>
  /** REMOVE `name` wherever it is monitored. */
  forget: (name: string) => Promise<void>
  stop: () => Promise<void>
}

const clients = new Set<Redis>()

export async function startSentinels(count = 3, config: string[] = []): Promise<SentinelSet> {
  const sentinels: TestSentinel[] = []
  for (let i = 0; i < count; i++) sentinels.push(await startTestSentinel(config))
  const running = () => sentinels.filter((s) => !s.paused)
  const ask = async <T>(s: TestSentinel, fn: (c: Redis) => Promise<T>): Promise<T> => {
    const c = s.client()
    try {
      return await fn(c)
    } finally {
      c.disconnect()
      clients.delete(c)
    }
  }
  const set: SentinelSet = {
    sentinels,
    flags: () => sentinels.flatMap((s) => ['--sentinel', s.address]),
    url: (name, db = 0) => `redis+sentinel://${sentinels.map((s) => s.address).join(',')}/${name}/${db}`,
    async monitor(name, master, quorum = 2) {
      for (const s of sentinels) {
        await ask(s, async (c) => {
          await c.call('SENTINEL', 'MONITOR', name, '127.0.0.1', String(master.port), String(quorum))
          await c.call(
            'SENTINEL',
            'SET',
            name,
            'down-after-milliseconds',
            String(TEST_TIMINGS.downAfterMs),
            'failover-timeout',
            String(TEST_TIMINGS.failoverTimeoutMs),
          )
        })
      }
    },
    async settled(name, replicas) {
      await until(`every Sentinel knows the others and ${replicas} replicas of ${name}`, async () => {
        for (const s of running()) {
          const fields = await ask(s, (c) => c.call('SENTINEL', 'MASTER', name)).catch(() => [])
          const f = flat(fields)
          if (Number(f['num-other-sentinels']) < sentinels.length - 1 || Number(f['num-slaves']) < replicas) return false
        }
        return true
      })
    },
    async agreeOn(name, port) {
      await until(`every running Sentinel names port ${port} as the master of ${name}`, async () => {
        for (const s of running()) {
          const addr = (await ask(s, (c) => c.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', name)).catch(() => null)) as string[] | null
          if (addr?.[1] !== String(port)) return false
        }
        return true
      })
    },
    async forget(name) {
      for (const s of running()) await ask(s, (c) => c.call('SENTINEL', 'REMOVE', name)).catch(() => undefined)
    },
    async stop() {
      await Promise.all(sentinels.map((s) => s.stop()))
    },
  }
  return set
}

/** Start a set for the test file (before) and stop it (after). */
export function useSentinels(count = 3): SentinelSet {
  const set = {} as SentinelSet
  before(async () => {
    Object.assign(set, await startSentinels(count))
  })
  after(async () => {
    for (const c of clients) c.disconnect()
    clients.clear()
    await set.stop?.()
  })
  return set
}

async function startTestSentinel(config: string[]): Promise<TestSentinel> {
  for (let attempt = 0; ; attempt++) {
    const port = await freePort()
    const dir = mkdtempSync(join(tmpdir(), `shardctl-sentinel-${port}-`))
    try {
      const proc = await startSentinel({port, dir, config})
      const sentinel: TestSentinel = {
        ...proc,
        address: `127.0.0.1:${port}`,
        client() {
          const password = /^requirepass (.*)$/.exec(config.find((l) => l.startsWith('requirepass ')) ?? '')?.[1]
          const client = new Redis({port, host: '127.0.0.1', protocol: 2, maxRetriesPerRequest: 1, lazyConnect: false, password})
          client.on('error', () => undefined)
          clients.add(client)
          return client
        },
        pause() {
          sentinel.paused = true
          process.kill(sentinel.pid, 'SIGSTOP')
        },
        resume() {
          sentinel.paused = false
          process.kill(sentinel.pid, 'SIGCONT')
        },
        async stop() {
          if (sentinel.paused) sentinel.resume()
          await stopRedis(sentinel)
          rmSync(dir, {recursive: true, force: true})
        },
      }
      return sentinel
    } catch (error) {
      rmSync(dir, {recursive: true, force: true})
      if (attempt >= 3) throw error
    }
  }
}

function flat(reply: unknown): Record<string, string> {
  const out: Record<string, string> = {}
  if (!Array.isArray(reply)) return out
  for (let i = 0; i + 1 < reply.length; i += 2) out[String(reply[i])] = String(reply[i + 1])
  return out
}

/** kill -9: the server dies as a crashed machine would, with no chance to tell anyone. */
export function killHard(server: TestServer): void {
  process.kill(server.pid, 'SIGKILL')
}

/** Start a killed server again on its port and directory (its data as the crash left it). */
export async function restart(server: TestServer, args: string[] = []): Promise<void> {
  await until(`the killed server on ${server.port} is gone`, () => {
    try {
      process.kill(server.pid, 0)
      return false
    } catch {
      return true
    }
  })
  // While the port was closed, another process's outgoing connection may have been given it
  // as its own local port (clients retrying this very server can even connect to themselves):
  // such a connection ends soon, so the start is tried again for a while.
  for (let attempt = 1; ; attempt++) {
    try {
      server.pid = (await startRedis({port: server.port, dir: server.dir, args})).pid
      return
    } catch (error) {
      if (attempt >= 20) throw error
      await new Promise((resolve) => setTimeout(resolve, 250))
    }
  }
}

/** A client an application would use for a registry behind Sentinel (ioredis's own Sentinel support). */
export function sentinelClient(set: SentinelSet, name: string): Redis {
  const client = new Redis({
    sentinels: set.sentinels.map((s) => ({host: '127.0.0.1', port: s.port})),
    name,
    protocol: 2,
    sentinelRetryStrategy: () => 50,
    retryStrategy: () => 50,
    // An application waits out a registry failover rather than failing its requests.
    maxRetriesPerRequest: null,
  })
  client.on('error', () => undefined)
  clients.add(client)
  return client
}

/** Which port a server listens on, as Sentinel names it: what a client of the instance sees. */
export async function roleOfPort(port: number): Promise<string> {
  const c = new Redis({port, host: '127.0.0.1', protocol: 2, maxRetriesPerRequest: 0, retryStrategy: () => null, lazyConnect: true})
  c.on('error', () => undefined)
  try {
    await c.connect()
    return String(((await c.call('ROLE')) as unknown[])[0])
  } catch {
    return 'down'
  } finally {
    c.disconnect()
  }
}

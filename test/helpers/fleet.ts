import type {Redis} from 'ioredis'

import {type TestServer, dumpDb, startReplicated, startServer} from './redis.js'

/**
 * A registry and some shard instances for one test file: started before its tests,
 * stopped after them; the registry is emptied before each test.
 */
export interface TestFleet {
  registry: TestServer
  /** A client on the registry's db 0. */
  reg: Redis
  instances: {master: TestServer; replicas: TestServer[]}[]
  /** Registry flags for a command. */
  r: () => string[]
  /** The registry's whole content, to prove a command changed nothing. */
  dump: () => Promise<Record<string, unknown>>
}

export function useFleet(options: {instances?: number; replicas?: number} = {}): TestFleet {
  const fleet = {instances: []} as unknown as TestFleet
  before(async () => {
    fleet.registry = await startServer()
    fleet.reg = fleet.registry.client()
    fleet.instances = await Promise.all(Array.from({length: options.instances ?? 0}, () => startReplicated(options.replicas ?? 0)))
    fleet.r = () => ['-r', fleet.registry.url]
    fleet.dump = () => dumpDb(fleet.reg)
  })
  beforeEach(async () => {
    await fleet.reg.flushall()
  })
  after(async () => {
    fleet.reg?.disconnect()
    await Promise.all([fleet.registry, ...fleet.instances.flatMap((i) => [i.master, ...i.replicas])].map((s) => s?.stop()))
  })
  return fleet
}

export {startServer}

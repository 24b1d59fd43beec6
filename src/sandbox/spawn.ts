import {mkdirSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {homedir} from 'node:os'
import {join} from 'node:path'

import type {Redis} from 'ioredis'

import {copiedSettings} from '../fleet/instance.js'
import {parseInstance} from '../registry/address.js'
import {type RedisProcess, freePort, portIsFree, startRedis, stopRedis} from './redis-process.js'
import {usageError} from '../errors.js'

/**
 * Start new local redis-server instances for a split, with the source's settings
 * (databases, memory limit, persistence), detached so they outlive the command.
 */
export interface SpawnOptions {
  /** The target's port, then its replicas' (see spawnPorts). */
  ports: number[]
  dir?: string
}

/**
 * The ports a --spawn will take, decided before the plan so that the plan names them:
 * from `first` on (the replicas take the next ones), or free ports; refused when busy.
 */
export async function spawnPorts(first: number | undefined, replicas: number): Promise<number[]> {
  const ports: number[] = []
  for (let i = 0; i <= replicas; i++) {
    const port = first === undefined ? await freePort() : first + i
    if (!(await portIsFree(port))) throw usageError(`port ${port} is in use`, 'choose another --port')
    ports.push(port)
  }
  return ports
}

export interface Spawned {
  target: RedisProcess
  replicas: RedisProcess[]
}

export function defaultSpawnDir(): string {
  return process.env.SHARDCTL_SPAWN_DIR ?? join(homedir(), '.shardctl', 'instances')
}

export async function spawnLike(source: Redis, options: SpawnOptions): Promise<Spawned> {
  const [first, ...rest] = options.ports
  const settings = await copiedSettings(source, {withReplicas: rest.length > 0})
  const dir = options.dir ?? defaultSpawnDir()
  const start = (port: number, extra: string[] = []) =>
    startRedis({port, dir: join(dir, String(port)), args: [...settings, ...extra], detached: true})
  const target = await start(first)
  const replicas: RedisProcess[] = []
  try {
    for (const port of rest) replicas.push(await start(port, ['--replicaof', '127.0.0.1', String(first)]))
  } catch (error) {
    // Half started is not started: nothing is left running.
    for (const p of [target, ...replicas]) await stopRedis(p)
    throw error
  }
  return {target, replicas}
}

/** What --spawn started, recorded so it can be listed (sandbox:status) and stopped (sandbox:down). */
export interface SpawnedInstance {
  port: number
  pid: number
  dir: string
  startedAt: string
  /** The split it was started for: its source. */
  forSplitOf: string
}

/**
 * The one record of what --spawn started, in the default spawn directory whatever --dir
 * said for the data (each entry names its own): sandbox:status and sandbox:down read it.
 */
function recordFile(): string {
  return join(defaultSpawnDir(), 'spawned.json')
}

export function readSpawned(): SpawnedInstance[] {
  try {
    const parsed = JSON.parse(readFileSync(recordFile(), 'utf8')) as {instances?: SpawnedInstance[]}
    return Array.isArray(parsed.instances) ? parsed.instances : []
  } catch {
    return []
  }
}

function writeSpawned(instances: SpawnedInstance[]): void {
  mkdirSync(defaultSpawnDir(), {recursive: true})
  if (instances.length === 0) rmSync(recordFile(), {force: true})
  else writeFileSync(recordFile(), `${JSON.stringify({version: 1, instances}, null, 2)}\n`)
}

export function recordSpawned(instances: SpawnedInstance[]): void {
  const ports = new Set(instances.map((i) => i.port))
  writeSpawned([...readSpawned().filter((i) => !ports.has(i.port)), ...instances])
}

function forgetSpawned(ports: number[]): void {
  writeSpawned(readSpawned().filter((i) => !ports.includes(i.port)))
}

/**
 * The ports of what --spawn started for splits of the local instances on `ports`, and of
 * those instances in turn: what goes with a sandbox made of those instances.
 */
export function spawnedFor(ports: number[], all = readSpawned()): number[] {
  const chosen = new Set<number>()
  const sources = new Set(ports)
  const sourcePort = (i: SpawnedInstance) => {
    try {
      const source = parseInstance(i.forSplitOf)
      return source.host === '127.0.0.1' ? source.port : undefined
    } catch {
      return undefined
    }
  }
  for (let grew = true; grew;) {
    grew = false
    for (const i of all) {
      const port = sourcePort(i)
      if (!chosen.has(i.port) && port !== undefined && sources.has(port)) {
        chosen.add(i.port)
        sources.add(i.port)
        grew = true
      }
    }
  }
  return [...chosen]
}

/** Stop what --spawn started (all, or those on `ports`) and forget it; a reused pid is never signalled. */
export async function stopSpawned(ports?: number[]): Promise<number> {
  const chosen = readSpawned().filter((i) => ports === undefined || ports.includes(i.port))
  const results = await Promise.all(chosen.map((i) => stopRedis(i)))
  forgetSpawned(chosen.map((i) => i.port))
  return results.filter((r) => r === 'stopped').length
}

import {homedir} from 'node:os'
import {join} from 'node:path'

import type {Redis} from 'ioredis'

import {copiedSettings} from '../fleet/instance.js'
import {type RedisProcess, freePort, portIsFree, startRedis} from './redis-process.js'
import {usageError} from '../errors.js'

/**
 * Start new local redis-server instances for a split, with the source's settings
 * (databases, memory limit, persistence), detached so they outlive the command.
 */
export interface SpawnOptions {
  /** First port; the replicas take the next ones. Default: free ports. */
  port?: number
  dir?: string
  replicas: number
}

export interface Spawned {
  target: RedisProcess
  replicas: RedisProcess[]
}

export function defaultSpawnDir(): string {
  return process.env.SHARDCTL_SPAWN_DIR ?? join(homedir(), '.shardctl', 'instances')
}

export async function spawnLike(source: Redis, options: SpawnOptions): Promise<Spawned> {
  const settings = await copiedSettings(source, {withReplicas: options.replicas > 0})
  const ports: number[] = []
  for (let i = 0; i <= options.replicas; i++) {
    const port = options.port === undefined ? await freePort() : options.port + i
    if (!(await portIsFree(port))) throw usageError(`port ${port} is in use`, 'choose another --port')
    ports.push(port)
  }
  const dir = options.dir ?? defaultSpawnDir()
  const start = (port: number, extra: string[] = []) => startRedis({port, dir: join(dir, String(port)), args: [...settings, ...extra], detached: true})
  const target = await start(ports[0])
  const replicas: RedisProcess[] = []
  for (const port of ports.slice(1)) replicas.push(await start(port, ['--replicaof', '127.0.0.1', String(ports[0])]))
  return {target, replicas}
}

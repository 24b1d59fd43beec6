import {existsSync, mkdirSync, readFileSync, rmdirSync, rmSync, writeFileSync} from 'node:fs'
import {homedir} from 'node:os'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {ExitCode, ShardctlError, usageError} from '../errors.js'
import {ConnectionPool, close, connect} from '../fleet/connect.js'
import {parseInfo, parseReplication} from '../fleet/info.js'
import {Registry, currentActor} from '../registry/registry.js'
import {applyInit, planInit} from '../registry/manage.js'
import {registryKeys} from '../registry/schema.js'
import {type RedisProcess, isAlive, isOurRedis, portIsFree, startRedis, startSentinel, stopRedis} from './redis-process.js'
import {plural} from '../ui/terminal.js'

/**
 * A local fleet of real redis-server processes: one registry, N instances with R
 * replicas each, S shards spread over the instances' databases, and optionally
 * Sentinels with the fleet registered. Recorded in <dir>/sandbox.json so that
 * `sandbox:down` stops exactly these processes.
 */

export interface SandboxNode extends RedisProcess {
  role: 'registry' | 'master' | 'replica' | 'sentinel'
  /** For a replica: the port of its master. */
  replicaOf?: number
}

export interface SandboxState {
  version: 1
  dir: string
  prefix: string
  registryUrl: string
  createdAt: string
  nodes: SandboxNode[]
}

export interface SandboxOptions {
  dir: string
  basePort: number
  instances: number
  replicas: number
  shards: number
  /** Sentinels started beside the fleet, which is registered with them (0: none). */
  sentinels?: number
  prefix: string
  onProgress?: (message: string) => void
}

export function defaultSandboxDir(): string {
  return process.env.SHARDCTL_SANDBOX_DIR ?? join(homedir(), '.shardctl', 'sandbox')
}

const stateFile = (dir: string) => join(dir, 'sandbox.json')

export function readState(dir: string): SandboxState | undefined {
  const file = stateFile(dir)
  if (!existsSync(file)) return undefined
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as SandboxState
  } catch (error) {
    throw new ShardctlError(`${file} is not readable: ${(error as Error).message}`, {
      hint: 'remove it by hand once no sandbox process runs',
    })
  }
}

function writeState(state: SandboxState): void {
  writeFileSync(stateFile(state.dir), `${JSON.stringify(state, null, 2)}\n`)
}

export interface SandboxPlan {
  registry: number
  instances: {port: number; replicas: number[]}[]
  /** The Sentinels' ports, after the instances'. */
  sentinels: number[]
}

export function planPorts(options: Pick<SandboxOptions, 'basePort' | 'instances' | 'replicas' | 'sentinels'>): SandboxPlan {
  const instances = Array.from({length: options.instances}, (_, i) => {
    const port = options.basePort + 1 + i * (options.replicas + 1)
    return {port, replicas: Array.from({length: options.replicas}, (_, j) => port + 1 + j)}
  })
  const lastInstance = options.basePort + options.instances * (options.replicas + 1)
  const sentinels = Array.from({length: options.sentinels ?? 0}, (_, i) => lastInstance + 1 + i)
  const last = sentinels.at(-1) ?? lastInstance
  if (last > 65_535) throw usageError(`ports ${options.basePort}-${last} go beyond 65535`, 'choose a lower --port')
  return {registry: options.basePort, instances, sentinels}
}

/** How fast the sandbox's Sentinels act: a master is down after 5 s, so that killing one shows a failover soon. */
export const SANDBOX_SENTINEL_SETTINGS = {downAfterMs: 5000, failoverTimeoutMs: 15_000}

/**
 * What sandboxUp would start, refused as it would refuse: a sandbox already running from
 * the directory, or a port in use. The dry run says exactly this, so it never promises a
 * start the real run refuses.
 */
export async function planSandbox(
  options: Pick<SandboxOptions, 'dir' | 'basePort' | 'instances' | 'replicas' | 'sentinels'>,
): Promise<{plan: SandboxPlan; nodes: {role: SandboxNode['role']; port: number; replicaOf?: number}[]; existing?: SandboxState}> {
  const existing = readState(options.dir)
  if (existing && existing.nodes.some((n) => isAlive(n.pid) && isOurRedis(n.pid, n.port))) {
    throw new ShardctlError(`a sandbox already runs from ${options.dir}`, {
      code: 'EEXISTS',
      exitCode: ExitCode.usage,
      hint: 'see it with sandbox:status, or stop it with sandbox:down',
    })
  }
  const plan = planPorts(options)
  const nodes = [
    {role: 'registry' as const, port: plan.registry},
    ...plan.instances.flatMap((i) => [
      {role: 'master' as const, port: i.port},
      ...i.replicas.map((port) => ({role: 'replica' as const, port, replicaOf: i.port})),
    ]),
    ...plan.sentinels.map((port) => ({role: 'sentinel' as const, port})),
  ]
  for (const {port} of nodes) {
    if (!(await portIsFree(port))) throw usageError(`port ${port} is in use`, 'choose another --port base, or stop what runs there')
  }
  return {plan, nodes, existing}
}

export async function sandboxUp(options: SandboxOptions): Promise<SandboxState> {
  const {plan, nodes, existing} = await planSandbox(options)
  const ports = nodes.map((n) => n.port)
  if (existing) removeSandboxFiles(existing)
  mkdirSync(options.dir, {recursive: true})

  const state: SandboxState = {
    version: 1,
    dir: options.dir,
    prefix: options.prefix,
    registryUrl: `redis://127.0.0.1:${plan.registry}/0`,
    createdAt: new Date().toISOString(),
    nodes: [],
  }
  const databases = String(Math.max(16, Math.ceil(options.shards / Math.max(1, options.instances))))
  // Instances as production should run them, so that shards:check passes on a fresh
  // sandbox: an fsynced append-only file and RDB saves, and masters fenced by their
  // replicas (set on the replicas too, so a promoted one stays fenced).
  const instanceArgs = ['--databases', databases, '--appendonly', 'yes', '--appendfsync', 'everysec', '--save', '3600 1 300 100 60 10000']
  if (options.replicas > 0) instanceArgs.push('--min-replicas-to-write', '1', '--min-replicas-max-lag', '10')
  const start = async (port: number, role: SandboxNode['role'], replicaOf?: number) => {
    const args = role === 'registry' ? [] : [...instanceArgs]
    if (replicaOf !== undefined) args.push('--replicaof', '127.0.0.1', String(replicaOf))
    const proc = await startRedis({port, dir: join(options.dir, `${role}-${port}`), args, detached: true})
    // Recorded as soon as it runs: a failure further on still lets `down` stop it.
    state.nodes.push({...proc, role, replicaOf})
    writeState(state)
  }
  try {
    options.onProgress?.(`Starting ${plural(ports.length, 'redis-server process')} on ports ${ports[0]}-${ports.at(-1)}...`)
    await start(plan.registry, 'registry')
    for (const instance of plan.instances) {
      await start(instance.port, 'master')
      await Promise.all(instance.replicas.map((port) => start(port, 'replica', instance.port)))
    }
    for (const port of plan.sentinels) {
      const proc = await startSentinel({port, dir: join(options.dir, `sentinel-${port}`), detached: true})
      state.nodes.push({...proc, role: 'sentinel'})
      writeState(state)
    }
    await waitForReplicas(state.nodes)
    await registerShards(state, plan, options)
    if (plan.sentinels.length > 0 && options.shards > 0) {
      options.onProgress?.(`Registering the fleet with ${plan.sentinels.length} Sentinels...`)
      await registerWithSentinels(plan, options)
    }
  } catch (error) {
    options.onProgress?.('Start failed; stopping what was started.')
    await sandboxDown(options.dir)
    throw error
  }
  return state
}

/** Replicas report their link up before the sandbox is handed over (bounded). */
async function waitForReplicas(nodes: SandboxNode[]): Promise<void> {
  const deadline = Date.now() + 15_000
  for (const node of nodes.filter((n) => n.role === 'replica')) {
    const client = await connect({host: '127.0.0.1', port: node.port, db: 0}, {timeoutMs: 2000})
    try {
      while (Date.now() < deadline) {
        if (parseReplication(parseInfo(await client.info('replication'))).linkUp) break
        await sleep(25)
      }
    } finally {
      await close(client)
    }
  }
}

async function registerShards(state: SandboxState, plan: SandboxPlan, options: SandboxOptions): Promise<void> {
  if (options.shards === 0 || plan.instances.length === 0) return
  const client = await connect({host: '127.0.0.1', port: plan.registry, db: 0}, {timeoutMs: 5000})
  const pool = new ConnectionPool({timeoutMs: 5000})
  try {
    const registry = new Registry(client, registryKeys(options.prefix), currentActor('sandbox:up'))
    const per = Math.floor(options.shards / plan.instances.length)
    const extra = options.shards % plan.instances.length
    for (const [i, instance] of plan.instances.entries()) {
      const count = per + (i < extra ? 1 : 0)
      if (count === 0) continue
      const shards = await planInit(registry, pool, {
        instance: {host: '127.0.0.1', port: instance.port},
        replicas: instance.replicas.map((port) => ({host: '127.0.0.1', port})),
        count,
        firstDb: 0,
        idPrefix: 's',
        weight: 1,
      })
      await applyInit(registry, shards)
    }
  } finally {
    await close(client)
    await pool.closeAll()
  }
}

/** The fleet handed to the sandbox's Sentinels, as sentinel:register does it; CKQUORUM must pass. */
async function registerWithSentinels(plan: SandboxPlan, options: SandboxOptions): Promise<void> {
  const [{Sentinels}, {applyRegister, planRegister}] = await Promise.all([
    import('../sentinel/sentinels.js'),
    import('../sentinel/register.js'),
  ])
  const client = await connect({host: '127.0.0.1', port: plan.registry, db: 0}, {timeoutMs: 5000})
  const endpoints = plan.sentinels.map((port) => ({host: '127.0.0.1', port}))
  const sentinels = new Sentinels(endpoints, {}, {timeoutMs: 5000, clientName: 'shardctl-sandbox'})
  try {
    const registry = new Registry(client, registryKeys(options.prefix), currentActor('sandbox:up'))
    const request = {sentinels: endpoints, settings: SANDBOX_SENTINEL_SETTINGS, namePrefix: options.prefix, instanceCredentials: {}}
    const result = await applyRegister(registry, sentinels, await planRegister(registry, sentinels, request), {})
    const failed = result.quorum.filter((q) => !q.ok)
    if (failed.length > 0)
      throw new ShardctlError(
        `the sandbox's Sentinels cannot authorise a failover: ${failed.map((q) => `${q.group} (${q.message})`).join('; ')}`,
      )
  } finally {
    await close(client)
    await sentinels.close()
  }
}

export interface NodeStatus extends SandboxNode {
  running: boolean
}

export async function sandboxStatus(dir: string): Promise<{state?: SandboxState; nodes: NodeStatus[]}> {
  const state = readState(dir)
  if (!state) return {nodes: []}
  return {state, nodes: state.nodes.map((n) => ({...n, running: isAlive(n.pid) && isOurRedis(n.pid, n.port)}))}
}

export async function sandboxDown(dir: string, options: {keepData?: boolean} = {}): Promise<{stopped: number; dir: string}> {
  const state = readState(dir)
  if (!state) return {stopped: 0, dir}
  const results = await Promise.all(state.nodes.map((n) => stopRedis(n)))
  if (options.keepData) rmSync(stateFile(dir), {force: true})
  else removeSandboxFiles(state)
  return {stopped: results.filter((r) => r === 'stopped').length, dir}
}

/** Remove only what the sandbox created: --dir may be a folder that holds other things. */
function removeSandboxFiles(state: SandboxState): void {
  for (const node of state.nodes) rmSync(node.dir, {recursive: true, force: true})
  rmSync(stateFile(state.dir), {force: true})
  try {
    rmdirSync(state.dir)
  } catch {
    // not empty: it holds something of the user's
  }
}

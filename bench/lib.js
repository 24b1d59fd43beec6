// Shared helpers of the benchmarks: real redis-server processes (always stopped),
// timed child processes, redis-benchmark, the hash files, statistics, the machine.
import {execFileSync, spawn} from 'node:child_process'
import {closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {availableParallelism, cpus, loadavg, tmpdir, totalmem} from 'node:os'
import {dirname, join} from 'node:path'
import {fileURLToPath, pathToFileURL} from 'node:url'

import {close, connect} from '../dist/fleet/connect.js'
import {waitForStreaming} from '../dist/fleet/replication.js'
import {freePort, startRedis, stopRedis} from '../dist/sandbox/redis-process.js'

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
export const BIN = join(ROOT, 'bin', 'run.js')
const USAGE_PRELOAD = pathToFileURL(join(ROOT, 'bench', 'usage.js')).href

/** The registry map key under the default prefix (README: P.map). */
export const MAP_KEY = 'shards.map'

// ---------------------------------------------------------------------------
// Everything started here is recorded, so that cleanup() can always undo it.

const servers = new Set()
const children = new Set()
let scratchDir

/** A file in this run's temporary directory (hash lists, usage reports), removed by cleanup(). */
export function scratch(name) {
  scratchDir ??= mkdtempSync(join(tmpdir(), 'shardctl-bench-'))
  return join(scratchDir, name)
}

/** Stop every child and server this process started and remove its files. Safe to call twice. */
export async function cleanup() {
  for (const child of children) child.kill('SIGKILL')
  await stopServers([...servers])
  if (scratchDir) rmSync(scratchDir, {recursive: true, force: true})
  scratchDir = undefined
}

// ---------------------------------------------------------------------------
// redis-server processes: a free loopback port and an own mkdtemp directory each.

/** Start `count` redis-server processes with extra arguments, one after the other. */
export async function startServers(count, args = []) {
  const started = []
  for (let i = 0; i < count; i++) started.push(await startServer(args))
  return started
}

async function startServer(args) {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort()
    const dir = mkdtempSync(join(tmpdir(), `shardctl-bench-${port}-`))
    try {
      const proc = await startRedis({port, dir, args})
      const server = {...proc, address: `127.0.0.1:${port}`, url: `redis://127.0.0.1:${port}/0`}
      servers.add(server)
      return server
    } catch (error) {
      rmSync(dir, {recursive: true, force: true})
      // Someone may have taken the port between freePort() and the start.
      if (attempt === 3) throw error
    }
  }
}

/** Stop servers started by startServers (only those: stopRedis never signals a reused pid). */
export async function stopServers(list) {
  await Promise.all(
    list.map(async (server) => {
      servers.delete(server)
      await stopRedis(server)
      rmSync(server.dir, {recursive: true, force: true})
    }),
  )
}

/** Run fn with a connection to db 0 of a server, closed afterwards. */
export async function withRedis(server, fn) {
  const client = await connect({host: '127.0.0.1', port: server.port, db: 0}, {timeoutMs: 30_000, clientName: 'shardctl-bench'})
  try {
    return await fn(client)
  } finally {
    await close(client)
  }
}

/**
 * A registry and one instance with 128 databases holding 100 shards, registered
 * with shards:init in four groups of 25 with weights 1, 2, 3 and 4.
 */
export async function weightedRegistry() {
  const [registry] = await startServers(1)
  const [instance] = await startServers(1, ['--databases', '128'])
  for (let group = 0; group < 4; group++) {
    await shardctl([
      'shards:init',
      '--yes',
      '--registry',
      registry.url,
      '--instance',
      instance.address,
      '--count',
      '25',
      '--first-db',
      String(25 * group),
      '--weight',
      String(group + 1),
    ])
  }
  return {registry, servers: [registry, instance]}
}

/**
 * Server time per command since the last reset, from INFO commandstats:
 * {evalsha: {calls, usec}, hsetnx: ...}. `reset: true` zeroes the counters afterwards.
 */
export async function commandStats(server, {reset = false} = {}) {
  return withRedis(server, async (client) => {
    const stats = {}
    for (const [, name, calls, usec] of (await client.info('commandstats')).matchAll(/^cmdstat_(\S+?):calls=(\d+),usec=(\d+)/gm)) {
      stats[name] = {calls: Number(calls), usec: Number(usec)}
    }
    if (reset) await client.config('RESETSTAT')
    return stats
  })
}

// ---------------------------------------------------------------------------
// Timed processes.

/**
 * Run a command to its end. `ms` is the wall time from spawn to exit. `stdin` is a
 * file the child reads directly; `stdout: 'ignore'` sends its output to /dev/null.
 */
export function run(command, args, {stdin, stdout = 'pipe', env = process.env, timeoutMs = 300_000} = {}) {
  return new Promise((resolve, reject) => {
    const input = stdin === undefined ? 'ignore' : openSync(stdin, 'r')
    const start = process.hrtime.bigint()
    const child = spawn(command, args, {cwd: ROOT, env, stdio: [input, stdout, 'pipe']})
    if (typeof input === 'number') closeSync(input)
    children.add(child)
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    let out = ''
    let err = ''
    let ms
    child.stdout?.setEncoding('utf8').on('data', (chunk) => (out += chunk))
    child.stderr.setEncoding('utf8').on('data', (chunk) => (err += chunk))
    child.on('exit', () => (ms = Number(process.hrtime.bigint() - start) / 1e6))
    child.on('error', (error) => {
      clearTimeout(timer)
      children.delete(child)
      reject(error)
    })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      children.delete(child)
      resolve({ms, code, signal, stdout: out, stderr: err})
    })
  })
}

let usageReports = 0

/**
 * Run `node bin/run.js ...args` with the usage preload: adds the process's peak
 * memory (`maxRssMb`) and CPU time (`cpuMs`). Fails unless it exits 0.
 */
export async function shardctl(args, {stdin, stdout} = {}) {
  const usageFile = scratch(`usage-${++usageReports}.json`)
  const env = {...withoutShardctlVariables(process.env), BENCH_USAGE_FILE: usageFile}
  const result = await run(process.execPath, ['--import', USAGE_PRELOAD, BIN, ...args], {stdin, stdout, env})
  if (result.code !== 0)
    throw new Error(`shardctl ${args.join(' ')} exited ${result.code ?? result.signal}: ${result.stderr.trim() || result.stdout.trim()}`)
  const usage = JSON.parse(readFileSync(usageFile, 'utf8'))
  return {...result, maxRssMb: usage.maxRssKb / 1024, cpuMs: usage.cpuMs}
}

/** The flags of a split or move the benchmarks run: a short grace, no question, JSON out, the registry. */
export const operationFlags = (registry) => ['--grace', '100ms', '--yes', '--json', '--registry', registry.url]

/** The environment of a shardctl the benchmarks run: every setting is given as a flag. */
export const benchEnv = () => withoutShardctlVariables(process.env)

/** The benchmarks give every setting as a flag: SHARDCTL_* from the caller's shell must not interfere. */
function withoutShardctlVariables(env) {
  return Object.fromEntries(Object.entries(env).filter(([name]) => !name.startsWith('SHARDCTL_')))
}

/** Requests per second of `redis-benchmark -c 50 -P 64 -n <requests> -r <keyspace> <command...>`. */
export async function redisBenchmark(server, {requests, keyspace, command}) {
  const args = [
    '-h',
    '127.0.0.1',
    '-p',
    String(server.port),
    '-c',
    '50',
    '-P',
    '64',
    '-n',
    String(requests),
    '-r',
    String(keyspace),
    '--csv',
    ...command,
  ]
  const result = await run('redis-benchmark', args)
  // --csv: a header line, then "<command>","<rps>",...
  const rps = Number(/^"[^"]*","([\d.]+)"/m.exec(result.stdout)?.[1])
  if (result.code !== 0 || !(rps > 0))
    throw new Error(`redis-benchmark ${args.join(' ')} failed: ${result.stderr.trim() || result.stdout.trim()}`)
  return rps
}

// ---------------------------------------------------------------------------
// Inputs.

/**
 * A file of `count` distinct hashes, one per line: key:000000000000, key:000000000001, ...
 * The same shape as redis-benchmark's `key:__rand_int__`, so `-r <count>` hits exactly them.
 */
export function hashFile(count) {
  const file = scratch(`hashes-${count}.txt`)
  if (!existsSync(file)) {
    const lines = Array.from({length: count}, (_, i) => `key:${String(i).padStart(12, '0')}\n`)
    writeFileSync(file, lines.join(''))
  }
  return file
}

// ---------------------------------------------------------------------------
// Statistics and formatting.

export function median(values) {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

/** "0.41 (0.39–0.43)": the median and the range over the repetitions. */
export function spread(values, digits = 2) {
  const f = (v) => v.toFixed(digits)
  return `${f(median(values))} (${f(Math.min(...values))}–${f(Math.max(...values))})`
}

const formatCount = (n) => Math.round(n).toLocaleString('en-US')
export const formatRate = (perSecond) => `${formatCount(perSecond)}/s`
export const formatMs = (ms) => `${Math.round(ms)} ms`
export const formatMb = (mb) => `${Math.round(mb)} MB`

// ---------------------------------------------------------------------------
// The machine, for the report.

export function machine() {
  const cpuinfo = existsSync('/proc/cpuinfo') ? readFileSync('/proc/cpuinfo', 'utf8') : ''
  const redis = /v=(\S+)/.exec(execFileSync('redis-server', ['--version'], {encoding: 'utf8'}))?.[1] ?? 'unknown'
  return {
    cpu: /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1].trim() ?? cpus()[0]?.model ?? 'unknown',
    cores: availableParallelism(),
    memoryGb: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    redis,
    load: loadAverage(),
    commit: gitCommit(),
  }
}

/** "0.31 0.52 0.40": the 1, 5 and 15 minute load averages, where other work on the machine shows. */
export function loadAverage() {
  return loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')
}

/** The commit measured, and whether src/ differed from it. */
function gitCommit() {
  try {
    const git = (...args) => execFileSync('git', args, {cwd: ROOT, encoding: 'utf8'}).trim()
    const dirty = git('status', '--porcelain', '--', 'src') !== ''
    return `${git('rev-parse', '--short', 'HEAD')}${dirty ? ' with uncommitted changes in src/' : ''}`
  } catch {
    return 'unknown'
  }
}

// ---------------------------------------------------------------------------
// A paced writer: an application in miniature for the cut-over benchmarks.

/**
 * Writes at `perSecond` to the given shards, routed by the registry; on an error
 * (READONLY, a dropped connection) it re-reads the registry and retries the same
 * write. Measures the longest gap between two acknowledged writes while
 * `window()` is open (`maxGapEnded`: the performance.now() at its end), and keeps
 * every acknowledged key to check none was lost.
 */
export class PacedWriter {
  constructor(registryServer, shards, perSecond) {
    this.registryServer = registryServer
    this.shards = shards
    this.interval = 1000 / perSecond
    this.acked = []
    this.errors = 0
    this.clients = new Map()
  }

  async start() {
    this.registry = await connect(
      {host: '127.0.0.1', port: this.registryServer.port, db: 0},
      {timeoutMs: 30_000, clientName: 'bench-writer'},
    )
    // As an application server does: reload the routing on every registry event.
    this.events = this.registry.duplicate()
    await this.events.connect()
    await this.events.subscribe('shards._events')
    this.events.on('message', () => (this.routesVersion = (this.routesVersion ?? 0) + 1))
    this.running = true
    this.loop = this.run()
  }

  /** Open a measuring window; returns a function that closes it and gives the longest gap in ms. */
  window() {
    this.maxGap = 0
    this.measuring = true
    return () => {
      this.measuring = false
      return this.maxGap
    }
  }

  async route(shard) {
    const master = await this.registry.hget(`${MAP_KEY.split('.')[0]}.${shard}`, 'master')
    const [, host, port, db] = /^(.+):(\d+)\/(\d+)$/.exec(master)
    const key = `${host}:${port}/${db}`
    if (!this.clients.has(key)) {
      const {Redis} = await import('ioredis')
      const client = new Redis({host, port: Number(port), db: Number(db), protocol: 2, maxRetriesPerRequest: 0, retryStrategy: () => 20})
      client.on('error', () => undefined)
      this.clients.set(key, client)
    }
    return this.clients.get(key)
  }

  async run() {
    const routes = new Map()
    let seq = 0
    let last = performance.now()
    const begin = performance.now()
    let version = this.routesVersion
    while (this.running) {
      if (this.routesVersion !== version) {
        version = this.routesVersion
        routes.clear()
      }
      const shard = this.shards[seq % this.shards.length]
      const key = `bench:${seq}`
      for (;;) {
        try {
          if (!routes.has(shard)) routes.set(shard, await this.route(shard))
          await routes.get(shard).set(key, 'x')
          break
        } catch {
          this.errors++
          routes.delete(shard)
          await new Promise((r) => setTimeout(r, 1))
          if (!this.running) return
        }
      }
      const now = performance.now()
      if (this.measuring && now - last > this.maxGap) {
        this.maxGap = now - last
        this.maxGapEnded = now
      }
      last = now
      this.acked.push([shard, key])
      seq++
      const due = begin + seq * this.interval
      if (due > now) await new Promise((r) => setTimeout(r, due - now))
    }
  }

  async stop() {
    this.running = false
    await this.loop
    for (const client of this.clients.values()) client.disconnect()
    this.clients.clear()
  }

  /** Acknowledged writes missing where the registry now routes their shard. */
  async lost() {
    let lost = 0
    const byShard = new Map()
    for (const [shard, key] of this.acked) byShard.set(shard, [...(byShard.get(shard) ?? []), key])
    for (const [shard, keys] of byShard) {
      const client = await this.route(shard)
      for (let i = 0; i < keys.length; i += 1000) lost += keys.slice(i, i + 1000).length - (await client.exists(...keys.slice(i, i + 1000)))
    }
    this.events.disconnect()
    await close(this.registry)
    for (const client of this.clients.values()) client.disconnect()
    return lost
  }
}

/**
 * Wait until a replica has its full copy and applies the live stream: the product's
 * own readiness rule (a write made after the link came up reaches it).
 */
export async function waitForSync(replica, master, {timeoutMs = 600_000} = {}) {
  const ok = await withRedis(replica, (r) => withRedis(master, (m) => waitForStreaming(m, r, Date.now() + timeoutMs)))
  if (!ok) throw new Error(`127.0.0.1:${replica.port} did not sync within ${timeoutMs} ms`)
}

import {mkdirSync, readFileSync, writeFileSync} from 'node:fs'
import {createServer} from 'node:net'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {ExitCode, ShardctlError} from '../errors.js'
import {close, connect} from '../fleet/connect.js'

/**
 * Starting and stopping local redis-server processes: for `sandbox:*`, for
 * `shards:split --spawn`, and for the test helpers. Each process gets its own
 * directory (two instances sharing one would load each other's dump.rdb).
 */

export interface RedisProcess {
  port: number
  pid: number
  dir: string
}

export interface StartOptions {
  port: number
  dir: string
  /** Extra redis-server arguments, e.g. ['--replicaof', '127.0.0.1', '7001']. */
  args?: string[]
  /** A configuration file read first (settings that must not show in the process list: a password). */
  configFile?: string
  /** Outlive this process (sandbox); otherwise the child dies with it (tests). */
  detached?: boolean
  /** How long to wait for the server to answer PING. */
  readyTimeoutMs?: number
  /** Told the server's pid as soon as it is spawned, before it answers (to tie its life to another process's). */
  onSpawn?: (pid: number) => void
}

export const INSTALL_HINT = 'install it: apt-get install -y redis-server (Debian/Ubuntu), or put redis-server on PATH'

export function redisServerBinary(): string {
  return process.env.SHARDCTL_REDIS_SERVER ?? 'redis-server'
}

export async function startRedis(options: StartOptions): Promise<RedisProcess> {
  mkdirSync(options.dir, {recursive: true})
  const logfile = join(options.dir, 'redis.log')
  const args = [
    ...(options.configFile === undefined ? [] : [options.configFile]),
    '--port',
    String(options.port),
    '--bind',
    '127.0.0.1',
    '--dir',
    options.dir,
    '--logfile',
    logfile,
    '--save',
    '',
    '--appendonly',
    'no',
    '--daemonize',
    'no',
    // Tests and the sandbox attach replicas one at a time: start their sync at once.
    '--repl-diskless-sync-delay',
    '0',
    ...(options.args ?? []),
  ]
  return launch(args, logfile, options)
}

/**
 * Start a Redis Sentinel (`redis-server <config> --sentinel`) on a loopback port. It
 * gets a configuration file of its own in `dir`: a Sentinel rewrites its file with
 * what it learns (the masters it monitors, the other Sentinels, the epochs).
 */
export async function startSentinel(options: Omit<StartOptions, 'args'> & {config?: string[]}): Promise<RedisProcess> {
  mkdirSync(options.dir, {recursive: true})
  const logfile = join(options.dir, 'sentinel.log')
  const config = join(options.dir, 'sentinel.conf')
  const lines = [
    `port ${options.port}`,
    'bind 127.0.0.1',
    `dir ${options.dir}`,
    `logfile ${logfile}`,
    'daemonize no',
    ...(options.config ?? []),
  ]
  writeFileSync(config, `${lines.join('\n')}\n`)
  return launch([config, '--sentinel'], logfile, options)
}

/** Run redis-server with these arguments and wait until it answers PING on its port. */
async function launch(args: string[], logfile: string, options: Omit<StartOptions, 'args'>): Promise<RedisProcess> {
  const {execa} = await import('execa')
  let child
  try {
    child = execa(redisServerBinary(), args, {
      detached: options.detached ?? false,
      cleanup: !options.detached,
      stdio: 'ignore',
      reject: false,
    })
  } catch (error) {
    throw redisServerMissing(error as Error)
  }
  let exited: string | undefined
  void child.then((result) => {
    exited = result.failed && (result as {code?: string}).code === 'ENOENT' ? 'ENOENT' : `exit ${result.exitCode ?? result.signal}`
  })
  if (options.detached) child.unref()
  const pid = child.pid
  if (pid !== undefined) options.onSpawn?.(pid)
  const deadline = Date.now() + (options.readyTimeoutMs ?? 10_000)
  for (;;) {
    if (exited === 'ENOENT' || pid === undefined) throw redisServerMissing()
    if (exited)
      throw new ShardctlError(`redis-server on port ${options.port} stopped at start (${exited}): ${logTail(logfile)}`, {code: 'ESTART'})
    if (await answers(options.port)) return {port: options.port, pid, dir: options.dir}
    if (Date.now() > deadline) {
      child.kill('SIGKILL')
      throw new ShardctlError(`redis-server on port ${options.port} did not answer within ${options.readyTimeoutMs ?? 10_000} ms`, {
        code: 'ESTART',
      })
    }
    await sleep(20)
  }
}

function redisServerMissing(cause?: Error): ShardctlError {
  return new ShardctlError(`${redisServerBinary()} not found`, {code: 'ENOREDIS', exitCode: ExitCode.unexpected, hint: INSTALL_HINT, cause})
}

/** The last lines of a redis-server's log, for a one-line error. */
export function logTail(file: string): string {
  try {
    const lines = readFileSync(file, 'utf8').trim().split('\n')
    return lines.slice(-2).join(' | ')
  } catch {
    return 'no log'
  }
}

async function answers(port: number): Promise<boolean> {
  try {
    const client = await connect({host: '127.0.0.1', port, db: 0}, {timeoutMs: 500})
    await close(client)
    return true
  } catch (error) {
    // Asking for a password is answering: the server is up (requirepass, ACL).
    return (error as ShardctlError).code === 'EAUTH'
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** True when pid is the redis-server we started on that port (pids get reused). */
export function isOurRedis(pid: number, port: number): boolean {
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8')
    return cmdline.includes('redis-server') && cmdline.includes(`:${port}`)
  } catch {
    return false
  }
}

/** Stop a server we started: SIGTERM, then SIGKILL if it lingers. Never signals a reused pid. */
export async function stopRedis(proc: {pid: number; port: number}, graceMs = 5000): Promise<'stopped' | 'not running'> {
  if (!isAlive(proc.pid) || !isOurRedis(proc.pid, proc.port)) return 'not running'
  // A server writing its first AOF (a replica right after its sync) ignores a SIGTERM
  // ("Writing initial AOF, can't exit"): ask again until it goes.
  const deadline = Date.now() + graceMs
  let asked = 0
  while (isAlive(proc.pid) && Date.now() < deadline) {
    if (Date.now() - asked >= 200) {
      signal(proc.pid, 'SIGTERM')
      asked = Date.now()
    }
    await sleep(20)
  }
  if (isAlive(proc.pid)) signal(proc.pid, 'SIGKILL')
  while (isAlive(proc.pid)) await sleep(10)
  return 'stopped'
}

/** Signal a process that may have exited a moment ago. */
function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error
  }
}

/** A loopback port nobody listens on right now. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const {port} = server.address() as {port: number}
      server.close(() => resolve(port))
    })
  })
}

/** Whether a loopback port can be bound (nobody is on it). */
export async function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer()
    server.unref()
    server.once('error', () => resolve(false))
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)))
  })
}

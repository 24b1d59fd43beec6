import {type ChildProcess, spawn} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import {mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {ExitCode, ShardctlError} from '../errors.js'
import {type ScriptedRedis, close, connect} from '../fleet/connect.js'
import {keysPerDb} from '../fleet/instance.js'
import {INSTALL_HINT, freePort, isAlive, logTail, redisServerBinary, startRedis, stopRedis} from '../sandbox/redis-process.js'
import {highestRdbReadBy, parseServerVersion} from './versions.js'

/**
 * A temporary local redis-server that loads one snapshot, for restores and deep
 * verification. It runs in a directory of its own (0700, removed afterwards), listens on
 * loopback only, and asks for a random password given in a 0600 config file (never on
 * the command line, where the process list would show it): a backup is the fleet's data.
 *
 * It starts as a replica of 127.0.0.1:0, where nothing can ever answer: a replica loads
 * every key of the snapshot, including those whose expiry has passed since (a master
 * drops them while loading), and never expires them itself. So its key counts are the
 * snapshot's exactly, while reads (DUMP, SCAN) still treat expired keys as gone.
 */
export interface LoadedSnapshot {
  client: ScriptedRedis
  port: number
  dir: string
  /** A connection of its own (on db 0) for a bulk copy, closed by stop(). */
  connection(): Promise<ScriptedRedis>
  keysPerDb(): Promise<Map<number, number>>
  stop(): Promise<void>
}

export const SNAPSHOT_FILE = 'dump.rdb'

const SCRATCH_PREFIX = 'shardctl-restore-'
/** In a scratch directory: the pid of the process it belongs to. */
const OWNER_FILE = 'owner.pid'

/**
 * A private directory for a snapshot to be loaded from (mkdtemp makes it 0700), with its
 * owner's pid in it. Those left by runs that died (killed before they could remove
 * theirs) are removed first: each may hold a whole instance's data.
 */
export function scratchDirectory(): string {
  const base = process.env.SHARDCTL_SCRATCH_DIR ?? tmpdir()
  removeOrphans(base)
  let dir: string
  try {
    dir = mkdtempSync(join(base, SCRATCH_PREFIX))
  } catch (error) {
    const from = process.env.SHARDCTL_SCRATCH_DIR === undefined ? 'the temporary directory' : 'SHARDCTL_SCRATCH_DIR'
    throw new ShardctlError(
      `cannot make a scratch directory in ${base} (${from}): ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
      {
        code: 'ESCRATCH',
        hint: 'set SHARDCTL_SCRATCH_DIR to an existing directory with room for a snapshot',
      },
    )
  }
  writeFileSync(join(dir, OWNER_FILE), String(process.pid), {mode: 0o600})
  return dir
}

function removeOrphans(base: string): void {
  let names: string[]
  try {
    names = readdirSync(base).filter((name) => name.startsWith(SCRATCH_PREFIX))
  } catch {
    return
  }
  for (const name of names) {
    let owner: number
    try {
      owner = Number(readFileSync(join(base, name, OWNER_FILE), 'utf8'))
    } catch {
      continue // not ours to judge (another user's, or one being created right now)
    }
    if (Number.isInteger(owner) && owner > 0 && !isAlive(owner)) rmSync(join(base, name), {recursive: true, force: true})
  }
}

/**
 * What keeps the temporary server from outliving the process that started it, whatever
 * kills that process (a SIGKILL included, which no exit handler sees): a tiny shell, in a
 * process group of its own, reading a pipe from this process. The pipe closes only when
 * this process is gone; the shell then stops the server (SIGKILL if it lingers 5 s) and
 * removes its directory. A clean stop dismisses it first.
 */
const GUARD = [
  'read _',
  'kill "$1" 2>/dev/null',
  'i=0',
  // Gone, or a zombie its new parent has not reaped yet (its files are closed).
  'alive() { kill -0 "$1" 2>/dev/null && [ "$(cut -d" " -f3 /proc/$1/stat 2>/dev/null)" != Z ]; }',
  'while alive "$1" && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done',
  'alive "$1" && kill -9 "$1"',
  'rm -rf "$2"',
].join('\n')

function guard(pid: number, dir: string): ChildProcess {
  const guardian = spawn('sh', ['-c', GUARD, 'shardctl-restore-guard', String(pid), dir], {
    stdio: ['pipe', 'ignore', 'ignore'],
    detached: true,
  })
  guardian.on('error', () => undefined)
  guardian.stdin?.on('error', () => undefined)
  // Neither it nor its pipe keeps this process running.
  guardian.unref()
  ;(guardian.stdin as unknown as {unref?: () => void} | null)?.unref?.()
  return guardian
}

/** The local redis-server's version, and the highest RDB version it reads. */
export async function localServer(): Promise<{version: string; reads: number}> {
  const {execa} = await import('execa')
  const result = await execa(redisServerBinary(), ['--version'], {reject: false})
  const version = parseServerVersion(String(result.stdout))
  if (result.failed || version === undefined)
    throw new ShardctlError(`${redisServerBinary()} not found (a restore loads the snapshot into a local one)`, {
      code: 'ENOREDIS',
      hint: INSTALL_HINT,
    })
  return {version, reads: highestRdbReadBy(version)}
}

/**
 * Start redis-server on `dir`/dump.rdb (which the caller wrote there) with enough
 * databases, and wait until it has loaded it. The directory is removed by stop().
 */
export async function loadSnapshot(dir: string, options: {databases: number; timeoutMs: number}): Promise<LoadedSnapshot> {
  const password = randomBytes(24).toString('hex')
  const configFile = join(dir, 'redis.conf')
  writeFileSync(
    configFile,
    [
      `requirepass ${password}`,
      'replicaof 127.0.0.1 0',
      `databases ${Math.max(16, options.databases)}`,
      `dbfilename ${SNAPSHOT_FILE}`,
      // Redis checks the snapshot's CRC64 as it loads it, and refuses one that does not match.
      'rdbchecksum yes',
      '',
    ].join('\n'),
    {mode: 0o600},
  )
  const port = await freePort()
  let guardian: ChildProcess | undefined
  const dismiss = () => guardian?.kill('SIGKILL')
  const onSpawn = (pid: number) => {
    guardian = guard(pid, dir)
  }
  const proc = await startRedis({port, dir, configFile, args: ['--replica-read-only', 'yes'], onSpawn}).catch((error: Error) => {
    dismiss()
    const failure = loadFailed(dir, error)
    rmSync(dir, {recursive: true, force: true})
    throw failure
  })
  const extra = new Set<ScriptedRedis>()
  const open = async (bulk = false) =>
    connect({host: '127.0.0.1', port, db: 0, password}, {timeoutMs: options.timeoutMs, clientName: 'shardctl-restore', bulk})
  let client: ScriptedRedis | undefined
  try {
    // It answers AUTH at once, and everything else with LOADING until the snapshot is in.
    while (!client) {
      if (!isAlive(proc.pid)) throw loadFailed(dir)
      client = await open().catch((error: Error) => {
        if (/LOADING/.test(error.message)) return undefined
        throw error
      })
      if (!client) await sleep(50)
    }
  } catch (error) {
    dismiss()
    await stopRedis(proc)
    const failure = error instanceof ShardctlError && ['ELOAD', 'ECHECKSUM'].includes(error.code) ? error : loadFailed(dir, error as Error)
    rmSync(dir, {recursive: true, force: true})
    throw failure
  }
  const loaded: LoadedSnapshot = {
    client,
    port,
    dir,
    async connection() {
      const c = await open(true)
      extra.add(c)
      return c
    },
    keysPerDb: () => keysPerDb(client),
    async stop() {
      for (const c of [client, ...extra]) await close(c)
      dismiss()
      await stopRedis(proc)
      rmSync(dir, {recursive: true, force: true})
    },
  }
  return loaded
}

function loadFailed(dir: string, cause?: Error): ShardctlError {
  const log = logTail(join(dir, 'redis.log'))
  if (/Wrong RDB checksum/i.test(log))
    return new ShardctlError(`the snapshot's CRC64 does not match its content: the local redis-server refused to load it (${log})`, {
      code: 'ECHECKSUM',
      exitCode: ExitCode.unhealthy,
      hint: 'this copy cannot be trusted: use another backup; nothing was copied',
    })
  const why = log === 'no log' ? (cause?.message ?? 'it stopped') : log
  return new ShardctlError(`the local redis-server could not load the snapshot: ${why}`, {
    code: 'ELOAD',
    exitCode: ExitCode.unhealthy,
    hint: 'the snapshot may be of a newer Redis than the local redis-server (SHARDCTL_REDIS_SERVER names another)',
  })
}

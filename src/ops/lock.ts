import {randomBytes} from 'node:crypto'
import {hostname} from 'node:os'
import type {Worker} from 'node:worker_threads'

import {ExitCode, ShardctlError} from '../errors.js'
import type {ConnectOptions, ScriptedRedis} from '../fleet/connect.js'
import type {ConnectTarget} from '../registry/address.js'
import type {RenewerData} from './lock-renewer.js'
import type {Actor} from '../registry/registry.js'

/**
 * The operator lock (SPEC §4.4): a lease in the registry, held by one mutating
 * command at a time, renewed while it runs, released on every exit path. A holder
 * that died stops renewing, so its lease expires by itself; on the same host a dead
 * holder's pid is recognised at once and its lease taken over.
 */

export const LEASE_MS = 15_000
const RENEW_EVERY_MS = 5000

/** A random token naming one run of a command: its lock, and its connections to instances. */
export function newOperatorToken(): string {
  return randomBytes(12).toString('hex')
}

/** The connection name of a run (CLIENT SETNAME allows no spaces). */
export function operatorClientName(token: string): string {
  return `shardctl-${token}`
}

export interface LockHolder {
  token: string
  holder: string
  host: string
  pid: number
  command: string
  since: string
}

export class OperatorLock {
  private renewer?: NodeJS.Timeout
  private lost = false

  private constructor(
    private readonly client: ScriptedRedis,
    readonly key: string,
    /** Exactly what the lock key holds while it is ours: the fencing value. */
    readonly value: string,
    readonly leaseMs: number,
  ) {}

  /** The random token of this holder: also in the name of its connections (CLIENT LIST), so a successor can cut them. */
  get token(): string {
    return (parseHolder(this.value) as LockHolder).token
  }

  static async acquire(
    client: ScriptedRedis,
    key: string,
    actor: Actor,
    options: {leaseMs?: number; token?: string; refuse?: typeof lockHeld} = {},
  ): Promise<OperatorLock> {
    const leaseMs = options.leaseMs ?? LEASE_MS
    const holder: LockHolder = {
      token: options.token ?? newOperatorToken(),
      holder: actor.user,
      host: hostname(),
      pid: process.pid,
      command: actor.command,
      since: new Date().toISOString(),
    }
    const value = JSON.stringify(holder)
    let reply = await client.lockAcquire(key, value, String(leaseMs), '')
    if (reply !== 'OK') {
      const [current] = reply
      // A holder on this host whose process is gone will never release: take over now.
      if (holderIsDead(current)) reply = await client.lockAcquire(key, value, String(leaseMs), current)
    }
    if (reply !== 'OK') {
      const [current, ttl] = reply
      throw (options.refuse ?? lockHeld)(key, current, ttl)
    }
    const lock = new OperatorLock(client, key, value, leaseMs)
    lock.renewer = setInterval(() => void lock.renew(), Math.min(RENEW_EVERY_MS, leaseMs / 3))
    lock.renewer.unref()
    return lock
  }

  /**
   * Take the lock again, with the same value (so that every change fenced by it holds
   * again), after its lease ran out while the registry did not answer: only if nobody
   * holds it now. See Journal.retakeLock for when that is safe.
   */
  async retake(): Promise<boolean> {
    const reply = await this.client.lockAcquire(this.key, this.value, String(this.leaseMs), '')
    if (reply !== 'OK') return false
    this.lost = false
    return true
  }

  get isLost(): boolean {
    return this.lost
  }

  /** Whether the lease is still ours, asked of the registry now (and renewed if so): the check to make before an act it fences. */
  async confirm(): Promise<boolean> {
    const held = (await this.client.lockRenew(this.key, this.value, String(this.leaseMs))) === 1
    if (!held) this.lost = true
    return held
  }

  private worker?: Worker

  /**
   * Renew from a worker thread too (see lock-renewer.ts), for operations that may keep
   * the main thread busy for longer than a renewal period. Resolves once it renews.
   */
  async renewInWorker(target: ConnectTarget, options: ConnectOptions): Promise<void> {
    const {Worker} = await import('node:worker_threads')
    const data: RenewerData = {
      target,
      options: {...options, clientName: `${options.clientName ?? 'shardctl'}-lease`},
      key: this.key,
      value: this.value,
      leaseMs: this.leaseMs,
      everyMs: Math.min(RENEW_EVERY_MS, this.leaseMs / 3),
    }
    const worker = new Worker(new URL('./lock-renewer.js', import.meta.url), {workerData: data})
    worker.unref()
    this.worker = worker
    await new Promise<void>((resolve, reject) => {
      worker.once('error', reject)
      worker.on('message', (message) => {
        if (message === 'ready') resolve()
        if (message === 'lost') this.lost = true
      })
    })
  }

  private async renew(): Promise<void> {
    try {
      const held = await this.client.lockRenew(this.key, this.value, String(this.leaseMs))
      if (held === 0) this.lost = true
    } catch {
      // A missed renewal is retried at the next tick; the lease outlives two of them.
    }
  }

  async release(): Promise<void> {
    clearInterval(this.renewer)
    this.renewer = undefined
    if (this.worker) {
      this.worker.postMessage('stop')
      await new Promise((resolve) => setTimeout(resolve, 50).unref())
      await this.worker.terminate()
      this.worker = undefined
    }
    if (this.client.status !== 'ready') return
    await this.client.lockRenew(this.key, this.value, '0').catch(() => undefined)
  }
}

export function parseHolder(value: string | null): LockHolder | undefined {
  if (!value) return undefined
  try {
    const parsed = JSON.parse(value) as LockHolder
    return typeof parsed.holder === 'string' ? parsed : undefined
  } catch {
    return undefined
  }
}

/** A holder on this host whose process is gone: it will never renew nor release. */
export function holderIsDead(value: string): boolean {
  const holder = parseHolder(value)
  if (!holder || holder.host !== hostname() || holder.pid === process.pid) return false
  try {
    process.kill(holder.pid, 0)
    return false
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ESRCH'
  }
}

export function describeHolder(holder: LockHolder, now = Date.now()): string {
  const age = Math.max(0, Math.round((now - Date.parse(holder.since)) / 1000))
  return `${holder.holder} (${holder.command}, pid ${holder.pid}) since ${holder.since} (${age}s ago)`
}

export function lockHeld(key: string, value: string, ttlMs: number): ShardctlError {
  const holder = parseHolder(value)
  const who = holder ? describeHolder(holder) : `an unknown holder (${key} = ${JSON.stringify(value.slice(0, 80))})`
  return new ShardctlError(`another operator holds the lock: ${who}`, {
    code: 'ELOCKED',
    exitCode: ExitCode.locked,
    hint: `wait for it to finish (the lease expires ${Math.ceil(Math.max(ttlMs, 0) / 1000)}s after its last renewal), or break a stale one with shards:unlock`,
  })
}

export function lockLost(): ShardctlError {
  return new ShardctlError('the operator lock was lost (lease expired or broken) before the change was made', {
    code: 'ELOCKLOST',
    exitCode: ExitCode.locked,
    hint: 'nothing was changed by this step; check shards:list and run the command again',
  })
}

/** Break the lock on purpose: only the holder named (when named) is removed. */
export async function breakLock(client: ScriptedRedis, key: string, expected?: string): Promise<LockHolder | undefined> {
  const value = await client.get(key)
  if (value === null) return undefined
  const holder = parseHolder(value)
  if (expected !== undefined && holder?.holder !== expected && holder?.token !== expected) {
    throw new ShardctlError(`the lock is held by ${holder ? describeHolder(holder) : 'an unknown holder'}, not ${expected}`, {
      code: 'ECONFLICT',
      exitCode: ExitCode.locked,
      hint: 'name the holder shown, or omit --holder',
    })
  }
  // Compare-and-delete: if it changed hands meanwhile, the new holder keeps it.
  await client.lockRenew(key, value, '0')
  return holder ?? {token: '', holder: 'unknown', host: '', pid: 0, command: '', since: ''}
}

import {hostname} from 'node:os'

import {ExitCode, ShardctlError} from '../errors.js'
import {OperatorLock, describeHolder, parseHolder} from '../ops/lock.js'
import type {Registry} from '../registry/registry.js'
import {isS3} from './destination.js'

/**
 * One run at a time of a backup (an id at a destination): a lease in the registry, taken
 * with SET NX PX and renewed while the backup runs, as the operator lock is, but its own
 * (a backup changes nothing in the registry: it does not keep operators out). A second
 * run of the same id is refused at once, naming the first; a run whose holder died is
 * taken over (at once on this host, when the lease runs out elsewhere), and then clears
 * what that attempt left. The holder's value is the fencing token: a run checks that the
 * lease is still its own before it clears an earlier attempt, before each file becomes
 * visible, and before the manifest. A run frozen past its lease (SIGSTOP, a long pause)
 * that resumes after another took over finds the lease gone and stops.
 */
export class BackupLease {
  private constructor(
    private readonly id: string,
    private readonly lock?: OperatorLock,
    /** Why no lease could be taken, when none was (a user without the rights to it). */
    readonly warning?: string,
  ) {}

  static async take(registry: Registry, location: string, id: string, options: {leaseMs?: number} = {}): Promise<BackupLease> {
    // A local directory is this host's: the same path on another host is another directory.
    const where = isS3(location) ? location : `${hostname()}:${location}`
    const key = `${registry.keys.prefix}._backup:${where}:${id}`
    const refuse = (_key: string, value: string, ttlMs: number) => {
      const holder = parseHolder(value)
      return new ShardctlError(
        `backup ${id} to ${location} is being taken by another run: ${holder ? describeHolder(holder) : 'an unknown holder'}`,
        {
          code: 'EBACKUPRUNNING',
          exitCode: ExitCode.locked,
          hint: `wait for it to finish, or give another --run; a run that died frees it within ${Math.ceil(Math.max(ttlMs, 0) / 1000)}s (at once on its own host)`,
        },
      )
    }
    try {
      return new BackupLease(id, await OperatorLock.acquire(registry.client, key, registry.actor, {leaseMs: options.leaseMs, refuse}))
    } catch (error) {
      // Without the rights to it (an ACL from before the lease, a read-only registry), run as before, and say what is not ensured.
      if (!/^(NOPERM|READONLY)/.test((error as Error).message)) throw error
      return new BackupLease(
        id,
        undefined,
        `no lease could be taken in the registry (${(error as Error).message.split('\n')[0]}): another run of ${id} at the same time is not kept out; grant the backup user the lease (docs/backups.md)`,
      )
    }
  }

  /** Reject unless the lease is still this run's (nothing to check when none could be taken). */
  async confirm(): Promise<void> {
    if (!this.lock) return
    const held = await this.lock.confirm().catch((error: Error) => {
      throw new ShardctlError(`cannot confirm the lease of backup ${this.id} in the registry: ${error.message}`, {
        code: 'EBACKUPLEASE',
        exitCode: ExitCode.locked,
        hint: 'nothing more is written by this run; run it again once the registry answers',
      })
    })
    if (!held)
      throw new ShardctlError(`backup ${this.id} was taken over by another run: its lease in the registry ran out or was broken`, {
        code: 'EBACKUPLEASE',
        exitCode: ExitCode.locked,
        hint: 'this run wrote no manifest; see backups:list for the backup the other run made',
      })
  }

  async release(): Promise<void> {
    await this.lock?.release()
  }
}

import {ShardctlError} from '../errors.js'
import type {TlsSettings} from '../fleet/connect.js'
import type {ConnectTarget} from '../registry/address.js'

/**
 * The live copy of one database into a database of another instance (issue 23). This
 * file holds its interface only, until the engine itself is merged in its place.
 */

export interface CopyRate {
  keysPerSecond?: number
  bytesPerSecond?: number
}

export interface CopyProgressEvent {
  phase: 'snapshot' | 'stream'
  keys: number
  bytes: number
  snapshotBytes?: number
}

export interface DatabaseCopyOptions {
  source: ConnectTarget
  sourceDb: number
  target: ConnectTarget
  targetDb: number
  timeoutMs: number
  tls?: TlsSettings
  rate?: CopyRate
  spoolDir?: string
  signal?: AbortSignal
  onProgress?: (p: CopyProgressEvent) => void
}

export interface DatabaseCopy {
  readonly replicationId: string
  readonly startOffset: number
  /** sourceDb's snapshot entries are all on targetDb. */
  snapshotLoaded(): Promise<void>
  /** The source replication offset applied and acknowledged on the target. */
  appliedOffset(): number
  /** True once appliedOffset() >= offset; false at the deadline; rejects if the copy failed. */
  waitApplied(offset: number, deadline: number): Promise<boolean>
  /** Once resolved, nothing more is applied to the target. */
  stop(): Promise<void>
  /** Rejects with a one-line ShardctlError when the copy fails. */
  readonly failure: Promise<never>
}

export function startDatabaseCopy(options: DatabaseCopyOptions): Promise<DatabaseCopy> {
  return Promise.reject(
    new ShardctlError(`the live database copy is not available in this build (db ${options.sourceDb} → db ${options.targetDb})`, {
      code: 'EUNSUPPORTED',
      hint: 'nothing was changed',
    }),
  )
}

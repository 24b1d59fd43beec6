import {Transform, type TransformCallback} from 'node:stream'

import {ExitCode, ShardctlError} from '../errors.js'
import {RdbReader, type RdbSummary} from '../rdb/reader.js'
import type {ManifestInstance} from './manifest.js'

/**
 * A snapshot checked as it streams past, unchanged: the RDB reader (src/rdb) walks its
 * structure — header and version, aux fields, every key of every database — and verifies
 * Redis's CRC64 in its trailer. A snapshot that is cut short, malformed, or whose
 * checksum does not match fails the stream before its end, so nothing downstream ever
 * completes with it: a destination stores nothing.
 */
export type SnapshotFacts = Pick<
  ManifestInstance,
  'rdbVersion' | 'redisVersion' | 'replId' | 'replOffset' | 'createdAt' | 'keys' | 'crc64'
> & {
  /** Whether the trailer held a CRC64 to verify (all zeros when Redis wrote none: rdbchecksum no). */
  checksumVerified: boolean
}

export class SnapshotCheck extends Transform {
  private readonly reader: RdbReader
  private readonly aux = new Map<string, string>()
  private version = 0
  private summary?: RdbSummary

  /** `what` names the snapshot in messages: "the snapshot of 10.0.0.5:6379 from 10.0.0.6:6379". */
  constructor(private readonly what: string) {
    super()
    this.reader = new RdbReader({
      header: ({version}) => {
        this.version = version
      },
      aux: (field, value) => {
        this.aux.set(field, value)
      },
      end: (summary) => {
        this.summary = summary
      },
    })
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    try {
      this.reader.write(chunk)
    } catch (error) {
      done(this.invalid(error as Error))
      return
    }
    done(null, chunk)
  }

  override _flush(done: TransformCallback): void {
    try {
      this.summary = this.reader.end()
    } catch (error) {
      done(this.invalid(error as Error))
      return
    }
    done()
  }

  private invalid(error: Error): ShardctlError {
    return new ShardctlError(`${this.what} is not a valid snapshot: ${error.message}`, {
      code: 'ESNAPSHOT',
      exitCode: ExitCode.unhealthy,
      cause: error,
    })
  }

  /** What the snapshot says of itself: once the stream has ended. */
  facts(): SnapshotFacts {
    const summary = this.summary
    if (!summary) throw new Error(`${this.what}: not read to its end`)
    const ctime = Number(this.aux.get('ctime'))
    return {
      rdbVersion: this.version,
      redisVersion: this.aux.get('redis-ver') ?? 'unknown',
      replId: this.aux.get('repl-id') ?? '',
      replOffset: Math.max(0, Number(this.aux.get('repl-offset') ?? 0) || 0),
      createdAt: Number.isFinite(ctime) && ctime > 0 ? new Date(ctime * 1000).toISOString() : '',
      keys: Object.fromEntries([...summary.keys].sort(([a], [b]) => a - b).map(([db, n]) => [String(db), n])),
      crc64: summary.checksum.toString(16).padStart(16, '0'),
      checksumVerified: summary.verified,
    }
  }
}

import {type Hash, createHash} from 'node:crypto'
import {type Readable, Transform, type TransformCallback} from 'node:stream'

import {ExitCode, ShardctlError} from '../errors.js'
import type {Destination} from './destination.js'

/** Bytes passing through, counted and hashed (sha256) on the way: the stored file's own checksum. */
export class Digest extends Transform {
  private readonly hash: Hash = createHash('sha256')
  bytes = 0
  private hex?: string

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.hash.update(chunk)
    this.bytes += chunk.length
    done(null, chunk)
  }

  /** The sha256 of everything that passed, once the stream has ended. */
  get sha256(): string {
    this.hex ??= this.hash.digest('hex')
    return this.hex
  }
}

/** Bytes passing through, reported as they go (at most every `everyBytes`), for a progress bar. */
export class Meter extends Transform {
  bytes = 0
  private reported = 0

  constructor(
    private readonly report: (bytes: number) => void,
    private readonly everyBytes = 1 << 20,
  ) {
    super()
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.bytes += chunk.length
    if (this.bytes - this.reported >= this.everyBytes) {
      this.reported = this.bytes
      this.report(this.bytes)
    }
    done(null, chunk)
  }

  override _flush(done: TransformCallback): void {
    this.report(this.bytes)
    done()
  }
}

/**
 * Small chunks gathered into large ones (of at least `bytes`, the last excepted). A socket
 * delivers a snapshot in pieces of a few kilobytes; every stage after it (the checks, the
 * file's writes, an upload's parts) costs per chunk, and a write per 8 kB chunk doubled the
 * CPU a backup takes, measured: gathered into 1 MB, it halved.
 */
export class Coalesce extends Transform {
  private parts: Buffer[] = []
  private size = 0

  constructor(private readonly bytes = 1024 * 1024) {
    super()
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.parts.push(chunk)
    this.size += chunk.length
    if (this.size < this.bytes) return done()
    const whole = Buffer.concat(this.parts, this.size)
    this.parts = []
    this.size = 0
    done(null, whole)
  }

  override _flush(done: TransformCallback): void {
    if (this.size > 0) this.push(Buffer.concat(this.parts, this.size))
    done()
  }
}

/** Errors of a stored object's stream: the store failed to give its bytes, not the bytes that were wrong. */
const readFailures = new WeakSet<object>()

/**
 * A stored object's stream, opened for reading, whose own errors (a connection reset, a
 * silent store) are told apart from what its bytes are found to be: see `unreadable`.
 * A missing object (ENOBACKUPFILE) is the backup's fault and stays a problem of it; any
 * other failure to open is the store's.
 */
export async function readStored(destination: Destination, key: string): Promise<Readable> {
  const stored = await destination.read(key)
  stored.once('error', (error) => readFailures.add(error))
  return stored
}

/**
 * When `error` is the store failing to give the bytes (not the bytes failing a check), the
 * one-line error that says so (exit 1): a backup is never called corrupt because the
 * network dropped while it was read.
 */
export function unreadable(error: unknown, location: string, key: string): ShardctlError | undefined {
  const failure = error as NodeJS.ErrnoException
  const opened = error instanceof ShardctlError && failure.code !== 'ENOBACKUPFILE'
  if (!opened && !readFailures.has(failure) && failure.code !== 'ERR_STREAM_PREMATURE_CLOSE') return undefined
  if (error instanceof ShardctlError) return error
  return new ShardctlError(`${location}: could not read ${key}: ${failure.message}`, {
    code: 'EREAD',
    exitCode: ExitCode.unexpected,
    hint: 'the backup itself was not found faulty: check that the store is reachable, then run the command again',
    cause: failure,
  })
}

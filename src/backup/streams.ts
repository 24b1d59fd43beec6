import {type Hash, createHash} from 'node:crypto'
import {Transform, type TransformCallback} from 'node:stream'

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

import {closeSync, ftruncateSync, mkdtempSync, openSync, readSync, rmSync, writeSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

/**
 * The bytes read from the source, waiting to be applied: in memory up to `memoryLimit`,
 * then in a file, in order. The source's socket is always read at once (its replica
 * output buffer never grows because the target is slow); what the target has not yet
 * taken waits here. Memory stays bounded by `memoryLimit` plus one read.
 *
 * The file is written and read synchronously: a local file's append or read of a chunk
 * is shorter than an event-loop turn, and it keeps the order trivially right.
 */
export class Spool {
  private memory: Buffer[] = []
  private memoryBytes = 0
  private fd: number | undefined
  private dir: string | undefined
  private writeAt = 0
  private readAt = 0
  /** Bytes that ever went to the file, for reports and tests. */
  spilled = 0
  private wake: (() => void) | undefined

  constructor(
    private readonly parent: string | undefined,
    private readonly memoryLimit: number,
  ) {}

  /** Bytes waiting, in memory and on disk. */
  get waiting(): number {
    return this.memoryBytes + (this.writeAt - this.readAt)
  }

  append(chunk: Buffer): void {
    if (chunk.length === 0) return
    if (this.writeAt > this.readAt || this.memoryBytes + chunk.length > this.memoryLimit) {
      if (this.fd === undefined) {
        this.dir = mkdtempSync(join(this.parent ?? tmpdir(), 'shardctl-copy-'))
        this.fd = openSync(join(this.dir, 'stream'), 'w+')
      }
      let done = 0
      while (done < chunk.length) done += writeSync(this.fd, chunk, done, chunk.length - done, this.writeAt + done)
      this.writeAt += chunk.length
      this.spilled += chunk.length
    } else {
      this.memory.push(chunk)
      this.memoryBytes += chunk.length
    }
    const wake = this.wake
    this.wake = undefined
    wake?.()
  }

  /** The next bytes (at most `max`), or undefined when nothing waits. */
  take(max: number): Buffer | undefined {
    if (this.memory.length > 0) {
      const chunk = this.memory[0]
      if (chunk.length <= max) {
        this.memory.shift()
        this.memoryBytes -= chunk.length
        return chunk
      }
      this.memory[0] = chunk.subarray(max)
      this.memoryBytes -= max
      return chunk.subarray(0, max)
    }
    if (this.fd !== undefined && this.readAt < this.writeAt) {
      const out = Buffer.allocUnsafe(Math.min(max, this.writeAt - this.readAt))
      const n = readSync(this.fd, out, 0, out.length, this.readAt)
      this.readAt += n
      if (this.readAt === this.writeAt) {
        // Drained: the file starts again from its beginning.
        ftruncateSync(this.fd, 0)
        this.readAt = this.writeAt = 0
      }
      return out.subarray(0, n)
    }
    return undefined
  }

  /** Resolves when bytes arrive (at once if some wait). */
  arrival(): Promise<void> {
    if (this.waiting > 0) return Promise.resolve()
    return new Promise((resolve) => (this.wake = resolve))
  }

  /** Wake a waiting reader without bytes (the copy is ending). */
  interrupt(): void {
    const wake = this.wake
    this.wake = undefined
    wake?.()
  }

  /** Drop everything, remove the file and its directory. */
  close(): void {
    this.memory = []
    this.memoryBytes = 0
    if (this.fd !== undefined) closeSync(this.fd)
    this.fd = undefined
    if (this.dir) rmSync(this.dir, {recursive: true, force: true})
    this.dir = undefined
  }
}

import {randomBytes} from 'node:crypto'
import {closeSync, mkdtempSync, openSync, readSync, rmSync, writeSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {ShardctlError} from '../errors.js'
import {type ScriptedRedis, type TlsSettings, close, connect} from '../fleet/connect.js'
import {luaScripts} from '../lua/scripts.generated.js'
import {Crc64} from '../rdb/crc64.js'
import {type RdbEntry, RdbReader, dumpPayload} from '../rdb/reader.js'
import {type ConnectTarget, instanceKey} from '../registry/address.js'
import {SnapshotFraming} from '../replication/framing.js'
import {ReplicationLink, encodeCommand} from '../replication/link.js'
import {TEMP_KEY_PREFIX, pieceCommands, pieceable} from './pieces.js'
import {CommandParser, ReplyParser, type Reply} from './resp.js'
import {refuseMissingExtensions} from './extensions.js'
import {Spool} from './spool.js'

/**
 * A database-level live copy: one database of a master, copied into a database (maybe
 * under another number) of an instance that serves other shards in its other databases,
 * and kept up to date until stopped. The engine under `shards:move`.
 *
 * It is a replica of the source on a raw socket (src/replication/link.ts): PSYNC ? -1,
 * the snapshot in either framing (src/replication/framing.ts), read by the streaming RDB
 * reader; the entries of the copied database become RESTORE … ABSTTL commands, the other
 * databases are skipped without decoding. Then the replication stream: only the copied
 * database's commands are applied, to the target database.
 *
 * Offsets are byte-exact: the applied offset is the +FULLRESYNC offset plus every byte of
 * the stream consumed after the snapshot (PINGs, REPLCONF GETACK, SELECTs and the other
 * databases' commands included), counted only once the target has replied to every
 * command up to there. A fenced source's master_repl_offset, once appliedOffset() reaches
 * it, is proven on the target.
 *
 * Memory is bounded: the source's socket is always read at once into a spool (memory up
 * to SPOOL_MEMORY, then a file in spoolDir), so the source's replica output buffer never
 * grows because the target is slow; the target gets at most IN_FLIGHT_LIMIT bytes of
 * commands (and IN_FLIGHT_COMMANDS commands) not yet answered; a value larger than the
 * reader's piece size (8 MB) waits in a file, never whole in memory, and is written in
 * bounded pieces under a temporary key (pieces.ts, writePieces). A command of the stream
 * with an argument over 8 MB (a client's 100 MB SET) passes through to the target as it
 * comes, never whole here (onLargeCommand).
 *
 * The source's fencing (min-replicas-to-write) is kept: see `FencePolicy` below and
 * docs/move-engine.md.
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
  /** The master the shard lives on. */
  source: ConnectTarget
  sourceDb: number
  /** An instance that may serve other shards in other dbs. */
  target: ConnectTarget
  targetDb: number
  timeoutMs: number
  tls?: TlsSettings
  rate?: CopyRate
  /** Where stream bytes wait when the target is slower (memory stays bounded); default a temp dir, removed at stop. */
  spoolDir?: string
  signal?: AbortSignal
  onProgress?: (p: CopyProgressEvent) => void
  /**
   * Memory bounds (tests lower them): unanswered command bytes on the target, source bytes
   * in memory before the spool file, the size from which an argument of the stream passes
   * through instead of being held.
   */
  memory?: {inFlightBytes?: number; spoolBytes?: number; commandBytes?: number}
}
export interface DatabaseCopy {
  /** From +FULLRESYNC. */
  readonly replicationId: string
  readonly startOffset: number
  /** All of sourceDb's snapshot entries are on targetDb; rejects on failure. */
  snapshotLoaded(): Promise<void>
  /**
   * The source replication offset up to which every command is applied AND acknowledged
   * by the target (counting the bytes of skipped commands); -1 until the snapshot is loaded.
   */
  appliedOffset(): number
  /** True once appliedOffset() >= offset, false at deadline (ms since epoch); rejects if the copy failed. */
  waitApplied(offset: number, deadline: number): Promise<boolean>
  /** Closes the link; once resolved nothing more is applied to the target; idempotent. */
  stop(): Promise<void>
  /** Rejects with a one-line ShardctlError when the copy fails; never resolves (a catch is attached). */
  readonly failure: Promise<never>
  /** Stream bytes that had to wait in the spool file because the target was slower (0 when it kept up). */
  spilledBytes(): number
  /** The most bytes of the stream held at once to parse its commands (a large argument passes through). */
  streamHeldPeak(): number
}

/** Commands sent to the target and not yet answered, in bytes, at most. */
export const IN_FLIGHT_LIMIT = 16 * 1024 * 1024
/** Commands sent to the target and not yet answered, in number, at most (give or take one read's worth). */
export const IN_FLIGHT_COMMANDS = 4096
/** Source bytes kept in memory before the spool writes them to its file. */
export const SPOOL_MEMORY = 16 * 1024 * 1024
/** How much of the spool is parsed at a time. */
const READ_SIZE = 256 * 1024
const RATED_READ_SIZE = 4 * 1024
/** How often the applied offset is acknowledged to the source (see FencePolicy). */
export const ACK_PERIOD_MS = 1000
/** A master pings its replicas every 10 s by default: silence this long is a dead link. */
const IDLE_TIMEOUT_MS = 60_000
/** A stream command's argument larger than this passes through to the target, never held whole. */
export const LARGE_ARGUMENT = 8 * 1024 * 1024
/** Pieces in which a large value is written to the target. */
const BIG_PIECE = 1024 * 1024

/** Commands never passed through (onLargeCommand). */
const GATHERED = new Set(['SELECT', 'MULTI', 'EXEC', 'FLUSHALL', 'SWAPDB', 'MOVE', 'COPY', 'FUNCTION', 'REPLCONF'])
/** Commands of no database, never applied. */
const IGNORED = new Set(['PING', 'PUBLISH', 'SPUBLISH'])

export async function startDatabaseCopy(options: DatabaseCopyOptions): Promise<DatabaseCopy> {
  const copy = new LiveCopy(options)
  try {
    await copy.start()
  } catch (error) {
    await copy.stop()
    throw error
  }
  return copy
}

/** A command waiting for the target's reply: its size, the source offset applied once it is answered (-1: none), what it was. */
interface Expected {
  bytes: number
  end: number
  /** What it was, for a refusal: a command's name (its key added to the message, built only then). */
  what: string
  /** The key restored: counted once answered. */
  key?: Buffer
  /** A value written in pieces: the sizes of its piece commands written and not yet answered, which come before its own reply. */
  pieces?: number[]
  /** …and the temporary key they build. */
  temp?: Buffer
}

/** A value larger than a piece, gathered in a file until its entry ends. */
interface BigValue {
  dir: string
  fd: number
  length: number
  crc: Crc64
}

interface BigJob {
  big: BigValue
  key: Buffer
  ttl: number
  type: number
  version: number
  /** Written in pieces (pieces.ts): the entry its pieces' replies are counted on. */
  pieced?: Expected
}
type Job = Buffer | BigJob

class LiveCopy implements DatabaseCopy {
  replicationId = ''
  startOffset = 0
  readonly failure: Promise<never>
  private rejectFailure!: (error: Error) => void
  private failed: Error | undefined
  private ending = false
  private shutdownDone: Promise<void> | undefined

  private readonly sourceWhere: string
  private readonly targetWhere: string
  private sourceAdmin: ScriptedRedis | undefined
  private targetAdmin: ScriptedRedis | undefined
  private sourceLink: ReplicationLink | undefined
  private targetLink: ReplicationLink | undefined
  private readonly spool: Spool
  private readonly fence: FencePolicy

  private readonly framing: SnapshotFraming
  private readonly reader: RdbReader
  private readonly commands: CommandParser
  private readonly replies: ReplyParser
  private resynced: {resolve: () => void; reject: (error: Error) => void} | undefined
  private readonly loaded: Promise<void>
  private resolveLoaded!: () => void
  private rejectLoaded!: (error: Error) => void
  private isLoaded = false
  private snapshotEnded = false
  private fenceRaised: Promise<void> = Promise.resolve()
  private targetHasModules = false
  /** How far the source's clock is ahead of this one, at least (negative: behind). */
  private sourceClockAhead = 0

  private readonly expected: Expected[] = []
  private expectedHead = 0
  private inFlightBytes = 0
  private readonly inFlightLimit: number
  private inFlightWaiter: (() => void) | undefined
  private out: Job[] = []
  private big: BigValue | undefined
  /** Temporary keys of pieced values: this copy's own prefix, and the one being built (removed if the copy ends before it is placed). */
  private readonly tempPrefix = `${TEMP_KEY_PREFIX}${randomBytes(6).toString('hex')}:`
  private temps = 0
  private building: Buffer | undefined

  private applied = -1
  /** A large command passing through (onLargeCommand): what the target is to answer, when it is applied. */
  private large: {sent?: Expected} | undefined
  private consumed = 0
  private db = 0
  private inTx = false
  private txOpened = false
  private waiters: {offset: number; resolve: (ok: boolean) => void; reject: (error: Error) => void; timer: NodeJS.Timeout}[] = []
  private ackTimer: NodeJS.Timeout | undefined

  private keys = 0
  private keysWritten = 0
  private bytesWritten = 0
  private snapshotStarted = Date.now()
  /** The snapshot's RESTOREs: what --rate holds back. */
  private readonly rated = new WeakSet<object>()
  private bytes = 0
  private commandsApplied = 0
  private snapshotLength: number | undefined
  private lastProgress = 0

  constructor(private readonly options: DatabaseCopyOptions) {
    this.sourceWhere = instanceKey(options.source)
    this.targetWhere = instanceKey(options.target)
    this.failure = new Promise<never>((_resolve, reject) => (this.rejectFailure = reject))
    this.failure.catch(() => undefined)
    this.loaded = new Promise<void>((resolve, reject) => {
      this.resolveLoaded = resolve
      this.rejectLoaded = reject
    })
    this.loaded.catch(() => undefined)
    this.spool = new Spool(options.spoolDir, options.memory?.spoolBytes ?? SPOOL_MEMORY)
    this.inFlightLimit = options.memory?.inFlightBytes ?? IN_FLIGHT_LIMIT
    this.fence = new FencePolicy()
    this.replies = new ReplyParser((reply) => this.onReply(reply))
    this.commands = new CommandParser((args, length) => this.onCommand(args, length), {
      above: options.memory?.commandBytes ?? LARGE_ARGUMENT,
      start: (args, count) => this.onLargeCommand(args, count),
      bytes: (chunk) => this.out.push(chunk),
      end: (length) => this.onLargeEnd(length),
    })
    this.reader = new RdbReader(
      {
        entry: (entry) => this.onEntry(entry),
        // The database the stream's first commands are in, until it says SELECT.
        aux: (field, value) => {
          if (field === 'repl-stream-db') this.db = Number(value)
        },
        valuePiece: (entry, piece) => this.onPiece(entry, piece),
      },
      {
        valuesOf: (db) => db === options.sourceDb,
        // A target without any module cannot restore a module value: named, not a RESTORE refused.
        refuseModulesIn: (db) => db === options.sourceDb && !this.targetHasModules,
      },
    )
    this.framing = new SnapshotFraming(this.sourceWhere, {
      fullResync: ({replid, offset}) => {
        this.replicationId = replid
        this.startOffset = offset
        this.consumed = offset
        this.resynced?.resolve()
      },
      header: ({length}) => {
        this.snapshotLength = length
        this.snapshotStarted = Date.now()
        if (this.sourceLink) this.sourceLink.phase = 'the snapshot'
      },
      payload: (chunk) => this.reader.write(chunk),
      end: (rest) => {
        this.reader.end()
        this.endOfSnapshot()
        if (rest.length > 0) this.commands.feed(rest)
      },
    })
  }

  async start(): Promise<void> {
    const {options} = this
    options.signal?.throwIfAborted()
    const admin = {timeoutMs: options.timeoutMs, tls: options.tls, clientName: 'shardctl-copy', nameHostInReplies: true}
    this.sourceAdmin = await connect({...options.source, db: 0}, admin)
    this.targetAdmin = await connect({...options.target, db: 0}, admin)
    await refuseMissingExtensions(this.sourceAdmin, this.targetAdmin, this.sourceWhere, this.targetWhere)
    this.targetHasModules = ((await this.targetAdmin.call('MODULE', 'LIST').catch(() => [])) as unknown[]).length > 0
    await this.fence.read(this.sourceAdmin)
    this.sourceClockAhead = await clockAheadAtLeast(this.sourceAdmin)

    const linkOptions = {timeoutMs: options.timeoutMs, tls: options.tls, signal: options.signal}
    this.targetLink = await ReplicationLink.open(options.target, linkOptions)
    const selected = await this.targetLink.call(['SELECT', String(options.targetDb)])
    if ('error' in selected) throw this.targetLink.refused('SELECT', selected)
    this.targetLink.takeOver(`the copy into database ${options.targetDb}`, {
      onBytes: (chunk) => this.guard(() => this.replies.feed(chunk)),
      onFailure: (error) => this.fail(this.lostTarget(error)),
    })

    const link = await ReplicationLink.open(options.source, linkOptions)
    this.sourceLink = link
    const port = await link.call(['REPLCONF', 'listening-port', String(link.socket.localPort ?? 0)])
    if ('error' in port) throw link.refused('REPLCONF listening-port', port)
    const capa = await link.call(['REPLCONF', 'capa', 'eof', 'capa', 'psync2'])
    if ('error' in capa) throw link.refused('REPLCONF capa', capa)
    const resynced = new Promise<void>((resolve, reject) => (this.resynced = {resolve, reject}))
    link.send(['PSYNC', '?', '-1'])
    link.takeOver('PSYNC', {
      onBytes: (chunk) => this.spool.append(chunk),
      onFailure: (error) => this.fail(this.lostSource(error)),
    })
    link.idleTimeout(IDLE_TIMEOUT_MS)
    this.pump().catch((error: Error) => this.fail(error))
    await resynced
    this.resynced = undefined
  }

  snapshotLoaded(): Promise<void> {
    return this.loaded
  }

  appliedOffset(): number {
    return this.applied
  }

  spilledBytes(): number {
    return this.spool.spilled
  }

  streamHeldPeak(): number {
    return this.commands.peakHeld
  }

  waitApplied(offset: number, deadline: number): Promise<boolean> {
    if (this.failed) return Promise.reject(this.failed)
    if (this.applied >= offset) return Promise.resolve(true)
    if (this.ending) return Promise.resolve(false)
    return new Promise<boolean>((resolve, reject) => {
      const waiter = {
        offset,
        resolve,
        reject,
        timer: setTimeout(
          () => {
            this.waiters = this.waiters.filter((w) => w !== waiter)
            resolve(this.applied >= offset)
          },
          Math.max(0, deadline - Date.now()),
        ),
      }
      this.waiters.push(waiter)
    })
  }

  async stop(): Promise<void> {
    await this.shutdown()
  }

  // ---- the source's bytes, in order ----------------------------------------------------

  private async pump(): Promise<void> {
    while (!this.ending) {
      if (this.inFlightFull()) {
        await new Promise<void>((resolve) => (this.inFlightWaiter = resolve))
        continue
      }
      // Under --rate, small reads: the keys of one read go out together, then the wait.
      const chunk = this.spool.take(this.options.rate && !this.snapshotEnded ? RATED_READ_SIZE : READ_SIZE)
      if (!chunk) {
        await this.spool.arrival()
        continue
      }
      if (this.framing.done) this.commands.feed(chunk)
      else {
        try {
          this.framing.feed(chunk)
        } catch (error) {
          throw (error as Error).name === 'ReplyError' ? this.sourceLink!.refused('PSYNC', {error: (error as Error).message}) : error
        }
      }
      await this.flushOut()
      this.progress(false)
    }
  }

  /** Honour --rate during the snapshot: before a RESTORE goes out, wait until the keys and bytes written so far are due. */
  private async throttle(rate: CopyRate): Promise<void> {
    const dueMs = Math.max(
      rate.keysPerSecond ? (this.keysWritten / rate.keysPerSecond) * 1000 : 0,
      rate.bytesPerSecond ? (this.bytesWritten / rate.bytesPerSecond) * 1000 : 0,
    )
    const wait = dueMs - (Date.now() - this.snapshotStarted)
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
  }

  private progress(force: boolean): void {
    const now = Date.now()
    if (!this.options.onProgress || (!force && now - this.lastProgress < 250)) return
    this.lastProgress = now
    this.options.onProgress(
      this.snapshotEnded
        ? {phase: 'stream', keys: this.commandsApplied, bytes: this.consumed - this.startOffset}
        : {phase: 'snapshot', keys: this.keys, bytes: this.bytes, snapshotBytes: this.snapshotLength},
    )
  }

  // ---- the snapshot ---------------------------------------------------------------------

  private onEntry(entry: RdbEntry): void {
    if (entry.db !== this.options.sourceDb) return
    const big = this.big
    this.big = undefined
    // A key whose moment has passed on the source's clock is not brought back (the source
    // would not return it either, and sends its DEL); the clock here may be ahead of it.
    if (entry.expireAtMs !== undefined && entry.expireAtMs <= Date.now() + this.sourceClockAhead) {
      if (big) dropBig(big)
      return
    }
    const ttl = entry.expireAtMs ?? 0
    if (big) {
      const job: BigJob = {big, key: entry.key, ttl, type: entry.type, version: this.reader.version}
      if (pieceable(entry.type, big)) {
        // Its pieces are counted as they are written; this entry is the final placing.
        job.pieced = {bytes: 256 + entry.key.length, end: -1, what: 'the pieces', key: entry.key, pieces: []}
        this.expect(job.pieced)
      } else {
        const bytes = big.length + 64 + entry.key.length
        this.expect({bytes, end: -1, what: 'RESTORE', key: entry.key})
      }
      if (this.options.rate) this.rated.add(job)
      this.out.push(job)
      this.bytes += big.length
    } else {
      const command = encodeCommand([
        'RESTORE',
        entry.key,
        String(ttl),
        dumpPayload(entry.type, entry.value!, this.reader.version),
        'ABSTTL',
      ])
      this.expect({bytes: command.length, end: -1, what: 'RESTORE', key: entry.key})
      if (this.options.rate) this.rated.add(command)
      this.out.push(command)
      this.bytes += entry.valueLength
    }
  }

  /** A piece of a value over 8 MB: into a file, its CRC computed on the way (the DUMP payload's). */
  private onPiece(entry: RdbEntry, piece: Buffer): void {
    if (!this.big) {
      const dir = mkdtempSync(join(this.options.spoolDir ?? tmpdir(), 'shardctl-value-'))
      this.big = {dir, fd: openSync(join(dir, 'value'), 'w+'), length: 0, crc: new Crc64().update(Buffer.from([entry.type]))}
    }
    const big = this.big
    let done = 0
    while (done < piece.length) done += writeSync(big.fd, piece, done, piece.length - done, big.length + done)
    big.length += piece.length
    big.crc.update(piece)
  }

  private endOfSnapshot(): void {
    this.snapshotEnded = true
    if (this.sourceLink) this.sourceLink.phase = 'the replication stream'
    this.progress(true)
    // Everything restored so far, and nothing else, is the state at startOffset.
    this.advance(this.startOffset)
    this.fenceRaised = this.sourceAdmin ? this.fence.raise(this.sourceAdmin, this.sourceWhere) : Promise.resolve()
    this.fenceRaised.catch((error: Error) => this.fail(error))
    this.ackTimer = setInterval(() => this.ack(), ACK_PERIOD_MS)
    this.ackTimer.unref()
  }

  // ---- the stream -----------------------------------------------------------------------

  private onCommand(args: Buffer[], length: number): void {
    const start = this.consumed
    this.consumed += length
    const end = this.consumed
    if (args.length === 0) {
      this.advance(end)
      return
    }
    const {sourceDb} = this.options
    const name = args[0].toString('latin1').toUpperCase()
    if (IGNORED.has(name)) {
      this.advance(end)
      return
    }
    switch (name) {
      case 'REPLCONF': {
        this.advance(end)
        if (args[1]?.toString('latin1').toUpperCase() === 'GETACK') this.ack()
        return
      }
      case 'SELECT': {
        this.db = Number(args[1]?.toString('latin1'))
        this.advance(end)
        return
      }
      case 'MULTI': {
        this.inTx = true
        this.txOpened = false
        return
      }
      case 'EXEC': {
        this.inTx = false
        if (this.txOpened) this.send([Buffer.from('EXEC')], end, 'EXEC')
        else this.advance(end)
        this.txOpened = false
        return
      }
      case 'FLUSHALL': {
        // The other databases of the source are not ours; nor are the target's.
        this.apply([Buffer.from('FLUSHDB'), ...args.slice(1)], end)
        return
      }
      case 'SWAPDB': {
        const a = Number(args[1]?.toString('latin1'))
        const b = Number(args[2]?.toString('latin1'))
        if (a === sourceDb || b === sourceDb) throw this.crossDb(args, start)
        this.advance(end)
        return
      }
      case 'MOVE': {
        if (this.db === sourceDb || Number(args[2]?.toString('latin1')) === sourceDb) throw this.crossDb(args, start)
        this.advance(end)
        return
      }
      case 'COPY': {
        // Within the moved database: applied. Across it, either way: the application couples
        // the moved database with another one, which the move would put on another instance.
        const at = args.findIndex((arg, i) => i >= 3 && arg.toString('latin1').toUpperCase() === 'DB')
        const dest = at === -1 ? this.db : Number(args[at + 1]?.toString('latin1'))
        if (dest === sourceDb && this.db === sourceDb) {
          const remapped = [...args]
          if (at !== -1) remapped[at + 1] = Buffer.from(String(this.options.targetDb))
          this.apply(remapped, end)
        } else if (dest === sourceDb || this.db === sourceDb) throw this.crossDb(args, start)
        else this.advance(end)
        return
      }
      case 'FUNCTION': {
        throw new ShardctlError(
          `${this.sourceWhere} changed its functions (FUNCTION ${args[1]?.toString('latin1') ?? ''}) during the copy of database ${sourceDb}: the copy stopped`,
          {code: 'ECROSSDB', hint: 'functions are not per database: load the same library on the target, then copy again'},
        )
      }
      default: {
        if (this.db === sourceDb) this.apply(args, end)
        else this.advance(end)
      }
    }
  }

  /**
   * A stream command with an argument too large to hold: passed through to the target as
   * its bytes come (the target gets them exactly as the source sent them), or dropped as
   * they come when it is another database's. Commands that cross databases, or change
   * which one is selected, are gathered whole as always: their arguments are a key or a
   * number, and they must be read before anything is decided.
   */
  private onLargeCommand(args: Buffer[], count: number): 'forward' | 'discard' | 'gather' {
    const name = args[0].toString('latin1').toUpperCase()
    if (GATHERED.has(name)) return 'gather'
    this.large = {}
    if (IGNORED.has(name) || this.db !== this.options.sourceDb) return 'discard'
    if (this.inTx && !this.txOpened) {
      this.send([Buffer.from('MULTI')], -1, 'MULTI')
      this.txOpened = true
    }
    this.commandsApplied++
    // Its bytes are not counted in flight: the target answers only once it has them all.
    this.large.sent = {bytes: 0, end: -1, what: `${name} (of ${count} arguments)`}
    this.expect(this.large.sent)
    return 'forward'
  }

  private onLargeEnd(length: number): void {
    const large = this.large!
    this.large = undefined
    this.consumed += length
    if (!large.sent) this.advance(this.consumed)
    else if (!this.inTx) large.sent.end = this.consumed
  }

  /** A lost source link says where the copy was. */
  private lostSource(error: Error): Error {
    if (!(error instanceof ShardctlError) || error.code !== 'ECONNLOST') return error
    const where = this.snapshotEnded
      ? `the replication stream, at offset ${this.consumed} (applied: ${this.applied})`
      : `the snapshot, after ${this.framing.received.toLocaleString('en-US')} bytes`
    return new ShardctlError(
      `lost the connection to ${this.sourceWhere} during ${where}, copying database ${this.options.sourceDb}: the copy stopped`,
      {
        code: 'ECONNLOST',
        hint: 'a master drops a replica that is killed (CLIENT KILL), times out (repl-timeout) or overflows its output buffer: check its log, then copy again',
        cause: error,
      },
    )
  }

  private lostTarget(error: Error): Error {
    if (!(error instanceof ShardctlError) || error.code !== 'ECONNLOST') return error
    return new ShardctlError(
      `lost the connection to ${this.targetWhere} while copying database ${this.options.sourceDb} of ${this.sourceWhere} into its database ${this.options.targetDb}: the copy stopped`,
      {code: 'ECONNLOST', hint: 'check that the target is up, then copy again', cause: error},
    )
  }

  private crossDb(args: Buffer[], offset: number): ShardctlError {
    const shown = [
      args[0].toString('latin1').toUpperCase(),
      ...args.slice(1, 5).map((a) => (a.length > 40 ? `${a.subarray(0, 40).toString()}…` : a.toString())),
    ].join(' ')
    return new ShardctlError(
      `${this.sourceWhere} ran ${shown} at offset ${offset}, which moves data into or out of database ${this.options.sourceDb}: the copy into ${this.targetWhere} database ${this.options.targetDb} stopped, and nothing after it was applied`,
      {code: 'ECROSSDB', hint: 'stop whatever runs SWAPDB, MOVE or COPY … DB on this database, then start the copy again'},
    )
  }

  /** A command of the copied database, to the target; inside MULTI, the target's own MULTI opens with the first one. */
  private apply(args: Buffer[], end: number): void {
    if (this.inTx && !this.txOpened) {
      this.send([Buffer.from('MULTI')], -1, 'MULTI')
      this.txOpened = true
    }
    this.commandsApplied++
    this.send(args, this.inTx ? -1 : end, args[0].toString('latin1').toUpperCase())
  }

  private send(args: Buffer[], end: number, what: string): void {
    const command = encodeCommand(args)
    this.expect({bytes: command.length, end, what})
    this.out.push(command)
  }

  /**
   * Bytes up to `offset` were consumed without anything to apply: applied once every
   * command before them is answered (at once when none waits). Inside a transaction
   * nothing is applied before its EXEC is.
   */
  private advance(offset: number): void {
    if (this.inTx) return
    if (this.expectedHead === this.expected.length) this.setApplied(offset)
    else this.expected.at(-1)!.end = offset
  }

  private setApplied(offset: number): void {
    if (offset <= this.applied) return
    this.applied = offset
    if (!this.isLoaded && this.snapshotEnded && offset >= this.startOffset) {
      this.isLoaded = true
      // A diskless master starts the stream only after the first ACK.
      this.ack()
      // Loaded means loaded with the source's fencing kept (FencePolicy), and the source
      // streaming to us: until it has reaped its snapshot's child it still counts us as
      // waiting for the snapshot, and a FLUSHALL (which kills that child) or the stream
      // piling up in our output buffer meanwhile would drop us.
      Promise.all([this.fenceRaised, this.online()]).then(
        () => this.resolveLoaded(),
        (error: Error) => this.fail(error),
      )
    }
    if (this.waiters.length > 0) {
      const ready = this.waiters.filter((w) => offset >= w.offset)
      this.waiters = this.waiters.filter((w) => offset < w.offset)
      for (const w of ready) {
        clearTimeout(w.timer)
        w.resolve(true)
      }
    }
  }

  /** Resolves once the source lists this link as an online replica (and acknowledges it: a diskless source then starts the stream). */
  private async online(): Promise<void> {
    const port = `port=${this.sourceLink?.socket.localPort},`
    const deadline = Date.now() + this.options.timeoutMs
    while (!this.ending) {
      const info = await this.sourceAdmin!.info('replication')
      if (info.split('\n').some((line) => /^slave\d+:/.test(line) && line.includes(port) && line.includes('state=online'))) {
        this.ack()
        return
      }
      if (Date.now() > deadline) {
        throw new ShardctlError(
          `${this.sourceWhere} sent its snapshot but did not list the copy as an online replica within ${this.options.timeoutMs} ms`,
          {
            code: 'ETIMEOUT',
            hint: "check the source's log and INFO replication",
          },
        )
      }
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }

  /** REPLCONF ACK of the applied offset, never of what was merely received. */
  private ack(): void {
    if (!this.isLoaded || this.ending) return
    this.sourceLink?.send(['REPLCONF', 'ACK', String(this.applied)])
  }

  // ---- the target -----------------------------------------------------------------------

  private expect(entry: Expected): void {
    this.expected.push(entry)
    this.inFlightBytes += entry.bytes
  }

  private onReply(reply: Reply): void {
    if (this.expectedHead === this.expected.length)
      throw new ShardctlError(`${this.targetWhere} sent a reply to nothing`, {code: 'EPROTOCOL'})
    const head = this.expected[this.expectedHead]
    if (head.pieces !== undefined && head.pieces.length > 0) {
      // A piece of a value, before the value's own reply.
      this.inFlightBytes -= head.pieces.shift()!
      if (reply.error !== undefined) throw this.refused(head, reply.error)
      this.wakeInFlight()
      return
    }
    const entry = this.expected[this.expectedHead++]
    if (this.expectedHead > 4096 && this.expectedHead * 2 > this.expected.length) {
      this.expected.splice(0, this.expectedHead)
      this.expectedHead = 0
    }
    this.inFlightBytes -= entry.bytes
    if (reply.error !== undefined) throw this.refused(entry, reply.error)
    if (entry.temp && this.building === entry.temp) this.building = undefined
    if (entry.key) this.keys++
    if (entry.end >= 0) this.setApplied(entry.end)
    this.wakeInFlight()
  }

  /**
   * Enough unanswered commands on the target: by bytes, and by count, since every command
   * in flight is a few objects that outlive V8's young generation; a deeper pipeline of
   * small values only fills the old generation with garbage (memory grew with the number
   * of keys without it).
   */
  private inFlightFull(): boolean {
    return this.inFlightBytes >= this.inFlightLimit || this.expected.length - this.expectedHead >= IN_FLIGHT_COMMANDS
  }

  private wakeInFlight(): void {
    if (this.inFlightWaiter && !this.inFlightFull()) {
      const wake = this.inFlightWaiter
      this.inFlightWaiter = undefined
      wake()
    }
  }

  private refused(entry: Expected, error: string): ShardctlError {
    return new ShardctlError(
      `${this.targetWhere} refused ${entry.what}${entry.key ? ` of key ${quoteKey(entry.key)}` : ''} in database ${this.options.targetDb} (copying database ${this.options.sourceDb} of ${this.sourceWhere}): ${error}`,
      {
        code: 'ETARGET',
        hint: /BUSYKEY/.test(error)
          ? 'the target database must be empty when the copy starts'
          : 'the copy stopped: see why the target refused, then start again',
      },
    )
  }

  /** Write the queued commands, in order, waiting for the socket to drain; a large value streams from its file. */
  private async flushOut(): Promise<void> {
    const socket = this.targetLink!.socket
    const rate = this.options.rate
    while (this.out.length > 0 && !this.ending) {
      if (rate && this.rated.has(this.out[0])) {
        await this.throttle(rate)
        const job = this.out.shift()!
        this.keysWritten++
        if (Buffer.isBuffer(job)) {
          this.bytesWritten += job.length
          if (!socket.write(job)) await drained(socket)
        } else {
          this.bytesWritten += job.big.length
          await this.writeBig(job)
        }
        continue
      }
      const batch: Buffer[] = []
      let size = 0
      while (this.out.length > 0 && Buffer.isBuffer(this.out[0]) && size < 1024 * 1024) {
        const command = this.out.shift() as Buffer
        batch.push(command)
        size += command.length
      }
      if (batch.length > 0) {
        if (!socket.write(batch.length === 1 ? batch[0] : Buffer.concat(batch, size))) await drained(socket)
        continue
      }
      const job = this.out.shift() as Exclude<Job, Buffer>
      await this.writeBig(job)
    }
  }

  /**
   * A value over a piece: in pieces when its type allows (writePieces); otherwise (a
   * stream with consumers, a module value) RESTORE, written from its file in 1 MB pieces: memory stays
   * at one piece here. The target reads the argument into its query buffer as it comes
   * (serving its other clients meanwhile), then deserialises the whole value at once:
   * its stall is that one RESTORE, tens of milliseconds for a 100 MB string, up to about
   * a second for a hash of a million fields; it also holds the payload in memory once,
   * and refuses one beyond its proto-max-bulk-len (512 MB by default).
   */
  private async writeBig(job: BigJob): Promise<void> {
    if (job.pieced) {
      await this.writePieces(job, job.pieced)
      return
    }
    const socket = this.targetLink!.socket
    const {big} = job
    try {
      const ttl = String(job.ttl)
      const payloadLength = 1 + big.length + 10
      const head = Buffer.concat([
        Buffer.from(`*5\r\n$7\r\nRESTORE\r\n$${job.key.length}\r\n`),
        job.key,
        Buffer.from(`\r\n$${ttl.length}\r\n${ttl}\r\n$${payloadLength}\r\n`),
        Buffer.from([job.type]),
      ])
      if (!socket.write(head)) await drained(socket)
      for (let at = 0; at < big.length && !this.ending;) {
        const piece = Buffer.allocUnsafe(Math.min(BIG_PIECE, big.length - at))
        const n = readSync(big.fd, piece, 0, piece.length, at)
        at += n
        if (!socket.write(piece.subarray(0, n))) await drained(socket)
      }
      const trailer = Buffer.allocUnsafe(10)
      trailer.writeUInt16LE(job.version, 0)
      big.crc.update(trailer.subarray(0, 2))
      trailer.writeBigUInt64LE(big.crc.value, 2)
      if (!socket.write(Buffer.concat([trailer, Buffer.from('\r\n$6\r\nABSTTL\r\n')]))) await drained(socket)
    } finally {
      dropBig(big)
    }
  }

  /**
   * A value over a piece, built under a temporary key in commands of bounded size
   * (pieces.ts), in the target's database, then placed on its key with its expiry by one
   * script: the target's stall is one piece, never the whole value, and no reader sees a
   * half value. The pieces count against the in-flight limit like any command. If the
   * copy ends before the placing, the temporary key is removed (closeAll); if the process
   * dies, it stays in the target database, which a move's rollback empties.
   */
  private async writePieces(job: BigJob, entry: Expected): Promise<void> {
    const socket = this.targetLink!.socket
    const {big} = job
    const temp = Buffer.from(`${this.tempPrefix}${++this.temps}`)
    this.building = temp
    entry.temp = temp
    try {
      for (const args of pieceCommands(big.fd, big.length, job.type, temp)) {
        while (this.inFlightFull() && !this.ending) await new Promise<void>((resolve) => (this.inFlightWaiter = resolve))
        if (this.ending) return
        const command = encodeCommand(args)
        entry.pieces!.push(command.length)
        this.inFlightBytes += command.length
        if (!socket.write(command)) await drained(socket)
      }
      if (this.ending) return
      const place = encodeCommand(['EVAL', luaScripts.placeValue.lua, '2', temp, job.key, String(job.ttl)])
      // Counted from here on as this entry's own bytes (its estimate until now).
      this.inFlightBytes += place.length - entry.bytes
      entry.bytes = place.length
      if (!socket.write(place)) await drained(socket)
    } finally {
      dropBig(big)
    }
  }

  // ---- the end --------------------------------------------------------------------------

  /** A failure of our own code while handling bytes is the copy's failure. */
  private guard(fn: () => void): void {
    try {
      fn()
    } catch (error) {
      this.fail(error as Error)
    }
  }

  private fail(error: Error): void {
    if (this.failed || this.ending) return
    const failure =
      error instanceof ShardctlError
        ? error
        : new ShardctlError(
            `the copy of database ${this.options.sourceDb} from ${this.sourceWhere} failed: ${error.message.split('\n')[0]}`,
            {
              code: 'EFAILED',
              cause: error,
            },
          )
    this.failed = failure
    this.rejectFailure(failure)
    this.rejectLoaded(failure)
    this.resynced?.reject(failure)
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer)
      w.reject(failure)
    }
    this.shutdown().catch(() => undefined)
  }

  private shutdown(): Promise<void> {
    this.shutdownDone ??= this.closeAll()
    return this.shutdownDone
  }

  private async dropTemp(temp: Buffer): Promise<void> {
    await this.targetAdmin!.multi().select(this.options.targetDb).del(temp).select(0).exec()
  }

  private async closeAll(): Promise<void> {
    this.ending = true
    if (this.ackTimer) clearInterval(this.ackTimer)
    this.sourceLink?.close()
    this.spool.interrupt()
    this.inFlightWaiter?.()
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer)
      w.resolve(this.applied >= w.offset)
    }
    const link = this.targetLink
    if (link) {
      // Commands already written may still be in the target's socket: cut our connection
      // from another one, so that once this resolves nothing more is applied.
      if (this.expectedHead < this.expected.length && this.targetAdmin && link.socket.localPort !== undefined) {
        await this.targetAdmin.call('CLIENT', 'KILL', 'ADDR', `${link.socket.localAddress}:${link.socket.localPort}`).catch(() => undefined)
      }
      link.close()
      // A value being built in pieces and not placed: its temporary key goes.
      if (this.building && this.targetAdmin) await this.dropTemp(this.building).catch(() => undefined)
    }
    if (this.big) dropBig(this.big)
    this.big = undefined
    for (const job of this.out) if (!Buffer.isBuffer(job)) dropBig(job.big)
    this.out = []
    this.spool.close()
    if (this.sourceAdmin) await this.fence.restore(this.sourceAdmin).catch(() => undefined)
    await Promise.all([close(this.sourceAdmin), close(this.targetAdmin)])
  }
}

/**
 * The source counts this client as one of its replicas, and a replica counts towards
 * min-replicas-to-write for min-replicas-max-lag seconds after each of its ACKs. No ACK
 * schedule avoids that: the source marks a replica good the moment its snapshot is sent
 * (repl_ack_time is set when it goes online), and it drops one that acknowledges nothing
 * for repl-timeout. So the copy is made to count always, and the source's requirement is
 * raised by exactly one while it does:
 *
 * * ACK every second (ACK_PERIOD_MS), far inside min-replicas-max-lag and repl-timeout:
 *   while the copy runs it is always one good replica, never sometimes;
 * * when the snapshot has arrived (the moment the source puts us online), and only when
 *   the source has min-replicas-to-write N > 0, set it to N + 1: good replicas counted =
 *   real ones + 1 >= N + 1 exactly when real ones >= N. The fence is what it was;
 * * at the end (stop or failure) put N back, unless someone changed it meanwhile.
 *
 * If the copy's process dies, the source keeps N + 1 and, without our ACKs, refuses
 * writes unless N + 1 real replicas are good: stricter, never weaker, until the setting
 * is put back (docs/move-engine.md says how). Before the snapshot has arrived the copy is
 * not counted at all (a replica waiting for its snapshot is not online).
 */
class FencePolicy {
  private toWrite = 0
  private maxLag = 0
  private raised = false

  async read(source: ScriptedRedis): Promise<void> {
    const reply = await source.config('GET', 'min-replicas-*')
    for (let i = 0; i + 1 < reply.length; i += 2) {
      if (reply[i] === 'min-replicas-to-write') this.toWrite = Number(reply[i + 1])
      if (reply[i] === 'min-replicas-max-lag') this.maxLag = Number(reply[i + 1])
    }
  }

  async raise(source: ScriptedRedis, where: string): Promise<void> {
    if (this.toWrite <= 0 || this.maxLag <= 0) return
    try {
      await source.config('SET', 'min-replicas-to-write', String(this.toWrite + 1))
      this.raised = true
    } catch (error) {
      throw new ShardctlError(`could not keep the fencing of ${where} while copying from it: ${(error as Error).message}`, {
        code: 'EFENCE',
        hint: 'the copy counts as a replica of the source; CONFIG SET must be allowed to raise min-replicas-to-write by one',
      })
    }
  }

  async restore(source: ScriptedRedis): Promise<void> {
    if (!this.raised) return
    this.raised = false
    const reply = await source.config('GET', 'min-replicas-to-write')
    if (Number(reply[1]) === this.toWrite + 1) await source.config('SET', 'min-replicas-to-write', String(this.toWrite))
  }
}

/**
 * How far a server's clock is ahead of this one, at least: its TIME was read at the
 * latest when the reply arrived, so its clock then was at least what it said.
 */
async function clockAheadAtLeast(client: ScriptedRedis): Promise<number> {
  const [seconds, micros] = (await client.call('TIME')) as [string, string]
  return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000) - Date.now()
}

function dropBig(big: BigValue): void {
  try {
    closeSync(big.fd)
  } catch {
    // already closed
  }
  rmSync(big.dir, {recursive: true, force: true})
}

function drained(socket: NodeJS.WritableStream): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      socket.removeListener('drain', done)
      socket.removeListener('close', done)
      resolve()
    }
    socket.once('drain', done)
    socket.once('close', done)
  })
}

function quoteKey(key: Buffer): string {
  return JSON.stringify(key.subarray(0, 100).toString())
}

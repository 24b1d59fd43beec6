import {Writable} from 'node:stream'

import {ShardctlError} from '../errors.js'
import {NEWEST_RDB_VERSION, RdbOpcode, RdbType, isOneString, typeName} from './constants.js'
import {crc64} from './crc64.js'
import {RdbFormatError} from './format-error.js'
import {RdbInput, type Walk} from './input.js'
import {walkHash} from './types/hash.js'
import {walkList} from './types/list.js'
import {moduleTypeOf, walkModule, walkModuleFields} from './types/module.js'
import {walkSet} from './types/set.js'
import {walkStream} from './types/stream.js'
import {walkZset} from './types/zset.js'

/**
 * A streaming RDB reader: fed with chunks as they arrive (from a socket, a file, S3),
 * cut anywhere, it reports the header, the aux fields, the databases, the functions and
 * every key, and verifies the file's CRC-64 as the bytes go by.
 *
 * It knows the *structure* of every type and encoding Redis writes (one walker per type
 * in ./types), enough to find where each value ends, but it does not decode values: a
 * value's bytes, exactly as the RDB holds them, are what a DUMP payload carries, so a
 * value is copied as those bytes (`dumpPayload`, then RESTORE) and keeps its encoding and
 * its precision (a score of 1e-300 or 2^53+1 stays what it was).
 *
 * Memory stays bounded whatever the file's size and the values' sizes: a value is read
 * as it streams past, never gathered, unless the caller asked for its database; then it
 * comes whole when small, or in pieces of `pieceSize` bytes (8 MB by default) when
 * larger, so that a 100 MB string never needs 100 MB here. Keys are always read whole.
 */

export interface RdbEntry {
  db: number
  key: Buffer
  /** The RDB type byte: the data type and its encoding (RdbType; typeName() names it). */
  type: number
  /** Absolute expiry time in milliseconds since the epoch, when the key has one. */
  expireAtMs?: number
  /** Seconds since last access (maxmemory-policy *-lru), when the RDB carries it. */
  idleSeconds?: number
  /** The LFU counter (maxmemory-policy *-lfu), when the RDB carries it. */
  frequency?: number
  /** The size of the value's bytes in the RDB; counted as they pass, final when `entry` is called. */
  valueLength: number
  /**
   * The value's bytes as the RDB holds them (the body of a DUMP payload): set when its
   * database's values were asked for and it is at most pieceSize bytes. A larger one has
   * come through `valuePiece` instead.
   */
  value?: Buffer
  /** A module value: its module type, which only that module can decode. */
  module?: ModuleType
}

export interface ModuleType {
  id: bigint
  /** The module type's name, e.g. "MBbloom--" (RedisBloom) or "ReJSON-RL". */
  name: string
  encodingVersion: number
}

export interface RdbSummary {
  version: number
  /** Keys per database. */
  keys: Map<number, number>
  /** The CRC-64 of the file; `verified` is false when Redis wrote none (rdbchecksum no: a zero trailer). */
  checksum: bigint
  verified: boolean
  /** Bytes read, trailer included. */
  length: number
}

/** What the reader reports, in the order of the file; every callback is optional. */
export interface RdbHandler {
  header?(info: {version: number}): void
  /** redis-ver, redis-bits, ctime, used-mem, repl-stream-db, repl-id, repl-offset, aof-base, ... */
  aux?(field: string, value: string): void
  selectDb?(db: number): void
  /** The sizes Redis announces for the next database (a hint for its hash tables). */
  resizeDb?(info: {db: number; keys: number; expires: number}): void
  /** A function library (FUNCTION2): its code, which FUNCTION LOAD accepts. */
  functionLibrary?(code: Buffer): void
  /** A module's aux data: the module must be loaded where this snapshot is restored. */
  moduleAux?(module: ModuleType & {when: number}): void
  /**
   * Every key, once, after its value: with the value's bytes when they were asked for
   * (and small enough), without them otherwise.
   */
  entry?(entry: RdbEntry): void
  /**
   * A value of an asked-for database larger than pieceSize, in order, in pieces of
   * pieceSize bytes; `last` marks the final one. `entry` follows, without `value`.
   */
  valuePiece?(entry: RdbEntry, piece: Buffer, last: boolean): void
  /** The end of the file, its checksum verified. */
  end?(summary: RdbSummary): void
}

export interface RdbReaderOptions {
  /** Whose values to deliver: the databases for which the caller wants the bytes. Default: none. */
  valuesOf?: (db: number) => boolean
  /** Values larger than this come in pieces of this size. Default 8 MB. */
  pieceSize?: number
  /**
   * The databases in which a module value stops the reader, naming its key and module
   * type (a ShardctlError, code EMODULE): the caller cannot restore one where it goes.
   * Default: none (module values are walked by their annotations, and named).
   */
  refuseModulesIn?: (db: number) => boolean
}

export const DEFAULT_PIECE_SIZE = 8 * 1024 * 1024

export class RdbReader {
  private readonly input = new RdbInput()
  private readonly walk: Walk
  private readonly valuesOf: (db: number) => boolean
  private readonly pieceSize: number
  private readonly refuseModulesIn: (db: number) => boolean
  private failure: Error | undefined
  private finished = false
  private summary: RdbSummary | undefined
  private readonly keys = new Map<number, number>()
  /** What is being read, for error messages: a phrase (undefined: between keys of whereDb), or a key's value. */
  private where: string | undefined = 'the header'
  private whereDb = 0
  private whereKey: RdbEntry | undefined

  /** The value being captured: its entry, and its bytes not yet delivered. */
  private capturing: RdbEntry | undefined
  private parts: Buffer[] = []
  private partsLength = 0
  private pieced = false
  private readonly sink = (bytes: Buffer) => this.captured(bytes)

  /** The RDB version, once the header is read. */
  version = 0

  private readonly handler: RdbHandler

  constructor(handler: RdbHandler, options: RdbReaderOptions = {}) {
    this.handler = guarded(handler)
    this.valuesOf = options.valuesOf ?? (() => false)
    this.pieceSize = options.pieceSize ?? DEFAULT_PIECE_SIZE
    this.refuseModulesIn = options.refuseModulesIn ?? (() => false)
    this.walk = this.parse()
  }

  /** True once the file's last byte (its checksum) was read and verified. */
  get done(): boolean {
    return this.finished
  }

  /** Bytes consumed so far. */
  get position(): number {
    return this.input.position
  }

  /**
   * Bytes of the input this reader keeps between two writes: a cut header, a key being
   * read, and the captured part of a value not yet handed out (less than a piece).
   * Whatever the file's size, this stays below pieceSize plus a chunk and the longest key.
   */
  get heldBytes(): number {
    let held = this.input.held
    for (const part of this.parts) held += part.length
    return held
  }

  /** The next bytes of the file. Throws (a ShardctlError, code ERDB) on anything that is not a valid RDB. */
  write(chunk: Buffer): void {
    if (this.failure) throw this.failure
    if (this.finished) {
      if (chunk.length > 0) throw this.fail(new RdbFormatError(`${chunk.length} bytes after the end of the file`))
      return
    }
    try {
      // The refill hands captured bytes out (valuePiece): inside the try, like the parse.
      this.input.refill(chunk)
      if (this.walk.next().done) {
        this.finished = true
        if (this.input.pending > 0) throw new RdbFormatError(`${this.input.pending} bytes after the end of the file`)
        this.handler.end?.(this.summary!)
      }
    } catch (error) {
      throw this.fail(error as Error)
    }
  }

  /** No more bytes will come: throws unless the file was complete. */
  end(): RdbSummary {
    if (this.failure) throw this.failure
    if (!this.finished) {
      throw this.fail(
        new ShardctlError(`the RDB ends early: ${this.input.position.toLocaleString('en-US')} bytes, cut in ${this.describeWhere()}`, {
          code: 'ERDB',
        }),
      )
    }
    return this.summary!
  }

  /** Built only for a message: the parser only notes what it is in. */
  private describeWhere(): string {
    const entry = this.whereKey
    if (entry) return `the value of key ${JSON.stringify(entry.key.subarray(0, 100).toString())} in database ${entry.db}`
    return this.where ?? `database ${this.whereDb}`
  }

  /**
   * A failure of the caller's handler is the caller's, passed on as it is. Any other
   * failure while parsing is the file's: corrupt bytes can break the parser in ways no
   * check foresaw (a RangeError), and the message says where.
   */
  private fail(error: Error): Error {
    this.failure =
      error instanceof HandlerFailure
        ? (error.cause as Error)
        : error instanceof ShardctlError
          ? error
          : new ShardctlError(
              `the RDB is not valid at byte ${this.input.position.toLocaleString('en-US')}, in ${this.describeWhere()}: ${error.message}`,
              {
                code: 'ERDB',
                cause: error,
              },
            )
    return this.failure
  }

  private *parse(): Walk {
    const input = this.input
    const handler = this.handler
    let magic: Buffer | undefined
    while (!(magic = input.fixed(9))) yield
    const text = magic.toString('latin1')
    if (!/^REDIS\d{4}$/.test(text)) throw new RdbFormatError('this is not an RDB file (it does not start with REDIS and a version)')
    const version = Number(text.slice(5))
    if (version < 1 || version > NEWEST_RDB_VERSION) {
      throw new RdbFormatError(`RDB version ${version} is newer than this reader knows (${NEWEST_RDB_VERSION})`)
    }
    this.version = version
    handler.header?.({version})

    let db = 0
    let dbKeys = 0
    const countKeys = () => {
      if (dbKeys > 0) this.keys.set(db, (this.keys.get(db) ?? 0) + dbKeys)
      dbKeys = 0
    }
    let wanted = this.valuesOf(0)
    let expireAtMs: number | undefined
    let idleSeconds: number | undefined
    let frequency: number | undefined
    for (;;) {
      this.where = undefined
      this.whereDb = db
      this.whereKey = undefined
      let type: number
      while ((type = input.byte()) < 0) yield
      if (type === RdbOpcode.EXPIRETIME_MS) {
        let bytes: Buffer | undefined
        while (!(bytes = input.fixed(8))) yield
        expireAtMs = bytes.readUInt32LE(0) + bytes.readInt32LE(4) * 2 ** 32
      } else if (type === RdbOpcode.EXPIRETIME) {
        let bytes: Buffer | undefined
        while (!(bytes = input.fixed(4))) yield
        expireAtMs = bytes.readInt32LE(0) * 1000
      } else if (type === RdbOpcode.IDLE) {
        while ((idleSeconds = input.length()) < 0) yield
      } else if (type === RdbOpcode.FREQ) {
        while ((frequency = input.byte()) < 0) yield
      } else if (type === RdbOpcode.SELECTDB) {
        countKeys()
        while ((db = input.length()) < 0) yield
        wanted = this.valuesOf(db)
        handler.selectDb?.(db)
      } else if (type === RdbOpcode.RESIZEDB) {
        let keys: number
        let expires: number
        while ((keys = input.length()) < 0) yield
        while ((expires = input.length()) < 0) yield
        handler.resizeDb?.({db, keys, expires})
      } else if (type === RdbOpcode.AUX) {
        this.where = 'an aux field'
        let field: Buffer | undefined
        let value: Buffer | undefined
        while (!(field = input.readString())) yield
        while (!(value = input.readString())) yield
        handler.aux?.(field.toString(), value.toString())
      } else if (type === RdbOpcode.FUNCTION2) {
        this.where = 'a function library'
        let code: Buffer | undefined
        while (!(code = input.readString())) yield
        handler.functionLibrary?.(code)
      } else if (type === RdbOpcode.MODULE_AUX) {
        this.where = 'module aux data'
        let id: bigint | undefined
        while ((id = input.lengthBig()) === undefined) yield
        let whenOpcode: number
        let when: number
        while ((whenOpcode = input.length()) < 0) yield
        while ((when = input.length()) < 0) yield
        if (whenOpcode !== 2) throw new RdbFormatError(`module aux data with "when" opcode ${whenOpcode}`)
        yield* walkModuleFields(input)
        handler.moduleAux?.({id, ...moduleTypeOf(id), when})
      } else if (type === RdbOpcode.SLOT_INFO) {
        // Redis 7.4 in cluster mode: slot id, keys and expires in it. A hint only.
        for (let i = 0; i < 3; i++) while (input.length() < 0) yield
      } else if (type === RdbOpcode.FUNCTION_PRE_GA) {
        throw new RdbFormatError('functions in the format of the Redis 7.0 release candidates, which Redis itself no longer loads')
      } else if (type === RdbOpcode.EOF) {
        countKeys()
        this.where = 'the checksum'
        input.stopCrc()
        let stored = 0n
        if (version >= 5) {
          let bytes: Buffer | undefined
          while (!(bytes = input.fixed(8))) yield
          stored = bytes.readBigUInt64LE(0)
        }
        const computed = input.checksum
        if (stored !== 0n && stored !== computed) {
          throw new RdbFormatError(`its checksum does not match: the file says ${hex(stored)}, its bytes give ${hex(computed)}`)
        }
        this.summary = {version, keys: this.keys, checksum: computed, verified: stored !== 0n, length: input.position}
        return
      } else {
        // A key and its value.
        this.where = 'a key'
        let key: Buffer | undefined
        while (!(key = input.readString())) yield
        // Every entry has the same shape (optional fields present, undefined), which keeps the consumer's code monomorphic.
        const entry: RdbEntry = {db, key, type, expireAtMs, idleSeconds, frequency, valueLength: 0, value: undefined, module: undefined}
        this.whereKey = entry
        expireAtMs = idleSeconds = frequency = undefined
        const start = input.position
        if (wanted) this.beginValue(entry)
        if (isOneString(type)) {
          // The most common values are one string: walked here, without a generator of their own.
          while (!input.skipString()) yield
        } else {
          yield* this.walkValue(entry)
        }
        entry.valueLength = input.position - start
        if (wanted) this.endValue(entry)
        dbKeys++
        handler.entry?.(entry)
      }
    }
  }

  private *walkValue(entry: RdbEntry): Walk {
    const {type} = entry
    switch (typeName(type)) {
      case 'string': {
        while (!this.input.skipString()) yield
        return
      }
      case 'list': {
        yield* walkList(this.input, type)
        return
      }
      case 'set': {
        yield* walkSet(this.input, type)
        return
      }
      case 'zset': {
        yield* walkZset(this.input, type)
        return
      }
      case 'hash': {
        yield* walkHash(this.input, type)
        return
      }
      case 'stream': {
        yield* walkStream(this.input, type)
        return
      }
      case 'module': {
        if (type === RdbType.MODULE_PRE_GA)
          throw new RdbFormatError('a module value in the pre-4.0 format, which cannot be walked without its module')
        yield* walkModule(this.input, (module) => {
          entry.module = module
          if (this.refuseModulesIn(entry.db)) throw moduleRefused(entry, module)
        })
        return
      }
      case 'unknown': {
        throw new RdbFormatError(`a value of unknown type ${type}`)
      }
    }
  }

  private beginValue(entry: RdbEntry): void {
    this.capturing = entry
    this.parts = []
    this.partsLength = 0
    this.pieced = false
    this.input.beginCapture(this.sink)
  }

  /** Bytes of the captured value as they are consumed; whole pieces go out as soon as there is more than one. */
  private captured(bytes: Buffer): void {
    this.parts.push(bytes)
    this.partsLength += bytes.length
    // Strictly more than a piece: the last piece is never empty.
    while (this.partsLength > this.pieceSize) {
      this.pieced = true
      this.handler.valuePiece?.(this.capturing!, this.takeParts(this.pieceSize), false)
    }
  }

  private endValue(entry: RdbEntry): void {
    this.input.endCapture()
    const rest = this.takeParts(this.partsLength)
    if (this.pieced) this.handler.valuePiece?.(entry, rest, true)
    else entry.value = rest
    this.capturing = undefined
  }

  /** The first `n` captured bytes, as one new buffer (the parts are views of the input's chunks). */
  private takeParts(n: number): Buffer {
    const out = Buffer.allocUnsafe(n)
    let filled = 0
    while (filled < n) {
      const part = this.parts[0]
      const take = Math.min(part.length, n - filled)
      part.copy(out, filled, 0, take)
      filled += take
      if (take === part.length) this.parts.shift()
      else this.parts[0] = part.subarray(take)
    }
    this.partsLength -= n
    return out
  }
}

function moduleRefused(entry: RdbEntry, module: ModuleType): ShardctlError {
  return new ShardctlError(
    `key ${JSON.stringify(entry.key.subarray(0, 100).toString())} in database ${entry.db} holds a value of the module type ${module.name} (encoding version ${module.encodingVersion}), which only its module can restore: refused`,
    {code: 'EMODULE', hint: `load the module that defines ${module.name} where the value goes (MODULE LOAD), then start again`},
  )
}

/** An error thrown by one of the caller's callbacks, carried through the parser untouched. */
class HandlerFailure extends Error {}

/** The handler with each callback's errors marked as the caller's. */
function guarded(handler: RdbHandler): RdbHandler {
  const out: Record<string, unknown> = {}
  for (const [name, fn] of Object.entries(handler) as [string, unknown][]) {
    if (typeof fn !== 'function') continue
    out[name] = (...args: unknown[]) => {
      try {
        return (fn as (...a: unknown[]) => unknown).apply(handler, args)
      } catch (error) {
        throw new HandlerFailure('a handler failed', {cause: error})
      }
    }
  }
  return out
}

function hex(value: bigint): string {
  return `0x${value.toString(16).padStart(16, '0')}`
}

/**
 * A DUMP payload for a value read from an RDB: the type byte, the value's bytes, the RDB
 * version (2 bytes, little-endian) and a CRC-64 of all that (8 bytes, little-endian):
 * what RESTORE takes. A target whose Redis is older than `rdbVersion` refuses it.
 */
export function dumpPayload(type: number, value: Buffer, rdbVersion: number): Buffer {
  const payload = Buffer.allocUnsafe(1 + value.length + 2 + 8)
  payload[0] = type
  value.copy(payload, 1)
  payload.writeUInt16LE(rdbVersion, 1 + value.length)
  payload.writeBigUInt64LE(crc64(payload.subarray(0, 1 + value.length + 2)), 1 + value.length + 2)
  return payload
}

/**
 * The reader as a Writable, to pipe a snapshot into. `afterChunk` runs after each chunk
 * has been parsed (and its entries handed out); the next chunk waits for it, so an
 * asynchronous consumer (a RESTORE pipeline) holds the stream back until it has caught up.
 */
export function rdbWritable(reader: RdbReader, afterChunk?: () => Promise<void> | void): Writable {
  return new Writable({
    write(chunk: Buffer, _encoding, callback) {
      try {
        reader.write(chunk)
      } catch (error) {
        callback(error as Error)
        return
      }
      if (!afterChunk) {
        callback()
        return
      }
      Promise.resolve()
        .then(afterChunk)
        .then(() => callback(), callback)
    },
    final(callback) {
      try {
        reader.end()
        callback()
      } catch (error) {
        callback(error as Error)
      }
    },
  })
}

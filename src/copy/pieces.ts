import {readSync} from 'node:fs'

import {RdbType} from '../rdb/constants.js'
import {RdbFormatError} from '../rdb/format-error.js'
import {lzfDecompress} from '../rdb/lzf.js'

/**
 * A large value written to the target in bounded pieces instead of one RESTORE: its
 * elements, decoded from the value's RDB bytes (waiting in a file), become commands that
 * build it under a temporary key of the target database, each command at most about
 * PIECE_BYTES of arguments or PIECE_ELEMENTS elements, so the target serves its other
 * clients between two of them; then one script moves it onto its key with its expiry.
 *
 * What is pieced: strings (SETRANGE at the final length, then SETRANGE of each piece in
 * place; an LZF string is decompressed as it streams), lists (RPUSH; linked, quicklist of
 * ziplists, quicklist of listpacks), sets (SADD), sorted sets (ZADD, each score written as
 * the shortest decimal that parses back to the same double: 0.1, 1e-300, 2^53+1, inf,
 * -inf, -0 stay themselves), hashes (HSET) and streams whose groups have no consumers
 * (XADD of each live entry under its own ID, then XSETID with the last ID, the entries
 * ever added and the largest deleted ID, and XGROUP CREATE of each group at its last
 * delivered ID and entries read). A stream with consumers keeps one RESTORE: a consumer's
 * seen time cannot be set by any command, and RESTORE keeps it exact. So do module values,
 * the compact encodings, which are small by the target's own settings, and hashes with
 * field expiries: `pieceable` says which.
 *
 * Memory: the file is read a window at a time; an element of a collection is held
 * whole (a 100 MB field of a hash is 100 MB here for an instant), a string's body never.
 */

/** Arguments per piece command, in bytes, at most (a single element may exceed it). */
export const PIECE_BYTES = 512 * 1024
/** Elements per piece command, at most: a command's time on the target grows with them. */
export const PIECE_ELEMENTS = 1024
/** Temporary keys are named with this prefix (and the copy's own nonce): recognisable, and removed on failure. */
export const TEMP_KEY_PREFIX = 'shardctl:copy-tmp:'

const PIECED = new Set<number>([
  RdbType.STRING,
  RdbType.LIST,
  RdbType.SET,
  RdbType.ZSET,
  RdbType.HASH,
  RdbType.ZSET_2,
  RdbType.LIST_QUICKLIST,
  RdbType.LIST_QUICKLIST_2,
])

const STREAMS = new Set<number>([RdbType.STREAM_LISTPACKS, RdbType.STREAM_LISTPACKS_2, RdbType.STREAM_LISTPACKS_3])

/**
 * Whether a value of this type, whose RDB bytes (after the type byte) are `length` bytes
 * of `fd`, is written in pieces. A stream's answer is in its bytes: read through once, a
 * window at a time, for whether any group has consumers.
 */
export function pieceable(type: number, value?: {fd: number; length: number}): boolean {
  if (PIECED.has(type)) return true
  if (!STREAMS.has(type) || !value) return false
  const input = new FileCursor(value.fd, value.length)
  for (let nodes = input.length(); nodes > 0; nodes--) {
    input.skipString()
    input.skipString()
  }
  const tail = streamTail(input, type)
  // Before Redis 7.0 (STREAM_LISTPACKS) a group has no entries-read counter, which the
  // target estimates as it loads a RESTORE, and XGROUP CREATE would leave unknown.
  if (tail.groups.length > 0 && type === RdbType.STREAM_LISTPACKS) return false
  return tail.length > 0 && tail.groups.every((group) => group.consumers === 0)
}

const WINDOW = 1024 * 1024

/** Pull reading of a value's RDB bytes from a file, a window at a time. */
class FileCursor {
  private buf = Buffer.allocUnsafe(WINDOW)
  private start = 0
  private end = 0
  private filePos = 0

  constructor(
    private readonly fd: number,
    private readonly size: number,
  ) {}

  get remaining(): number {
    return this.end - this.start + (this.size - this.filePos)
  }

  /** At least n bytes in buf[start...], or every byte left. */
  private ensure(n: number): void {
    if (this.end - this.start >= n) return
    if (n > this.buf.length) {
      const bigger = Buffer.allocUnsafe(n)
      this.buf.copy(bigger, 0, this.start, this.end)
      this.buf = bigger
    } else this.buf.copy(this.buf, 0, this.start, this.end)
    this.end -= this.start
    this.start = 0
    while (this.end < n && this.filePos < this.size) {
      const want = Math.min(this.buf.length - this.end, this.size - this.filePos)
      const got = readSync(this.fd, this.buf, this.end, want, this.filePos)
      if (got <= 0) throw new RdbFormatError('the value file ends early')
      this.filePos += got
      this.end += got
    }
    if (this.end - this.start < n) throw new RdbFormatError('a value ends early')
  }

  byte(): number {
    this.ensure(1)
    return this.buf[this.start++]
  }

  /** n bytes, a view valid until the next read. */
  fixed(n: number): Buffer {
    this.ensure(n)
    const out = this.buf.subarray(this.start, this.start + n)
    this.start += n
    return out
  }

  /** Up to n bytes (at least one), a view valid until the next read. */
  some(n: number): Buffer {
    this.ensure(1)
    const take = Math.min(n, this.end - this.start)
    return this.fixed(take)
  }

  length(): number {
    const first = this.byte()
    switch (first >> 6) {
      case 0: {
        return first
      }
      case 1: {
        return ((first & 0x3f) << 8) | this.byte()
      }
      case 2: {
        if (first === 0x80) return this.fixed(4).readUInt32BE(0)
        if (first === 0x81) {
          const b = this.fixed(8)
          return b.readUInt32BE(0) * 2 ** 32 + b.readUInt32BE(4)
        }
        throw new RdbFormatError(`unknown length encoding 0x${first.toString(16)}`)
      }
      default: {
        throw new RdbFormatError(`an encoded string (0x${first.toString(16)}) where a length was expected`)
      }
    }
  }

  /** A string's header: raw (its length), an integer (its decimal text), or LZF (both lengths). */
  stringHeader(): {kind: 'raw'; length: number} | {kind: 'int'; text: Buffer} | {kind: 'lzf'; compressed: number; length: number} {
    this.ensure(1)
    const first = this.buf[this.start]
    if (first >> 6 !== 3) return {kind: 'raw', length: this.length()}
    this.start++
    switch (first & 0x3f) {
      case 0: {
        return {kind: 'int', text: Buffer.from(String(this.fixed(1).readInt8(0)))}
      }
      case 1: {
        return {kind: 'int', text: Buffer.from(String(this.fixed(2).readInt16LE(0)))}
      }
      case 2: {
        return {kind: 'int', text: Buffer.from(String(this.fixed(4).readInt32LE(0)))}
      }
      case 3: {
        const compressed = this.length()
        return {kind: 'lzf', compressed, length: this.length()}
      }
      default: {
        throw new RdbFormatError(`unknown string encoding 0x${first.toString(16)}`)
      }
    }
  }

  /** A length as it is written, exactly (a stream ID's parts are 64-bit). */
  bigLength(): bigint {
    const first = this.byte()
    if (first === 0x81) return this.fixed(8).readBigUInt64BE(0)
    this.start--
    return BigInt(this.length())
  }

  /** Past a string, read a window at a time (never whole). */
  skipString(): void {
    const header = this.stringHeader()
    let left = header.kind === 'raw' ? header.length : header.kind === 'lzf' ? header.compressed : 0
    while (left > 0) left -= this.some(Math.min(left, WINDOW)).length
  }

  /** A whole string, as Redis holds it (a copy). */
  string(): Buffer {
    const header = this.stringHeader()
    if (header.kind === 'int') return header.text
    if (header.kind === 'raw') return Buffer.from(this.fixed(header.length))
    return lzfDecompress(this.fixed(header.compressed), header.length)
  }
}

/**
 * The commands that build the value under `temp`, in order (the first creates it). The
 * value's bytes are `length` bytes of `fd`, as the RDB holds them after the type byte.
 */
export function* pieceCommands(fd: number, length: number, type: number, temp: Buffer): Generator<Buffer[]> {
  const input = new FileCursor(fd, length)
  switch (type) {
    case RdbType.STRING: {
      yield* stringPieces(input, temp)
      break
    }
    case RdbType.LIST:
    case RdbType.SET:
    case RdbType.HASH: {
      const verb = type === RdbType.LIST ? 'RPUSH' : type === RdbType.SET ? 'SADD' : 'HSET'
      const per = type === RdbType.HASH ? 2 : 1
      const batch = new Batch(verb, temp)
      for (let i = input.length() * per; i > 0; i--) {
        const command = batch.add(input.string())
        if (command) yield command
      }
      yield* batch.rest()
      break
    }
    case RdbType.ZSET:
    case RdbType.ZSET_2: {
      const batch = new Batch('ZADD', temp)
      for (let i = input.length(); i > 0; i--) {
        const member = input.string()
        const score = type === RdbType.ZSET_2 ? input.fixed(8).readDoubleLE(0) : oldScore(input)
        // ZADD takes score then member.
        batch.add(Buffer.from(formatScore(score)))
        const command = batch.add(member)
        if (command) yield command
      }
      yield* batch.rest()
      break
    }
    case RdbType.LIST_QUICKLIST:
    case RdbType.LIST_QUICKLIST_2: {
      const batch = new Batch('RPUSH', temp)
      for (let nodes = input.length(); nodes > 0; nodes--) {
        // QUICKLIST_2: each node says PLAIN (1: one element) or PACKED (2: a listpack).
        const container = type === RdbType.LIST_QUICKLIST_2 ? input.length() : 2
        const node = input.string()
        const elements = container === 1 ? [node] : type === RdbType.LIST_QUICKLIST_2 ? listpackElements(node) : ziplistElements(node)
        for (const element of elements) {
          const command = batch.add(element)
          if (command) yield command
        }
      }
      yield* batch.rest()
      break
    }
    case RdbType.STREAM_LISTPACKS:
    case RdbType.STREAM_LISTPACKS_2:
    case RdbType.STREAM_LISTPACKS_3: {
      yield* streamPieces(input, type, temp)
      break
    }
    default: {
      throw new RdbFormatError(`a value of type ${type} cannot be written in pieces`)
    }
  }
  if (input.remaining !== 0) throw new RdbFormatError(`${input.remaining} bytes after the value's last element`)
}

/** A stream ID's two parts. */
type StreamId = [ms: bigint, seq: bigint]

const showId = ([ms, seq]: StreamId): Buffer => Buffer.from(`${ms}-${seq}`)

/** What follows a stream's entries in the RDB (rdbSaveObject, OBJ_STREAM). */
interface StreamTail {
  length: number
  lastId: StreamId
  /** Since STREAM_LISTPACKS_2 (Redis 7.0). */
  maxDeletedId?: StreamId
  entriesAdded?: bigint
  groups: {name: Buffer; lastId: StreamId; entriesRead?: bigint; consumers: number}[]
}

/** -1 written as a 64-bit length (a group's entries read, when unknown). */
const UNKNOWN = 2n ** 64n - 1n

function streamTail(input: FileCursor, type: number): StreamTail {
  const v2 = type >= RdbType.STREAM_LISTPACKS_2
  const id = (): StreamId => [input.bigLength(), input.bigLength()]
  const length = input.length()
  const lastId = id()
  const tail: StreamTail = {length, lastId, groups: []}
  if (v2) {
    id() // the first ID: the first live entry's, which the XADDs give
    tail.maxDeletedId = id()
    tail.entriesAdded = input.bigLength()
  }
  for (let groups = input.length(); groups > 0; groups--) {
    const name = input.string()
    const groupLastId = id()
    const entriesRead = v2 ? input.bigLength() : undefined
    for (let pending = input.length(); pending > 0; pending--) {
      input.fixed(16 + 8) // raw ID, delivery time
      input.length() // delivery count
    }
    let consumers = 0
    for (let n = input.length(); n > 0; n--, consumers++) {
      input.skipString() // name
      input.fixed(type >= RdbType.STREAM_LISTPACKS_3 ? 16 : 8) // seen time (and active time)
      for (let held = input.length(); held > 0; held--) input.fixed(16)
    }
    tail.groups.push({name, lastId: groupLastId, entriesRead: entriesRead === UNKNOWN ? -1n : entriesRead, consumers})
  }
  return tail
}

/** An entry of a stream node's listpack: its flags (t_stream.c). */
const ENTRY_DELETED = 1
const ENTRY_SAMEFIELDS = 2

/**
 * A stream: each node's listpack read in turn (a node is a few kB by the source's
 * stream-node-max-bytes), an XADD of each live entry under its own ID; then the stream's
 * own IDs and counters, and its groups (none with consumers: see pieceable).
 */
function* streamPieces(input: FileCursor, type: number, temp: Buffer): Generator<Buffer[]> {
  const XADD = Buffer.from('XADD')
  const number = (b: Buffer) => Number(b.toString('latin1'))
  let live = 0
  for (let nodes = input.length(); nodes > 0; nodes--) {
    const master = input.string()
    if (master.length !== 16) throw new RdbFormatError(`a stream node keyed by ${master.length} bytes, not a 16-byte ID`)
    const [ms, seq] = [master.readBigUInt64BE(0), master.readBigUInt64BE(8)]
    const lp = listpackElements(input.string())
    // The master entry: live and deleted counts, the master fields, a terminating 0.
    let i = 2
    const fields = lp.slice(i + 1, i + 1 + number(lp[i]))
    i += 1 + fields.length + 1
    let nodeLive = 0
    while (i < lp.length) {
      const flags = number(lp[i])
      const id: StreamId = [BigInt.asUintN(64, ms + BigInt(lp[i + 1].toString())), BigInt.asUintN(64, seq + BigInt(lp[i + 2].toString()))]
      i += 3
      let pairs: Buffer[]
      if (flags & ENTRY_SAMEFIELDS) {
        pairs = fields.flatMap((field, j) => [field, lp[i + j]])
        i += fields.length
      } else {
        const n = number(lp[i])
        pairs = lp.slice(i + 1, i + 1 + 2 * n)
        i += 1 + 2 * n
      }
      i++ // the entry's element count, for walking backwards
      if (i > lp.length) throw new RdbFormatError('a stream entry runs past its node')
      if (flags & ENTRY_DELETED) continue
      nodeLive++
      yield [XADD, temp, showId(id), ...pairs]
    }
    if (nodeLive !== number(lp[0]))
      throw new RdbFormatError(`a stream node of ${nodeLive} live entries, not the ${number(lp[0])} announced`)
    live += nodeLive
  }
  const tail = streamTail(input, type)
  if (live !== tail.length) throw new RdbFormatError(`a stream of ${live} entries, not the ${tail.length} announced`)
  const setId = [Buffer.from('XSETID'), temp, showId(tail.lastId)]
  if (tail.entriesAdded !== undefined) setId.push(Buffer.from('ENTRIESADDED'), Buffer.from(String(tail.entriesAdded)))
  if (tail.maxDeletedId) setId.push(Buffer.from('MAXDELETEDID'), showId(tail.maxDeletedId))
  yield setId
  for (const group of tail.groups) {
    const create = [Buffer.from('XGROUP'), Buffer.from('CREATE'), temp, group.name, showId(group.lastId)]
    if (group.entriesRead !== undefined) create.push(Buffer.from('ENTRIESREAD'), Buffer.from(String(group.entriesRead)))
    yield create
  }
}

/** Elements gathered into one command until it is big enough. */
class Batch {
  private args: Buffer[] = []
  private bytes = 0
  private readonly head: Buffer[]
  /** A zset's score and its member, a hash's field and its value: never split. */
  private readonly pairs: boolean

  constructor(verb: 'RPUSH' | 'SADD' | 'ZADD' | 'HSET', temp: Buffer) {
    this.head = [Buffer.from(verb), temp]
    this.pairs = verb === 'ZADD' || verb === 'HSET'
  }

  add(arg: Buffer): Buffer[] | undefined {
    this.args.push(arg)
    this.bytes += arg.length
    if (this.bytes < PIECE_BYTES && this.args.length < PIECE_ELEMENTS * 2) return undefined
    if (this.pairs && this.args.length % 2 === 1) return undefined
    return this.take()
  }

  *rest(): Generator<Buffer[]> {
    if (this.args.length > 0) yield this.take()
  }

  private take(): Buffer[] {
    const command = [...this.head, ...this.args]
    this.args = []
    this.bytes = 0
    return command
  }
}

/**
 * A string: SETRANGE at its last byte first, which makes the target allocate (and zero) it
 * once, then SETRANGE of each piece in place. The first command is the target's longest
 * (one allocation of the whole length, no copy); APPEND instead regrows the string about
 * every megabyte, and a regrowth may copy all of it: measured on a loaded machine for
 * 100 MB, 200 APPENDs took 4.7-5.7 s on the target in all, the longest 0.56-0.84 s,
 * against 0.58-0.61 s for the one SETRANGE.
 */
function* stringPieces(input: FileCursor, temp: Buffer): Generator<Buffer[]> {
  const header = input.stringHeader()
  if (header.kind === 'int') {
    yield [Buffer.from('SET'), temp, header.text]
    return
  }
  if (header.length === 0) {
    yield [Buffer.from('SET'), temp, Buffer.alloc(0)]
    return
  }
  yield [Buffer.from('SETRANGE'), temp, Buffer.from(String(header.length - 1)), Buffer.from([0])]
  let at = 0
  const put = (piece: Buffer): Buffer[] => {
    const command = [Buffer.from('SETRANGE'), temp, Buffer.from(String(at)), Buffer.from(piece)]
    at += piece.length
    return command
  }
  if (header.kind === 'raw') {
    while (at < header.length) yield put(input.some(Math.min(PIECE_BYTES, header.length - at)))
  } else {
    for (const piece of lzfPieces(input, header.compressed, header.length)) yield put(piece)
  }
  if (at !== header.length) throw new RdbFormatError(`a string of ${at} bytes, not the ${header.length} announced`)
}

/** LZF decompression as the compressed bytes stream past: pieces of about PIECE_BYTES, the last 8 KB kept for back-references. */
function* lzfPieces(input: FileCursor, compressed: number, length: number): Generator<Buffer> {
  const HISTORY = 8192
  const out = Buffer.allocUnsafe(HISTORY + PIECE_BYTES + 300)
  let op = 0
  let emitted = 0
  let left = compressed
  while (left > 0) {
    const control = input.byte()
    left--
    if (control < 32) {
      const run = control + 1
      if (run > left) throw new RdbFormatError('an LZF literal runs past its bounds')
      input.fixed(run).copy(out, op)
      op += run
      left -= run
    } else {
      let run = control >> 5
      if (run === 7) {
        run += input.byte()
        left--
      }
      const ref = op - ((control & 0x1f) << 8) - 1 - input.byte()
      left--
      run += 2
      if (ref < 0 || left < 0) throw new RdbFormatError('an LZF back-reference points outside the output')
      for (let i = 0; i < run; i++) out[op + i] = out[ref + i]
      op += run
    }
    if (op >= HISTORY + PIECE_BYTES) {
      // Hand out all but the history, which moves to the front.
      const piece = Buffer.from(out.subarray(0, op - HISTORY))
      emitted += piece.length
      yield piece
      out.copy(out, 0, op - HISTORY, op)
      op = HISTORY
    }
    if (emitted + op > length) throw new RdbFormatError('an LZF string decompresses past its announced length')
  }
  if (op > 0) yield Buffer.from(out.subarray(0, op))
}

/** A score of the old ZSET type: a length byte (253 NaN, 254 +inf, 255 -inf) and its text. */
function oldScore(input: FileCursor): number {
  const n = input.byte()
  if (n === 253) return Number.NaN
  if (n === 254) return Number.POSITIVE_INFINITY
  if (n === 255) return Number.NEGATIVE_INFINITY
  return Number(input.fixed(n).toString('latin1'))
}

/** The shortest decimal that reads back as the same double (JavaScript's own), in the words ZADD accepts. */
export function formatScore(score: number): string {
  if (score === Number.POSITIVE_INFINITY) return 'inf'
  if (score === Number.NEGATIVE_INFINITY) return '-inf'
  if (Object.is(score, -0)) return '-0'
  return String(score)
}

/** The elements of a listpack (Redis 7): strings as they are, integers as their decimal text. */
export function listpackElements(lp: Buffer): Buffer[] {
  const count = lp.readUInt16LE(4)
  const out: Buffer[] = []
  let p = 6
  for (;;) {
    const b = lp[p]
    if (b === 0xff) break
    let size: number
    if (b < 0x80) {
      out.push(Buffer.from(String(b)))
      size = 1
    } else if (b < 0xc0) {
      const n = b & 0x3f
      out.push(lp.subarray(p + 1, p + 1 + n))
      size = 1 + n
    } else if (b < 0xe0) {
      const v = ((b & 0x1f) << 8) | lp[p + 1]
      out.push(Buffer.from(String(v >= 4096 ? v - 8192 : v)))
      size = 2
    } else if (b < 0xf0) {
      const n = ((b & 0x0f) << 8) | lp[p + 1]
      out.push(lp.subarray(p + 2, p + 2 + n))
      size = 2 + n
    } else
      switch (b) {
        case 0xf0: {
          const n = lp.readUInt32LE(p + 1)
          out.push(lp.subarray(p + 5, p + 5 + n))
          size = 5 + n
          break
        }
        case 0xf1: {
          out.push(Buffer.from(String(lp.readInt16LE(p + 1))))
          size = 3
          break
        }
        case 0xf2: {
          out.push(Buffer.from(String(lp.readIntLE(p + 1, 3))))
          size = 4
          break
        }
        case 0xf3: {
          out.push(Buffer.from(String(lp.readInt32LE(p + 1))))
          size = 5
          break
        }
        case 0xf4: {
          out.push(Buffer.from(lp.readBigInt64LE(p + 1).toString()))
          size = 9
          break
        }
        default: {
          throw new RdbFormatError(`a listpack entry of unknown encoding 0x${b.toString(16)}`)
        }
      }
    // The entry's back-length: 1 to 5 bytes, by the entry's size.
    // As lpEncodeBacklen writes it: 2 bytes below 16383 (not 16384), and so on.
    p += size + (size <= 127 ? 1 : size < 16_383 ? 2 : size < 2_097_151 ? 3 : size < 268_435_455 ? 4 : 5)
    if (p >= lp.length) throw new RdbFormatError('a listpack runs past its end')
  }
  if (count !== 65_535 && count !== out.length) throw new RdbFormatError(`a listpack of ${out.length} elements, not the ${count} announced`)
  return out
}

/** The elements of a ziplist (Redis 3.2-6.2 quicklist nodes). */
export function ziplistElements(zl: Buffer): Buffer[] {
  const out: Buffer[] = []
  let p = 10
  for (;;) {
    if (zl[p] === 0xff) break
    // The previous entry's length: 1 byte, or 0xfe and 4 bytes.
    p += zl[p] === 0xfe ? 5 : 1
    const b = zl[p]
    switch (b >> 6) {
      case 0: {
        const n = b & 0x3f
        out.push(zl.subarray(p + 1, p + 1 + n))
        p += 1 + n
        continue
      }
      case 1: {
        const n = ((b & 0x3f) << 8) | zl[p + 1]
        out.push(zl.subarray(p + 2, p + 2 + n))
        p += 2 + n
        continue
      }
      case 2: {
        const n = zl.readUInt32BE(p + 1)
        out.push(zl.subarray(p + 5, p + 5 + n))
        p += 5 + n
        continue
      }
    }
    let value: number | bigint
    switch (b) {
      case 0xc0: {
        value = zl.readInt16LE(p + 1)
        p += 3
        break
      }
      case 0xd0: {
        value = zl.readInt32LE(p + 1)
        p += 5
        break
      }
      case 0xe0: {
        value = zl.readBigInt64LE(p + 1)
        p += 9
        break
      }
      case 0xf0: {
        value = zl.readIntLE(p + 1, 3)
        p += 4
        break
      }
      case 0xfe: {
        value = zl.readInt8(p + 1)
        p += 2
        break
      }
      default: {
        if (b >= 0xf1 && b <= 0xfd) {
          value = (b & 0x0f) - 1
          p += 1
          break
        }
        throw new RdbFormatError(`a ziplist entry of unknown encoding 0x${b.toString(16)}`)
      }
    }
    out.push(Buffer.from(value.toString()))
    if (p >= zl.length) throw new RdbFormatError('a ziplist runs past its end')
  }
  return out
}

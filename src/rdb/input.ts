import {Crc64} from './crc64.js'
import {RdbFormatError} from './format-error.js'
import {lzfDecompress} from './lzf.js'

/**
 * The byte cursor under the RDB reader: chunks go in as they arrive, the parser takes
 * primitives out. It is what lets the parser be written as straight-line code (a
 * generator that yields when it runs out of bytes) while never holding more than a
 * few bytes across chunks:
 *
 * * fixed-size reads and headers (a length, a string's header, an 8-byte time) are
 *   all-or-nothing: when the chunk ends inside one, nothing is consumed, the parser
 *   yields, and the few bytes left are put before the next chunk;
 * * a string's body is consumed as far as the chunk goes, the rest on the next one, so a
 *   100 MB value streams through instead of being gathered.
 *
 * Two observers see every consumed byte, in order and exactly once: the CRC-64 of the
 * file, and a capture (the raw bytes of a value the caller asked for).
 */

const EMPTY = Buffer.alloc(0)
const TWO_32 = 2 ** 32
/** The largest key or name read whole: Redis's default proto-max-bulk-len (512 MB); a larger one is corruption. */
const MAX_READ_STRING = 512 * 1024 * 1024

/** What a string's header said: its body is `length` bytes, stored as `kind`. */
type StringKind = 'raw' | 'int' | 'lzf'

export class RdbInput {
  private buf: Buffer = EMPTY
  private pos = 0
  /** Absolute offset of buf[0] in the stream. */
  private base = 0

  private readonly crc = new Crc64()
  private crcFrom = 0
  private crcStopped = false

  private capture: ((bytes: Buffer) => void) | undefined
  private captureFrom = 0

  // The string being consumed: its body bytes still to come (-1: none), its kind, and
  // (when it is being read rather than skipped) the parts gathered so far.
  private stringRemaining = -1
  private stringKind: StringKind = 'raw'
  private stringDecodedLength = 0
  private stringParts: Buffer[] = []

  /** Bytes consumed so far: the position in the file of the next byte. */
  get position(): number {
    return this.base + this.pos
  }

  /** The CRC-64 of every byte consumed up to stopCrc(). */
  get checksum(): bigint {
    return this.crc.value
  }

  /** Take the next chunk; the bytes of the last one not yet consumed (a cut header) come first. */
  refill(chunk: Buffer): void {
    this.flush()
    const rest = this.buf.length - this.pos
    this.base += this.pos
    this.buf = rest === 0 ? chunk : Buffer.concat([this.buf.subarray(this.pos), chunk])
    this.pos = 0
    this.crcFrom = 0
    this.captureFrom = 0
  }

  /** Bytes received but not consumed: a header cut by the end of the input so far. */
  get pending(): number {
    return this.buf.length - this.pos
  }

  /** Bytes this cursor keeps between chunks: a cut header, and the parts of a key being read. */
  get held(): number {
    let held = this.buf.length - this.pos
    for (const part of this.stringParts) held += part.length
    return held
  }

  /** Hand what was consumed to the checksum and the capture. */
  private flush(): void {
    if (!this.crcStopped && this.pos > this.crcFrom) this.crc.update(this.buf.subarray(this.crcFrom, this.pos))
    this.crcFrom = this.pos
    if (this.capture && this.pos > this.captureFrom) this.capture(this.buf.subarray(this.captureFrom, this.pos))
    this.captureFrom = this.pos
  }

  /** The checksum covers the file up to here (the EOF opcode); the trailer after it is not part of it. */
  stopCrc(): void {
    this.flush()
    this.crcStopped = true
  }

  /** From here on, every consumed byte also goes to `sink` (in pieces, as they are consumed), until endCapture(). */
  beginCapture(sink: (bytes: Buffer) => void): void {
    this.flush()
    this.capture = sink
  }

  endCapture(): void {
    this.flush()
    this.capture = undefined
  }

  /** One byte, or -1 when none is left. */
  byte(): number {
    return this.pos < this.buf.length ? this.buf[this.pos++] : -1
  }

  /** `n` bytes (a view, valid until the next refill), or undefined when fewer are left: nothing is consumed then. */
  fixed(n: number): Buffer | undefined {
    if (this.buf.length - this.pos < n) return undefined
    const out = this.buf.subarray(this.pos, this.pos + n)
    this.pos += n
    return out
  }

  /**
   * A length (rdbLoadLen): 6, 14, 32 or 64 bits. -1 when the chunk ends inside it. A
   * 64-bit length beyond 2^53 loses precision: only stream ids are that large, and they
   * are only skipped (lengthBig reads module ids exactly).
   */
  length(): number {
    const buf = this.buf
    const p = this.pos
    if (p >= buf.length) return -1
    const first = buf[p]
    switch (first >> 6) {
      case 0: {
        this.pos = p + 1
        return first
      }
      case 1: {
        if (p + 2 > buf.length) return -1
        this.pos = p + 2
        return ((first & 0x3f) << 8) | buf[p + 1]
      }
      case 2: {
        if (first === 0x80) {
          if (p + 5 > buf.length) return -1
          this.pos = p + 5
          return buf.readUInt32BE(p + 1)
        }
        if (first === 0x81) {
          if (p + 9 > buf.length) return -1
          this.pos = p + 9
          return buf.readUInt32BE(p + 1) * TWO_32 + buf.readUInt32BE(p + 5)
        }
        throw new RdbFormatError(`unknown length encoding 0x${first.toString(16)}`)
      }
      default: {
        throw new RdbFormatError(`an encoded string (0x${first.toString(16)}) where a length was expected`)
      }
    }
  }

  /** A length read exactly, as a bigint (module ids use all 64 bits). undefined when the chunk ends inside it. */
  lengthBig(): bigint | undefined {
    const p = this.pos
    if (p < this.buf.length && this.buf[p] === 0x81) {
      if (p + 9 > this.buf.length) return undefined
      this.pos = p + 9
      return this.buf.readBigUInt64BE(p + 1)
    }
    const n = this.length()
    return n < 0 ? undefined : BigInt(n)
  }

  /**
   * A string's header (rdbGenericLoadStringObject): a raw length, an integer stored in
   * 1, 2 or 4 bytes, or LZF (compressed and uncompressed lengths). All or nothing: the
   * body length is returned, or -1 with nothing consumed.
   */
  private stringHeader(): number {
    const buf = this.buf
    const p = this.pos
    if (p >= buf.length) return -1
    const first = buf[p]
    if (first >> 6 !== 3) {
      const n = this.length()
      if (n < 0) return -1
      this.stringKind = 'raw'
      return n
    }
    switch (first & 0x3f) {
      case 0:
      case 1:
      case 2: {
        this.pos = p + 1
        this.stringKind = 'int'
        return 1 << (first & 0x3f)
      }
      case 3: {
        this.pos = p + 1
        const compressed = this.length()
        const decoded = compressed < 0 ? -1 : this.length()
        if (decoded < 0) {
          this.pos = p
          return -1
        }
        this.stringKind = 'lzf'
        this.stringDecodedLength = decoded
        return compressed
      }
      default: {
        throw new RdbFormatError(`unknown string encoding 0x${first.toString(16)}`)
      }
    }
  }

  /** Consume a string without keeping it. True once it is all consumed; false when the chunk ran out (call again). */
  skipString(): boolean {
    if (this.stringRemaining < 0) {
      const n = this.stringHeader()
      if (n < 0) return false
      this.stringRemaining = n
    }
    const available = this.buf.length - this.pos
    if (available >= this.stringRemaining) {
      this.pos += this.stringRemaining
      this.stringRemaining = -1
      return true
    }
    this.pos = this.buf.length
    this.stringRemaining -= available
    return false
  }

  /**
   * Read a whole string (a key, an aux field): its bytes as Redis holds them, integers
   * as their decimal text, LZF decompressed. undefined when the chunk ran out (call again).
   */
  readString(): Buffer | undefined {
    if (this.stringRemaining < 0) {
      const n = this.stringHeader()
      if (n < 0) return undefined
      // What is read whole is a key, a field name or a function's code: a length beyond
      // any key Redis accepts by default is a corrupt file, and must not become an allocation.
      const size = this.stringKind === 'lzf' ? Math.max(n, this.stringDecodedLength) : n
      if (size > MAX_READ_STRING) throw new RdbFormatError(`a string of ${size} bytes where a key or a name was expected`)
      if (this.stringKind === 'raw' && this.buf.length - this.pos >= n) {
        // The common case, a short key all in this chunk: one copy, no parts.
        const out = copyOf(this.buf, this.pos, n)
        this.pos += n
        return out
      }
      this.stringRemaining = n
      this.stringParts = []
    }
    const take = Math.min(this.stringRemaining, this.buf.length - this.pos)
    // A view would keep the whole chunk alive: the parts are copies.
    if (take > 0) this.stringParts.push(copyOf(this.buf, this.pos, take))
    this.pos += take
    this.stringRemaining -= take
    if (this.stringRemaining > 0) return undefined
    this.stringRemaining = -1
    const body = this.stringParts.length === 1 ? this.stringParts[0] : Buffer.concat(this.stringParts)
    this.stringParts = []
    switch (this.stringKind) {
      case 'raw': {
        return body
      }
      case 'int': {
        const value = body.length === 1 ? body.readInt8(0) : body.length === 2 ? body.readInt16LE(0) : body.readInt32LE(0)
        return Buffer.from(String(value))
      }
      case 'lzf': {
        return lzfDecompress(body, this.stringDecodedLength)
      }
    }
  }
}

/** A copy of buf[at, at + n): short ones byte by byte, which beats a call into C++ for a key's few bytes. */
function copyOf(buf: Buffer, at: number, n: number): Buffer {
  const out = Buffer.allocUnsafe(n)
  if (n <= 32) for (let i = 0; i < n; i++) out[i] = buf[at + i]
  else buf.copy(out, 0, at, at + n)
  return out
}

/** A walk over part of an RDB: a generator that yields when it needs the next chunk. */
export type Walk = Generator<void, void, void>

/** `count` strings, skipped. */
export function* skipStrings(input: RdbInput, count: number): Walk {
  for (let i = 0; i < count; i++) while (!input.skipString()) yield
}

/** `n` fixed bytes, skipped (n small: a time, an id, a binary double). */
export function* skipFixed(input: RdbInput, n: number): Walk {
  while (!input.fixed(n)) yield
}

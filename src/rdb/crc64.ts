/**
 * Redis's CRC-64: the checksum at the end of every RDB file and of every DUMP payload
 * (redis/src/crc64.c: Jones polynomial 0xad93d23594c935a9, reflected input and output,
 * initial value 0, no final xor; crc64("123456789") = 0xe9c6d914c4b8d9ca).
 *
 * It runs over every byte of a backup and of a live move, so it must not be the slow part.
 * JavaScript's BigInt would be (a few MB/s), so the 64-bit register is kept as two 32-bit
 * halves in plain numbers, and the input is consumed eight bytes at a time with eight
 * lookup tables ("slicing-by-8", as Redis's crcspeed does), each table entry split into a
 * low and a high 32-bit word. BigInt appears only at the edges (the seed and the value).
 */

const POLY_REFLECTED = reflect64(0xad93d23594c935a9n)

/** TABLE_LO[k * 256 + n] / TABLE_HI[...]: the low and high words of table k for byte n. */
const TABLE_LO = new Uint32Array(8 * 256)
const TABLE_HI = new Uint32Array(8 * 256)

function reflect64(value: bigint): bigint {
  let out = 0n
  for (let i = 0n; i < 64n; i++) if ((value >> i) & 1n) out |= 1n << (63n - i)
  return out
}

function buildTables(): void {
  const polyLo = Number(POLY_REFLECTED & 0xffffffffn)
  const polyHi = Number(POLY_REFLECTED >> 32n)
  for (let n = 0; n < 256; n++) {
    let lo = n
    let hi = 0
    for (let bit = 0; bit < 8; bit++) {
      const carry = lo & 1
      lo = ((lo >>> 1) | ((hi & 1) << 31)) >>> 0
      hi = hi >>> 1
      if (carry) {
        lo = (lo ^ polyLo) >>> 0
        hi = (hi ^ polyHi) >>> 0
      }
    }
    TABLE_LO[n] = lo
    TABLE_HI[n] = hi
  }
  // Table k advances table k-1 by one more zero byte: T[k][n] = (T[k-1][n] >> 8) ^ T[0][T[k-1][n] & 0xff].
  for (let k = 1; k < 8; k++) {
    for (let n = 0; n < 256; n++) {
      const lo = TABLE_LO[(k - 1) * 256 + n]
      const hi = TABLE_HI[(k - 1) * 256 + n]
      const index = lo & 0xff
      TABLE_LO[k * 256 + n] = (((lo >>> 8) | (hi << 24)) ^ TABLE_LO[index]) >>> 0
      TABLE_HI[k * 256 + n] = ((hi >>> 8) ^ TABLE_HI[index]) >>> 0
    }
  }
}

buildTables()

/** A running CRC-64 over chunks, as they stream past. */
export class Crc64 {
  private lo: number
  private hi: number

  constructor(seed = 0n) {
    this.lo = Number(seed & 0xffffffffn)
    this.hi = Number((seed >> 32n) & 0xffffffffn)
  }

  update(chunk: Uint8Array): this {
    let lo = this.lo
    let hi = this.hi
    const length = chunk.length
    let i = 0
    // Byte-wise until eight bytes or fewer remain in whole words: the main loop below.
    const whole = length - (length & 7)
    for (; i < whole; i += 8) {
      lo ^= chunk[i] | (chunk[i + 1] << 8) | (chunk[i + 2] << 16) | (chunk[i + 3] << 24)
      hi ^= chunk[i + 4] | (chunk[i + 5] << 8) | (chunk[i + 6] << 16) | (chunk[i + 7] << 24)
      const newLo =
        TABLE_LO[1792 + (lo & 0xff)] ^
        TABLE_LO[1536 + ((lo >>> 8) & 0xff)] ^
        TABLE_LO[1280 + ((lo >>> 16) & 0xff)] ^
        TABLE_LO[1024 + (lo >>> 24)] ^
        TABLE_LO[768 + (hi & 0xff)] ^
        TABLE_LO[512 + ((hi >>> 8) & 0xff)] ^
        TABLE_LO[256 + ((hi >>> 16) & 0xff)] ^
        TABLE_LO[hi >>> 24]
      hi =
        TABLE_HI[1792 + (lo & 0xff)] ^
        TABLE_HI[1536 + ((lo >>> 8) & 0xff)] ^
        TABLE_HI[1280 + ((lo >>> 16) & 0xff)] ^
        TABLE_HI[1024 + (lo >>> 24)] ^
        TABLE_HI[768 + (hi & 0xff)] ^
        TABLE_HI[512 + ((hi >>> 8) & 0xff)] ^
        TABLE_HI[256 + ((hi >>> 16) & 0xff)] ^
        TABLE_HI[hi >>> 24]
      lo = newLo
    }
    for (; i < length; i++) {
      const index = (lo ^ chunk[i]) & 0xff
      lo = ((lo >>> 8) | (hi << 24)) ^ TABLE_LO[index]
      hi = (hi >>> 8) ^ TABLE_HI[index]
    }
    this.lo = lo >>> 0
    this.hi = hi >>> 0
    return this
  }

  get value(): bigint {
    return (BigInt(this.hi) << 32n) | BigInt(this.lo)
  }
}

/** The CRC-64 of one buffer, optionally continuing from an earlier value. */
export function crc64(buf: Uint8Array, seed = 0n): bigint {
  return new Crc64(seed).update(buf).value
}

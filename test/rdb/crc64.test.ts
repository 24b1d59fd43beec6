import {randomBytes} from 'node:crypto'

import {expect} from 'chai'
import fc from 'fast-check'

import {Crc64, crc64} from '../../src/rdb/crc64.js'
import {type TestServer, startServer} from '../helpers/redis.js'

/** The definition, one bit at a time with BigInt: slow, and obviously right. */
function crc64Reference(buf: Uint8Array, seed = 0n): bigint {
  const poly = 0x95ac9329ac4bc9b5n // 0xad93d23594c935a9 reflected
  let crc = seed
  for (const byte of buf) {
    crc ^= BigInt(byte)
    for (let bit = 0; bit < 8; bit++) crc = crc & 1n ? (crc >> 1n) ^ poly : crc >> 1n
  }
  return crc
}

describe('rdb/crc64: Redis CRC-64 (Jones, reflected)', () => {
  it('gives the check value of redis/src/crc64.c for "123456789"', () => {
    expect(crc64(Buffer.from('123456789'))).to.equal(0xe9c6d914c4b8d9can)
    expect(new Crc64().update(Buffer.from('123456789')).value).to.equal(0xe9c6d914c4b8d9can)
  })

  it('is 0 for no bytes and keeps a seed through an empty update', () => {
    expect(crc64(Buffer.alloc(0))).to.equal(0n)
    expect(crc64(Buffer.alloc(0), 0x1234567890abcdefn)).to.equal(0x1234567890abcdefn)
  })

  it('equals the bit-by-bit definition for any bytes and any seed', () => {
    fc.assert(
      fc.property(fc.uint8Array({maxLength: 100}), fc.bigUintN(64), (bytes, seed) => {
        expect(crc64(bytes, seed)).to.equal(crc64Reference(bytes, seed))
      }),
      {numRuns: 300},
    )
  })

  it('gives the same value however the input is cut into chunks', () => {
    const data = randomBytes(5000)
    const whole = crc64(data)
    fc.assert(
      fc.property(fc.array(fc.integer({min: 0, max: 5000}), {maxLength: 20}), (cuts) => {
        const points = [...new Set([0, ...cuts, 5000])].sort((a, b) => a - b)
        const running = new Crc64()
        for (let i = 1; i < points.length; i++) running.update(data.subarray(points[i - 1], points[i]))
        expect(running.value).to.equal(whole)
      }),
    )
    // Continuing from a value is the same as one pass.
    expect(crc64(data.subarray(3001), crc64(data.subarray(0, 3001)))).to.equal(whole)
  })

  describe('against a real redis-server', () => {
    let server: TestServer
    before(async () => {
      server = await startServer()
    })
    after(() => server.stop())

    it('matches the checksum that ends every DUMP payload', async () => {
      const client = server.client()
      await client.set('short', 'x')
      await client.set('long', randomBytes(100_000).toString('hex'))
      await client.rpush('list', 'a', 'b', 'c')
      for (const key of ['short', 'long', 'list']) {
        const payload = await client.dumpBuffer(key)
        const body = payload.subarray(0, payload.length - 8)
        expect(crc64(body), key).to.equal(payload.readBigUInt64LE(payload.length - 8))
      }
    })
  })
})

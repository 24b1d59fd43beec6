import {randomBytes} from 'node:crypto'
import {mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {type Readable} from 'node:stream'
import {pipeline} from 'node:stream/promises'

import {expect} from 'chai'
import {type Redis} from 'ioredis'

import {ShardctlError} from '../../src/errors.js'
import {RdbOpcode, RdbType} from '../../src/rdb/constants.js'
import {Crc64, crc64} from '../../src/rdb/crc64.js'
import {
  type RdbEntry,
  type RdbHandler,
  type RdbReaderOptions,
  type RdbSummary,
  RdbReader,
  dumpPayload,
  rdbWritable,
} from '../../src/rdb/reader.js'
import {moduleTypeOf} from '../../src/rdb/types/module.js'
import {streamSnapshot} from '../../src/replication/snapshot.js'
import {EVERY_TYPE_DBS, populateEveryType} from '../helpers/datasets.js'
import {type TestServer, startServer} from '../helpers/redis.js'

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of stream) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

async function snapshotOf(server: TestServer): Promise<Buffer> {
  return collect((await streamSnapshot({host: '127.0.0.1', port: server.port, db: 0}, {timeoutMs: 5000})).stream)
}

interface Parsed {
  version?: number
  aux: Record<string, string>
  entries: RdbEntry[]
  pieces: Map<RdbEntry, Buffer[]>
  resized: {db: number; keys: number; expires: number}[]
  functions: Buffer[]
  summary?: RdbSummary
}

/** Parse `rdb` cut into chunks of `size` bytes, gathering everything the reader reports. */
function parse(rdb: Buffer, size: number, options: RdbReaderOptions = {}, more: RdbHandler = {}): Parsed {
  const out: Parsed = {aux: {}, entries: [], pieces: new Map(), resized: [], functions: []}
  const reader = new RdbReader(
    {
      header: ({version}) => (out.version = version),
      aux: (field, value) => (out.aux[field] = value),
      entry: (entry) => out.entries.push(entry),
      valuePiece: (entry, piece, last) => {
        const pieces = out.pieces.get(entry) ?? []
        pieces.push(piece)
        out.pieces.set(entry, pieces)
        if (last) expect(out.entries).not.to.include(entry)
      },
      resizeDb: (info) => out.resized.push(info),
      functionLibrary: (code) => out.functions.push(code),
      end: (summary) => (out.summary = summary),
      ...more,
    },
    options,
  )
  for (let at = 0; at < rdb.length; at += size) reader.write(rdb.subarray(at, at + size))
  expect(reader.end()).to.equal(out.summary)
  return out
}

function errorOf(fn: () => unknown): ShardctlError {
  try {
    fn()
  } catch (error) {
    expect(error).to.be.instanceOf(ShardctlError)
    return error as ShardctlError
  }
  throw new Error('it did not fail')
}

/** Keys per db, as the server counts them. */
async function serverKeys(client: Redis): Promise<Map<number, number>> {
  const out = new Map<number, number>()
  for (const line of (await client.info('keyspace')).split('\n')) {
    const m = /^db(\d+):keys=(\d+)/.exec(line)
    if (m) out.set(Number(m[1]), Number(m[2]))
  }
  return out
}

const LIBRARY = "#!lua name=snapshotlib\nredis.register_function('answer', function() return 42 end)"

/** Chunk sizes "from 1 byte up": every size to 16, then odd sizes around reads and socket buffers, then the whole file. */
const CHUNK_SIZES = [...Array.from({length: 16}, (_, i) => i + 1), 31, 97, 1000, 4093, 65536, Number.MAX_SAFE_INTEGER]

describe('rdb/reader: a streaming RDB reader, checked against real redis-server snapshots', () => {
  let source: TestServer
  let target: TestServer
  let src: Redis
  let dst: Redis
  before(async () => {
    ;[source, target] = await Promise.all([
      startServer(['--enable-debug-command', 'yes']),
      startServer(['--enable-debug-command', 'yes', '--databases', '16']),
    ])
    src = source.client()
    dst = target.client()
    for (const db of EVERY_TYPE_DBS) await populateEveryType(src, db)
    await src.function('LOAD', LIBRARY)
  })
  after(async () => {
    await Promise.all([source.stop(), target.stop()])
  })

  const settings = [
    {name: 'diskless sync, compressed, LFU', sync: 'yes', compression: 'yes', policy: 'allkeys-lfu'},
    {name: 'disk sync, uncompressed, LRU', sync: 'no', compression: 'no', policy: 'allkeys-lru'},
  ]
  for (const setting of settings) {
    describe(setting.name, () => {
      let rdb: Buffer
      before(async () => {
        await src.config(
          'SET',
          'repl-diskless-sync',
          setting.sync,
          'rdbcompression',
          setting.compression,
          'maxmemory-policy',
          setting.policy,
        )
        rdb = await snapshotOf(source)
      })

      it('reads the same keys, aux fields and functions at every chunk size from 1 byte up, its checksum verified', async () => {
        const expected = await serverKeys(src)
        const replication = await src.info('replication')
        let first: Parsed | undefined
        for (const size of CHUNK_SIZES) {
          const parsed = parse(rdb, size, {valuesOf: () => true})
          expect(parsed.summary!.verified, `chunks of ${size}`).to.equal(true)
          expect(parsed.summary!.checksum).to.equal(rdb.readBigUInt64LE(rdb.length - 8))
          expect(parsed.summary!.keys, `chunks of ${size}`).to.deep.equal(expected)
          expect(parsed.summary!.length).to.equal(rdb.length)
          if (!first) {
            first = parsed
            continue
          }
          // The same entries, values included, whatever the cut.
          expect(parsed.entries.length).to.equal(first.entries.length)
          for (const [i, entry] of parsed.entries.entries()) {
            const same = first.entries[i]
            expect(entry.key.equals(same.key), `chunks of ${size}`).to.equal(true)
            expect({...entry, key: undefined, value: undefined}).to.deep.equal({...same, key: undefined, value: undefined})
            expect(entry.value!.equals(same.value!), `chunks of ${size}: ${same.key.toString()}`).to.equal(true)
          }
        }
        expect(first!.version).to.equal(10)
        expect(first!.aux['redis-ver']).to.equal(/redis_version:(\S+)/.exec(await src.info('server'))![1])
        expect(first!.aux['repl-id']).to.equal(/master_replid:(\w+)/.exec(replication)![1])
        expect(first!.aux).to.include.keys('ctime', 'used-mem', 'repl-offset', 'aof-base', 'redis-bits')
        expect(first!.functions.map(String)).to.deep.equal([LIBRARY])
        expect(first!.resized.map((r) => [r.db, r.keys])).to.deep.equal([...expected])
        // What LRU or LFU keeps per key comes with it.
        const extra = setting.policy === 'allkeys-lfu' ? 'frequency' : 'idleSeconds'
        expect(first!.entries.every((e) => typeof e[extra] === 'number')).to.equal(true)
        // Every type and encoding Redis 7.0 writes is in there.
        expect(new Set(first!.entries.map((e) => e.type))).to.deep.equal(
          new Set([
            RdbType.STRING,
            RdbType.LIST_QUICKLIST_2,
            RdbType.SET_INTSET,
            RdbType.SET,
            RdbType.ZSET_LISTPACK,
            RdbType.ZSET_2,
            RdbType.HASH_LISTPACK,
            RdbType.HASH,
            RdbType.STREAM_LISTPACKS_2,
          ]),
        )
      })

      it('every value makes a DUMP payload equal to DUMP, and RESTORE ... ABSTTL gives the same value, encoding and expiry', async () => {
        await dst.flushall()
        const parsed = parse(rdb, 65536, {valuesOf: () => true})
        for (const entry of parsed.entries) {
          const key = entry.key
          const payload = dumpPayload(entry.type, entry.value!, parsed.version!)
          await src.select(entry.db)
          await dst.select(entry.db)
          expect(payload.equals(await src.dumpBuffer(key)), `DUMP of ${key.toString()}`).to.equal(true)
          await dst.restore(key, entry.expireAtMs ?? 0, payload, 'ABSTTL')
          const [sourceDigest, targetDigest] = await Promise.all([
            src.call('DEBUG', 'DIGEST-VALUE', key),
            dst.call('DEBUG', 'DIGEST-VALUE', key),
          ])
          expect(targetDigest, key.toString()).to.deep.equal(sourceDigest)
          expect(await dst.object('ENCODING', key)).to.equal(await src.object('ENCODING', key))
          expect(await dst.pexpiretime(key)).to.equal(await src.pexpiretime(key))
          expect(entry.expireAtMs ?? -1).to.equal(await src.pexpiretime(key))
          if (entry.type === RdbType.STREAM_LISTPACKS_2) {
            // The digest covers the entries; groups, consumers and pending entries are compared here.
            expect(await dst.call('XINFO', 'STREAM', key, 'FULL')).to.deep.equal(await src.call('XINFO', 'STREAM', key, 'FULL'))
          }
        }
        expect(await serverKeys(dst)).to.deep.equal(await serverKeys(src))
      })

      it('a flipped byte fails: in a value, the checksum says so; anywhere, the file is refused', async () => {
        const random = await src.select(0).then(() => src.getBuffer('db0:str:random'))
        const at = rdb.indexOf(random!.subarray(0, 64)) + 1000
        expect(at).to.be.greaterThan(1000)
        const flipped = Buffer.from(rdb)
        flipped[at] ^= 0x20
        expect(errorOf(() => parse(flipped, 4096)).message).to.match(
          /^the RDB is not valid at byte [\d,]+, in the checksum: its checksum does not match: the file says 0x[0-9a-f]{16}, its bytes give 0x[0-9a-f]{16}$/,
        )
        // Anywhere at all: never accepted, never a crash of another kind.
        for (let i = 0; i < 300; i++) {
          const position = Math.floor((i / 300) * rdb.length)
          const broken = Buffer.from(rdb)
          broken[position] ^= 1 << (i % 8)
          const error = errorOf(() => parse(broken, 65536, {valuesOf: () => true}))
          expect(error.code, `byte ${position}: ${error.message}`).to.equal('ERDB')
          expect(error.message).not.to.include('\n')
        }
      })
    })
  }

  it('rdbchecksum no: the zero trailer is reported as not verified', async () => {
    const unchecked = await startServer(['--rdbchecksum', 'no', '--enable-debug-command', 'yes'])
    try {
      await populateEveryType(unchecked.client(), 3)
      const rdb = await snapshotOf(unchecked)
      expect(rdb.readBigUInt64LE(rdb.length - 8)).to.equal(0n)
      const {summary} = parse(rdb, 1000)
      expect(summary!.verified).to.equal(false)
      expect(summary!.checksum).to.equal(crc64(rdb.subarray(0, rdb.length - 8)))
      expect(summary!.keys).to.deep.equal(new Map([[3, 25]]))
    } finally {
      await unchecked.stop()
    }
  })

  describe('values asked for, and not', () => {
    let rdb: Buffer
    before(async () => {
      rdb = await snapshotOf(source)
    })

    it('only the databases asked for come with their values; the others are skipped, their keys still counted', () => {
      const parsed = parse(rdb, 4096, {valuesOf: (db) => db === 5})
      expect(parsed.entries.filter((e) => e.value !== undefined).map((e) => e.db)).to.satisfy((dbs: number[]) =>
        dbs.every((db) => db === 5),
      )
      expect(parsed.entries.filter((e) => e.db === 5).every((e) => e.value !== undefined && e.value.length === e.valueLength)).to.equal(
        true,
      )
      expect(parsed.entries.filter((e) => e.db !== 5).every((e) => e.value === undefined && e.valueLength > 0)).to.equal(true)
      expect(parsed.summary!.keys.get(0)).to.equal(parsed.entries.filter((e) => e.db === 0).length)
    })

    it('a value larger than a piece comes in pieces of that size, which together are its bytes', () => {
      const whole = parse(rdb, 65536, {valuesOf: () => true})
      for (const size of [7, 65536]) {
        const pieced = parse(rdb, size, {valuesOf: () => true, pieceSize: 1000})
        let piecedValues = 0
        for (const [i, entry] of pieced.entries.entries()) {
          const expected = whole.entries[i].value!
          const pieces = pieced.pieces.get(entry)
          if (expected.length <= 1000) {
            expect(entry.value!.equals(expected)).to.equal(true)
            expect(pieces).to.equal(undefined)
            continue
          }
          piecedValues++
          expect(entry.value).to.equal(undefined)
          expect(pieces!.slice(0, -1).every((p) => p.length === 1000)).to.equal(true)
          expect(pieces!.at(-1)!.length).to.be.within(1, 1000)
          expect(Buffer.concat(pieces!).equals(expected), entry.key.toString()).to.equal(true)
        }
        expect(piecedValues).to.be.greaterThan(10)
      }
    })

    it('as a Writable: piped from the snapshot, each chunk waits for the consumer', async () => {
      const {stream} = await streamSnapshot({host: '127.0.0.1', port: source.port, db: 0}, {timeoutMs: 5000})
      let entries = 0
      let waits = 0
      const reader = new RdbReader({entry: () => entries++}, {})
      await pipeline(
        stream,
        rdbWritable(reader, async () => {
          waits++
          await new Promise((resolve) => setImmediate(resolve))
        }),
      )
      expect(entries).to.equal([...(await serverKeys(src)).values()].reduce((a, b) => a + b))
      expect(waits).to.be.greaterThan(0)
      expect(reader.done).to.equal(true)
    })
  })

  describe('huge values: a 100 MB string and a hash of a million fields', () => {
    let huge: TestServer
    let client: Redis
    before(async () => {
      huge = await startServer()
      client = huge.client()
      await client.set('big:string', randomBytes(100 * 1024 * 1024))
      for (let batch = 0; batch < 1000; batch++) {
        const fields: string[] = []
        for (let i = batch * 1000; i < (batch + 1) * 1000; i++) fields.push(`field:${i}`, `value:${i}`)
        await client.hset('big:hash', ...fields)
      }
      await client.set('small', 'after them')
    })
    after(() => huge.stop())

    /** Stream a snapshot through a reader, noting the most it ever held between two chunks. */
    async function streamThrough(handler: RdbHandler, options: RdbReaderOptions): Promise<{reader: RdbReader; mostHeld: number}> {
      const {stream} = await streamSnapshot({host: '127.0.0.1', port: huge.port, db: 0}, {timeoutMs: 5000})
      const reader = new RdbReader(handler, options)
      let mostHeld = 0
      await pipeline(
        stream,
        rdbWritable(reader, () => {
          mostHeld = Math.max(mostHeld, reader.heldBytes)
        }),
      )
      return {reader, mostHeld}
    }

    it('skipped: they stream through, never gathered', async () => {
      const entries: RdbEntry[] = []
      const {mostHeld} = await streamThrough({entry: (e) => entries.push(e)}, {})
      expect(entries.map((e) => [e.key.toString(), e.value])).to.have.deep.members([
        ['big:string', undefined],
        ['big:hash', undefined],
        ['small', undefined],
      ])
      expect(entries.find((e) => e.key.toString() === 'big:string')!.valueLength).to.be.greaterThan(100 * 1024 * 1024)
      expect(mostHeld).to.be.below(64 * 1024)
    })

    it('asked for: they come in pieces of 8 MB that make exactly the DUMP payload; small values stay whole', async () => {
      const checksums = new Map<string, Crc64>()
      const pieceSizes: number[] = []
      const whole: string[] = []
      const {reader, mostHeld} = await streamThrough(
        {
          valuePiece(entry, piece) {
            let crc = checksums.get(entry.key.toString())
            if (!crc) checksums.set(entry.key.toString(), (crc = new Crc64().update(Buffer.from([entry.type]))))
            crc.update(piece)
            pieceSizes.push(piece.length)
          },
          entry(entry) {
            if (entry.value) whole.push(entry.key.toString())
          },
        },
        {valuesOf: () => true},
      )
      expect(whole).to.deep.equal(['small'])
      expect([...checksums.keys()].sort()).to.deep.equal(['big:hash', 'big:string'])
      expect(Math.max(...pieceSizes)).to.equal(8 * 1024 * 1024)
      const version = Buffer.alloc(2)
      version.writeUInt16LE(reader.version)
      for (const [key, crc] of checksums) {
        const dump = await client.dumpBuffer(key)
        expect(crc.update(version).value, key).to.equal(dump.readBigUInt64LE(dump.length - 8))
      }
      expect(mostHeld).to.be.below(8 * 1024 * 1024 + 256 * 1024)
    })
  })

  describe('the formats Redis 7.0 reads but no longer writes, and modules', () => {
    it('a hand-made RDB with the old list, set, sorted set (text scores), hash and expiry formats: walked as Redis loads it', async () => {
      const rdb = craftRdb([
        [RdbOpcode.SELECTDB, len(2)],
        [RdbOpcode.RESIZEDB, len(5), len(1)],
        [RdbOpcode.EXPIRETIME, u32le(Math.floor(Date.now() / 1000) + 3600)],
        [RdbType.LIST, str('old:list'), len(3), str('a'), str('bb'), str('123')],
        [RdbOpcode.IDLE, len(17)],
        [RdbType.SET, str('old:set'), len(2), str('x'), str('y')],
        [RdbOpcode.FREQ, Buffer.from([9])],
        // Scores as text: "0.1", then the length codes 253 (nan is never saved), 254 (+inf) and 255 (-inf).
        [
          RdbType.ZSET,
          str('old:zset'),
          len(3),
          str('p'),
          Buffer.from([3]),
          Buffer.from('0.1'),
          str('q'),
          Buffer.from([254]),
          str('r'),
          Buffer.from([255]),
        ],
        [RdbType.HASH, str('old:hash'), len(2), str('f'), str('v'), str('g'), int8(-5)],
        [RdbType.STRING, int16(4242), lzf('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', Buffer.from([0x00, 0x61, 0xe0, 0x1e, 0x00]))],
      ])
      for (const size of [1, 2, 3, 5, 1000]) {
        const parsed = parse(rdb, size, {valuesOf: () => true})
        expect(parsed.entries.map((e) => [e.db, e.key.toString(), e.type])).to.deep.equal([
          [2, 'old:list', RdbType.LIST],
          [2, 'old:set', RdbType.SET],
          [2, 'old:zset', RdbType.ZSET],
          [2, 'old:hash', RdbType.HASH],
          [2, '4242', RdbType.STRING],
        ])
        expect(parsed.entries[0].expireAtMs).to.be.a('number')
        expect(parsed.entries[1].idleSeconds).to.equal(17)
        expect(parsed.entries[2].frequency).to.equal(9)
        expect(parsed.resized).to.deep.equal([{db: 2, keys: 5, expires: 1}])
      }
      // Redis itself loads the same file to the same keys and values.
      const dir = mkdtempSync(join(tmpdir(), 'shardctl-rdb-'))
      writeFileSync(join(dir, 'dump.rdb'), rdb)
      const loaded = await startServer(['--dir', dir])
      try {
        const c = loaded.client(2)
        expect(await c.lrange('old:list', 0, -1)).to.deep.equal(['a', 'bb', '123'])
        expect(await c.pttl('old:list')).to.be.greaterThan(3_000_000)
        expect((await c.smembers('old:set')).sort()).to.deep.equal(['x', 'y'])
        expect(await c.zrange('old:zset', '0', '-1', 'WITHSCORES')).to.deep.equal(['r', '-inf', 'p', '0.10000000000000001', 'q', 'inf'])
        expect(await c.hgetall('old:hash')).to.deep.equal({f: 'v', g: '-5'})
        expect(await c.get('4242')).to.equal('a'.repeat(40))
      } finally {
        await loaded.stop()
        rmSync(dir, {recursive: true, force: true})
      }
    })

    it('module values and module aux data are walked by their annotations and named, not decoded', () => {
      const id = moduleId('MBbloom--', 3)
      expect(moduleTypeOf(id)).to.deep.equal({name: 'MBbloom--', encodingVersion: 3})
      const fields = Buffer.concat([
        len(1),
        len(7), // signed integer
        len(2),
        Buffer.from([0x81, 0, 0, 0, 1, 0, 0, 0, 0]), // unsigned, 64-bit length form
        len(3),
        Buffer.alloc(4), // float
        len(4),
        Buffer.alloc(8), // double
        len(5),
        str('module bytes'),
        len(0), // EOF
      ])
      const rdb = craftRdb([
        [RdbOpcode.MODULE_AUX, len64(id), len(2), len(2), fields],
        [RdbOpcode.SELECTDB, len(0)],
        [RdbType.MODULE_2, str('bloom'), len64(id), fields],
        [RdbType.STRING, str('after'), str('the module')],
      ])
      for (const size of [1, 4, 1000]) {
        const auxes: unknown[] = []
        const parsed = parse(rdb, size, {valuesOf: () => true}, {moduleAux: (m) => auxes.push(m)})
        expect(auxes).to.deep.equal([{id, name: 'MBbloom--', encodingVersion: 3, when: 2}])
        expect(parsed.entries.map((e) => [e.key.toString(), e.module?.name])).to.deep.equal([
          ['bloom', 'MBbloom--'],
          ['after', undefined],
        ])
        expect(parsed.entries[0].value!.equals(Buffer.concat([len64(id), fields]))).to.equal(true)
      }
    })

    it('a module value where the caller cannot restore one (refuseModulesIn): refused, naming the key and the module type', () => {
      const id = moduleId('ReJSON-RL', 3)
      const fields = Buffer.concat([len(5), str('{"a":1}'), len(0)])
      const rdb = craftRdb([
        [RdbOpcode.SELECTDB, len(0)],
        [RdbType.MODULE_2, str('elsewhere'), len64(id), fields],
        [RdbOpcode.SELECTDB, len(4)],
        [RdbType.STRING, str('before'), str('it')],
        [RdbType.MODULE_2, str('doc:1'), len64(id), fields],
        [RdbType.STRING, str('after'), str('it')],
      ])
      for (const size of [1, 7, 1000]) {
        const entries: string[] = []
        const error = errorOf(() =>
          parse(rdb, size, {valuesOf: (db) => db === 4, refuseModulesIn: (db) => db === 4}, {entry: (e) => entries.push(e.key.toString())}),
        )
        expect(error.message).to.equal(
          'key "doc:1" in database 4 holds a value of the module type ReJSON-RL (encoding version 3), which only its module can restore: refused',
        )
        expect(error.code).to.equal('EMODULE')
        // The module value of another database was walked; nothing after the refused one was reported.
        expect(entries).to.deep.equal(['elsewhere', 'before'])
      }
      // Without the option, the same file is read through.
      expect(parse(rdb, 1000, {valuesOf: () => true}).entries.map((e) => e.module?.name ?? e.key.toString())).to.deep.equal([
        'ReJSON-RL',
        'before',
        'ReJSON-RL',
        'after',
      ])
    })

    it('a file cut short, not an RDB, or newer than this reader: one line saying which', () => {
      const rdb = craftRdb([[RdbType.STRING, str('k'), str('v')]])
      expect(errorOf(() => parse(rdb.subarray(0, rdb.length - 3), 5)).message).to.match(
        /^the RDB ends early: [\d,]+ bytes, cut in the checksum$/,
      )
      expect(errorOf(() => parse(rdb.subarray(0, 13), 5)).message).to.match(
        /^the RDB ends early: 13 bytes, cut in the value of key "k" in database 0$/,
      )
      expect(errorOf(() => parse(Buffer.from('HTTP/1.1 200 OK\r\n'), 5)).message).to.include('this is not an RDB file')
      expect(errorOf(() => parse(Buffer.concat([Buffer.from('REDIS0013'), rdb.subarray(9)]), 64)).message).to.include(
        'RDB version 13 is newer than this reader knows (12)',
      )
      expect(errorOf(() => parse(Buffer.concat([rdb, Buffer.from('x')]), 64)).message).to.include('1 bytes after the end of the file')
      expect(errorOf(() => parse(craftRdb([[99, str('k'), str('v')]]), 64)).message).to.include('a value of unknown type 99')
      // A failing handler is the caller's failure, passed on as it is, and the reader stays failed.
      const mine = new Error('the consumer gave up')
      const reader = new RdbReader({
        entry() {
          throw mine
        },
      })
      expect(() => reader.write(rdb)).to.throw(mine)
      expect(() => reader.write(Buffer.alloc(1))).to.throw(mine)
      expect(() => reader.end()).to.throw(mine)
    })
  })
})

// A small RDB writer for hand-made files: the formats Redis reads but no longer writes.

function len(n: number): Buffer {
  if (n < 64) return Buffer.from([n])
  if (n < 16384) return Buffer.from([0x40 | (n >> 8), n & 0xff])
  const out = Buffer.alloc(5)
  out[0] = 0x80
  out.writeUInt32BE(n, 1)
  return out
}

function len64(n: bigint): Buffer {
  const out = Buffer.alloc(9)
  out[0] = 0x81
  out.writeBigUInt64BE(n, 1)
  return out
}

function str(text: string): Buffer {
  return Buffer.concat([len(Buffer.byteLength(text)), Buffer.from(text)])
}

function int8(n: number): Buffer {
  return Buffer.from([0xc0, n & 0xff])
}

function int16(n: number): Buffer {
  const out = Buffer.alloc(3)
  out[0] = 0xc1
  out.writeInt16LE(n, 1)
  return out
}

function u32le(n: number): Buffer {
  const out = Buffer.alloc(4)
  out.writeUInt32LE(n)
  return out
}

/** An LZF string: its compressed bytes, as lzf_compress makes them for `text`. */
function lzf(text: string, compressed: Buffer): Buffer {
  return Buffer.concat([Buffer.from([0xc3]), len(compressed.length), len(text.length), compressed])
}

function moduleId(name: string, encodingVersion: number): bigint {
  const chars = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
  let id = 0n
  for (const c of name) id = (id << 6n) | BigInt(chars.indexOf(c))
  return (id << 10n) | BigInt(encodingVersion)
}

/** An RDB of version 10: the header, the given records (an opcode or type byte, then its bytes), EOF and the checksum. */
function craftRdb(records: [number, ...Buffer[]][]): Buffer {
  const body = Buffer.concat([
    Buffer.from('REDIS0010'),
    ...records.map(([op, ...parts]) => Buffer.concat([Buffer.from([op]), ...parts])),
    Buffer.from([0xff]),
  ])
  const trailer = Buffer.alloc(8)
  trailer.writeBigUInt64LE(crc64(body))
  return Buffer.concat([body, trailer])
}

import {spawn} from 'node:child_process'
import {randomBytes} from 'node:crypto'

import {expect} from 'chai'
import {type Redis} from 'ioredis'

import {type DatabaseCopy, startDatabaseCopy} from '../../src/copy/engine.js'
import {TEMP_KEY_PREFIX, formatScore, listpackElements, ziplistElements} from '../../src/copy/pieces.js'
import {parseInfo} from '../../src/fleet/info.js'
import {type TestServer, startServer} from '../helpers/redis.js'

/**
 * Values over the reader's piece size (8 MB) reach the target in bounded pieces built
 * under a temporary key, then placed whole: checked value by value with DEBUG
 * DIGEST-VALUE, with the longest gap between two PINGs on another database of the target
 * measured during the copy (docs/move-engine.md compares it with one RESTORE of the same
 * value). The gaps are printed, never asserted: the machine may be loaded.
 */

const DEBUG = ['--enable-debug-command', 'yes', '--databases', '32']

/**
 * PINGs one after the other on db 0 of the target, from a process of its own (this one
 * runs the copy, whose own work must not count), until the returned function is called:
 * it gives the longest wait for a reply, in ms, and the target's longest command (LATENCY LATEST).
 */
async function pingGaps(server: TestServer): Promise<() => Promise<{ping: number; command: number}>> {
  const admin = server.client(0)
  await admin.config('SET', 'latency-monitor-threshold', '1')
  await admin.call('LATENCY', 'RESET')
  const child = spawn(process.execPath, ['-e', PINGER, String(server.port)], {stdio: ['pipe', 'pipe', 'inherit']})
  let out = ''
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()))
  const exited = new Promise((resolve) => child.on('close', resolve))
  await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()))
  return async () => {
    child.stdin.end()
    await exited
    const latest = (await admin.call('LATENCY', 'LATEST')) as [string, number, number, number][]
    // Commands flagged fast (APPEND, HSET, RPUSH…) are reported apart from the others (RESTORE, EVAL).
    const command = Math.max(0, ...latest.filter(([event]) => event === 'command' || event === 'fast-command').map((e) => e[3]))
    return {ping: Number(out.trim().split('\n').at(-1)), command}
  }
}

/** The pinging process: "ready" once connected, its longest gap when its stdin closes. */
const PINGER = `
const socket = require('node:net').connect(Number(process.argv[1]), '127.0.0.1')
let last = 0, longest = 0, running = true
socket.on('connect', () => { process.stdout.write('ready\\n'); last = performance.now(); socket.write('PING\\r\\n') })
socket.on('data', () => {
  const now = performance.now()
  longest = Math.max(longest, now - last)
  last = now
  if (running) socket.write('PING\\r\\n')
  else { process.stdout.write(longest.toFixed(1) + '\\n'); socket.end() }
})
process.stdin.resume()
process.stdin.on('end', () => (running = false))
`

/** Lua on the source: `count` elements written by `verb` in batches, element i being what `element` (Lua, of i) gives. */
async function build(client: Redis, key: string, verb: string, count: number, element: string): Promise<void> {
  const script = `
    local batch = {}
    for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do
      for _, v in ipairs({${element}}) do batch[#batch + 1] = v end
      if #batch >= 5000 then redis.call('${verb}', KEYS[1], unpack(batch)); batch = {} end
    end
    if #batch > 0 then redis.call('${verb}', KEYS[1], unpack(batch)) end`
  for (let from = 1; from <= count; from += 100_000) {
    await client.eval(script, 1, key, from, Math.min(count, from + 99_999))
  }
}

describe('copy/engine: large values in pieces', function () {
  let source: TestServer
  let target: TestServer
  let nextDb = 1
  const copies: DatabaseCopy[] = []

  before(async function () {
    ;[source, target] = await Promise.all([startServer(DEBUG), startServer(DEBUG)])
    await target.client(0).set('neighbour', 'zero')
  })

  afterEach(async () => {
    await Promise.all(copies.splice(0).map((c) => c.stop()))
  })

  after(async () => {
    await Promise.all([source?.stop(), target?.stop()])
  })

  /** A copy of source db `db` into the target db of the same number, stopped after the test. */
  async function startCopy(db: number): Promise<DatabaseCopy> {
    const copy = await startDatabaseCopy({
      source: {host: '127.0.0.1', port: source.port, db},
      sourceDb: db,
      target: {host: '127.0.0.1', port: target.port, db},
      targetDb: db,
      timeoutMs: 30_000,
    })
    copies.push(copy)
    return copy
  }

  /**
   * Copy source db `db` (holding `key`) into a target db of the same number, pinging the
   * target's db 0 meanwhile. The copy must equal the source's value, written in pieces.
   */
  async function copyAndCompare(db: number, key: string, also?: (c: Redis) => Promise<unknown>): Promise<void> {
    const stopPing = await pingGaps(target)
    await target.client(0).config('RESETSTAT')
    const t0 = performance.now()
    const copy = await startCopy(db)
    await copy.snapshotLoaded()
    const ms = performance.now() - t0
    const pieces = await stopPing()
    await copy.stop()
    // Written in pieces, never as one RESTORE.
    const stats = parseInfo(await target.client(0).info('commandstats'))
    expect(stats.cmdstat_restore, 'RESTORE on the target').to.equal(undefined)
    expect(stats.cmdstat_eval, 'the placing').to.match(/^calls=1,/)
    const [from, to] = [source.client(db), target.client(db)]
    expect(await to.keys('*')).to.deep.equal([key])
    // Asked of both servers at once: a digest of a million fields takes a while.
    const probe = (c: Redis) =>
      Promise.all([c.call('DEBUG', 'DIGEST-VALUE', key), c.call('PEXPIRETIME', key), c.call('TYPE', key), also?.(c)])
    const [expected, copied] = await Promise.all([probe(from), probe(to)])
    expect(copied).to.deep.equal(expected)
    // Each test's value leaves both servers: the next copy snapshots the source anew, and
    // need not carry this one.
    await Promise.all([to.flushdb('ASYNC'), from.flushdb('ASYNC')])
    console.log(
      `      ${key}: copy ${ms.toFixed(0)} ms; on the target, longest PING gap ${pieces.ping} ms, longest command ${pieces.command} ms`,
    )
  }

  it('a 100 MB string', async () => {
    const db = nextDb++
    await source.client(db).set('string:100mb', randomBytes(100 * 1024 * 1024))
    await source.client(db).pexpireat('string:100mb', Date.now() + 3_600_007)
    await copyAndCompare(db, 'string:100mb')
  })

  it('a 40 MB string the RDB holds LZF-compressed, decompressed as it streams', async () => {
    const db = nextDb++
    const words = Array.from({length: 64}, () => randomBytes(4).toString('hex'))
    const text = Array.from({length: (40 * 1024 * 1024) / 8}, () => words[Math.floor(Math.random() * words.length)]).join('')
    await source.client(db).set('string:lzf', text)
    // Compressible, yet over 8 MB compressed: the piece path, not a small RESTORE.
    const described = String(await source.client(db).call('DEBUG', 'OBJECT', 'string:lzf'))
    const rdbBytes = Number(/serializedlength:(\d+)/.exec(described)![1])
    expect(rdbBytes)
      .to.be.above(8 * 1024 * 1024)
      .and.below(text.length / 2)
    await copyAndCompare(db, 'string:lzf')
  })

  it('a hash of a million fields, with its expiry', async () => {
    const db = nextDb++
    await build(source.client(db), 'hash:1m', 'HSET', 1_000_000, `'field:' .. i, 'value:' .. i * 7`)
    await source.client(db).pexpireat('hash:1m', Date.now() + 7_200_011)
    expect(await source.client(db).hlen('hash:1m')).to.equal(1_000_000)
    await copyAndCompare(db, 'hash:1m')
  })

  it('a list of every listpack encoding: small, 13-, 16-, 24-, 32- and 64-bit integers, short, 12-bit and 32-bit-length strings', async () => {
    const db = nextDb++
    const element = `i % 97, -(i % 4000), i * 3, -(i * 211), i * 40000, 9007199254740 + i, 'item-' .. i, (i % 5000 == 0) and string.rep('L', 5000) or 'x'`
    await build(source.client(db), 'list:big', 'RPUSH', 400_000, element)
    await source.client(db).rpush('list:big', '-9223372036854775808', '9223372036854775807', '')
    await copyAndCompare(db, 'list:big')
  })

  it('a set of 400,000 members', async () => {
    const db = nextDb++
    await build(source.client(db), 'set:big', 'SADD', 400_000, `'member:' .. i .. ':' .. string.rep('s', 12)`)
    await copyAndCompare(db, 'set:big')
  })

  it('a sorted set whose scores round-trip exactly: 0.1, 1e-300, ±inf, 2^53+1, -0, the smallest and largest doubles', async () => {
    const db = nextDb++
    await build(source.client(db), 'zset:big', 'ZADD', 400_000, `i / 7, 'member:' .. i .. ':' .. string.rep('z', 8)`)
    const special = [
      '0.1',
      '1e-300',
      'inf',
      '-inf',
      '9007199254740993',
      '-0',
      '5e-324',
      '1.7976931348623157e308',
      '-2.2250738585072014e-308',
    ]
    await source.client(db).zadd('zset:big', ...special.flatMap((s, i) => [s, `special-${i}`]))
    await copyAndCompare(db, 'zset:big')
  })

  /**
   * A stream of `entries` entries of ~110 bytes (SHA-1 texts: the RDB cannot compress them
   * under 8 MB) under explicit IDs whose sequence numbers go up and down, so that a node
   * holds negative deltas; every third entry with the fields of its node's first (stored
   * without them), the others with fields of their own; every tenth deleted.
   */
  async function buildStream(client: Redis, key: string, entries: number): Promise<void> {
    const script = `
      for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do
        local id = (1000 + i) .. '-' .. ((i * 7919) % 100)
        if i % 3 == 0 then
          redis.call('XADD', KEYS[1], id, 'a', i, 'b', redis.sha1hex(i) .. redis.sha1hex(i + 1))
        else
          redis.call('XADD', KEYS[1], id, 'c', redis.sha1hex(i), 'd', redis.sha1hex(-i) .. i, 'e', '')
        end
      end
      for i = tonumber(ARGV[1]), tonumber(ARGV[2]), 10 do
        redis.call('XDEL', KEYS[1], (1000 + i) .. '-' .. ((i * 7919) % 100))
      end`
    for (let from = 1; from <= entries; from += 20_000) await client.eval(script, 1, key, from, Math.min(entries, from + 19_999))
  }

  /** What a stream is beside its entries: IDs, counters, groups, pending entries, consumers' names (not the radix tree's shape). */
  const streamState = async (c: Redis, key: string) => {
    const full = (await c.call('XINFO', 'STREAM', key, 'FULL', 'COUNT', '3')) as unknown[]
    const out: Record<string, unknown> = {}
    for (let i = 0; i < full.length; i += 2) if (!String(full[i]).startsWith('radix-tree')) out[String(full[i])] = full[i + 1]
    return JSON.stringify(out, (_, v) => (typeof v === 'number' && v > 1e12 ? 'time' : v))
  }

  it('a stream: deleted entries, sequence numbers up and down to 2^64-1, its IDs and counters, groups without consumers', async () => {
    const db = nextDb++
    const from = source.client(db)
    await buildStream(from, 'stream:big', 110_000)
    const top = 1000 + 110_000 + 10
    await from.xadd('stream:big', `${top}-18446744073709551615`, 'top', '1')
    await from.xadd('stream:big', `${top + 1}-0`, 'after', 'top')
    await from.call('XSETID', 'stream:big', `${top + 5}-0`, 'ENTRIESADDED', '200000', 'MAXDELETEDID', `${top + 2}-7`)
    await from.call('XGROUP', 'CREATE', 'stream:big', 'readers', '1500-0', 'ENTRIESREAD', '450')
    await from.call('XGROUP', 'CREATE', 'stream:big', 'latecomers', '$')
    await from.call('XGROUP', 'CREATE', 'stream:big', 'unknown', '0', 'ENTRIESREAD', '-1')
    await from.pexpireat('stream:big', Date.now() + 3_600_013)
    const described = String(await from.call('DEBUG', 'OBJECT', 'stream:big'))
    expect(Number(/serializedlength:(\d+)/.exec(described)![1])).to.be.above(8 * 1024 * 1024)
    await copyAndCompare(db, 'stream:big', (c) => streamState(c, 'stream:big'))
  })

  it('a stream whose group has a consumer keeps one RESTORE: its seen time stays exact', async () => {
    const db = nextDb++
    const from = source.client(db)
    await buildStream(from, 'stream:read', 90_000)
    await from.call('XGROUP', 'CREATE', 'stream:read', 'readers', '0')
    await from.call('XREADGROUP', 'GROUP', 'readers', 'alice', 'COUNT', '5', 'STREAMS', 'stream:read', '>')
    await new Promise((resolve) => setTimeout(resolve, 1500))
    await target.client(0).config('RESETSTAT')
    const copy = await startCopy(db)
    await copy.snapshotLoaded()
    await copy.stop()
    const to = target.client(db)
    const stats = parseInfo(await target.client(0).info('commandstats'))
    expect(stats.cmdstat_restore, 'one RESTORE').to.match(/^calls=1,/)
    expect(stats.cmdstat_xadd, 'no XADD').to.equal(undefined)
    const consumer = async (c: Redis) => {
      const [[, name, , pending, , idle]] = (await c.call('XINFO', 'CONSUMERS', 'stream:read', 'readers')) as [unknown[]]
      return {name, pending, idle: Number(idle)}
    }
    const [expected, copied] = await Promise.all([consumer(from), consumer(to)])
    expect({...copied, idle: 0}).to.deep.equal({...expected, idle: 0})
    // Idle as long on both: a consumer made anew would have been idle for no time at all.
    expect(Math.abs(copied.idle - expected.idle)).to.be.below(1000)
    expect(copied.idle).to.be.at.least(1500)
    expect(await to.call('DEBUG', 'DIGEST-VALUE', 'stream:read')).to.deep.equal(await from.call('DEBUG', 'DIGEST-VALUE', 'stream:read'))
    await Promise.all([to.flushdb('ASYNC'), from.flushdb('ASYNC')])
  })

  it('a copy stopped while a value is being built leaves neither the temporary key nor half a value', async () => {
    const db = nextDb++
    await source.client(db).set('string:stopped', randomBytes(100 * 1024 * 1024))
    const copy = await startCopy(db)
    const to = target.client(db)
    let temp: string[] = []
    // The temporary key exists from the first piece to the placing, a hundred pieces later.
    while (temp.length === 0) temp = (await to.scan(0, 'MATCH', `${TEMP_KEY_PREFIX}*`))[1]
    expect(await to.exists('string:stopped')).to.equal(0)
    await copy.stop()
    expect(await to.keys('*')).to.deep.equal([])
    await source.client(db).flushdb('ASYNC')
  })
})

describe('copy/pieces: the element decoders', function () {
  it('formats scores as the shortest text that reads back as the same double', () => {
    for (const score of [0.1, 1e-300, 2 ** 53 + 2, -0.3333333333333333, 5e-324, Number.MAX_VALUE, 1 / 7]) {
      expect(Number(formatScore(score))).to.equal(score)
    }
    expect(formatScore(Infinity)).to.equal('inf')
    expect(formatScore(-Infinity)).to.equal('-inf')
    expect(formatScore(-0)).to.equal('-0')
  })

  it('reads the elements of a ziplist (the quicklist nodes of Redis 3.2-6.2)', () => {
    const header = Buffer.alloc(10)
    const entries = Buffer.from([0x00, 0x03, 0x61, 0x62, 0x63, 0x05, 0xfe, 0xfb, 0x03, 0xf5, 0x02, 0xc0, 0x39, 0x30, 0xff])
    const elements = ziplistElements(Buffer.concat([header, entries])).map(String)
    expect(elements).to.deep.equal(['abc', '-5', '4', '12345'])
  })

  it('reads entries of every back-length size, at the edges where lpEncodeBacklen changes it (127/128, 16382/16383 bytes)', () => {
    // An entry: its encoding and content, then its back-length (1 byte to 127, 2 below 16383, 3 below 2097151).
    const backlen = (size: number) => (size <= 127 ? 1 : size < 16_383 ? 2 : size < 2_097_151 ? 3 : 4)
    const entry = (length: number): Buffer => {
      const head =
        length < 4096
          ? Buffer.from([0xe0 | (length >> 8), length & 0xff])
          : Buffer.concat([Buffer.from([0xf0]), Buffer.from(Uint32Array.of(length).buffer)])
      const body = Buffer.concat([head, Buffer.alloc(length, 0x61)])
      return Buffer.concat([body, Buffer.alloc(backlen(body.length), 0x01)])
    }
    const lengths = [125, 126, 16_377, 16_378, 3]
    const entries = lengths.map(entry)
    expect(entries.map((e) => e.length)).to.deep.equal([127 + 1, 128 + 2, 16_382 + 2, 16_383 + 3, 5 + 1])
    const body = Buffer.concat([...entries, Buffer.from([0xff])])
    const header = Buffer.alloc(6)
    header.writeUInt32LE(6 + body.length, 0)
    header.writeUInt16LE(entries.length, 4)
    expect(listpackElements(Buffer.concat([header, body])).map((e) => e.length)).to.deep.equal(lengths)
  })

  it('refuses a listpack whose count disagrees with its entries', () => {
    // Header: 4 bytes total, 2 bytes count (2); one 7-bit integer (5, backlen 1); the end.
    const lp = Buffer.from([10, 0, 0, 0, 2, 0, 5, 1, 0xff])
    expect(() => listpackElements(lp)).to.throw(/listpack of 1 elements, not the 2/)
  })
})

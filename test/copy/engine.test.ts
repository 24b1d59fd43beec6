import {randomBytes} from 'node:crypto'
import {mkdtempSync, readdirSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {expect} from 'chai'
import {type Redis} from 'ioredis'

import {type DatabaseCopy, type DatabaseCopyOptions, startDatabaseCopy} from '../../src/copy/engine.js'
import {parseInfo} from '../../src/fleet/info.js'
import {rejectionOf, until} from '../helpers/cli.js'
import {type TestServer, dumpDb, startReplicated, startServer} from '../helpers/redis.js'

/**
 * The live copy engine against real servers: one source and one target shared by the
 * tests (each copy into a database of its own on the target), and servers of their own
 * for what breaks a source (FLUSHALL, fencing).
 */

const DEBUG = ['--enable-debug-command', 'yes']

function copyOptions(source: TestServer, sourceDb: number, target: TestServer, targetDb: number): DatabaseCopyOptions {
  return {
    source: {host: '127.0.0.1', port: source.port, db: sourceDb},
    sourceDb,
    target: {host: '127.0.0.1', port: target.port, db: targetDb},
    targetDb,
    timeoutMs: 10_000,
  }
}

/** Every type and encoding Redis 7.0 writes, with the scores and expiry times that lose precision when rewritten. */
async function fill(client: Redis): Promise<void> {
  const p = client.pipeline()
  p.set('str:int', '12345')
  p.set('str:raw', 'hello')
  p.set('str:lzf', 'abc'.repeat(2000))
  p.set('str:ttl', 'soon')
  p.pexpireat('str:ttl', Date.now() + 3_600_123)
  p.set('str:big', randomBytes(12 * 1024 * 1024))
  p.set('gone', 'x', 'PX', 1)
  p.rpush('list:small', 'a', 'b', '1', '2')
  p.rpush('list:long', ...Array.from({length: 3000}, (_, i) => `item-${i}`))
  p.rpush('list:plain', 'x'.repeat(20_000), 'small', 'y'.repeat(30_000))
  p.sadd('set:int', 1, 2, 3, 40, -5)
  p.sadd('set:ht', ...Array.from({length: 300}, (_, i) => `m${i}`))
  const scores = ['0.1', '1e-300', 'inf', '-inf', '9007199254740993', '-0.3333333333333333']
  p.zadd('zset:lp', ...scores.flatMap((s, i) => [s, `z${i}`]))
  p.zadd('zset:sl', ...scores.flatMap((s, i) => [s, `z${i}`]), ...Array.from({length: 300}, (_, i) => [String(i / 7), `w${i}`]).flat())
  p.pexpireat('zset:sl', Date.now() + 7_200_007)
  p.hset('hash:lp', 'a', '1', 'b', 'two')
  p.hset('hash:ht', ...Array.from({length: 300}, (_, i) => [`f${i}`, `v${i}`]).flat())
  await p.exec()
  // A hash over 8 MB: its value reaches the target in pieces.
  for (let batch = 0; batch < 10; batch++) {
    await client.hset('hash:big', ...Array.from({length: 10_000}, (_, i) => [`field-${batch}-${i}`, 'v'.repeat(90)]).flat())
  }
  for (let i = 0; i < 60; i++) await client.xadd('stream', '*', 'n', String(i), 'payload', 'p'.repeat(i))
  const ids = (await client.xrange('stream', '-', '+')).map(([id]) => id)
  await client.xdel('stream', ids[3], ids[10], ids[59])
  await client.xgroup('CREATE', 'stream', 'g1', '0')
  await client.xgroup('CREATE', 'stream', 'g2', '$')
  await client.xreadgroup('GROUP', 'g1', 'c1', 'COUNT', 20, 'STREAMS', 'stream', '>')
  await client.xack('stream', 'g1', ids[0], ids[1])
  await client.xreadgroup('GROUP', 'g1', 'c2', 'COUNT', 5, 'STREAMS', 'stream', '>')
}

/** The two databases hold the same keys, each with the same value (DEBUG DIGEST-VALUE), encoding and expiry moment. */
async function expectSameDb(source: Redis, target: Redis): Promise<number> {
  const keys = (await source.keys('*')).sort()
  expect((await target.keys('*')).sort()).to.deep.equal(keys)
  for (const key of keys) {
    const [a, b] = await Promise.all(
      [source, target].map(async (c) => [
        await c.call('DEBUG', 'DIGEST-VALUE', key),
        await c.call('PEXPIRETIME', key),
        await c.call('OBJECT', 'ENCODING', key),
      ]),
    )
    expect(b, key).to.deep.equal(a)
  }
  return keys.length
}

async function replOffset(client: Redis): Promise<number> {
  return Number(parseInfo(await client.info('replication')).master_repl_offset)
}

/** The cut-over's order: fence the source, wait until its offset is applied, stop. */
async function fenceAndStop(copy: DatabaseCopy, source: Redis): Promise<void> {
  await source.call('CLIENT', 'PAUSE', '20000', 'WRITE')
  const offset = await replOffset(source)
  expect(await copy.waitApplied(offset, Date.now() + 60_000)).to.equal(true)
  expect(copy.appliedOffset()).to.be.at.least(offset)
  await copy.stop()
}

describe('copy/engine: a live copy of one database', function () {
  let source: TestServer
  let target: TestServer
  let src: Redis
  const copies: DatabaseCopy[] = []
  const start = async (options: DatabaseCopyOptions) => {
    const copy = await startDatabaseCopy(options)
    copies.push(copy)
    return copy
  }

  before(async function () {
    ;[source, target] = await Promise.all([startServer([...DEBUG, '--databases', '32']), startServer([...DEBUG, '--databases', '32'])])
    src = source.client()
    await fill(source.client(3))
    await source.client(0).set('other', 'db0')
    await source.client(5).rpush('other', 'db5')
    await target.client(0).set('neighbour', 'zero')
    await target.client(2).hset('neighbour', 'a', 'b')
  })

  afterEach(async () => {
    await src.call('CLIENT', 'UNPAUSE')
    await Promise.all(copies.splice(0).map((c) => c.stop()))
  })

  after(async () => {
    await Promise.all([source?.stop(), target?.stop()])
  })

  it('copies a database under another number, every type and encoding, into an instance whose other databases are left alone', async () => {
    const before = [await dumpDb(target.client(0)), await dumpDb(target.client(2))]
    const phases = new Set<string>()
    const copy = await start({...copyOptions(source, 3, target, 7), onProgress: (p) => phases.add(p.phase)})
    expect(copy.replicationId).to.match(/^[0-9a-f]{40}$/)
    await copy.snapshotLoaded()
    expect(copy.appliedOffset()).to.be.at.least(copy.startOffset)
    expect(await expectSameDb(source.client(3), target.client(7))).to.be.above(15)
    expect(await target.client(7).exists('gone')).to.equal(0)
    expect(await target.client(7).call('OBJECT', 'ENCODING', 'zset:lp')).to.equal('listpack')
    expect(await target.client(7).call('OBJECT', 'ENCODING', 'set:int')).to.equal('intset')
    expect(await target.client(7).call('OBJECT', 'ENCODING', 'hash:big')).to.equal('hashtable')
    expect([await dumpDb(target.client(0)), await dumpDb(target.client(2))]).to.deep.equal(before)
    for (const db of [1, 3, 4, 5, 6]) expect(await target.client(db).dbsize(), `db ${db}`).to.equal(0)
    await fenceAndStop(copy, src)
    expect(phases.has('snapshot')).to.equal(true)
  })

  it('copies from a disk-based snapshot ($<length>) with rdbcompression no', async () => {
    await src.config('SET', 'repl-diskless-sync', 'no')
    await src.config('SET', 'rdbcompression', 'no')
    try {
      const copy = await start(copyOptions(source, 3, target, 8))
      await copy.snapshotLoaded()
      await fenceAndStop(copy, src)
      await expectSameDb(source.client(3), target.client(8))
    } finally {
      await src.config('SET', 'repl-diskless-sync', 'yes')
      await src.config('SET', 'rdbcompression', 'yes')
    }
  })

  it('applies the writes made during the copy to the moved database only, MULTI and EVAL included, up to the fenced offset', async () => {
    const s1 = source.client(1)
    const s0 = source.client(0)
    await s1.set('seed', '1')
    let writing = true
    let acknowledged = 0
    const writer = (async () => {
      for (let i = 0; writing; i++) {
        await s1.incr('counter')
        await s1.lpush('list', `v${i}`)
        await s0.incr('elsewhere')
        await s1.eval("redis.call('SET', KEYS[1], ARGV[1]) return redis.call('INCR', KEYS[2])", 2, `e:${i % 10}`, 'ecount', String(i))
        await s0
          .multi()
          .select(1)
          .incr('multi')
          .hset('mh', `f${i % 50}`, String(i))
          .select(0)
          .incr('multi0')
          .exec()
        await s1.set(`ttl:${i % 20}`, 'x', 'PX', 600_000 + i)
        // A script that selects the moved database and another one: its effects come as MULTI, SELECT … EXEC.
        await s0.eval(
          "redis.call('SELECT', '1') redis.call('INCR', KEYS[1]) redis.call('SELECT', '0') return redis.call('INCR', KEYS[2])",
          2,
          'eval:moved',
          'eval:zero',
        )
        acknowledged++
      }
    })()
    const neighbours = [await dumpDb(target.client(0)), await dumpDb(target.client(2))]
    const copy = await start(copyOptions(source, 1, target, 9))
    await copy.snapshotLoaded()
    await until('writes during the stream', () => acknowledged > 300)
    // Fenced while the writers still write: their next write waits; read through other connections.
    await fenceAndStop(copy, src)
    await expectSameDb(source.client(1), target.client(9))
    expect(await target.client(9).exists('elsewhere', 'multi0', 'eval:zero')).to.equal(0)
    expect(Number(await target.client(9).get('multi'))).to.be.above(0)
    expect(Number(await target.client(9).get('eval:moved'))).to.be.at.least(acknowledged)
    expect([await dumpDb(target.client(0)), await dumpDb(target.client(2))]).to.deep.equal(neighbours)
    for (const db of [0, 1])
      expect(await target.client(db).exists('eval:zero', 'eval:moved', 'multi0', 'elsewhere'), `db ${db}`).to.equal(0)
    await src.call('CLIENT', 'UNPAUSE')
    writing = false
    await writer
  })

  it('keeps reading the source while the target sleeps (DEBUG SLEEP): the stream waits in the spool file, and the copy is exact', async () => {
    await src.config('SET', 'client-output-buffer-limit', 'replica 4mb 2mb 5')
    try {
      const s4 = source.client(4)
      await s4.set('start', '1')
      const spoolDir = mkdtempSync(join(tmpdir(), 'shardctl-spool-test-'))
      const copy = await start({
        ...copyOptions(source, 4, target, 10),
        spoolDir,
        memory: {inFlightBytes: 1024 * 1024, spoolBytes: 1024 * 1024},
      })
      await copy.snapshotLoaded()
      const sleeping = target.client().call('DEBUG', 'SLEEP', '3')
      const value = randomBytes(100 * 1024)
      for (let i = 0; i < 200; i++) await s4.set(`k${i}`, value)
      await sleeping
      await fenceAndStop(copy, src)
      expect(copy.spilledBytes()).to.be.above(1024 * 1024)
      // The spool's file went with the copy.
      expect(readdirSync(spoolDir)).to.deep.equal([])
      rmSync(spoolDir, {recursive: true})
      await expectSameDb(s4, target.client(10))
    } finally {
      await src.config('SET', 'client-output-buffer-limit', 'replica 256mb 64mb 60')
    }
  })

  it("passes a command with a large argument through without holding it: SET, APPEND, HSET, in MULTI too, other databases' dropped", async () => {
    const s7 = source.client(7)
    const s8 = source.client(8)
    await s7.set('seed', '1')
    const copy = await start({...copyOptions(source, 7, target, 22), memory: {commandBytes: 64 * 1024}})
    await copy.snapshotLoaded()
    const neighbours = [await dumpDb(target.client(0)), await dumpDb(target.client(2))]
    const big = (n: number) => randomBytes(n * 1024 * 1024)
    await s7.set('big', big(3), 'PX', 3_600_000)
    await s7.append('big', big(2))
    await s7.hset('fields', 'a', big(2), 'small', 'x', 'b', big(2))
    await s8.set('elsewhere', big(3))
    await src.publish('channel', big(2))
    // On a connection of its own: SELECT in MULTI leaves it on database 7.
    const tx = s8.duplicate()
    await tx.multi().set('in-multi', big(2)).select(7).set('in-multi', big(2)).rpush('list', big(1), 'tail').exec()
    tx.disconnect()
    await s7.set('after', 'small')
    await fenceAndStop(copy, src)
    expect(await expectSameDb(s7, target.client(22))).to.equal(6)
    // Each large argument passed through a read at a time: nothing near a megabyte was held.
    expect(copy.streamHeldPeak()).to.be.below(512 * 1024)
    expect([await dumpDb(target.client(0)), await dumpDb(target.client(2))]).to.deep.equal(neighbours)
    expect(await target.client(8).exists('elsewhere', 'in-multi')).to.equal(0)
  })

  it('acknowledges the applied offset, never the received one: WAIT on the source waits for the target', async () => {
    const s5 = source.client(5)
    const copy = await start(copyOptions(source, 5, target, 19))
    await copy.snapshotLoaded()
    await s5.rpush('acked', 'a')
    expect(await s5.call('WAIT', '1', '10000')).to.equal(1)
    const sleeping = target.client().call('DEBUG', 'SLEEP', '2')
    await until('the target is asleep', async () => (await s5.rpush('acked', 'b')) > 0 && (await s5.call('WAIT', '1', '300')) === 0)
    await sleeping
    expect(await s5.call('WAIT', '1', '10000')).to.equal(1)
    expect(await target.client(19).lrange('acked', 0, -1)).to.deep.equal(await s5.lrange('acked', 0, -1))
  })

  it('holds the snapshot to --rate (keys per second)', async () => {
    // A small source of its own: the shared one's snapshot alone takes longer than the wait.
    const small = await startServer(DEBUG)
    try {
      const s2 = small.client(2)
      await s2.mset(...Array.from({length: 300}, (_, i) => [`r${i}`, String(i)]).flat())
      const copy = await start({...copyOptions(small, 2, target, 16), rate: {keysPerSecond: 500}})
      const started = Date.now()
      await copy.snapshotLoaded()
      // 300 keys at 500 a second: about 0.6 s (unthrottled, a few milliseconds), less the first read's keys.
      expect(Date.now() - started).to.be.at.least(400)
      await fenceAndStop(copy, small.client())
      await expectSameDb(s2, target.client(16))
    } finally {
      await small.stop()
    }
  })

  it('stops with a clear line when SWAPDB touches the moved database', async () => {
    await source.client(6).set('k', 'v')
    const copy = await start(copyOptions(source, 6, target, 11))
    await copy.snapshotLoaded()
    await src.call('SWAPDB', '6', '12')
    const error = await rejectionOf(copy.failure)
    expect(error.message).to.match(
      /ran SWAPDB 6 12 at offset \d+, which moves data into or out of database 6: the copy into .* database 11 stopped/,
    )
    expect(error.message).to.not.include('\n')
    await src.call('SWAPDB', '6', '12')
  })

  it('stops with a clear line when MOVE takes a key out of the moved database', async () => {
    await source.client(6).set('moving', 'v')
    const copy = await start(copyOptions(source, 6, target, 12))
    await copy.snapshotLoaded()
    await source.client(6).move('moving', 13)
    const error = await rejectionOf(copy.failure)
    expect(error.message).to.match(/ran MOVE moving 13 at offset \d+, which moves data into or out of database 6/)
  })

  it('applies COPY within the moved database (DB naming it too, in MULTI and in a script) under the target database number', async () => {
    const s6 = source.client(6)
    await s6.set('c:from', 'v')
    const copy = await start(copyOptions(source, 6, target, 20))
    await copy.snapshotLoaded()
    expect(await s6.call('COPY', 'c:from', 'c:plain')).to.equal(1)
    expect(await s6.call('COPY', 'c:from', 'c:db', 'DB', '6')).to.equal(1)
    await s6.set('c:from', 'w')
    expect(await s6.call('COPY', 'c:from', 'c:db', 'DB', '6', 'REPLACE')).to.equal(1)
    expect(await s6.multi().set('c:tx', 't').call('COPY', 'c:tx', 'c:tx2', 'DB', '6').exec()).to.deep.equal([
      [null, 'OK'],
      [null, 1],
    ])
    expect(await s6.eval("return redis.call('COPY', KEYS[1], KEYS[2], 'DB', '6')", 2, 'c:from', 'c:script')).to.equal(1)
    await fenceAndStop(copy, src)
    expect(await expectSameDb(s6, target.client(20))).to.be.at.least(6)
    expect(await target.client(20).get('c:db')).to.equal('w')
    // DB 6 named the source's database: on the target it is database 20, never 6.
    expect(await target.client(6).dbsize()).to.equal(0)
  })

  for (const [what, run, shown] of [
    ['COPY … DB out of the moved database', (s6: Redis) => s6.call('COPY', 'x:a', 'x:out', 'DB', '13'), 'COPY x:a x:out DB'],
    ['COPY … DB into the moved database', () => source.client(13).call('COPY', 'x:other', 'x:in', 'DB', '6'), 'COPY x:other x:in DB'],
    [
      'COPY … DB out of the moved database inside MULTI',
      (s6: Redis) => s6.multi().set('x:tx', '1').call('COPY', 'x:a', 'x:tx-out', 'DB', '13').exec(),
      'COPY x:a x:tx-out DB',
    ],
    [
      'COPY … DB out of the moved database by a script',
      (s6: Redis) =>
        s6.eval("redis.call('SET', KEYS[1], '1') return redis.call('COPY', KEYS[2], KEYS[3], 'DB', '13')", 3, 'x:script', 'x:a', 'x:s-out'),
      'COPY x:a x:s-out DB',
    ],
  ] as const) {
    it(`stops with a clear line at ${what}, and nothing of it or after it is applied`, async () => {
      const s6 = source.client(6)
      await Promise.all([target.client(21).flushdb(), source.client(13).flushdb()])
      await s6.del('x:tx', 'x:script', 'x:after', 'x:in')
      await s6.set('x:a', 'v')
      await source.client(13).set('x:other', 'o')
      const copy = await start(copyOptions(source, 6, target, 21))
      await copy.snapshotLoaded()
      await run(s6)
      await s6.set('x:after', '1')
      // A copy that went on would apply the source's offset: it must fail instead.
      expect(await copy.waitApplied(await replOffset(src), Date.now() + 60_000).catch(() => 'failed')).to.equal('failed')
      const error = await rejectionOf(copy.failure)
      expect(error.message).to.match(
        new RegExp(
          `ran ${shown} \\d+ at offset \\d+, which moves data into or out of database 6: the copy into .* database 21 stopped, and nothing after it was applied$`,
        ),
      )
      expect(error.message).to.not.include('\n')
      expect(await target.client(21).exists('x:tx', 'x:script', 'x:after', 'x:in', 'x:out', 'x:tx-out', 'x:s-out')).to.equal(0)
      expect(await target.client(21).get('x:a')).to.equal('v')
    })
  }

  it('fails with one line naming the source when the link is killed mid-stream', async () => {
    const copy = await start(copyOptions(source, 5, target, 14))
    await copy.snapshotLoaded()
    await source.client(5).rpush('other', 'more')
    await src.call('CLIENT', 'KILL', 'TYPE', 'replica')
    const error = await rejectionOf(copy.failure)
    expect(error.message).to.match(
      new RegExp(`^lost the connection to 127.0.0.1:${source.port} during the replication stream, at offset \\d+`),
    )
    expect(await rejectionOf(copy.waitApplied(Number.MAX_SAFE_INTEGER, Date.now() + 10_000))).to.equal(error)
  })

  it('refuses before copying anything when the source has a function library the target lacks', async () => {
    await src.call('FUNCTION', 'LOAD', "#!lua name=shardlib\nredis.register_function('hello', function() return 1 end)")
    try {
      const error = await rejectionOf(startDatabaseCopy(copyOptions(source, 3, target, 17)))
      expect(error.message).to.equal(
        `127.0.0.1:${source.port} has the function library shardlib, which 127.0.0.1:${target.port} lacks: nothing was copied`,
      )
      expect(await target.client(17).dbsize()).to.equal(0)
      expect(parseInfo(await src.info('replication')).connected_slaves).to.equal('0')
    } finally {
      await src.call('FUNCTION', 'DELETE', 'shardlib')
    }
  })

  it('fails with one line naming the target when the target connection is lost', async () => {
    const copy = await start(copyOptions(source, 5, target, 18))
    await copy.snapshotLoaded()
    await target.client().call('CLIENT', 'KILL', 'SKIPME', 'yes', 'TYPE', 'normal')
    const error = await rejectionOf(copy.failure)
    expect(error.message).to.equal(
      `lost the connection to 127.0.0.1:${target.port} while copying database 5 of 127.0.0.1:${source.port} into its database 18: the copy stopped`,
    )
  })

  it('fails when the target refuses a command, naming the target and the command', async () => {
    await target.client(15).set('taken', 'target')
    const copy = await start(copyOptions(source, 0, target, 15))
    await copy.snapshotLoaded()
    await source.client(0).lpush('taken', 'x')
    await source.client(0).set('taken', 'source')
    // The source's SET replaced the string; the target's LPUSH into a string is refused first.
    const error = await rejectionOf(copy.failure)
    expect(error.message).to.match(new RegExp(`^127.0.0.1:${target.port} refused LPUSH in database 15 .*WRONGTYPE`))
  })
})

describe('copy/engine: a source that is flushed or fenced', function () {
  it('turns FLUSHALL into a flush of the moved database only', async () => {
    const [source, target] = await Promise.all([startServer(DEBUG), startServer(DEBUG)])
    try {
      await source.client(2).set('a', '1')
      await target.client(0).set('neighbour', 'stays')
      const copy = await startDatabaseCopy(copyOptions(source, 2, target, 4))
      try {
        await copy.snapshotLoaded()
        await source.client().flushall()
        await source.client(2).set('after', 'flush')
        await fenceAndStop(copy, source.client())
        expect(await target.client(4).keys('*')).to.deep.equal(['after'])
        expect(await target.client(0).get('neighbour')).to.equal('stays')
      } finally {
        await copy.stop()
      }
    } finally {
      await Promise.all([source.stop(), target.stop()])
    }
  })

  it('never lets a master with min-replicas-to-write 1 whose only replica is stopped accept writes while the copy runs', async () => {
    const {master, replicas} = await startReplicated(1, DEBUG)
    const target = await startServer(DEBUG)
    const m = master.client()
    const refused = () =>
      m.set('probe', '1').then(
        () => false,
        (error: Error) => /NOREPLICAS/.test(error.message),
      )
    try {
      await m.config('SET', 'min-replicas-max-lag', '10')
      await m.config('SET', 'min-replicas-to-write', '1')
      await m.set('before', 'ok')
      await replicas[0].stop()
      await until('the master refuses writes without its replica', refused)
      const copy = await startDatabaseCopy(copyOptions(master, 0, target, 0))
      try {
        await copy.snapshotLoaded()
        // The copy is a replica the master counts as good (it acknowledges every second)...
        let acknowledged = 0
        await until('the copy acknowledged twice', async () => {
          const replication = parseInfo(await m.info('replication'))
          expect(replication.connected_slaves).to.equal('1')
          if (/state=online,.*lag=[01]$/.test(replication.slave0)) acknowledged++
          // ...and every write meanwhile is refused all the same.
          expect(await refused()).to.equal(true)
          return acknowledged >= 2
        })
        expect(await m.config('GET', 'min-replicas-to-write')).to.deep.equal(['min-replicas-to-write', '2'])
      } finally {
        await copy.stop()
      }
      expect(await m.config('GET', 'min-replicas-to-write')).to.deep.equal(['min-replicas-to-write', '1'])
      expect(await refused()).to.equal(true)
    } finally {
      await Promise.all([master.stop(), target.stop()])
    }
  })
})

describe('copy/engine: keys that expire while the copy runs', function () {
  it("keeps a key whose moment has passed on this machine's clock, not on the source's (this clock a minute ahead)", async () => {
    const [source, target] = await Promise.all([startServer(DEBUG), startServer(DEBUG)])
    const realNow = Date.now
    try {
      const s1 = source.client(1)
      await s1.set('soon', 'v', 'PX', 30_000)
      await s1.set('gone', 'v', 'PX', 1)
      await s1.set('plain', 'v')
      Date.now = () => realNow() + 60_000
      const copy = await startDatabaseCopy(copyOptions(source, 1, target, 1))
      try {
        await copy.snapshotLoaded()
      } finally {
        Date.now = realNow
        await copy.stop()
      }
      expect((await target.client(1).keys('*')).sort()).to.deep.equal(['plain', 'soon'])
      expect(await target.client(1).call('PEXPIRETIME', 'soon')).to.equal(await s1.call('PEXPIRETIME', 'soon'))
    } finally {
      Date.now = realNow
      await Promise.all([source.stop(), target.stop()])
    }
  })

  it('ends with exactly the live keys of the source and their expiry moments: none brought back, none missing', async () => {
    const [source, target] = await Promise.all([startServer(DEBUG), startServer(DEBUG)])
    try {
      const s2 = source.client(2)
      const admin = source.client()
      const time = async () => {
        const [seconds, micros] = (await admin.call('TIME')) as [string, string]
        return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000)
      }
      // Keys past their moment that nobody touched: the source has them still (no active
      // expiry), so its snapshot carries them, with an expiry time in the past.
      await admin.call('DEBUG', 'SET-ACTIVE-EXPIRE', '0')
      const p = s2.pipeline()
      for (let i = 0; i < 2000; i++) p.set(`dead:${i}`, 'x', 'PX', 1 + (i % 5))
      const created = await time()
      for (let i = 0; i < 3000; i++) p.set(`short:${i}`, 'x'.repeat(i % 300), 'PX', 20 + (i % 1500))
      for (let i = 0; i < 500; i++) p.set(`long:${i}`, `v${i}`, 'PX', 3_600_000 + i)
      for (let i = 0; i < 500; i++) p.hset(`plain:${i}`, 'f', String(i))
      await p.exec()
      await until('the dead keys are past their moment', async () => (await time()) > created + 10)
      expect(await s2.dbsize()).to.equal(6000)

      let writing = true
      let written = 0
      const copy = await startDatabaseCopy(copyOptions(source, 2, target, 3))
      try {
        // The snapshot is forked: from now on the source expires keys and sends their DEL (or UNLINK).
        await admin.call('DEBUG', 'SET-ACTIVE-EXPIRE', '1')
        const writer = (async () => {
          for (let i = 0; writing; i++) {
            await s2.set(`new:${i}`, 'n', 'PX', 1 + (i % 40))
            await s2.set(`kept:${i % 300}`, String(i), 'PX', 600_000 + i)
            await s2.incr(`long:${i % 500}:count`)
            await s2.pexpire(`long:${i % 500}:count`, 3_600_000)
            // Reading a key past its moment expires it there and then (a DEL in the stream).
            await s2.get(`short:${(i * 7) % 3000}`)
            if (i % 3 === 0) await s2.config('SET', 'lazyfree-lazy-expire', i % 2 === 0 ? 'yes' : 'no')
            written++
          }
        })()
        await copy.snapshotLoaded()
        await until('writes during the stream', () => written > 500)
        // Every short key's moment has passed on the source while the copy runs.
        await until('the short keys have expired on the source', async () => (await s2.keys('short:*')).length === 0)
        writing = false
        await writer
        await fenceAndStop(copy, admin)
      } finally {
        await copy.stop()
      }
      await until('the new keys have expired on the source', async () => (await s2.keys('new:*')).length === 0)
      const t3 = target.client(3)
      expect(await t3.keys('dead:*')).to.deep.equal([])
      expect(await t3.keys('short:*')).to.deep.equal([])
      expect(await t3.keys('new:*')).to.deep.equal([])
      // A key whose moment passes between the engine's look at it and its RESTORE: the target creates nothing.
      expect(await t3.call('RESTORE', 'late', String(Date.now() - 1), await s2.dumpBuffer('plain:0'), 'ABSTTL')).to.equal('OK')
      expect(await t3.exists('late')).to.equal(0)
      // Same keys, values and absolute expiry times (PEXPIRETIME) on both sides.
      expect(await expectSameDb(s2, t3)).to.equal(500 + 500 + 500 + 300)
    } finally {
      await Promise.all([source.stop(), target.stop()])
    }
  })
})

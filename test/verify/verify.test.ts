import {expect} from 'chai'
import {Redis} from 'ioredis'

import {parseInfo} from '../../src/fleet/info.js'
import {type VerifyOptions, type VerifyReport, verifyDatabases} from '../../src/verify/verify.js'
import {until} from '../helpers/cli.js'
import {type TestServer, startServer} from '../helpers/redis.js'

/** Calls of each command an instance has served since its stats were last reset. */
async function calls(client: Redis): Promise<Record<string, number>> {
  const info = parseInfo(await client.info('commandstats'))
  const out: Record<string, number> = {}
  for (const [field, value] of Object.entries(info)) {
    const m = /^cmdstat_(.+)$/.exec(field)
    if (m) out[m[1]] = Number(/calls=(\d+)/.exec(value)![1])
  }
  return out
}

/** The same writes, in the same order, to any number of databases. */
async function both(clients: Redis[], write: (c: Redis) => Promise<unknown>): Promise<void> {
  for (const c of clients) await write(c)
}

/**
 * A writer applying each write to `a` first and to `b` after, like a live copy that
 * trails its source; `holdB` keeps the writes for b queued until released.
 */
class MirroredWriter {
  appliedA = 0
  appliedB = 0
  private running = false
  private loop?: Promise<void>
  private held = true
  private readonly queue: ((c: Redis) => Promise<unknown>)[] = []

  constructor(
    private readonly a: Redis,
    private readonly b: Redis,
    private readonly keys: number,
  ) {}

  start(options: {holdB: boolean}): void {
    this.held = options.holdB
    this.running = true
    this.loop = this.run()
  }

  release(): void {
    this.held = false
  }

  async stop(): Promise<void> {
    this.running = false
    await this.loop
  }

  /** Until b has every write a had when this was called. */
  async caughtUp(): Promise<void> {
    const mark = this.appliedA
    await until(`b applied ${mark} writes`, () => this.appliedB >= mark)
  }

  private async run(): Promise<void> {
    let i = 0
    while (this.running) {
      const op = operation(i++, this.keys)
      await op(this.a)
      this.appliedA++
      this.queue.push(op)
      while (!this.held && this.queue.length > 0) {
        await this.queue.shift()!(this.b)
        this.appliedB++
      }
      if (i % 50 === 0) await new Promise((r) => setImmediate(r))
    }
  }
}

/** Deterministic writes of every type: the same operation gives the same content on any instance. */
function operation(i: number, keys: number): (c: Redis) => Promise<unknown> {
  const n = (i * 7919) % keys
  switch (i % 6) {
    case 0:
      return (c) => c.set(`str:${n}`, `value ${i}`)
    case 1:
      return (c) => c.hset(`hash:${n % 50}`, `f${n}`, String(i))
    case 2:
      return (c) => c.zadd(`zset:${n % 50}`, i / 7, `m${n}`)
    case 3:
      return (c) => c.incr(`counter:${n % 100}`)
    case 4:
      return (c) =>
        c
          .multi()
          .lpush(`list:${n % 50}`, String(i))
          .ltrim(`list:${n % 50}`, 0, 20)
          .exec()
    default:
      return (c) => c.pexpireat(`str:${n}`, 4_102_444_800_000 + n) // an absolute time: the same on both sides
  }
}

describe('verifyDatabases', () => {
  let one: TestServer
  // Forced into the other encodings: hashtable hashes and sets, skiplist zsets, one-element list nodes.
  let other: TestServer
  let a: Redis
  let b: Redis

  before(async () => {
    ;[one, other] = await Promise.all([
      startServer(),
      startServer([
        '--hash-max-listpack-entries',
        '0',
        '--zset-max-listpack-entries',
        '0',
        '--set-max-intset-entries',
        '0',
        '--list-max-listpack-size',
        '1',
      ]),
    ])
    a = one.client(3)
    b = other.client(5)
  })
  beforeEach(async () => {
    await Promise.all([a.flushall(), b.flushall(), a.config('RESETSTAT'), b.config('RESETSTAT')])
  })

  const verify = (options: VerifyOptions = {}) => verifyDatabases({client: a, db: 3}, {client: b, db: 5}, {intervalMs: 10, ...options})

  /** Every type, small, with a TTL here and there, written the same way to both. */
  async function seedEveryType(clients: Redis[]): Promise<void> {
    await both(clients, async (c) => {
      await c.set('string', 'hello')
      await c.set('number', '12345')
      await c.set('ttl', 'x', 'PX', 3_600_000)
      await c.pexpireat('ttl', 4_102_444_800_000)
      await c.rpush('list', 'a', 'b', 'c', 'a')
      await c.sadd('set', 'x', 'y', 'z', '1', '2')
      await c.sadd('intset', '1', '2', '3')
      await c.hset('hash', {f1: 'v1', f2: 'v2', f3: ''})
      await c.zadd('zset', 0.1, 'a', 1e-300, 'b', '+inf', 'c', '-inf', 'd', 2 ** 53 + 1, 'e')
      await c.xadd('stream', '1-1', 'f', 'v')
      await c.xadd('stream', '2-1', 'g', 'w')
      await c.xgroup('CREATE', 'stream', 'readers', '0')
      await c.xreadgroup('GROUP', 'readers', 'alice', 'COUNT', '1', 'STREAMS', 'stream', '>')
      await c.set(Buffer.from([0xff, 0x00, 0x0a, 0x41]), Buffer.from([0xfe]))
    })
  }

  it('finds two copies equal whatever their encodings, in one round', async () => {
    await seedEveryType([a, b])
    // The test means something only if the encodings, and so the DUMP payloads, differ.
    expect(await a.object('ENCODING', 'hash')).to.equal('listpack')
    expect(await b.object('ENCODING', 'hash')).to.equal('hashtable')
    expect((await a.dumpBuffer('zset')).equals(await b.dumpBuffer('zset'))).to.equal(false)

    const report = await verify()
    expect(report.equal, JSON.stringify(report.differences)).to.equal(true)
    expect(report.keys).to.deep.equal({a: 10, b: 10})
    expect(report.rounds).to.have.length(1)
    expect(report.differing).to.equal(0)
    expect(report.a).to.equal(`127.0.0.1:${one.port}/3`)
    expect(report.b).to.equal(`127.0.0.1:${other.port}/5`)
  })

  it('names what differs, by kind: missing on either side, type, value, expiry beyond the tolerance', async () => {
    await seedEveryType([a, b])
    await b.del('list') // missing on b
    await a.del('set') // missing on a
    await b.set('only-b', '1') // missing on a
    await b.del('number')
    await b.rpush('number', '12345') // another type
    await b.hset('hash', 'f2', 'changed') // another value
    await b.zadd('zset', 0.2, 'a') // another score
    await b.pexpireat('ttl', 4_102_444_800_000 + 5000) // 5 s apart
    await b.pexpire('string', 3_600_000) // an expiry on one side only
    await b.xack('stream', 'readers', '1-1') // the pending entries of a group
    await b.set(Buffer.from([0xff, 0x00, 0x0a, 0x41]), Buffer.from([0xfd])) // a binary key, another value

    const report = await verify({rounds: 2})
    expect(report.equal).to.equal(false)
    const keys = (kind: keyof VerifyReport['differences']) => report.differences[kind].keys.map((k) => k.key)
    expect(keys('missingInB')).to.deep.equal(['list'])
    expect(keys('missingInA')).to.deep.equal(['only-b', 'set'])
    expect(keys('type')).to.deep.equal(['number'])
    expect(keys('value')).to.deep.equal(['hash', 'stream', 'zset', '"\\xff\\x00\\nA"'])
    expect(keys('ttl')).to.deep.equal(['string', 'ttl'])
    expect(report.differences.ttl.keys.find((k) => k.key === 'ttl')!.detail).to.match(/5000 ms apart/)
    expect(report.differences.value.keys.find((k) => k.key === 'hash')!.detail).to.equal('field f2 differs')
    expect(report.differences.value.keys.find((k) => k.key === 'zset')!.detail).to.match(/member a has another score/)
    expect(report.differences.type.keys[0].detail).to.equal(`a string on 127.0.0.1:${one.port}/3, a list on 127.0.0.1:${other.port}/5`)
    expect(report.differing).to.equal(10)
    // The differences stayed through the re-check round.
    expect(report.rounds.map((r) => r.differing)).to.deep.equal([10, 10])
    expect(report.rounds[1].checked).to.equal(10)
  })

  it('values: false compares presence, type, expiry and length only, and never reads or hashes a value', async () => {
    await seedEveryType([a, b])
    await b.del('list') // missing on b
    await b.set('only-b', '1') // missing on a
    await b.del('number')
    await b.rpush('number', '12345') // another type
    await b.pexpireat('ttl', 4_102_444_800_000 + 5000) // 5 s apart
    await b.sadd('set', 'another') // another length
    await b.hset('hash', 'f2', 'changed') // the same length, another value: not looked at
    await b.set('string', 'HELLO') // the same
    await both([a, b], (c) => c.set('empty', ''))
    await Promise.all([a.config('RESETSTAT'), b.config('RESETSTAT')])

    const report = await verify({rounds: 1, values: false})
    const keys = (kind: keyof VerifyReport['differences']) => report.differences[kind].keys.map((k) => k.key)
    expect(keys('missingInB')).to.deep.equal(['list'])
    expect(keys('missingInA')).to.deep.equal(['only-b'])
    expect(keys('type')).to.deep.equal(['number'])
    expect(keys('ttl')).to.deep.equal(['ttl'])
    expect(keys('value')).to.deep.equal(['set'])
    expect(report.differences.value.keys[0].detail).to.match(/^5 elements on .*, 6 elements on /)
    for (const stats of await Promise.all([calls(a), calls(b)])) {
      for (const read of ['get', 'getrange', 'mget', 'hgetall', 'hscan', 'hmget', 'smembers', 'sscan', 'smismember', 'dump'])
        expect(stats[read] ?? 0, read).to.equal(0)
    }
    // The same databases with the values compared: the two that differ only there are found too.
    expect(keys('value')).to.not.include('hash')
    const full = await verify({rounds: 1})
    expect(full.differences.value.keys.map((k) => k.key)).to.deep.equal(['hash', 'set', 'string'])
  })

  it('names two zset scores swapped as a score, and a member one side lacks as that member', async () => {
    await both([a, b], (c) => c.zadd('swapped', 1, 'a', 2, 'b', 3, 'c'))
    await b.zadd('swapped', 2, 'a', 1, 'b')
    await both([a, b], (c) => c.zadd('members', 1, 'a', 2, 'c'))
    await a.zadd('members', 3, 'b')
    await b.zadd('members', 3, 'd')
    const report = await verify({rounds: 1})
    expect(report.differences.value.keys).to.deep.equal([
      {key: 'members', detail: 'member b is not on both'},
      {key: 'swapped', detail: 'member a has another score'},
    ])
  })

  it('keeps an expiry within the tolerance equal, and one beyond it different', async () => {
    await both([a, b], (c) => c.set('k', 'v'))
    await a.pexpireat('k', 4_102_444_800_000)
    await b.pexpireat('k', 4_102_444_800_000 + 400)
    expect((await verify({ttlToleranceMs: 500})).equal).to.equal(true)
    expect((await verify({ttlToleranceMs: 300})).differences.ttl.count).to.equal(1)
  })

  it('compares short strings by the digest each server computes, never reading them, and finds one byte that differs', async () => {
    const values = Array.from({length: 3000}, (_, i) => [`s:${i}`, `${'v'.repeat(i % 4000)}:${i}`]).flat()
    await both([a, b], (c) => c.mset(...values))
    await both([a, b], (c) => c.set('long', 'x'.repeat(5000)))
    // Either side of the digest's limit (4,096 bytes): digested, and read.
    await both([a, b], (c) => c.mset('edge:4096', 'e'.repeat(4096), 'edge:4097', 'e'.repeat(4097)))
    await Promise.all([a.config('RESETSTAT'), b.config('RESETSTAT')])
    expect((await verify()).equal).to.equal(true)
    const [onA, onB] = await Promise.all([calls(a), calls(b)])
    // Only the two strings over 4 KB are read (an MGET a side for each page holding one), the 3,001 others by digest.
    expect(onA.mget).to.be.within(1, 2)
    expect(onB.mget).to.equal(onA.mget)
    expect(onA.getrange, 'read whole inside the outline script').to.be.at.least(3000)
    expect(onA.get, 'no GET: the value is not sent').to.equal(undefined)

    await b.setrange('s:2999', 500, 'w')
    await b.setrange('edge:4096', 4095, 'f')
    await b.setrange('edge:4097', 4096, 'f')
    const report = await verify({rounds: 1})
    expect(report.differences.value.keys).to.deep.equal([
      {key: 'edge:4096', detail: 'the values differ'},
      {key: 'edge:4097', detail: 'the values differ'},
      {key: 's:2999', detail: 'the values differ'},
    ])
  })

  it('compares a 200,000-field hash in slices, never in one reply, and finds the one field that differs', async () => {
    const fields = 200_000
    for (let i = 0; i < fields; i += 5000) {
      const slice: Record<string, string> = {}
      for (let j = i; j < i + 5000; j++) slice[`field:${j}`] = `value:${j}`
      await both([a, b], (c) => c.hset('big', slice))
    }
    await Promise.all([a.config('RESETSTAT'), b.config('RESETSTAT')])
    expect((await verify()).equal).to.equal(true)
    const [onA, onB] = await Promise.all([calls(a), calls(b)])
    // Slices of at most 1,000 fields: HSCAN on one side, HMGET of the same fields on the other.
    expect(onA.hscan).to.be.at.least(fields / 1000)
    expect(onB.hmget).to.be.at.least(fields / 1000)
    for (const whole of ['hgetall', 'hkeys', 'hvals', 'dump']) {
      expect(onA[whole], whole).to.equal(undefined)
      expect(onB[whole], whole).to.equal(undefined)
    }

    await b.hset('big', 'field:123456', 'other')
    const report = await verify({rounds: 1})
    expect(report.differences.value.keys).to.deep.equal([{key: 'big', detail: 'field field:123456 differs'}])
  })

  it('compares every type in slices when it is large, equal or not', async () => {
    const small = {smallElements: 4, smallBytes: 64, sliceElements: 3, sliceBytes: 16}
    const n = 600 // beyond the listpack limits (512 fields, 128 members): scans come in slices on either encoding
    const stream = async (c: Redis, differentAt?: number) => {
      for (let i = 1; i <= 20; i++) await c.xadd('stream', `${i}-0`, 'n', i === differentAt ? 'other' : String(i))
    }
    await both([a, b], async (c) => {
      await c.set('string', 'x'.repeat(100))
      await c.rpush('list', ...Array.from({length: 20}, (_, i) => `e${i}`))
      await c.sadd('set', ...Array.from({length: n}, (_, i) => `m${i}`))
      await c.zadd('zset', ...Array.from({length: n}, (_, i) => [i / 3, `m${i}`]).flat())
      await c.hset('hash', Object.fromEntries(Array.from({length: n}, (_, i) => [`f${i}`, `v${i}`])))
      await stream(c)
    })
    const equal = await verify(small)
    expect(equal.equal, JSON.stringify(equal.differences)).to.equal(true)
    const stats = await calls(a)
    expect(stats.getrange).to.be.at.least(7)
    expect(stats.lrange).to.be.at.least(7)
    expect(stats.sscan).to.be.at.least(n / 30)
    expect(stats.zscan).to.be.at.least(n / 30)
    expect(stats.hscan).to.be.at.least(n / 30)
    expect(stats.xrange).to.be.at.least(7)

    await b.setrange('string', 90, 'y')
    await b.lset('list', 17, 'other')
    await b.srem('set', 'm11')
    await b.sadd('set', 'm999')
    await b.zadd('zset', 1000, 'm5')
    await b.hset('hash', 'f19', 'other')
    // Same length, same IDs, same last ID: only an entry differs.
    await both([a, b], (c) => c.del('stream'))
    await stream(a)
    await stream(b, 15)
    const different = await verify({...small, rounds: 1})
    expect(Object.fromEntries(different.differences.value.keys.map((k) => [k.key, k.detail]))).to.deep.equal({
      hash: 'field f19 differs',
      list: 'element 17 differs',
      set: `member m11 is missing on 127.0.0.1:${other.port}/5`,
      stream: 'entry 15-0 differs',
      string: 'bytes 80 to 95 differ',
      zset: 'member m5 has another score',
    })
  })

  it('converges to equal while writes go on to keys on both sides, applied to the copy after the source', async () => {
    const writer = new MirroredWriter(a, b, 2000)
    // Both start equal, with keys of every kind the writer touches.
    for (let i = 0; i < 2000; i++) await operation(i, 2000)(a)
    for (let i = 0; i < 2000; i++) await operation(i, 2000)(b)
    // The copy trails: writes reach a only, until the first round is over.
    writer.start({holdB: true})
    await until('writes waiting for b', () => writer.appliedA - writer.appliedB >= 100)
    const before = writer.appliedA
    let rechecks = 0
    const report = await verify({
      rounds: 10,
      beforeRecheck: async () => {
        rechecks++
        writer.release()
        await writer.caughtUp()
      },
    })
    const during = writer.appliedA - before
    await writer.stop()
    expect(report.rounds[0].differing, 'the first round saw writes in flight').to.be.greaterThan(0)
    expect(rechecks).to.be.at.least(1)
    expect(report.equal, JSON.stringify(report.differences)).to.equal(true)
    expect(during, 'writes went on during the verify').to.be.greaterThan(0)
  })

  it('keeps to --rate: 300 keys at 1,000 a second take at least a fifth of a second', async () => {
    const pipeline = a.pipeline()
    for (let i = 0; i < 300; i++) pipeline.set(`k${i}`, 'v')
    await pipeline.exec()
    const report = await verify({ratePerSecond: 1000, rounds: 1, batchSize: 50})
    expect(report.differences.missingInB.count).to.equal(300)
    // 300 keys, a burst of 100 allowed: at least 0.2 s. A slower machine only takes longer.
    expect(report.durationMs).to.be.at.least(190)
  })

  it('a page that fails in the middle of the first round fails the verify with its error, once the pages in flight end', async () => {
    // Long strings are read with MGET; a user of b that may not run it fails every page that holds one.
    const long = 'x'.repeat(5000)
    await both([a, b], (c) => c.mset(...Array.from({length: 2000}, (_, i) => [`long:${i}`, long]).flat()))
    await other.client(0).call('ACL', 'SETUSER', 'nomget', 'on', '>pw', '~*', '+@all', '-mget')
    const limited = new Redis({host: '127.0.0.1', port: other.port, username: 'nomget', password: 'pw', lazyConnect: true})
    try {
      const error = await verifyDatabases({client: a, db: 3}, {client: limited, db: 5}, {batchSize: 100}).then(
        () => undefined,
        (e: Error) => e,
      )
      expect(error?.message).to.match(/NOPERM|mget/i)
      // The connection it used is left usable.
      await limited.ping()
    } finally {
      limited.disconnect()
      await other.client(0).call('ACL', 'DELUSER', 'nomget')
    }
  })

  it('stops when its signal is aborted', async () => {
    await both([a, b], (c) => c.set('k', 'v'))
    await b.set('k', 'other')
    const controller = new AbortController()
    const run = verify({
      rounds: 5,
      signal: controller.signal,
      beforeRecheck: async () => controller.abort(new Error('stopped by the caller')),
    })
    let error: Error | undefined
    await run.catch((e: Error) => {
      error = e
    })
    expect(error?.message).to.equal('stopped by the caller')
  })

  it('still compares an instance that is over its maxmemory (it only reads)', async () => {
    await seedEveryType([a, b])
    await a.config('SET', 'maxmemory', '1')
    try {
      // The instance refuses writes: the comparison must do none, scripts included.
      expect(await a.set('x', 'y').catch((e: Error) => e.message)).to.match(/OOM/)
      expect((await verify()).equal).to.equal(true)
    } finally {
      await a.config('SET', 'maxmemory', '0')
    }
  })

  it('sends the outline script by its SHA-1, and its text again once a server has forgotten it', async () => {
    await seedEveryType([a, b])
    expect((await verify()).equal).to.equal(true)
    await Promise.all([a.config('RESETSTAT'), b.config('RESETSTAT')])
    expect((await verify()).equal).to.equal(true)
    const [onA, onB] = await Promise.all([calls(a), calls(b)])
    expect(onA.evalsha_ro, 'by SHA-1').to.be.at.least(1)
    expect(onA.eval_ro, 'never the text while the server has it').to.equal(undefined)

    await a.script('FLUSH')
    await b.set('string', 'another')
    const report = await verify({rounds: 1})
    expect(report.differences.value.keys.map((k) => k.key)).to.deep.equal(['string'])
    expect((await calls(a)).eval_ro, 'the text, once forgotten').to.be.at.least(1)
    expect(onB.evalsha_ro).to.be.at.least(1)
  })

  it('leaves a shared connection on the database it was on', async () => {
    await a.set('here', '3')
    const db0 = one.client(0)
    await db0.set('here', '0')
    await verify()
    expect(await a.get('here')).to.equal('3')
    db0.disconnect()
  })
})

import {expect} from 'chai'
import type {Redis} from 'ioredis'

import {MEMORY_SAMPLE, estimateDbMemory, inDatabase, values} from '../../src/fleet/instance.js'
import {type TestServer, startServer} from '../helpers/redis.js'

describe('fleet/instance', () => {
  let server: TestServer
  let client: Redis

  before(async () => {
    server = await startServer()
    client = server.client()
  })

  /** MEMORY USAGE of every key of a database: the truth an estimate is held to. */
  async function exactMemory(db: number): Promise<number> {
    const c = server.client(db)
    let total = 0
    let cursor = '0'
    do {
      const [next, keys] = await c.scan(cursor, 'COUNT', 1000)
      cursor = next
      const pipeline = c.pipeline()
      for (const key of keys) pipeline.memory('USAGE', key, 'SAMPLES', '0')
      for (const [, bytes] of (await pipeline.exec()) ?? []) total += Number(bytes ?? 0)
    } while (cursor !== '0')
    c.disconnect()
    return total
  }

  it('measures a small database whole, and estimates a large one within a few percent from a sample', async () => {
    const small = server.client(1)
    for (let i = 0; i < 100; i++) await small.set(`k${i}`, 'v'.repeat(i * 10))
    small.disconnect()
    expect(await estimateDbMemory(client, 1, 100)).to.deep.equal({bytes: await exactMemory(1), sampled: 100})

    const large = server.client(2)
    const pipeline = large.pipeline()
    // Sizes spread from 100 to 2,000 bytes, unrelated to the key names.
    for (let i = 0; i < 20_000; i++) pipeline.set(`key:${i}`, 'x'.repeat(100 + ((i * 7919) % 1900)))
    await pipeline.exec()
    large.disconnect()
    const estimate = await estimateDbMemory(client, 2, 20_000)
    expect(estimate.sampled)
      .to.be.at.least(MEMORY_SAMPLE)
      .and.below(2 * MEMORY_SAMPLE)
    const exact = await exactMemory(2)
    expect(Math.abs(estimate.bytes / exact - 1)).to.be.below(0.1)
    expect(await estimateDbMemory(client, 3, 0)).to.deep.equal({bytes: 0, sampled: 0})
  })

  it('runs commands on a database of a shared connection and puts it back where it was', async () => {
    const c = server.client(4)
    await c.set('here', 'db4')
    const replies = await inDatabase(c, 1, (p) => p.get('k1').dbsize())
    expect(values(replies)).to.deep.equal(['v'.repeat(10), 100])
    expect(await c.get('here')).to.equal('db4')
    c.disconnect()
  })
})

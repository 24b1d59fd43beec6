import {expect} from 'chai'

import {ConnectionPool, connect} from '../../src/fleet/connect.js'
import {measureFleet} from '../../src/rebalance/measure.js'
import {Registry, currentActor} from '../../src/registry/registry.js'
import {registryKeys} from '../../src/registry/schema.js'
import {cli} from '../helpers/cli.js'
import {startReplyProxy} from '../helpers/reply-proxy.js'
import {type TestServer, startReplicated, startServer} from '../helpers/redis.js'

describe('measureFleet', () => {
  let master: TestServer
  let replica: TestServer

  before(async () => {
    const pair = await startReplicated(1, ['--maxmemory', '50mb', '--databases', '12'])
    ;[master, replica] = [pair.master, pair.replicas[0]]
  })

  it('takes the shards, the registry and the databases that hold keys out of the free ones; leaves a replica out', async () => {
    // The registry lives on the instance itself, in db 9.
    const r = ['-r', master.url.replace(/\/0$/, '/9')]
    expect((await cli(['shards:add', 's1', '--master', master.address(1), '--replica', replica.address(1), ...r])).exitCode).to.equal(0)
    const data = master.client(3)
    await data.set('not a shard', '1')
    await data.set('not a shard either', 'x'.repeat(1000))
    data.disconnect()
    const s1 = master.client(1)
    await s1.set('a', 'x'.repeat(5000))
    s1.disconnect()

    const pool = new ConnectionPool({timeoutMs: 5000})
    const client = await connect({host: '127.0.0.1', port: master.port, db: 9}, {timeoutMs: 5000})
    try {
      const registry = new Registry(client, registryKeys('shards'), currentActor('test'))
      const measured = await measureFleet(registry, pool, {
        by: 'memory',
        extra: [{host: '127.0.0.1', port: replica.port}],
        registry: {host: '127.0.0.1', port: master.port, db: 9},
      })
      expect(measured.instances).to.have.length(1)
      const [instance] = measured.instances
      expect(instance.instance).to.equal(`127.0.0.1:${master.port}`)
      expect(instance.maxMemory).to.equal(50 * 1024 * 1024)
      // 12 databases: 1 serves s1, 3 holds keys, 9 holds the registry.
      expect(instance.freeDbs).to.deep.equal([0, 2, 4, 5, 6, 7, 8, 10, 11])
      // Its databases count, but its shard stays: shards:move will not pause the registry's instance.
      expect(measured.shards).to.deep.equal([])
      expect(measured.fixed).to.deep.equal([
        {shard: 's1', reason: `its master 127.0.0.1:${master.port} also holds the registry, which a move cannot pause`},
      ])
      expect(instance.usedMemory).to.be.greaterThan(5000)
      expect(measured.excluded).to.deep.equal([{instance: `127.0.0.1:${replica.port}`, reason: 'a replica, not a master'}])
    } finally {
      await pool.closeAll()
      client.disconnect()
    }
  })

  it('measures an instance once, however --include spells it; refuses a registry with a broken shard record', async () => {
    const registryServer = await startServer()
    const proxy = await startReplyProxy(master.port, () => undefined)
    const pool = new ConnectionPool({timeoutMs: 5000})
    const client = await connect({host: '127.0.0.1', port: registryServer.port, db: 0}, {timeoutMs: 5000})
    try {
      const r = ['-r', registryServer.url]
      expect((await cli(['shards:add', 's2', '--master', master.address(2), ...r])).exitCode).to.equal(0)
      const s2 = master.client(2)
      await s2.set('b', 'x'.repeat(5000))
      s2.disconnect()
      const registry = new Registry(client, registryKeys('shards'), currentActor('test'))
      const said: string[] = []
      const measure = () =>
        measureFleet(registry, pool, {
          by: 'keys',
          // The same server as localhost, and through a proxy (another address, the same run_id).
          extra: [
            {host: 'localhost', port: master.port},
            {host: '127.0.0.1', port: proxy.port},
          ],
          registry: {host: '127.0.0.1', port: registryServer.port, db: 0},
          onProgress: (line) => said.push(line),
        })
      const measured = await measure()
      expect(measured.instances.map((i) => i.instance)).to.deep.equal([`127.0.0.1:${master.port}`])
      expect(measured.shards).to.have.length(1)
      expect(measured.shards[0]).to.include({id: 's2', db: 2, keys: 1})
      expect(measured.shards[0].memory).to.be.greaterThan(5000)
      expect(said).to.include(`127.0.0.1:${proxy.port} is 127.0.0.1:${master.port} (the same run_id), measured once`)
      // A new instance keeps the name --include gave it: each move's --to is that name.
      const fresh = await startServer(['--maxmemory', '50mb'])
      try {
        const named = await measureFleet(registry, pool, {
          by: 'keys',
          extra: [{host: 'localhost', port: fresh.port}],
          registry: {host: '127.0.0.1', port: registryServer.port, db: 0},
        })
        expect(named.instances.map((i) => i.instance)).to.deep.equal([`127.0.0.1:${master.port}`, `localhost:${fresh.port}`])
      } finally {
        await fresh.stop()
      }

      // A broken record may name any database: none can be proved free.
      await client.hset('shards.s2', 'master', 'nonsense')
      const refused = await measure().then(
        () => undefined,
        (error: Error) => error.message,
      )
      expect(refused).to.match(/^shard s2 in shards\.s2 is corrupt: .*; a rebalance cannot tell which databases it uses$/)
    } finally {
      await pool.closeAll()
      client.disconnect()
      await proxy.close()
      await registryServer.stop()
    }
  })
})

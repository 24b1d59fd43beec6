import {expect} from 'chai'

import {ConnectionPool, connect} from '../../src/fleet/connect.js'
import {measureFleet} from '../../src/rebalance/measure.js'
import {Registry, currentActor} from '../../src/registry/registry.js'
import {registryKeys} from '../../src/registry/schema.js'
import {cli} from '../helpers/cli.js'
import {type TestServer, startReplicated} from '../helpers/redis.js'

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
      expect(measured.shards).to.have.length(1)
      expect(measured.shards[0]).to.include({id: 's1', db: 1, keys: 1})
      expect(measured.shards[0].memory).to.be.greaterThan(5000)
      expect(measured.excluded).to.deep.equal([{instance: `127.0.0.1:${replica.port}`, reason: 'a replica, not a master'}])
    } finally {
      await pool.closeAll()
      client.disconnect()
    }
  })
})

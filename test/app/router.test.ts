import {expect} from 'chai'

import {ShardRouter} from '../../examples/router.js'
import {cli, spawnCli} from '../helpers/cli.js'
import {useFleet} from '../helpers/fleet.js'
import {type TestServer, startReplicated, startServer} from '../helpers/redis.js'
import {missingWrites} from '../helpers/writer.js'

/**
 * The example application of the README (examples/router.ts), writing without pause
 * through a promote and then a split: every write it got acknowledged is where the
 * registry routes its shard afterwards, and it never had to stop.
 */
describe('the example application (examples/router.ts) through a promote and a split', () => {
  const fleet = useFleet()
  let master: TestServer
  let replica: TestServer
  let target: TestServer
  const inst = (s: TestServer) => `127.0.0.1:${s.port}`

  before(async () => {
    ;({
      master,
      replicas: [replica],
    } = await startReplicated(1))
    target = await startServer()
  })
  after(async () => {
    await Promise.all([master, replica, target].map((s) => s.stop()))
  })

  it('loses no acknowledged write, and keeps writing', async () => {
    expect(
      (await cli(['shards:init', '--instance', inst(master), '--replica', inst(replica), '--count', '4', '--yes', ...fleet.r()])).exitCode,
    ).to.equal(0)
    const hashes = ['user:1', 'user:2', 'user:3', 'user:4', 'user:5', 'user:6']
    expect((await cli(['shards:assign', ...hashes, ...fleet.r()])).exitCode).to.equal(0)
    const router = await ShardRouter.open({registry: fleet.registry.url})
    const acked = new Map<string, string[]>()
    let running = true
    const loops = hashes.map(async (hash) => {
      const shard = (await fleet.reg.hget('shards.map', hash))!
      const keys = acked.get(shard) ?? []
      acked.set(shard, keys)
      for (let i = 0; running; i++) {
        const key = `${hash}:${i}`
        await router.write(hash, (redis) => redis.set(key, 'v'))
        keys.push(key)
      }
    })
    const total = () => [...acked.values()].reduce((n, k) => n + k.length, 0)
    const waitFor = async (n: number) => {
      for (let i = 0; i < 12_000 && total() < n; i++) await new Promise((r) => setTimeout(r, 5))
      expect(total()).to.be.at.least(n)
    }
    try {
      await waitFor(300)
      const promote = await spawnCli([
        'shards:promote',
        inst(master),
        '--replica',
        inst(replica),
        '--max-lag',
        '1000000000',
        '--yes',
        ...fleet.r(),
      ])
      expect(promote.exitCode, promote.stderr).to.equal(0)
      await waitFor(total() + 300)
      const split = await spawnCli([
        'shards:split',
        inst(replica),
        '--to',
        inst(target),
        // The router hears the split at once; were it frozen past --quiet before hearing, the hold
        // would clear early and its paused writes land on the source (strays): a margin no load takes.
        '--quiet',
        '500ms',
        '--grace',
        '300ms',
        '--yes',
        '--json',
        ...fleet.r(),
      ])
      expect(split.exitCode, split.stderr + split.stdout).to.equal(0)
      expect(JSON.parse(split.stdout).strays).to.deep.equal({})
      await waitFor(total() + 300)
    } finally {
      running = false
      await Promise.all(loops)
      await router.close()
    }
    expect(await missingWrites(fleet.reg, {acked})).to.deep.equal([])
  })
})

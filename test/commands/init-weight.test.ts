import {expect} from 'chai'

import {cli, spawnCli, ttyCli} from '../helpers/cli.js'
import {useFleet} from '../helpers/fleet.js'

describe('shards:init --yes', () => {
  const fleet = useFleet({instances: 2, replicas: 1})
  const inst = (i: number) => `127.0.0.1:${fleet.instances[i].master.port}`
  const repl = (i: number) => `127.0.0.1:${fleet.instances[i].replicas[0].port}`

  it('creates N shards on consecutive dbs, replicas on the same dbs, ids continuing across instances', async () => {
    let run = await cli([
      'shards:init',
      '--yes',
      '--instance',
      inst(0),
      '--replica',
      repl(0),
      '--count',
      '4',
      '--first-db',
      '2',
      ...fleet.r(),
    ])
    expect(run.exitCode).to.equal(0)
    run = await cli(['shards:init', '--yes', '--instance', inst(1), '--count', '3', '--json', ...fleet.r()])
    expect(run.exitCode).to.equal(0)
    expect(JSON.parse(run.stdout).shards.map((s: {id: string}) => s.id)).to.deep.equal(['s004', 's005', 's006'])
    expect(await fleet.reg.zrange('shards.list', '0', '-1')).to.deep.equal(['s000', 's001', 's002', 's003', 's004', 's005', 's006'])
    expect(await fleet.reg.hgetall('shards.s003')).to.deep.equal({master: `${inst(0)}/5`, slave0: `${repl(0)}/5`})
    expect(await fleet.reg.hgetall('shards.s004')).to.deep.equal({master: `${inst(1)}/0`})
  })

  it("refuses dbs beyond the instance's databases setting, and dbs already taken; nothing changes", async () => {
    await cli(['shards:init', '--yes', '--instance', inst(0), '--count', '2', ...fleet.r()])
    const before = await fleet.dump()
    let run = await cli(['shards:init', '--yes', '--instance', inst(0), '--count', '3', '--first-db', '14', ...fleet.r()])
    expect(run.exitCode).to.equal(2)
    expect(run.stderr).to.match(/has 16 databases; dbs 14-16 do not fit/)
    run = await cli(['shards:init', '--yes', '--instance', inst(0), '--count', '2', '--first-db', '1', ...fleet.r()])
    expect(run.exitCode).to.equal(2)
    expect(run.stderr).to.match(/already the master of shard s001/)
    expect(await fleet.dump()).to.deep.equal(before)
  })

  it('--dry-run shows the plan and writes nothing', async () => {
    const run = await cli(['shards:init', '--instance', inst(0), '--count', '2', '--dry-run', ...fleet.r()])
    expect(run.exitCode).to.equal(0)
    expect(run.stdout).to.include(`${inst(0)}/1`)
    expect(await fleet.dump()).to.deep.equal({})
  })

  it('refuses an unreachable instance naming it', async () => {
    const run = await spawnCli(['shards:init', '--yes', '--instance', '127.0.0.1:1', '--count', '2', ...fleet.r()])
    expect(run.exitCode).to.equal(1)
    expect(run.stderr).to.match(/cannot reach 127\.0\.0\.1:1: connection refused/)
  })
})

describe('shards:weight', () => {
  const fleet = useFleet({instances: 1})
  const inst = () => `127.0.0.1:${fleet.instances[0].master.port}`

  beforeEach(async () => {
    await cli(['shards:init', '--yes', '--instance', inst(), '--count', '3', ...fleet.r()])
  })

  it('sets one weight, integer or not', async () => {
    expect((await cli(['shards:weight', 's001', '2.5', ...fleet.r()])).exitCode).to.equal(0)
    expect(await fleet.reg.zscore('shards.list', 's001')).to.equal('2.5')
    expect((await cli(['shards:weight', 's001', '0', ...fleet.r()])).exitCode).to.equal(0)
    expect(await fleet.reg.zscore('shards.list', 's001')).to.equal('0')
  })

  it('huge weights do not overflow: three of 1e308 share new hashes in thirds; a weight too small to store is refused', async () => {
    for (const id of ['s000', 's001', 's002']) expect((await cli(['shards:weight', id, '1e308', ...fleet.r()])).exitCode).to.equal(0)
    const list = JSON.parse((await cli(['shards:list', '--no-probe', '--json', ...fleet.r()])).stdout)
    expect(list.shards.map((s: {share: number}) => s.share.toFixed(3))).to.deep.equal(['0.333', '0.333', '0.333'])
    const hashes = Array.from({length: 3000}, (_, i) => `big:${i}`)
    expect((await cli(['shards:assign', ...hashes, '--quiet', ...fleet.r()])).exitCode).to.equal(0)
    const counts: Record<string, number> = {}
    for (const id of await fleet.reg.hvals('shards.map')) counts[id] = (counts[id] ?? 0) + 1
    // Expected 1,000 each, standard deviation 26: 8 sd is 210.
    for (const id of ['s000', 's001', 's002']) expect(Math.abs(counts[id] - 1000), id).to.be.lessThan(210)
    for (const tiny of ['1e-400', '1e-320']) {
      const run = await cli(['shards:weight', 's000', tiny, ...fleet.r()])
      expect(run.exitCode, tiny).to.equal(2)
      expect(run.stderr).to.match(/too small to be stored/)
    }
    expect(await fleet.reg.zscore('shards.list', 's000')).to.equal('1e+308')
  })

  it('--even --by keys steers new assignments toward the emptier shards', async () => {
    const db0 = fleet.instances[0].master.client(0)
    const db1 = fleet.instances[0].master.client(1)
    await db0.mset(Object.fromEntries(Array.from({length: 90}, (_, i) => [`k${i}`, '1'])))
    await db1.mset(Object.fromEntries(Array.from({length: 30}, (_, i) => [`k${i}`, '1'])))
    db0.disconnect()
    db1.disconnect()
    const run = await cli(['shards:weight', '--even', '--by', 'keys', '--yes', '--json', ...fleet.r()])
    expect(run.exitCode).to.equal(0)
    const result = JSON.parse(run.stdout)
    expect(result.applied).to.equal(true)
    const weights = Object.fromEntries(
      (await fleet.reg.zrange('shards.list', '0', '-1', 'WITHSCORES')).flatMap((v, i, a) => (i % 2 === 0 ? [[v, Number(a[i + 1])]] : [])),
    )
    expect(weights.s002).to.be.greaterThan(weights.s001)
    expect(weights.s001).to.be.greaterThan(weights.s000)
  })

  it('--even --by hashes uses the hashes in the map; shows before and after', async () => {
    await fleet.reg.hset('shards.map', 'a', 's000', 'b', 's000', 'c', 's001')
    const run = await cli(['shards:weight', '--even', '--by', 'hashes', '--dry-run', ...fleet.r()])
    expect(run.exitCode).to.equal(0)
    expect(run.stdout).to.match(/ID\s+HASHES\s+WEIGHT\s+SHARE\s+NEW WEIGHT\s+NEW SHARE/)
    expect(run.stderr).to.match(/Would change 2 weights/) // s000, over-full, keeps its weight of 1
    expect(await fleet.reg.zscore('shards.list', 's000')).to.equal('1')
  })

  it('--even never drains: an over-full shard keeps a small weight, and a later --even sees it as the emptiest it became', async () => {
    const weights = async () =>
      Object.fromEntries(
        (await fleet.reg.zrange('shards.list', '0', '-1', 'WITHSCORES')).flatMap((v, i, a) => (i % 2 === 0 ? [[v, Number(a[i + 1])]] : [])),
      )
    await fleet.reg.hset('shards.map', ...Array.from({length: 300}, (_, i) => [`full${i}`, 's000']).flat())
    expect((await cli(['shards:weight', '--even', '--by', 'hashes', '--yes', ...fleet.r()])).exitCode).to.equal(0)
    const first = await weights()
    expect(first.s000, 'over-full, yet not drained').to.be.greaterThan(0)
    expect(first.s000).to.be.lessThan(first.s001)
    // The others fill up past it: s000 is now the emptiest, and --even says so.
    await fleet.reg.hset('shards.map', ...Array.from({length: 1000}, (_, i) => [`more${i}`, i % 2 ? 's001' : 's002']).flat())
    expect((await cli(['shards:weight', '--even', '--by', 'hashes', '--yes', ...fleet.r()])).exitCode).to.equal(0)
    const second = await weights()
    expect(second.s000).to.be.greaterThan(second.s001)
    expect(second.s000).to.be.greaterThan(second.s002)
    // A drain by the operator is still a drain.
    await cli(['shards:weight', 's001', '0', ...fleet.r()])
    expect((await cli(['shards:weight', '--even', '--by', 'hashes', '--yes', ...fleet.r()])).exitCode).to.equal(0)
    expect((await weights()).s001).to.equal(0)
  })

  it('--even proposes no change when every share would stay the same (equal weights, equal fill)', async () => {
    await fleet.reg.hset('shards.map', 'a', 's000', 'b', 's001', 'c', 's002')
    const before = await fleet.dump()
    const run = await cli(['shards:weight', '--even', '--by', 'hashes', '--yes', '--json', ...fleet.r()])
    expect(run.exitCode).to.equal(0)
    const result = JSON.parse(run.stdout)
    expect(result.applied).to.equal(false)
    expect(result.changes.every((c: {current: number; proposed: number}) => c.current === c.proposed)).to.equal(true)
    expect(await fleet.dump()).to.deep.equal(before)
  })

  it('--even: non-interactive needs --yes (exit 2, unchanged); --json needs it too', async () => {
    await fleet.reg.hset('shards.map', 'a', 's000')
    const before = await fleet.dump()
    const plain = await spawnCli(['shards:weight', '--even', '--by', 'hashes', ...fleet.r()])
    expect(plain.exitCode).to.equal(2)
    const json = await spawnCli(['shards:weight', '--even', '--by', 'hashes', '--json', ...fleet.r()])
    expect(json.exitCode).to.equal(2)
    expect(JSON.parse(json.stdout).error.message).to.match(/confirmation needed/)
    expect(await fleet.dump()).to.deep.equal(before)
  })

  it('--even interactive: applies on "y"', async () => {
    await fleet.reg.hset('shards.map', 'a', 's000')
    const run = await ttyCli(['shards:weight', '--even', '--by', 'hashes', ...fleet.r()], 'y\r')
    expect(run.screen).to.match(/Apply 2 new weights\?/) // s000, over-full, keeps its weight of 1
    expect(run.exitCode).to.equal(0)
    expect(Number(await fleet.reg.zscore('shards.list', 's000'))).to.be.lessThan(Number(await fleet.reg.zscore('shards.list', 's001')))
  })
})

import {expect} from 'chai'
import type {Redis} from 'ioredis'

import {parseInfo, parseReplication} from '../../src/fleet/info.js'
import {binary, cli, spawnCli} from '../helpers/cli.js'
import {type TestServer, startReplicated, startServer} from '../helpers/redis.js'
import {useFleet} from '../helpers/fleet.js'
import {ContinuousWriter, missingWrites} from '../helpers/writer.js'

const role = async (s: TestServer) => {
  const c = s.client()
  try {
    return parseReplication(parseInfo(await c.info('replication')))
  } finally {
    c.disconnect()
  }
}

/**
 * A registry, a master with two replicas, three shards on the master's dbs 0-2, and
 * a shard on another instance that must not move. Fresh for each test: roles change.
 */
describe('shards:promote', () => {
  let reg: Redis
  let master: TestServer
  let replicas: TestServer[]
  let other: TestServer
  const r = () => fleet.r()
  const inst = (s: TestServer) => `127.0.0.1:${s.port}`

  const fleet = useFleet()
  before(() => {
    reg = fleet.reg
  })

  beforeEach(async () => {
    ;({master, replicas} = await startReplicated(2))
    other = await startServer()
    const init = await cli(['shards:init', '--instance', inst(master), ...replicas.flatMap((x) => ['--replica', inst(x)]), '--count', '3', ...r()])
    expect(init.exitCode, init.stderr).to.equal(0)
    await cli(['shards:add', 'elsewhere', '--master', other.address(0), ...r()])
  })
  afterEach(async () => {
    await Promise.all([master, ...replicas, other].map((s) => s.stop()))
  })

  /** Registry, roles and links agree: the registry's master is a master, its replicas follow it. */
  async function expectConsistent(newMaster: TestServer, followers: TestServer[]): Promise<void> {
    for (const id of ['s000', 's001', 's002']) {
      const fields = await reg.hgetall(`shards.${id}`)
      expect(fields.master, id).to.equal(newMaster.address(Number(id.slice(1))))
      const replicaPorts = Object.entries(fields).filter(([f]) => f.startsWith('slave')).map(([, a]) => Number(/:(\d+)\//.exec(a)![1]))
      expect(replicaPorts.sort()).to.deep.equal(followers.map((f) => f.port).sort())
    }
    expect((await role(newMaster)).role).to.equal('master')
    for (const f of followers) {
      const info = await role(f)
      expect(info.role, `${f.port}`).to.equal('slave')
      expect(info.masterPort, `${f.port}`).to.equal(newMaster.port)
    }
    expect(await reg.hget('shards.elsewhere', 'master')).to.equal(other.address(0))
    expect(await reg.exists('shards._journal', 'shards._lock')).to.equal(0)
  }

  it('graceful, under a continuous writer: every acknowledged write survives; registry, roles and links agree', async () => {
    // A fenced master: the new one must be fenced as well afterwards.
    await master.client().config('SET', 'min-replicas-to-write', '1', 'min-replicas-max-lag', '9')
    const writer = new ContinuousWriter(reg, ['s000', 's001', 's002'])
    writer.start()
    await writer.waitFor(3000)
    const run = await spawnCli(['shards:promote', 's001', '--replica', inst(replicas[0]), '--max-pause', '5s', '--max-lag', '1000000000', '--yes', '--json', ...r()])
    await writer.resumesThenStop()
    expect(run.exitCode, run.stderr + run.stdout).to.equal(0)
    const result = JSON.parse(run.stdout)
    expect(result.applied).to.equal(true)
    expect(result.plan.shards.map((s: {id: string}) => s.id)).to.deep.equal(['s000', 's001', 's002'])
    expect(result.pauseMs).to.be.a('number')
    expect(await missingWrites(reg, writer)).to.deep.equal([])
    await expectConsistent(replicas[0], [master, replicas[1]])
    // The change was published and recorded.
    const history = (await reg.lrange('shards._history', 0, 5)).map((e) => JSON.parse(e).type)
    expect(history).to.include('shards.promoted')
    expect(await replicas[0].client().config('GET', 'min-replicas-*')).to.have.members(['min-replicas-to-write', '1', 'min-replicas-max-lag', '9'])
    expect(result.fencing).to.deep.equal({'min-replicas-to-write': '1', 'min-replicas-max-lag': '9'})
  })

  it('chooses the most caught-up replica when none is named, and names the shards in the confirmation', async () => {
    const run = await spawnCli(['shards:promote', inst(master), '--dry-run', ...r()])
    expect(run.exitCode).to.equal(0)
    for (const id of ['s000', 's001', 's002']) expect(run.stdout).to.include(id)
    expect(run.stdout).not.to.include('elsewhere')
    expect((await role(master)).role).to.equal('master')
  })

  describe('killed at each step, then run again', () => {
    const steps: [string, 'rolled-back' | 'rolled-forward'][] = [
      ['pause:after', 'rolled-back'],
      ['catch-up:after', 'rolled-back'],
      ['promote:before', 'rolled-back'],
      ['promote:after', 'rolled-back'],
      ['demote:after', 'rolled-forward'],
      ['registry:before', 'rolled-forward'],
      ['registry:after', 'rolled-forward'],
      ['repoint:after', 'rolled-forward'],
      ['resume:after', 'rolled-forward'],
    ]
    for (const [failpoint, outcome] of steps) {
      it(`SIGKILL at ${failpoint}: the next run ${outcome === 'rolled-back' ? 'rolls back' : 'finishes'}, nothing lost`, async () => {
        const writer = new ContinuousWriter(reg, ['s000', 's002'])
        writer.start()
        await writer.waitFor(500)
        // A generous pause bound: a loaded machine must not turn this into a catch-up refusal.
        const killed = await spawnCli(['shards:promote', 's000', '--replica', inst(replicas[0]), '--max-pause', '5s', '--max-lag', '1000000000', '--yes', ...r()], {
          env: {SHARDCTL_FAILPOINT: `${failpoint}:kill`},
        })
        expect(killed.exitCode, killed.stderr).to.not.equal(0)
        expect(await reg.exists('shards._journal'), killed.stderr).to.equal(1)

        const again = await spawnCli(['shards:promote', 's000', '--yes', '--json', ...r()])
        expect(again.exitCode, again.stderr + again.stdout).to.equal(0)
        expect(JSON.parse(again.stdout).recovered).to.equal(outcome)
        await writer.resumesThenStop()
        expect(await missingWrites(reg, writer)).to.deep.equal([])
        if (outcome === 'rolled-back') await expectConsistent(master, replicas)
        else await expectConsistent(replicas[0], [master, replicas[1]])
      })
    }
  })

  it('the old master dies mid-promote: the rerun refuses to roll back, and --force finishes as an emergency', async () => {
    const killed = await spawnCli(['shards:promote', 's000', '--replica', inst(replicas[0]), '--max-pause', '5s', '--max-lag', '1000000000', '--yes', ...r()], {
      env: {SHARDCTL_FAILPOINT: 'promote:after:kill'},
    })
    expect(killed.exitCode).to.not.equal(0)
    process.kill(master.pid, 'SIGKILL')

    const stuck = await spawnCli(['shards:promote', 's000', '--yes', '--timeout', '1s', ...r()])
    expect(stuck.exitCode).to.equal(1)
    expect(stuck.stderr).to.match(/cannot roll back the interrupted promote.*--force to finish as an emergency failover/)
    expect(await reg.exists('shards._journal')).to.equal(1)

    const unasked = await spawnCli(['shards:promote', 's000', '--force', '--timeout', '1s', ...r()])
    expect(unasked.exitCode).to.equal(2)
    expect(await reg.exists('shards._journal')).to.equal(1)

    const run = await spawnCli(['shards:promote', 's000', '--force', '--yes', '--json', '--timeout', '1s', ...r()])
    expect(run.exitCode, run.stderr).to.equal(0)
    const result = JSON.parse(run.stdout)
    expect(result).to.include({recovered: 'rolled-forward', applied: true})
    expect(result.plan).to.include({mode: 'emergency', newMaster: inst(replicas[0])})
    expect(await reg.hgetall('shards.s002')).to.deep.equal({master: replicas[0].address(2), slave0: replicas[1].address(2)})
    expect((await role(replicas[0])).role).to.equal('master')
    expect((await role(replicas[1])).masterPort).to.equal(replicas[0].port)
    expect(await reg.exists('shards._journal', 'shards._lock')).to.equal(0)
    const event = (await reg.lrange('shards._history', 0, -1)).map((e) => JSON.parse(e)).find((e) => e.type === 'shards.promoted')
    expect(event).to.include({mode: 'emergency', removedMaster: inst(master), recovered: true})
  })

  it('emergency: with the master dead, --force promotes the most caught-up replica and the other follows it', async () => {
    // replicas[1] stops following, so replicas[0] is ahead when the master dies.
    const lagging = replicas[1].client()
    await lagging.replicaof('127.0.0.1', '1')
    const m = master.client(0)
    for (let i = 0; i < 100; i++) await m.set(`late${i}`, 'x')
    m.disconnect()
    await new Promise((resolve) => setTimeout(resolve, 200))
    lagging.disconnect()
    process.kill(master.pid, 'SIGKILL')

    const refused = await spawnCli(['shards:promote', 's000', '--yes', ...r()])
    expect(refused.exitCode).to.equal(1)
    expect(refused.stderr).to.match(/does not answer.*--force/)

    const run = await spawnCli(['shards:promote', 's000', '--force', '--yes', '--json', '--timeout', '1s', ...r()])
    expect(run.exitCode, run.stderr).to.equal(0)
    const result = JSON.parse(run.stdout)
    expect(result.plan.newMaster).to.equal(inst(replicas[0]))
    expect(result.missedBytes).to.equal(null)
    const fields = await reg.hgetall('shards.s001')
    expect(fields).to.deep.equal({master: replicas[0].address(1), slave0: replicas[1].address(1)})
    const info = await role(replicas[1])
    expect(info.masterPort).to.equal(replicas[0].port)
    const event = (await reg.lrange('shards._history', 0, -1)).map((e) => JSON.parse(e)).find((e) => e.type === 'shards.promoted')
    expect(event.removedMaster).to.equal(inst(master))
  })

  describe('refusals', () => {
    it('the master answers but --force comes without --yes: exit 2, nothing changes', async () => {
      const before = await reg.hgetall('shards.s000')
      const run = await spawnCli(['shards:promote', 's000', '--force', ...r()])
      expect(run.exitCode).to.equal(2)
      expect(run.stderr).to.match(/answers, but --force skips the zero-loss handoff/)
      expect(await reg.hgetall('shards.s000')).to.deep.equal(before)
    })

    it('the named replica does not replicate that master', async () => {
      const run = await spawnCli(['shards:promote', 's000', '--replica', inst(other), '--yes', ...r()])
      expect(run.exitCode).to.equal(1)
      expect(run.stderr).to.match(new RegExp(`cannot promote ${inst(other)}: not a replica of ${inst(master)}`))
      expect((await role(master)).role).to.equal('master')
    })

    it("the replica's link is down", async () => {
      // The master stops accepting replication: the replica keeps its master but loses the link.
      const m = master.client()
      await m.call('ACL', 'SETUSER', 'default', '-psync', '-sync')
      await m.call('CLIENT', 'KILL', 'TYPE', 'replica')
      for (let i = 0; i < 200 && (await role(replicas[0])).linkUp; i++) await new Promise((r) => setTimeout(r, 10))
      const run = await spawnCli(['shards:promote', 's000', '--replica', inst(replicas[0]), '--yes', ...r()])
      await m.call('ACL', 'SETUSER', 'default', '+@all')
      m.disconnect()
      expect(run.exitCode).to.equal(1)
      expect(run.stderr).to.match(/replication link down/)
    })

    it('the replica lags beyond --max-lag', async () => {
      const writer = new ContinuousWriter(reg, ['s000', 's001', 's002'], {valueSize: 65_536})
      writer.start()
      let run
      for (let i = 0; i < 50; i++) {
        run = await spawnCli(['shards:promote', 's000', '--replica', inst(replicas[0]), '--max-lag', '1', '--dry-run', ...r()])
        if (run.exitCode !== 0) break
      }
      await writer.stop()
      expect(run!.exitCode).to.equal(1)
      expect(run!.stderr).to.match(/lags \d+ bytes, beyond --max-lag 1/)
    })

    it('the catch-up does not finish within --max-pause: writes resume on the old master, nothing changes', async () => {
      const before = await reg.hgetall('shards.s000')
      const child = spawnCli(['shards:promote', 's000', '--replica', inst(replicas[0]), '--max-pause', '400', '--timeout', '150ms', '--yes', ...r()], {
        env: {SHARDCTL_FAILPOINT: 'pause:before:sleep-1000'},
      })
      // While it sleeps before pausing: freeze the replica and write to the master.
      await new Promise((r) => setTimeout(r, 600))
      process.kill(replicas[0].pid, 'SIGSTOP')
      const m = master.client(0)
      await m.set('during', 'x')
      const run = await child
      process.kill(replicas[0].pid, 'SIGCONT')
      expect(run.exitCode, run.stderr).to.equal(1)
      expect(run.stderr).to.match(/did not catch up within --max-pause 400 ms.*writes resumed on/)
      expect(await reg.hgetall('shards.s000')).to.deep.equal(before)
      expect((await role(master)).role).to.equal('master')
      await m.set('after', 'y') // not paused any more
      m.disconnect()
      expect(await reg.exists('shards._journal', 'shards._lock')).to.equal(0)
    })

    it('the registry changed underneath: the switch is refused and the old master takes writes again', async () => {
      const child = spawnCli(['shards:promote', 's000', '--replica', inst(replicas[0]), '--yes', ...r()], {
        env: {SHARDCTL_FAILPOINT: 'registry:before:sleep-1000'},
      })
      await new Promise((r) => setTimeout(r, 600))
      await reg.hset('shards.s001', 'master', other.address(5))
      const run = await child
      expect(run.exitCode).to.equal(1)
      expect(run.stderr).to.match(/changed underneath/)
      expect((await role(master)).role).to.equal('master')
      expect((await role(replicas[0])).masterPort).to.equal(master.port)
      expect(await reg.hget('shards.s000', 'master')).to.equal(master.address(0))
      const m = master.client(0)
      await m.set('after', 'y')
      m.disconnect()
      expect(await reg.exists('shards._journal', 'shards._lock')).to.equal(0)
    })

    it('a second operator at the same time exits 4 naming the holder', async () => {
      const first = spawnCli(['shards:promote', 's000', '--yes', ...r()], {env: {SHARDCTL_FAILPOINT: 'pause:before:sleep-1500'}})
      for (let i = 0; i < 500 && (await reg.exists('shards._lock')) === 0; i++) await new Promise((r) => setTimeout(r, 10))
      const second = await spawnCli(['shards:promote', 's000', '--yes', ...r()])
      expect(second.exitCode).to.equal(4)
      expect(second.stderr).to.match(/another operator holds the lock: \S+@\S+ \(shards:promote, pid \d+\) since/)
      expect((await first).exitCode).to.equal(0)
    })

    for (const [name, args, message] of [
      ['an unknown shard', ['nope'], /unknown shard "nope"/],
      ['an address that is not in the registry', ['127.0.0.1:1'], /no shard in the registry has its master on 127\.0\.0\.1:1/],
      ['garbage', ['%%%'], /invalid shard id/],
      ['a bad --max-pause', ['s000', '--max-pause', 'soon'], /invalid duration/],
      ['a bad --replica', ['s000', '--replica', 'x:y'], /invalid port/],
    ] as const) {
      it(`bad input, ${name}: exit 2, one line`, async () => {
        const run = await spawnCli(['shards:promote', ...args, '--yes', ...r()])
        expect(run.exitCode).to.equal(2)
        expect(run.stderr.trim().split('\n')).to.have.length(1)
        expect(run.stderr).to.match(message)
      })
    }
  })
})

export {binary}

import {expect} from 'chai'
import {Redis} from 'ioredis'

import {cli, spawnCli, startCli, until} from '../helpers/cli.js'
import {useFleet} from '../helpers/fleet.js'
import {
  PAST_MAX_PAUSE_MS,
  fencesOf,
  fleetState,
  frozenFor,
  readJournal,
  resume,
  roleOf,
  stepDone,
  stoppedAt,
  takesWrites,
} from '../helpers/ops.js'
import {startReplyDelayProxy} from '../helpers/proxy.js'
import {type TestServer, startReplicated, startServer, withClients} from '../helpers/redis.js'
import {type ContinuousWriter, lostWrites, startedWriter} from '../helpers/writer.js'

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
  // Generous bounds where a test is not about them: a loaded machine must not turn a
  // fault test into a lag refusal.
  const BOUNDS = ['--max-lag', '1000000000', '--timeout', '10s']
  const SHARDS = ['s000', 's001', 's002']

  const fleet = useFleet()
  before(() => {
    reg = fleet.reg
  })

  beforeEach(async () => {
    ;[{master, replicas}, other] = await Promise.all([startReplicated(2), startServer()])
    const init = await cli([
      'shards:init',
      '--instance',
      inst(master),
      ...replicas.flatMap((x) => ['--replica', inst(x)]),
      '--count',
      '3',
      '--yes',
      ...r(),
    ])
    expect(init.exitCode, init.stderr).to.equal(0)
    expect((await cli(['shards:add', 'elsewhere', '--master', other.address(0), ...r()])).exitCode).to.equal(0)
  })
  afterEach(async () => {
    await Promise.all([master, ...replicas, other].map((s) => s.stop()))
  })

  /** Registry, roles and links agree, and no fence or pause is left anywhere. */
  async function expectConsistent(newMaster: TestServer, followers: TestServer[]): Promise<void> {
    for (const id of SHARDS) {
      const fields = await reg.hgetall(`shards.${id}`)
      expect(fields.master, id).to.equal(newMaster.address(Number(id.slice(1))))
      const replicaPorts = Object.entries(fields)
        .filter(([f]) => f.startsWith('slave'))
        .map(([, a]) => Number(/:(\d+)\//.exec(a)![1]))
      expect(replicaPorts.sort()).to.deep.equal(followers.map((f) => f.port).sort())
    }
    expect((await roleOf(newMaster)).role).to.equal('master')
    for (const f of followers) expect(await roleOf(f), `${f.port}`).to.include({role: 'slave', masterPort: newMaster.port})
    expect(await reg.hget('shards.elsewhere', 'master')).to.equal(other.address(0))
    expect(await reg.exists('shards._journal', 'shards._lock')).to.equal(0)
    expect(await fencesOf([master, ...replicas])).to.deep.equal([])
    expect(await takesWrites(newMaster)).to.equal(true)
  }

  /** Every write the writer got acknowledged is where the registry routes it now. */
  const startWriter = () => startedWriter(reg, SHARDS, 500)
  const expectNothingLost = async (writer: ContinuousWriter) => expect(await lostWrites(reg, writer)).to.deep.equal([])

  it('graceful, under a continuous writer: every acknowledged write survives; registry, roles and links agree', async () => {
    // A fenced master: the new one must be fenced as well afterwards.
    await master.client().config('SET', 'min-replicas-to-write', '1', 'min-replicas-max-lag', '9')
    const writer = await startWriter()
    const run = await spawnCli([
      'shards:promote',
      's001',
      '--replica',
      inst(replicas[0]),
      '--max-pause',
      '5s',
      ...BOUNDS,
      '--yes',
      '--json',
      ...r(),
    ])
    expect(run.exitCode, run.stderr + run.stdout).to.equal(0)
    await expectNothingLost(writer)
    const result = JSON.parse(run.stdout)
    expect(result.applied).to.equal(true)
    expect(result.plan.shards.map((s: {id: string}) => s.id)).to.deep.equal(SHARDS)
    expect(result.pauseMs).to.be.a('number')
    expect(result.pauseExceeded).to.equal(false)
    await expectConsistent(replicas[0], [master, replicas[1]])
    const history = (await reg.lrange('shards._history', 0, 5)).map((e) => JSON.parse(e).type)
    expect(history).to.include('shards.promoted')
    expect(await replicas[0].client().config('GET', 'min-replicas-*')).to.have.members([
      'min-replicas-to-write',
      '1',
      'min-replicas-max-lag',
      '9',
    ])
    expect(result.fencing).to.deep.equal({'min-replicas-to-write': '1', 'min-replicas-max-lag': '9'})
    // The old master, now a replica, has its own fencing back, not shardctl's fence.
    expect(await master.client().config('GET', 'min-replicas-to-write')).to.deep.equal(['min-replicas-to-write', '1'])
  })

  it('chooses the most caught-up replica when none is named, and names the shards in the confirmation', async () => {
    const run = await spawnCli(['shards:promote', inst(master), '--dry-run', ...r()])
    expect(run.exitCode).to.equal(0)
    for (const id of SHARDS) expect(run.stdout).to.include(id)
    expect(run.stdout).not.to.include('elsewhere')
    expect((await roleOf(master)).role).to.equal('master')
  })

  describe('frozen for 1.5 s after a step, with the default --max-pause: nothing lost, and the true pause reported', () => {
    for (const step of ['fence', 'catch-up', 'registry', 'promote', 'demote', 'lift']) {
      it(`stopped (SIGSTOP) after ${step}`, async () => {
        const writer = await startWriter()
        const run = await stoppedAt(
          ['shards:promote', 's000', '--replica', inst(replicas[0]), ...BOUNDS, '--yes', '--json', ...r()],
          `${step}:after:stop`,
        )
        await frozenFor(run, PAST_MAX_PAUSE_MS)
        const done = await run.done
        expect(done.exitCode, done.stderr + done.stdout).to.equal(0)
        await expectNothingLost(writer)
        await expectConsistent(replicas[0], [master, replicas[1]])
        const result = JSON.parse(done.stdout)
        if (step !== 'lift') {
          expect(result.pauseMs).to.be.at.least(PAST_MAX_PAUSE_MS)
          expect(result.pauseExceeded).to.equal(true)
        }
      })
    }
  })

  describe('the registry answers 1.5 s late from a step on: nothing lost', () => {
    for (const step of ['fence', 'registry', 'promote']) {
      it(`late after ${step}`, async () => {
        const proxy = await startReplyDelayProxy(fleet.registry.port)
        try {
          const writer = await startWriter()
          const run = await startCli([
            'shards:promote',
            's000',
            '--replica',
            inst(replicas[0]),
            ...BOUNDS,
            '--yes',
            '--json',
            '-r',
            `redis://127.0.0.1:${proxy.port}/0`,
          ])
          await until(
            `step ${step} done`,
            async () => stepDone(await readJournal(reg), step) || (await reg.exists('shards._journal')) === 0,
          )
          proxy.stallFor(PAST_MAX_PAUSE_MS)
          const done = await run.done
          expect(done.exitCode, done.stderr + done.stdout).to.equal(0)
          await expectNothingLost(writer)
          await expectConsistent(replicas[0], [master, replicas[1]])
        } finally {
          await proxy.close()
        }
      })
    }
  })

  describe('killed at each step, then run again', () => {
    const steps: [string, 'rolled-back' | 'rolled-forward'][] = [
      ['fence:before', 'rolled-back'],
      ['fence:after', 'rolled-back'],
      ['catch-up:after', 'rolled-back'],
      ['registry:before', 'rolled-back'],
      ['registry:after', 'rolled-forward'],
      ['promote:before', 'rolled-forward'],
      ['promote:after', 'rolled-forward'],
      ['demote:after', 'rolled-forward'],
      ['lift:before', 'rolled-forward'],
      ['lift:after', 'rolled-forward'],
      ['repoint:after', 'rolled-forward'],
      ['carry-fencing:after', 'rolled-forward'],
    ]
    for (const [failpoint, outcome] of steps) {
      it(`SIGKILL at ${failpoint}: the next run ${outcome === 'rolled-back' ? 'rolls back' : 'finishes'}, nothing lost`, async () => {
        const writer = await startWriter()
        const killed = await spawnCli(
          ['shards:promote', 's000', '--replica', inst(replicas[0]), '--max-pause', '5s', ...BOUNDS, '--yes', ...r()],
          {
            env: {SHARDCTL_FAILPOINT: `${failpoint}:kill`},
          },
        )
        expect(killed.exitCode, killed.stderr).to.not.equal(0)
        expect(await reg.exists('shards._journal'), killed.stderr).to.equal(1)

        const again = await spawnCli(['shards:promote', 's000', '--yes', '--json', ...r()])
        expect(again.exitCode, again.stderr + again.stdout).to.equal(0)
        expect(JSON.parse(again.stdout).recovered).to.equal(outcome)
        await expectNothingLost(writer)
        if (outcome === 'rolled-back') await expectConsistent(master, replicas)
        else await expectConsistent(replicas[0], [master, replicas[1]])
      })
    }
  })

  describe('a stale operator: stopped past its lease, overtaken and recovered, then resumed', () => {
    for (const step of ['fence', 'catch-up', 'registry', 'promote', 'demote']) {
      it(`stopped after ${step}: once resumed it changes nothing anywhere and exits 4`, async () => {
        const writer = await startWriter()
        const stale = await stoppedAt(
          ['shards:promote', 's000', '--replica', inst(replicas[0]), ...BOUNDS, '--yes', ...r()],
          `${step}:after:stop`,
          {SHARDCTL_LOCK_LEASE: '1s'},
        )
        // The lease runs out by itself: nothing renews it while the holder is stopped.
        await until('the stale lease expired', async () => (await reg.exists('shards._lock')) === 0)
        const recovery = await spawnCli(['shards:promote', 's000', '--yes', '--json', ...r()])
        expect(recovery.exitCode, recovery.stderr + recovery.stdout).to.equal(0)
        await expectNothingLost(writer)
        const settled = await fleetState(reg, [master, ...replicas])
        resume(stale)
        const resumed = await stale.done
        expect(resumed.exitCode, resumed.stderr).to.equal(4)
        expect(resumed.stderr).to.match(/lock was lost/)
        expect(await fleetState(reg, [master, ...replicas])).to.deep.equal(settled)
        const outcome = JSON.parse(recovery.stdout).recovered
        if (outcome === 'rolled-back') await expectConsistent(master, replicas)
        else await expectConsistent(replicas[0], [master, replicas[1]])
      })
    }
  })

  it('a stale operator stopped just before an action, overtaken by a command that ignores the journal: once resumed it does not act', async () => {
    const stale = await stoppedAt(
      ['shards:promote', 's000', '--replica', inst(replicas[0]), ...BOUNDS, '--yes', ...r()],
      'demote:before:stop',
      {SHARDCTL_LOCK_LEASE: '1s'},
    )
    await until('the stale lease expired', async () => (await reg.exists('shards._lock')) === 0)
    const other = await spawnCli(['shards:weight', 'elsewhere', '3', '--yes', ...r()])
    expect(other.exitCode, other.stderr).to.equal(0)
    resume(stale)
    const resumed = await stale.done
    expect(resumed.exitCode, resumed.stderr).to.equal(4)
    expect((await roleOf(master)).role, 'the stale run demoted the old master after losing its lease').to.equal('master')
    const again = await spawnCli(['shards:promote', 's000', '--yes', '--json', ...r()])
    expect(again.exitCode, again.stderr + again.stdout).to.equal(0)
    await expectConsistent(replicas[0], [master, replicas[1]])
  })

  describe('the compare-and-set covers the whole instance', () => {
    async function changedMeanwhile(change: () => Promise<unknown>): Promise<{exitCode: number; stderr: string}> {
      const run = await stoppedAt(
        ['shards:promote', 's000', '--replica', inst(replicas[0]), ...BOUNDS, '--yes', ...r()],
        'catch-up:after:stop',
      )
      await change()
      resume(run)
      return run.done
    }

    it('a shard registered on the old master meanwhile: the switch is refused and undone, the new shard keeps its master', async () => {
      const run = await changedMeanwhile(async () => {
        await reg.hset('shards.late', 'master', master.address(7))
        await reg.zadd('shards.list', 1, 'late')
      })
      expect(run.exitCode, run.stderr).to.equal(1)
      expect(run.stderr).to.match(/shard late was registered on 127\.0\.0\.1:\d+ meanwhile.*undone/)
      expect(await reg.hget('shards.late', 'master')).to.equal(master.address(7))
      await expectConsistent(master, replicas)
    })

    it('a replica added to a moving shard meanwhile: refused and undone, the replica is kept', async () => {
      const run = await changedMeanwhile(() => reg.hset('shards.s001', 'slave2', other.address(1)))
      expect(run.exitCode, run.stderr).to.equal(1)
      expect(run.stderr).to.match(/shards\.s001 gained slave2 \(127\.0\.0\.1:\d+\/1\) underneath.*undone/)
      expect(await reg.hget('shards.s001', 'slave2')).to.equal(other.address(1))
      expect(await reg.hget('shards.s001', 'master')).to.equal(master.address(1))
      expect((await roleOf(master)).role).to.equal('master')
      expect(await takesWrites(master)).to.equal(true)
    })
  })

  it('the replica dies while the master is fenced: the error names it, the fence is lifted, nothing changes', async () => {
    const run = await stoppedAt(
      ['shards:promote', 's000', '--replica', inst(replicas[0]), '--timeout', '1s', '--yes', ...r()],
      'fence:after:stop',
    )
    await replicas[0].stop()
    resume(run)
    const done = await run.done
    expect(done.exitCode, done.stderr).to.equal(1)
    expect(done.stderr.trim().split('\n').at(-1)).to.match(new RegExp(`127\\.0\\.0\\.1:${replicas[0].port}`))
    expect(done.stderr).not.to.match(/\n\s+at /)
    expect(await takesWrites(master)).to.equal(true)
    expect(await reg.hget('shards.s000', 'master')).to.equal(master.address(0))
    expect(await reg.exists('shards._journal', 'shards._lock')).to.equal(0)
  })

  it('the new master dies after the registry switch, before its promotion: the run heals by switching back and lifting the fence, exit 3 naming it', async () => {
    const run = await stoppedAt(
      ['shards:promote', 's000', '--replica', inst(replicas[0]), '--timeout', '1s', '--yes', ...r()],
      'registry:after:stop',
    )
    await replicas[0].stop()
    resume(run)
    const done = await run.done
    expect(done.exitCode, done.stderr).to.equal(3)
    expect(done.stderr.trim().split('\n').at(-1)).to.match(
      new RegExp(
        `the promote failed half-way \\(lost the connection to 127\\.0\\.0\\.1:${replicas[0].port}.*\\) and healed by rolling back`,
      ),
    )
    expect(await takesWrites(master)).to.equal(true)
    for (const id of SHARDS) expect(await reg.hget(`shards.${id}`, 'master')).to.equal(master.address(Number(id.slice(1))))
    expect(await reg.exists('shards._journal', 'shards._lock')).to.equal(0)
  })

  it('killed after the switch, and the old master lost its fence meanwhile (as a restart does): the rerun fences it again, so a late write is refused, never dropped', async () => {
    const killed = await spawnCli(
      ['shards:promote', 's000', '--replica', inst(replicas[0]), '--max-pause', '5s', ...BOUNDS, '--yes', ...r()],
      {
        env: {SHARDCTL_FAILPOINT: 'registry:after:kill'},
      },
    )
    expect(killed.exitCode, killed.stderr).to.not.equal(0)
    await withClients([master], async ([c]) => {
      await c.config('SET', 'min-replicas-to-write', '0')
      await c.call('CLIENT', 'UNPAUSE')
    })
    const run = await stoppedAt(['shards:promote', 's000', '--yes', '--json', ...r()], 'promote:before:stop')
    // A client with stale routing writes to the old master once the catch-up is proven.
    const stale = new Redis({
      port: master.port,
      host: '127.0.0.1',
      commandTimeout: 2000,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    })
    stale.on('error', () => undefined)
    const acknowledged = await stale.set('late-write', 'x').then(
      () => true,
      () => false,
    )
    stale.disconnect()
    resume(run)
    const done = await run.done
    expect(done.exitCode, done.stderr + done.stdout).to.equal(0)
    expect(JSON.parse(done.stdout).recovered).to.equal('rolled-forward')
    expect(acknowledged, 'a write the old master acknowledged after the catch-up would be dropped by its demotion').to.equal(false)
    await expectConsistent(replicas[0], [master, replicas[1]])
  })

  it('the old master dies mid-promote: the rerun refuses to roll back, and --force finishes as an emergency', async () => {
    const killed = await spawnCli(['shards:promote', 's000', '--replica', inst(replicas[0]), '--max-pause', '5s', '--yes', ...r()], {
      env: {SHARDCTL_FAILPOINT: 'catch-up:after:kill'},
    })
    expect(killed.exitCode).to.not.equal(0)
    process.kill(master.pid, 'SIGKILL')

    // Nothing heals a dead master: with healing off, what is left is said at once.
    const stuck = await spawnCli(['shards:promote', 's000', '--yes', '--timeout', '1s', '--heal-within', '0', ...r()])
    expect(stuck.exitCode).to.equal(5)
    expect(stuck.stderr).to.match(/cannot roll back the interrupted promote.*--force to finish as an emergency failover/)
    expect(stuck.stderr).to.match(
      new RegExp(`writes are refused by ${inst(master)} \\(it does not answer; shardctl's write fence is on since`),
    )
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
    expect((await roleOf(replicas[0])).role).to.equal('master')
    expect((await roleOf(replicas[1])).masterPort).to.equal(replicas[0].port)
    expect(await reg.exists('shards._journal', 'shards._lock')).to.equal(0)
    const event = (await reg.lrange('shards._history', 0, -1)).map((e) => JSON.parse(e)).find((e) => e.type === 'shards.promoted')
    expect(event).to.include({mode: 'emergency', removedMaster: inst(master), recovered: true})
  })

  it('emergency: with the master dead, --force promotes the most caught-up replica (not the one named first) and the other follows it', async () => {
    // replicas[0] stops following, so replicas[1] is ahead when the master dies.
    const lagging = replicas[0].client()
    await lagging.replicaof('127.0.0.1', '1')
    const m = master.client(0)
    for (let i = 0; i < 100; i++) await m.set(`late${i}`, 'x')
    m.disconnect()
    await until('replicas[1] has the late writes', async () => (await replicas[1].client(0).exists('late99')) === 1)
    lagging.disconnect()
    process.kill(master.pid, 'SIGKILL')

    const refused = await spawnCli(['shards:promote', 's000', '--yes', ...r()])
    expect(refused.exitCode).to.equal(1)
    expect(refused.stderr).to.match(/does not answer.*--force/)

    const run = await spawnCli(['shards:promote', 's000', '--force', '--yes', '--json', '--timeout', '1s', ...r()])
    expect(run.exitCode, run.stderr).to.equal(0)
    const result = JSON.parse(run.stdout)
    expect(result.plan.newMaster).to.equal(inst(replicas[1]))
    expect(result.plan.candidates.find((c: {chosen: boolean}) => c.chosen).instance).to.equal(inst(replicas[1]))
    expect(result.missedBytes).to.equal(null)
    expect(await reg.hgetall('shards.s001')).to.deep.equal({master: replicas[1].address(1), slave0: replicas[0].address(1)})
    expect((await roleOf(replicas[0])).masterPort).to.equal(replicas[1].port)
    expect(await replicas[1].client(0).exists('late99')).to.equal(1)
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

    it('a master that would take writes once demoted (replica-read-only no): exit 3, nothing changes', async () => {
      await master.client().config('SET', 'replica-read-only', 'no')
      const before = await reg.hgetall('shards.s000')
      const run = await spawnCli(['shards:promote', 's000', '--replica', inst(replicas[0]), '--yes', ...r()])
      expect(run.exitCode, run.stderr).to.equal(3)
      expect(run.stderr.trim().split('\n').at(-1)).to.match(new RegExp(`the master ${inst(master)} has replica-read-only no`))
      expect(await reg.hgetall('shards.s000')).to.deep.equal(before)
      expect(await takesWrites(master)).to.equal(true)
    })

    it('the named replica does not replicate that master', async () => {
      const run = await spawnCli(['shards:promote', 's000', '--replica', inst(other), '--yes', ...r()])
      expect(run.exitCode).to.equal(3)
      expect(run.stderr).to.match(new RegExp(`cannot promote ${inst(other)}: not a replica of ${inst(master)}`))
      expect((await roleOf(master)).role).to.equal('master')
    })

    it("the replica's link is down", async () => {
      // The master stops accepting replication: the replica keeps its master but loses the link.
      const m = master.client()
      await m.call('ACL', 'SETUSER', 'default', '-psync', '-sync')
      await m.call('CLIENT', 'KILL', 'TYPE', 'replica')
      await until('the link is down', async () => {
        const c = replicas[0].client()
        const up = /master_link_status:up/.test(await c.info('replication'))
        c.disconnect()
        return !up
      })
      const run = await spawnCli(['shards:promote', 's000', '--replica', inst(replicas[0]), '--yes', ...r()])
      await m.call('ACL', 'SETUSER', 'default', '+@all')
      m.disconnect()
      expect(run.exitCode).to.equal(3)
      expect(run.stderr).to.match(/replication link down/)
    })

    it('the replica lags beyond --max-lag', async () => {
      // The replica stops applying its stream (a paused replica), then the master takes a big write.
      const paused = replicas[0].client()
      await paused.call('CLIENT', 'PAUSE', '20000', 'WRITE')
      try {
        await master.client(0).set('big', 'x'.repeat(20_000))
        const run = await spawnCli(['shards:promote', 's000', '--replica', inst(replicas[0]), '--max-lag', '1000', '--dry-run', ...r()])
        expect(run.exitCode).to.equal(3)
        expect(run.stderr).to.match(/lags [\d,]+ bytes, beyond --max-lag 1000/)
      } finally {
        await paused.call('CLIENT', 'UNPAUSE')
        paused.disconnect()
      }
    })

    it('the catch-up does not finish within --max-pause: the fence is lifted, nothing changes', async () => {
      const before = await reg.hgetall('shards.s000')
      const run = await stoppedAt(
        ['shards:promote', 's000', '--replica', inst(replicas[0]), '--max-pause', '400', '--timeout', '150ms', '--yes', ...r()],
        'fence:before:stop',
      )
      // Just before the fence: freeze the replica and write to the master, then go on.
      process.kill(replicas[0].pid, 'SIGSTOP')
      try {
        const m = master.client(0)
        await m.set('during', 'x')
        m.disconnect()
        resume(run)
        const done = await run.done
        expect(done.exitCode, done.stderr).to.equal(1)
        // A frozen replica either answers too late or has its socket dropped at --timeout: either way not proven caught up.
        expect(done.stderr).to.match(/(did not catch up within --max-pause 400 ms|cannot be proven caught up).*writes resumed on/)
      } finally {
        process.kill(replicas[0].pid, 'SIGCONT')
      }
      expect(await reg.hgetall('shards.s000')).to.deep.equal(before)
      expect((await roleOf(master)).role).to.equal('master')
      expect(await takesWrites(master)).to.equal(true)
      expect(await reg.exists('shards._journal', 'shards._lock')).to.equal(0)
    })

    it('the registry changed underneath: the switch is refused and the old master takes writes again', async () => {
      const run = await stoppedAt(['shards:promote', 's000', '--replica', inst(replicas[0]), '--yes', ...r()], 'registry:before:stop')
      await reg.hset('shards.s001', 'master', other.address(5))
      resume(run)
      const done = await run.done
      expect(done.exitCode).to.equal(1)
      expect(done.stderr).to.match(/changed underneath/)
      expect((await roleOf(master)).role).to.equal('master')
      expect((await roleOf(replicas[0])).masterPort).to.equal(master.port)
      expect(await reg.hget('shards.s000', 'master')).to.equal(master.address(0))
      expect(await takesWrites(master)).to.equal(true)
      expect(await reg.exists('shards._journal', 'shards._lock')).to.equal(0)
    })

    it('a second operator at the same time exits 4 naming the holder', async () => {
      // Its lease outlives the second's start, however slow: stopped, it cannot renew it.
      const first = await stoppedAt(['shards:promote', 's000', '--yes', ...r()], 'fence:before:stop', {SHARDCTL_LOCK_LEASE: '10m'})
      const second = await spawnCli(['shards:promote', 's000', '--yes', ...r()])
      expect(second.exitCode).to.equal(4)
      expect(second.stderr).to.match(new RegExp(`another operator holds the lock: \\S+@\\S+ \\(shards:promote, pid ${first.pid}\\) since`))
      resume(first)
      expect((await first.done).exitCode).to.equal(0)
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

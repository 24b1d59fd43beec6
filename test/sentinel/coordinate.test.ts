import {hostname, userInfo} from 'node:os'

import {expect} from 'chai'

import {type RunningCli, cli, spawnCli, startCli, until} from '../helpers/cli.js'
import {useFleet} from '../helpers/fleet.js'
import {readJournal, resume, stoppedAt} from '../helpers/ops.js'
import {type TestServer, startReplicated, startServer, withClients} from '../helpers/redis.js'
import {type SentinelSet, killHard, roleOfPort, useSentinels} from '../helpers/sentinel.js'
import {ContinuousWriter, missingWrites} from '../helpers/writer.js'

const at = (s: TestServer) => `127.0.0.1:${s.port}`
/** Masters fenced as shards:check expects. */
const FENCED = ['--min-replicas-to-write', '1', '--min-replicas-max-lag', '10']

/** What every Sentinel says of a name: its master's port, config epoch, flags, and the replicas it knows (port: role reported). */
async function sentinelViews(set: SentinelSet, name: string) {
  return Promise.all(
    set.sentinels.map(async (s) => {
      const c = s.client()
      try {
        const [, port] = (await c.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', name)) as string[]
        const master = (await c.call('SENTINEL', 'MASTER', name)) as string[]
        const field = (flat: string[], k: string) => flat[flat.indexOf(k) + 1]
        const replicas = ((await c.call('SENTINEL', 'REPLICAS', name)) as string[][]).map(
          (r) => `${field(r, 'port')}:${field(r, 'role-reported')}:${field(r, 'master-link-status')}`,
        )
        return {port: Number(port), epoch: Number(field(master, 'config-epoch')), flags: field(master, 'flags'), replicas: replicas.sort()}
      } finally {
        c.disconnect()
      }
    }),
  )
}

/**
 * shardctl's own operations beside Sentinel: a graceful promote of a monitored instance
 * that Sentinel does not turn back, an emergency promote Sentinel decides, a split whose
 * targets are registered, and a failover by Sentinel in the middle of a split.
 */
describe('sentinel: promote and split of monitored instances @timing-sensitive', () => {
  const fleet = useFleet()
  const sentinels = useSentinels(3)
  let servers: TestServer[] = []
  const followers: RunningCli[] = []
  const timings = ['--down-after', '1s', '--failover-timeout', '3s']

  /** A master with `replicas` replicas, `count` shards on it, registered with the Sentinels as shards-s000. */
  const monitored = async (replicas = 1, count = 4) => {
    const group = await startReplicated(replicas, FENCED)
    servers.push(group.master, ...group.replicas)
    const init = await cli([
      'shards:init',
      ...fleet.r(),
      '--instance',
      at(group.master),
      ...group.replicas.flatMap((r) => ['--replica', at(r)]),
      '--count',
      String(count),
      '--yes',
    ])
    expect(init.exitCode, init.stderr).to.equal(0)
    const register = await cli(['sentinel:register', ...fleet.r(), ...sentinels.flags(), ...timings])
    expect(register.exitCode, register.stderr).to.equal(0)
    await sentinels.settled('shards-s000', replicas)
    return group
  }

  const record = async (name: string) => {
    const raw = await fleet.reg.hget('shards._sentinel', `group:${name}`)
    return raw === null ? null : (JSON.parse(raw) as {master: string; epoch: number; released?: unknown})
  }

  afterEach(async () => {
    for (const run of followers.splice(0)) {
      try {
        process.kill(run.pid, 'SIGKILL')
      } catch {
        // ended already
      }
    }
    for (const name of ['shards-s000', 'shards-s002', 'shards-s000-2']) await sentinels.forget(name)
    await Promise.all(servers.map((s) => s.stop()))
    servers = []
  })

  it('a graceful promote of a monitored instance: Sentinel lets go, then monitors the new master, which stays master', async () => {
    const {master, replicas} = await monitored(1)
    const promote = await cli(['shards:promote', at(master), ...fleet.r(), '--yes', '--json'])
    expect(promote.exitCode, promote.stderr + promote.stdout).to.equal(0)
    const next = replicas[0]
    expect(await fleet.reg.hget('shards.s000', 'master')).to.equal(`${at(next)}/0`)
    expect(await record('shards-s000')).to.deep.equal({master: at(next), epoch: 0})
    // Sentinel's own view, once every Sentinel has looked at both instances again: the new master is its master, the
    // old one a replica with its link up. Sentinel only ever turns into a replica an instance it believes is one
    // (sentinel.c, +convert-to-slave), so with this view it has nothing to turn back, a minute later or ever; a
    // promote behind its back would leave it naming the old master here instead.
    await sentinels.settled('shards-s000', 1)
    await until('every Sentinel sees the old master as a replica of the new one', async () =>
      (await sentinelViews(sentinels, 'shards-s000')).every((v) => v.replicas.includes(`${master.port}:slave:ok`)),
    )
    for (const view of await sentinelViews(sentinels, 'shards-s000')) {
      expect(view).to.deep.equal({port: next.port, epoch: 0, flags: 'master', replicas: [`${master.port}:slave:ok`]})
    }
    expect(await roleOfPort(next.port)).to.equal('master')
    const history = (await fleet.reg.lrange('shards._history', 0, -1)).map((e) => JSON.parse(e).type)
    expect(history).to.include.members(['sentinel.released', 'shards.promoted', 'sentinel.handed-back'])
    const check = await cli(['shards:check', ...fleet.r(), '--json'])
    expect(check.exitCode, check.stdout).to.equal(0)
  })

  it('an emergency --force on a monitored instance is refused while the Sentinels have a quorum, unless insisted on', async () => {
    const {master, replicas} = await monitored(1)
    const before = await fleet.dump()
    const refused = await cli(['shards:promote', at(master), '--force', '--yes', ...fleet.r()])
    expect(refused.exitCode).to.equal(2)
    expect(refused.stderr).to.match(/Sentinel monitors .* \(group shards-s000\) and can fail it over itself/)
    expect(refused.stderr).to.include('--overrule-sentinel')
    expect(await fleet.dump()).to.deep.equal(before)

    const insisted = await cli(['shards:promote', at(master), '--force', '--yes', '--overrule-sentinel', ...fleet.r(), '--json'])
    expect(insisted.exitCode, insisted.stderr).to.equal(0)
    expect(await fleet.reg.hget('shards.s001', 'master')).to.equal(`${at(replicas[0])}/1`)
    expect(await record('shards-s000')).to.deep.equal({master: at(replicas[0]), epoch: 0})
    for (const view of await sentinelViews(sentinels, 'shards-s000')) expect(view.port).to.equal(replicas[0].port)
  })

  it('after Sentinel failed the master over, no promote demotes the master it elected, --force --overrule-sentinel included: exit 3 naming it and sentinel:follow', async () => {
    const {master, replicas} = await monitored(2)
    killHard(master)
    let elected: TestServer | undefined
    await until('every Sentinel names one replica the new master', async () => {
      const views = await sentinelViews(sentinels, 'shards-s000')
      elected = replicas.find((r) => views.every((v) => v.port === r.port))
      return elected !== undefined && (await roleOfPort(elected.port)) === 'master'
    })
    // A write Sentinel's master took, which the other replica may not have yet.
    await until('the new master takes a write (its fence lets it once the other replica follows it)', () =>
      withClients([elected!], ([c]) => c.set('after-failover', 'kept')).then(
        () => true,
        () => false,
      ),
    )
    const before = await fleet.dump()
    for (const flags of [[], ['--force'], ['--force', '--overrule-sentinel']]) {
      const run = await cli(['shards:promote', 's000', ...flags, '--yes', ...fleet.r()])
      expect(run.exitCode, `${flags.join(' ')}: ${run.stderr}`).to.equal(3)
      expect(run.stderr).to.include(`${at(elected!)}, named as a replica of ${at(master)} in the registry, answers as a master`)
      expect(run.stderr).to.include(`run sentinel:follow (it moves the registry to ${at(elected!)})`)
      expect(run.stderr).to.not.include('use --force')
    }
    expect(await fleet.dump()).to.deep.equal(before)
    expect(await roleOfPort(elected!.port)).to.equal('master')
    expect(await withClients([elected!], ([c]) => c.get('after-failover'))).to.equal('kept')
  })

  it('a split of a monitored source: the source handed back, the target registered, Sentinel never elects the target', async () => {
    const {master} = await monitored(1)
    const target = await startReplicated(1)
    servers.push(target.master, ...target.replicas)
    const split = await cli([
      'shards:split',
      at(master),
      '--to',
      at(target.master),
      '--to-replica',
      at(target.replicas[0]),
      '--shards',
      's002,s003',
      '--grace',
      '200ms',
      '--yes',
      ...fleet.r(),
      '--json',
    ])
    expect(split.exitCode, split.stderr).to.equal(0)
    expect(await record('shards-s000')).to.deep.equal({master: at(master), epoch: 0})
    expect(await record('shards-s002')).to.deep.equal({master: at(target.master), epoch: 0})
    await sentinels.settled('shards-s002', 1)
    for (const view of await sentinelViews(sentinels, 'shards-s002')) expect(view.port).to.equal(target.master.port)
    for (const view of await sentinelViews(sentinels, 'shards-s000')) expect(view.port).to.equal(master.port)
    // replica-priority comes back on the target once it no longer follows the source.
    expect(await withClients([target.master], ([c]) => c.config('GET', 'replica-priority'))).to.deep.equal(['replica-priority', '100'])
  })

  it('an uncoordinated failover by Sentinel in the middle of a split: nothing acknowledged lost, the registry ends on the master Sentinel chose', async () => {
    const {master, replicas} = await monitored(2)
    const target = await startServer()
    servers.push(target)
    const follower = await startCli(['sentinel:follow', ...fleet.r(), '--json', '--interval', '300ms', '--timeout', '1s'])
    followers.push(follower)
    const shards = ['s000', 's001', 's002', 's003']
    const writer = new ContinuousWriter(fleet.reg, shards, {confirm: 'all'})
    writer.start()
    await writer.waitFor(200)
    // The split has copied the source onto the target and stops there; Sentinel fails the source over meanwhile.
    const split = await stoppedAt(
      ['shards:split', at(master), '--to', at(target), '--shards', 's002,s003', '--yes', ...fleet.r()],
      'copy:after:stop',
    )
    expect(await withClients([target], ([c]) => c.config('GET', 'replica-priority'))).to.deep.equal(['replica-priority', '0'])
    killHard(master)
    let chosen: TestServer | undefined
    await until('the follower moved every shard to the replica Sentinel chose', async () => {
      const masters = await Promise.all(shards.map((id) => fleet.reg.hget(`shards.${id}`, 'master')))
      chosen = replicas.find((r) => masters.every((m) => m?.startsWith(`${at(r)}/`)))
      return chosen !== undefined
    })
    resume(split)
    const outcome = await split.done
    // The split finds the registry changed underneath at its switch, and rolls back.
    expect(outcome.exitCode).to.equal(1)
    expect(outcome.stderr).to.match(/registry changed underneath/)
    expect(await fleet.reg.get('shards._journal')).to.equal(null)
    await writer.resumesThenStop()
    expect(await missingWrites(fleet.reg, writer), 'confirmed writes missing where the registry routes').to.deep.equal([])
    for (const view of await sentinelViews(sentinels, 'shards-s000')) expect(view.port).to.equal(chosen!.port)
  })

  it('no failover fights a running cut-over: the source is out of every Sentinel from the fence on; the run that recovers a killed split hands it back, and the target its replica-priority', async () => {
    const {master} = await monitored(1)
    const target = await startServer()
    servers.push(target)
    const follower = await startCli(['sentinel:follow', ...fleet.r(), '--json', '--interval', '300ms', '--timeout', '1s'])
    followers.push(follower)
    const split = await stoppedAt(
      ['shards:split', at(master), '--to', at(target), '--shards', 's002,s003', '--yes', ...fleet.r()],
      'fence:after:stop',
    )
    // Frozen in the middle of its cut-over: no Sentinel can fail the source over, the follower leaves it alone.
    for (const s of sentinels.sentinels) {
      const c = s.client()
      try {
        expect(await c.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', 'shards-s000'), s.address).to.equal(null)
      } finally {
        c.disconnect()
      }
    }
    // Released by the operator (user@host, as every event names them), for the split.
    const operator = `${userInfo().username}@${hostname()}`
    expect((await record('shards-s000'))!.released).to.include({by: operator, for: 'split'})
    const [released] = (await fleet.reg.lrange('shards._history', 0, -1))
      .map((e) => JSON.parse(e))
      .filter((e) => e.type === 'sentinel.released')
    expect(released).to.include({by: operator, for: 'split', group: 'shards-s000'})
    await until('the follower leaves the released group alone', () => follower.stdout().includes('"type":"released"'))
    expect(follower.stdout()).to.include(`released by ${operator} for a split since`)
    expect(await withClients([target], ([c]) => c.config('GET', 'replica-priority'))).to.deep.equal(['replica-priority', '0'])
    process.kill(split.pid, 'SIGKILL')
    await split.done
    const check = await cli(['shards:check', ...fleet.r(), '--json'])
    expect(check.exitCode).to.equal(3)
    expect(check.stdout).to.include(`released from Sentinel by ${operator} for a split at`)

    const recover = await cli(['shards:split', '--recover', ...fleet.r(), '--json'])
    expect(recover.exitCode, recover.stderr).to.equal(0)
    // The replica-priority the killed run took from the target, recorded in its journal, is put back by the recovery.
    expect(await withClients([target], ([c]) => c.config('GET', 'replica-priority'))).to.deep.equal(['replica-priority', '100'])
    expect(await fleet.reg.get('shards._journal')).to.equal(null)
    expect(await record('shards-s000')).to.deep.equal({master: at(master), epoch: 0})
    await sentinels.settled('shards-s000', 1)
    for (const view of await sentinelViews(sentinels, 'shards-s000')) expect(view.port).to.equal(master.port)
  })

  /** The master port each Sentinel names for `name` (null: it does not monitor it). */
  const monitoredAt = async (name: string) =>
    Promise.all(
      sentinels.sentinels.map(async (s) => {
        const c = s.client()
        try {
          const addr = (await c.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', name)) as string[] | null
          return addr === null ? null : Number(addr[1])
        } finally {
          c.disconnect()
        }
      }),
    )

  /** A promote of `master` killed at a failpoint: the journal it leaves, and the group's record then. */
  const killedPromote = async (master: TestServer, point: string) => {
    const killed = await spawnCli(['shards:promote', at(master), '--yes', ...fleet.r()], {env: {SHARDCTL_FAILPOINT: `${point}:kill`}})
    expect(killed.exitCode, killed.stderr).to.not.equal(0)
    const journal = await readJournal(fleet.reg)
    expect(journal, killed.stderr).to.not.equal(null)
    return journal!
  }

  it('a promote killed right after it released its group: the journal says so, and the rerun hands the group back to every Sentinel', async () => {
    const {master} = await monitored(1)
    const journal = await killedPromote(master, 'sentinel-release:after')
    // The journal opened first and records the release, with the group to hand back.
    expect(journal.steps.map((s) => `${s.name}:${s.state}`)).to.deep.equal(['sentinel-release:started', 'sentinel-release:done'])
    expect(await monitoredAt('shards-s000')).to.deep.equal([null, null, null])
    expect(await record('shards-s000')).to.have.property('released')

    const again = await spawnCli(['shards:promote', at(master), '--yes', '--json', ...fleet.r()])
    expect(again.exitCode, again.stderr).to.equal(0)
    expect(JSON.parse(again.stdout).recovered).to.equal('rolled-back')
    expect(await fleet.reg.get('shards._journal')).to.equal(null)
    expect(await record('shards-s000')).to.deep.equal({master: at(master), epoch: 0})
    expect(await monitoredAt('shards-s000')).to.deep.equal([master.port, master.port, master.port])
    await sentinels.settled('shards-s000', 1)
    const check = await cli(['shards:check', ...fleet.r(), '--json'])
    expect(check.exitCode, check.stdout).to.equal(0)
  })

  it('a promote killed after its registry switch: --recover finishes it and hands the group back under the new master', async () => {
    const {master, replicas} = await monitored(1)
    await killedPromote(master, 'registry:after')
    expect(await monitoredAt('shards-s000')).to.deep.equal([null, null, null])
    const recover = await spawnCli(['shards:promote', '--recover', '--json', ...fleet.r()])
    expect(recover.exitCode, recover.stderr).to.equal(0)
    expect(JSON.parse(recover.stdout).recovered).to.equal('rolled-forward')
    const next = replicas[0]
    expect(await fleet.reg.hget('shards.s000', 'master')).to.equal(`${at(next)}/0`)
    expect(await record('shards-s000')).to.deep.equal({master: at(next), epoch: 0})
    expect(await monitoredAt('shards-s000')).to.deep.equal([next.port, next.port, next.port])
    expect(await roleOfPort(next.port)).to.equal('master')
  })

  it('a promote killed just before the release: the group was never let go, and --recover closes the journal leaving it monitored', async () => {
    const {master} = await monitored(1)
    const before = await record('shards-s000')
    const journal = await killedPromote(master, 'sentinel-release:before')
    expect(journal.steps.map((s) => `${s.name}:${s.state}`)).to.deep.equal(['sentinel-release:started'])
    expect(await monitoredAt('shards-s000')).to.deep.equal([master.port, master.port, master.port])
    const recover = await spawnCli(['shards:promote', '--recover', '--json', ...fleet.r()])
    expect(recover.exitCode, recover.stderr).to.equal(0)
    expect(JSON.parse(recover.stdout).recovered).to.equal('rolled-back')
    expect(await fleet.reg.get('shards._journal')).to.equal(null)
    expect(await record('shards-s000')).to.deep.equal(before)
    expect(await monitoredAt('shards-s000')).to.deep.equal([master.port, master.port, master.port])
  })

  // Last: a Sentinel stopped for more than 2 s enters TILT when it resumes.
  it('a graceful promote that a Sentinel cannot let go of changes nothing, and says which', async () => {
    const {master} = await monitored(1)
    const before = await fleet.dump()
    const stuck = sentinels.sentinels[2]
    stuck.pause()
    try {
      const promote = await cli(['shards:promote', at(master), '--yes', '--timeout', '1s', ...fleet.r()])
      expect(promote.exitCode).to.equal(1)
      expect(promote.stderr).to.include(`Sentinel ${stuck.address} could not release shards-s000`)
      expect(promote.stderr).to.include('nothing was changed')
      const after = await fleet.dump()
      // The history tells of the release and its undoing; nothing else changed.
      delete after['shards._history']
      delete before['shards._history']
      expect(after).to.deep.equal(before)
      for (const view of await sentinelViews({...sentinels, sentinels: sentinels.sentinels.slice(0, 2)}, 'shards-s000'))
        expect(view.port).to.equal(master.port)
    } finally {
      stuck.resume()
    }
  })
})

import {expect} from 'chai'

import {type RunningCli, cli, isStopped, startCli, until} from '../helpers/cli.js'
import {useFleet} from '../helpers/fleet.js'
import {startReplyDelayProxy} from '../helpers/proxy.js'
import {type TestServer, startReplicated} from '../helpers/redis.js'
import {killHard, restart, roleOfPort, useSentinels} from '../helpers/sentinel.js'
import {ContinuousWriter, missingWrites} from '../helpers/writer.js'

/** Masters fenced as shards:check expects (a master cut off from its replicas refuses writes). */
const FENCED = ['--min-replicas-to-write', '1', '--min-replicas-max-lag', '10']
const GROUP = 'shards-s000'
const SHARDS = ['s000', 's001', 's002', 's003']

type Event = {type: string; group?: string; outcome?: string; after?: {sentinel: string; event: string}[]; [k: string]: unknown}

const eventsOf = (run: RunningCli): Event[] =>
  run
    .stdout()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Event)

/**
 * sentinel:follow against real Sentinels: a master killed with kill -9, Sentinel fails
 * over, the follower moves every shard (database numbers kept) on the evidence of a
 * majority; stale Sentinels, a missing majority, several followers and a follower
 * killed midway change the registry once, or not at all.
 */
describe('sentinel:follow @timing-sensitive', () => {
  const fleet = useFleet()
  const sentinels = useSentinels(3)
  let servers: TestServer[] = []
  const followers: RunningCli[] = []

  /** A master with two replicas, four shards on dbs 2-5, registered with the Sentinels. */
  const group = async (): Promise<{master: TestServer; replicas: TestServer[]}> => {
    const {master, replicas} = await startReplicated(2, FENCED)
    servers = [master, ...replicas]
    const at = (s: TestServer) => `127.0.0.1:${s.port}`
    const init = await cli([
      'shards:init',
      ...fleet.r(),
      '--instance',
      at(master),
      '--replica',
      at(replicas[0]),
      '--replica',
      at(replicas[1]),
      '--count',
      '4',
      '--first-db',
      '2',
      '--yes',
    ])
    expect(init.exitCode, init.stderr).to.equal(0)
    const register = await cli(['sentinel:register', ...fleet.r(), ...sentinels.flags(), '--down-after', '1s', '--failover-timeout', '3s'])
    expect(register.exitCode, register.stderr).to.equal(0)
    await sentinels.settled(GROUP, 2)
    return {master, replicas}
  }

  /** A follower, once subscribed to `answering` Sentinels (every one unless some are stopped). */
  const follow = async (
    env: Record<string, string> = {},
    args: string[] = [],
    {answering = 3, timeout = '1s'} = {},
  ): Promise<RunningCli> => {
    const run = await startCli(['sentinel:follow', ...fleet.r(), '--json', '--interval', '300ms', '--timeout', timeout, ...args], {env})
    followers.push(run)
    await until(
      `the follower subscribed to ${answering} Sentinels`,
      () => eventsOf(run).filter((e) => e.type === 'subscribed').length >= answering,
    )
    return run
  }

  /** Once every Sentinel names one new master at one epoch: its port, one of the replicas. */
  async function newMasterAgreed(old: TestServer, replicas: TestServer[]): Promise<number> {
    let to = 0
    await until('every Sentinel names one new master at one epoch', async () => {
      const said = await sentinelsSay()
      to = said[0].port
      return to !== old.port && said.every((v) => v.port === to && v.epoch === said[0].epoch)
    })
    expect(replicas.map((r) => r.port)).to.include(to)
    return to
  }

  /** The master port and config epoch every Sentinel gives for the group (null where it does not answer in time). */
  const sentinelsSay = async (which = sentinels.sentinels) =>
    Promise.all(
      which.map(async (s) => {
        const c = s.client()
        try {
          const [, port] = (await c.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', GROUP)) as string[]
          const fields = (await c.call('SENTINEL', 'MASTER', GROUP)) as string[]
          return {port: Number(port), epoch: Number(fields[fields.indexOf('config-epoch') + 1])}
        } finally {
          c.disconnect()
        }
      }),
    )

  /** The registry truthful after a failover to `to`: every shard there keeping its database, the other replica named, the epoch recorded. */
  const truthful = async (to: number, replicas: TestServer[]) => {
    const other = replicas.find((r) => r.port !== to)!
    for (const [i, id] of SHARDS.entries()) {
      const fields = await fleet.reg.hgetall(`shards.${id}`)
      expect(fields, id).to.deep.include({master: `127.0.0.1:${to}/${i + 2}`, slave0: `127.0.0.1:${other.port}/${i + 2}`})
    }
    const [{epoch}] = await sentinelsSay(sentinels.sentinels.slice(0, 1))
    expect(JSON.parse((await fleet.reg.hget('shards._sentinel', `group:${GROUP}`))!)).to.deep.include({master: `127.0.0.1:${to}`, epoch})
  }

  const failovers = async () => (await fleet.reg.lrange('shards._history', 0, -1)).filter((e) => JSON.parse(e).type === 'sentinel.failover')
  const masterOf = (id: string) => fleet.reg.hget(`shards.${id}`, 'master')

  afterEach(async () => {
    for (const s of sentinels.sentinels) if (s.paused) s.resume()
    for (const run of followers.splice(0)) {
      try {
        process.kill(run.pid, 'SIGKILL')
      } catch {
        // ended already
      }
    }
    await sentinels.forget(GROUP)
    await Promise.all(servers.map((s) => s.stop()))
    servers = []
  })

  it('kill -9 of a master: Sentinel fails over, every shard moves keeping its database, the writer goes on, the old master rejoins and check is clean', async () => {
    const {master, replicas} = await group()
    const follower = await follow()
    const writer = new ContinuousWriter(fleet.reg, SHARDS)
    // Beside it, writes acknowledged only once every replica has them: none of those may be lost.
    const confirmed = new ContinuousWriter(fleet.reg, SHARDS, {confirm: 'all', tag: 'c'})
    writer.start()
    confirmed.start()
    await writer.waitFor(400)
    await confirmed.waitFor(100)
    const ackedBeforeKill = new Map([...writer.acked].map(([shard, keys]) => [shard, keys.length]))
    killHard(master)

    await until('the registry routes to a new master', async () => (await masterOf('s000')) !== `127.0.0.1:${master.port}/2`)
    const to = Number(/:(\d+)\/\d+$/.exec((await masterOf('s000'))!)![1])
    expect(replicas.map((r) => r.port)).to.include(to)
    const other = replicas.find((r) => r.port !== to)!
    expect(await roleOfPort(to)).to.equal('master')
    for (const [i, id] of SHARDS.entries()) {
      const fields = await fleet.reg.hgetall(`shards.${id}`)
      expect(fields, id).to.deep.equal({master: `127.0.0.1:${to}/${i + 2}`, slave0: `127.0.0.1:${other.port}/${i + 2}`})
    }
    const [event] = (await failovers()).map((e) => JSON.parse(e) as Record<string, unknown>)
    expect(event).to.include({
      group: GROUP,
      from: `127.0.0.1:${master.port}`,
      to: `127.0.0.1:${to}`,
      removedMaster: `127.0.0.1:${master.port}`,
    })
    // The registry's change is visible before the follower's line about it reaches this process.
    await until('the follower said it followed the failover', () => eventsOf(follower).some((e) => e.type === 'failover-followed'))

    // The writer goes on where the registry routes; nothing acknowledged after the kill is missing.
    await writer.resumesThenStop()
    const missing = await missingWrites(fleet.reg, writer)
    const lostAfterKill = missing.filter((key) => {
      const [, shard, seq] = /^w:(.+):(\d+)$/.exec(key)!
      return Number(seq) >= ackedBeforeKill.get(shard)!
    })
    expect(lostAfterKill, 'writes acknowledged after the kill and missing').to.deep.equal([])
    await confirmed.resumesThenStop()
    expect(await missingWrites(fleet.reg, confirmed), 'writes every replica confirmed, missing').to.deep.equal([])

    // The old master comes back empty; Sentinel turns it into a replica; the follower names it again.
    await restart(master, FENCED)
    await until(
      'the old master is named a replica again',
      async () => (await fleet.reg.hget('shards.s000', 'slave1')) === `127.0.0.1:${master.port}/2`,
    )
    await until('the follower said the old master rejoined', () => eventsOf(follower).some((e) => e.type === 'replica-rejoined'))
    await until('shards:check is clean again', async () => (await cli(['shards:check', ...fleet.r(), '--json'])).exitCode === 0)
  })

  it('two followers at once change the registry once', async () => {
    const {master} = await group()
    const [a, b] = [await follow(), await follow()]
    killHard(master)
    await until('both followers looked after the failover', () =>
      [a, b].every((f) => eventsOf(f).some((e) => e.type === 'looked' && ['moved', 'in-sync'].includes(e.outcome!))),
    )
    await until('the registry moved', async () => (await failovers()).length >= 1)
    const moved = [a, b].map((f) => eventsOf(f).filter((e) => e.type === 'failover-followed').length)
    expect(moved.reduce((x, y) => x + y, 0)).to.equal(1)
    expect(await failovers()).to.have.length(1)
  })

  it('human output: each event on one line, its type said once', async () => {
    await group()
    const human = await startCli(['sentinel:follow', ...fleet.r(), '--interval', '300ms', '--timeout', '1s'])
    followers.push(human)
    await until('the follower subscribed to every Sentinel', () => (human.stdout().match(/ subscribed /g) ?? []).length === 3)
    expect(human.stdout()).to.not.match(/subscribed subscribed/)
    for (const s of sentinels.sentinels) expect(human.stdout()).to.match(new RegExp(`\\d subscribed \\{"sentinel":"${s.address}"\\}$`, 'm'))
    process.kill(human.pid, 'SIGTERM')
    expect((await human.done).exitCode).to.equal(0)
  })

  it('a follower killed in the middle of its change, and started again once the failover is over: it reconciles on start, the registry ends truthful', async () => {
    const {master, replicas} = await group()
    const first = await follow({SHARDCTL_FAILPOINT: 'sentinel-switch:before:stop'})
    killHard(master)
    await until('the follower stopped right before its change', () => isStopped(first.pid))
    process.kill(first.pid, 'SIGKILL')
    expect(await failovers()).to.have.length(0)
    // The failover ends while no follower runs: every Sentinel names the new master, at one epoch.
    const to = await newMasterAgreed(master, replicas)
    const second = await follow()
    await until('the registry moved', async () => (await failovers()).length === 1)
    await truthful(to, replicas)
    expect(eventsOf(second).filter((e) => e.type === 'failover-followed')).to.have.length(1)
    expect(await failovers()).to.have.length(1)
  })

  it('a Sentinel monitoring an instance the registry does not know under a group name: not newer, nothing changes', async () => {
    await group()
    const stranger = await startReplicated(0)
    servers.push(stranger.master)
    // Someone re-monitors the group's name by hand at an instance the registry does not know.
    await sentinels.forget(GROUP)
    await sentinels.monitor(GROUP, stranger.master)
    const before = await fleet.dump()
    const follower = await follow()
    await until('the follower said why it does nothing', () =>
      eventsOf(follower).some((e) => e.type === 'ignored' && /not newer/.test(String(e.reason))),
    )
    expect(await fleet.dump()).to.deep.equal(before)
    const check = await cli(['shards:check', ...fleet.r(), '--json'])
    expect(check.exitCode).to.equal(3)
    expect(check.stdout).to.include(`says the master is 127.0.0.1:${stranger.master.port} (epoch 0), the registry routes to`)
  })

  it('the registry unreachable during the failover: the follower says so, and moves it once it answers again', async () => {
    const {master} = await group()
    const follower = await follow()
    const registryPid = fleet.registry.pid
    process.kill(registryPid, 'SIGSTOP')
    try {
      killHard(master)
      await until('every Sentinel names a new master', async () => {
        for (const s of sentinels.sentinels) {
          const c = s.client()
          try {
            const [, port] = (await c.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', GROUP)) as string[]
            if (Number(port) === master.port) return false
          } finally {
            c.disconnect()
          }
        }
        return true
      })
      await until('the follower said the registry does not answer', () => eventsOf(follower).some((e) => e.type === 'registry-unreachable'))
    } finally {
      process.kill(registryPid, 'SIGCONT')
    }
    await until('the registry moved', async () => (await failovers()).length === 1).catch((error: Error) => {
      throw new Error(`${error.message}; the follower said: ${follower.stdout().slice(-4000)} ${follower.stderr().slice(-2000)}`)
    })
    expect(await masterOf('s000')).to.not.equal(`127.0.0.1:${master.port}/2`)
    expect(await masterOf('s000')).to.match(/^127\.0\.0\.1:\d+\/2$/)
    // It went on following all along: stopped now, it ends as asked (0), not as a follower that gave up.
    process.kill(follower.pid, 'SIGTERM')
    expect((await follower.done).exitCode).to.equal(0)
    expect(eventsOf(follower).filter((e) => e.type === 'failover-followed')).to.have.length(1)
    expect(eventsOf(follower).map((e) => e.type)).to.include('registry-reachable')
  })

  // Last: a Sentinel stopped for more than 2 s enters TILT when it resumes and acts on nothing for 30 s.
  it('a Sentinel stopped through the failover: the follower acts on the majority without waiting on it; resumed, its stale view and late event change nothing', async () => {
    const {master, replicas} = await group()
    // Allowed to wait ten minutes for any answer: what it asks the stopped Sentinel ends only when that one is resumed,
    // so a registry that moves while it is still stopped was moved without waiting on it.
    const follower = await follow({}, [], {timeout: '10m'})
    const stale = sentinels.sentinels[2]
    stale.pause()
    killHard(master)
    await until('the registry moved once', async () => (await failovers()).length === 1).catch(async (error: Error) => {
      const views = await sentinelsSay(sentinels.sentinels.slice(0, 2)).catch((e: Error) => e.message)
      throw new Error(
        `${error.message}; the two running Sentinels say ${JSON.stringify(views)}; the follower said: ${follower.stdout().slice(-4000)} ${follower.stderr().slice(-2000)}`,
      )
    })
    expect(stale.paused).to.equal(true)
    const [{port: to}] = await sentinelsSay(sentinels.sentinels.slice(0, 2))
    await truthful(to, replicas)
    const after = await fleet.dump()
    stale.resume()
    // Back, it learns the new configuration and publishes its +switch-master late; the follower looks again and finds nothing newer.
    await until('the follower looked again after the late +switch-master', () =>
      eventsOf(follower).some(
        (e) => e.type === 'looked' && e.after!.some((a) => a.sentinel === stale.address && a.event === '+switch-master'),
      ),
    )
    const looked = eventsOf(follower).filter((e) => e.type === 'looked' && e.after!.some((a) => a.sentinel === stale.address))
    expect(looked.map((e) => e.outcome)).to.not.include('moved')
    expect(await failovers()).to.have.length(1)
    expect(await fleet.dump()).to.deep.equal(after)
  })

  it('two of three Sentinels down: no failover, no registry change; the follower exits saying why, and check says why', async () => {
    const {master} = await group()
    const follower = await follow({}, ['--max-no-majority', '3s'])
    const before = await fleet.dump()
    sentinels.sentinels[1].pause()
    sentinels.sentinels[2].pause()
    killHard(master)
    const alone = sentinels.sentinels[0].client()
    try {
      await until('the remaining Sentinel sees the master down (subjectively only)', async () => {
        const flags = ((await alone.call('SENTINEL', 'MASTER', GROUP)) as string[])[9]
        return flags.includes('s_down')
      })
      const outcome = await follower.done
      expect(outcome.exitCode).to.equal(1)
      expect(outcome.stdout).to.match(
        /no majority of the Sentinels has answered for \d+ ms \(bound 3000 ms\): only 1 of 3 Sentinels answer/,
      )
      const flags = ((await alone.call('SENTINEL', 'MASTER', GROUP)) as string[])[9]
      expect(flags, 'no objective agreement, so no failover').to.not.include('o_down')
      expect(await fleet.dump()).to.deep.equal(before)
      const check = await cli(['shards:check', ...fleet.r(), '--json', '--timeout', '1s'])
      expect(check.exitCode).to.equal(3)
      expect(JSON.stringify(check.result ?? check.stdout)).to.match(/only 1 of 3 Sentinels answer/)
    } finally {
      alone.disconnect()
    }
  })

  it("after a failover nobody followed, two of three Sentinels down: one Sentinel's word moves nothing, however often the record lists it; a second one back, the follower acts", async () => {
    const {master, replicas} = await group()
    // A failover the follower does not see: forced on the one Sentinel no test has stopped (a Sentinel resumed from
    // SIGSTOP stays in TILT, acting on nothing, for 30 s), learnt by the other two.
    const [alone, second, third] = sentinels.sentinels
    const c = alone.client()
    try {
      await c.call('SENTINEL', 'FAILOVER', GROUP)
    } finally {
      c.disconnect()
    }
    const to = await newMasterAgreed(master, replicas)
    // The record (as an older version wrote it) names that Sentinel four times: twice alike, once as localhost,
    // once at another address that reaches it (a proxy). One Sentinel is still one vote.
    const alias = await startReplyDelayProxy(alone.port)
    try {
      const listed = [alone.address, alone.address, `localhost:${alone.port}`, `127.0.0.1:${alias.port}`, second.address, third.address]
      await fleet.reg.hset('shards._sentinel', 'sentinels', JSON.stringify(listed))
      const before = await fleet.dump()
      second.pause()
      third.pause()
      const follower = await follow({}, ['--max-no-majority', '10m'], {answering: 2})
      await until('the follower said why it waits', () =>
        eventsOf(follower).some((e) => e.type === 'waiting' && /only 1 of 3 Sentinels answer/.test(String(e.reason))),
      )
      const waiting = eventsOf(follower).find((e) => e.type === 'waiting' && /only 1 of 3/.test(String(e.reason)))!
      expect(String(waiting.reason)).to.include(`${alone.address} says 127.0.0.1:${to}`)
      expect(await fleet.dump()).to.deep.equal(before)
      expect(await failovers()).to.have.length(0)
      second.resume()
      await until('the registry moved', async () => (await failovers()).length === 1)
      await truthful(to, replicas)
      expect(JSON.parse((await failovers())[0])).to.include({sentinels: '2 of 3'})
      expect(eventsOf(follower).filter((e) => e.type === 'failover-followed')).to.have.length(1)
    } finally {
      await alias.close()
    }
  })
})

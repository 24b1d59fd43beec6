import {expect} from 'chai'

import {freePort} from '../../src/sandbox/redis-process.js'
import {cli, secret, spawnCli} from '../helpers/cli.js'
import {useFleet} from '../helpers/fleet.js'
import {startReplyDelayProxy} from '../helpers/proxy.js'
import {type SentinelSet, startSentinels, useSentinels} from '../helpers/sentinel.js'

/** Every master name a Sentinel monitors, with its address and down-after setting. */
async function monitoredBy(set: SentinelSet): Promise<Record<string, string>[]> {
  return Promise.all(
    set.sentinels.map(async (s) => {
      const c = s.client()
      try {
        const masters = (await c.call('SENTINEL', 'MASTERS')) as string[][]
        const out: Record<string, string> = {}
        for (const m of masters) {
          const f: Record<string, string> = {}
          for (let i = 0; i < m.length; i += 2) f[m[i]] = m[i + 1]
          out[f.name] = `${f.ip}:${f.port} down-after ${f['down-after-milliseconds']} quorum ${f.quorum}`
        }
        return out
      } finally {
        c.disconnect()
      }
    }),
  )
}

describe('sentinel:register / sentinel:unregister @timing-sensitive', () => {
  const fleet = useFleet({instances: 2, replicas: 1})
  const sentinels = useSentinels(3)
  const inst = (i: number) => `127.0.0.1:${fleet.instances[i].master.port}`
  const rep = (i: number) => `127.0.0.1:${fleet.instances[i].replicas[0].port}`
  const timings = ['--down-after', '1s', '--failover-timeout', '3s']

  const initBoth = async () => {
    for (const i of [0, 1]) {
      const init = await cli([
        'shards:init',
        ...fleet.r(),
        '--instance',
        inst(i),
        '--replica',
        rep(i),
        '--count',
        '3',
        '--first-db',
        String(3 * i),
        '--yes',
      ])
      expect(init.exitCode, init.stderr).to.equal(0)
    }
  }

  afterEach(async () => {
    for (const name of ['shards-s000', 'shards-s003', 'other', 'shards-s000-2']) await sentinels.forget(name)
  })

  it('monitors each instance that masters shards on every Sentinel, under stable names, and records them in the registry', async () => {
    await initBoth()
    const run = await cli(['sentinel:register', ...fleet.r(), ...sentinels.flags(), ...timings, '--json'])
    expect(run.exitCode, run.stderr).to.equal(0)
    const result = run.result as {
      applied: boolean
      quorum: {group: string; ok: boolean}[]
      plan: {groups: {name: string; master: string; shards: string[]}[]}
    }
    expect(result.applied).to.equal(true)
    expect(result.plan.groups.map((g) => [g.name, g.master, g.shards])).to.deep.equal([
      ['shards-s000', inst(0), ['s000', 's001', 's002']],
      ['shards-s003', inst(1), ['s003', 's004', 's005']],
    ])
    expect(result.quorum.every((q) => q.ok)).to.equal(true)
    for (const seen of await monitoredBy(sentinels)) {
      expect(seen).to.deep.equal({
        'shards-s000': `${inst(0)} down-after 1000 quorum 2`,
        'shards-s003': `${inst(1)} down-after 1000 quorum 2`,
      })
    }
    const record = await fleet.reg.hgetall('shards._sentinel')
    expect(JSON.parse(record.sentinels)).to.deep.equal(sentinels.sentinels.map((s) => s.address))
    expect(JSON.parse(record['group:shards-s000'])).to.deep.equal({master: inst(0), epoch: 0})
    expect(JSON.parse(record.settings)).to.deep.equal({downAfterMs: 1000, failoverTimeoutMs: 3000, parallelSyncs: 1, quorum: 2})

    // Again, with the recorded Sentinels: the same names, nothing new to monitor.
    const again = await cli(['sentinel:register', ...fleet.r(), '--json'])
    expect(again.exitCode, again.stderr).to.equal(0)
    const plan = (again.result as {plan: {groups: {name: string; actions: {action: string}[]}[]}}).plan
    expect(plan.groups.map((g) => g.name)).to.deep.equal(['shards-s000', 'shards-s003'])
    expect(plan.groups.flatMap((g) => g.actions.map((a) => a.action))).to.deep.equal(Array(6).fill('configure'))

    // Unregister turns automatic failover off: never without a confirmation (--yes where no terminal can ask).
    const registered = await fleet.dump()
    const unasked = await spawnCli(['sentinel:unregister', ...fleet.r()])
    expect(unasked.exitCode).to.equal(2)
    expect(unasked.stderr).to.include('--yes')
    expect(await fleet.dump()).to.deep.equal(registered)
    for (const seen of await monitoredBy(sentinels)) expect(Object.keys(seen)).to.have.length(2)
    // Unregister: gone from every Sentinel and from the registry.
    const un = await cli(['sentinel:unregister', ...fleet.r(), '--yes', '--json'])
    expect(un.exitCode, un.stderr).to.equal(0)
    for (const seen of await monitoredBy(sentinels)) expect(seen).to.deep.equal({})
    expect(await fleet.reg.exists('shards._sentinel')).to.equal(0)
  })

  it('is idempotent: registered again, nothing changes but the settings given; unregistered twice, the second has nothing to do', async () => {
    await initBoth()
    const first = await cli(['sentinel:register', ...fleet.r(), ...sentinels.flags(), ...timings, '--json'])
    expect(first.exitCode, first.stderr).to.equal(0)
    const record = await fleet.reg.hgetall('shards._sentinel')
    const seen = await monitoredBy(sentinels)
    const history = async () => (await fleet.reg.lrange('shards._history', 0, -1)).map((e) => JSON.parse(e).type as string)
    expect((await history()).filter((t) => t === 'sentinel.registered')).to.have.length(1)

    // Again with the same flags, and again with none (the recorded Sentinels and settings).
    for (const args of [[...sentinels.flags(), ...timings], []]) {
      const again = await cli(['sentinel:register', ...fleet.r(), ...args, '--json'])
      expect(again.exitCode, again.stderr).to.equal(0)
      expect(await fleet.reg.hgetall('shards._sentinel')).to.deep.equal(record)
      expect(await monitoredBy(sentinels)).to.deep.equal(seen)
    }
    // A new setting given is the only change, on every Sentinel and in the record.
    const slower = await cli(['sentinel:register', ...fleet.r(), '--down-after', '2s', '--json'])
    expect(slower.exitCode, slower.stderr).to.equal(0)
    for (const view of await monitoredBy(sentinels)) {
      expect(view).to.deep.equal({
        'shards-s000': `${inst(0)} down-after 2000 quorum 2`,
        'shards-s003': `${inst(1)} down-after 2000 quorum 2`,
      })
    }
    expect(JSON.parse((await fleet.reg.hget('shards._sentinel', 'settings'))!)).to.include({downAfterMs: 2000})
    expect(await fleet.reg.hget('shards._sentinel', 'group:shards-s000')).to.equal(record['group:shards-s000'])

    const un = await cli(['sentinel:unregister', ...fleet.r(), '--yes', '--json'])
    expect(un.exitCode, un.stderr).to.equal(0)
    expect((un.result as {removed: string[]}).removed).to.deep.equal(['shards-s000', 'shards-s003'])
    expect((await history()).filter((t) => t === 'sentinel.unregistered')).to.have.length(1)
    const dump = await fleet.dump()
    const twice = await cli(['sentinel:unregister', ...fleet.r(), '--yes', '--json'])
    expect(twice.exitCode, twice.stderr).to.equal(0)
    expect(twice.result).to.deep.equal({removed: [], kept: [], applied: false})
    // A group named again once it is gone: nothing to do for it, as for the whole.
    const group = await cli(['sentinel:unregister', ...fleet.r(), '--group', 'shards-s000', '--yes'])
    expect(group.exitCode, group.stderr).to.equal(0)
    expect(group.stderr).to.include('Nothing to do for shards-s000: it was unregistered at')
    expect(await fleet.dump()).to.deep.equal(dump)
    for (const view of await monitoredBy(sentinels)) expect(view).to.deep.equal({})
  })

  it('unregister keeps recorded, and names, a group a Sentinel could not drop; run again, it finishes', async () => {
    await initBoth()
    const register = await cli(['sentinel:register', ...fleet.r(), ...sentinels.flags(), ...timings, '--json'])
    expect(register.exitCode, register.stderr).to.equal(0)
    const nobody = `127.0.0.1:${await freePort()}`
    const partly = await cli(['sentinel:unregister', ...fleet.r(), '--group', 'shards-s000', '--sentinel', nobody, '--yes', '--json'])
    expect(partly.exitCode).to.equal(3)
    expect(JSON.parse(partly.stdout)).to.deep.include({removed: [], kept: [{group: 'shards-s000', sentinels: [nobody]}]})
    expect(await fleet.reg.hexists('shards._sentinel', 'group:shards-s000')).to.equal(1)
    // The Sentinels that answered let go of it; the other group is untouched.
    for (const view of await monitoredBy(sentinels)) expect(Object.keys(view)).to.deep.equal(['shards-s003'])
    const rest = await cli(['sentinel:unregister', ...fleet.r(), '--group', 'shards-s000', '--yes', '--json'])
    expect(rest.exitCode, rest.stderr).to.equal(0)
    expect(await fleet.reg.hexists('shards._sentinel', 'group:shards-s000')).to.equal(0)
    expect(await fleet.reg.hexists('shards._sentinel', 'group:shards-s003')).to.equal(1)
  })

  it('refuses bad input with exit 2, changing nothing: no shard, a quorum above the Sentinels, a bad address, an unknown group, a Sentinel given twice', async () => {
    const empty = await cli(['sentinel:register', ...fleet.r(), ...sentinels.flags()])
    expect(empty.exitCode).to.equal(2)
    expect(empty.stderr).to.include('the registry has no shard to hand to Sentinel')
    await initBoth()
    const before = await fleet.dump()
    const [first] = sentinels.sentinels
    // Another address that reaches the same Sentinel: only its SENTINEL MYID tells.
    const alias = await startReplyDelayProxy(first.port)
    const refusals: [string[], RegExp][] = [
      [[...sentinels.flags(), '--sentinel', first.address], new RegExp(`Sentinel ${first.address} is given twice(?! \\()`)],
      [[...sentinels.flags(), '--sentinel', `localhost:${first.port}`], new RegExp(`given twice \\(also as localhost:${first.port}\\)`)],
      [
        [...sentinels.flags(), '--sentinel', `127.0.0.1:${alias.port}`],
        new RegExp(`Sentinels ${first.address} and 127\\.0\\.0\\.1:${alias.port} are one Sentinel \\(the same SENTINEL MYID`),
      ],
      [[...sentinels.flags(), '--quorum', '4'], /--quorum 4 with 3 Sentinels/],
      [['--sentinel', '127.0.0.1:0'], /port/],
      [['--sentinel', 'u:p@127.0.0.1:26379'], /invalid Sentinel address/],
      [[...sentinels.flags(), '--group', 'nope'], /no replication group nope in the registry/],
      [[], /no Sentinel given, and the registry records none/],
    ]
    try {
      for (const [args, message] of refusals) {
        const run = await cli(['sentinel:register', ...fleet.r(), ...args])
        expect(run.exitCode, args.join(' ')).to.equal(2)
        expect(run.stderr, args.join(' ')).to.match(message)
      }
    } finally {
      await alias.close()
    }
    expect(await fleet.dump()).to.deep.equal(before)
    for (const view of await monitoredBy(sentinels)) expect(view).to.deep.equal({})
    const register = await cli(['sentinel:register', ...fleet.r(), ...sentinels.flags(), ...timings])
    expect(register.exitCode, register.stderr).to.equal(0)
    const registered = await fleet.dump()
    // A recorded Sentinel left out would be forgotten silently: refused.
    const fewer = await cli(['sentinel:register', ...fleet.r(), '--sentinel', sentinels.sentinels[0].address])
    expect(fewer.exitCode).to.equal(2)
    expect(fewer.stderr).to.match(/the registry records Sentinel .* not given here/)
    const unknown = await cli(['sentinel:unregister', ...fleet.r(), '--group', 'nope', '--yes'])
    expect(unknown.exitCode).to.equal(2)
    expect(unknown.stderr).to.include('the registry records no group nope')
    expect(await fleet.dump()).to.deep.equal(registered)
  })

  it('changes nothing with --dry-run', async () => {
    await initBoth()
    const before = await fleet.dump()
    const run = await cli(['sentinel:register', ...fleet.r(), ...sentinels.flags(), '--dry-run'])
    expect(run.exitCode, run.stderr).to.equal(0)
    expect(run.stdout).to.include('shards-s000')
    expect(await fleet.dump()).to.deep.equal(before)
    for (const seen of await monitoredBy(sentinels)) expect(seen).to.deep.equal({})
  })

  it('refuses, naming them, shards on one instance that name different replicas', async () => {
    await initBoth()
    await fleet.reg.hdel('shards.s001', 'slave0')
    const before = await fleet.dump()
    const run = await cli(['sentinel:register', ...fleet.r(), ...sentinels.flags()])
    expect(run.exitCode).to.equal(2)
    expect(run.stderr).to.match(/s000, s002 name 127\.0\.0\.1:\d+; s001 name no replica/)
    expect(await fleet.dump()).to.deep.equal(before)
    for (const seen of await monitoredBy(sentinels)) expect(seen).to.deep.equal({})
  })

  it('refuses a name another master has on a Sentinel, and an instance monitored under another name, changing nothing anywhere', async () => {
    await initBoth()
    const c = sentinels.sentinels[2].client()
    try {
      // A Sentinel that monitors another master (the second instance) under the first group's name.
      await c.call('SENTINEL', 'MONITOR', 'shards-s000', '127.0.0.1', String(fleet.instances[1].master.port), '2')
      const before = await fleet.dump()
      const collision = await cli(['sentinel:register', ...fleet.r(), ...sentinels.flags()])
      expect(collision.exitCode).to.equal(2)
      expect(collision.stderr).to.include(`Sentinel ${sentinels.sentinels[2].address} monitors another master under the name shards-s000`)
      expect(await fleet.dump()).to.deep.equal(before)
      const seen = await monitoredBy(sentinels)
      expect(seen[0]).to.deep.equal({})
      expect(seen[1]).to.deep.equal({})

      await c.call('SENTINEL', 'REMOVE', 'shards-s000')
      await c.call('SENTINEL', 'MONITOR', 'other', '127.0.0.1', String(fleet.instances[0].master.port), '2')
      const twice = await cli(['sentinel:register', ...fleet.r(), ...sentinels.flags()])
      expect(twice.exitCode).to.equal(2)
      expect(twice.stderr).to.include(`already monitors ${inst(0)} under another name, other`)
      expect(await fleet.dump()).to.deep.equal(before)
    } finally {
      c.disconnect()
    }
  })

  it('fails naming an unreachable Sentinel, and changes nothing', async () => {
    await initBoth()
    const before = await fleet.dump()
    const nobody = `127.0.0.1:${await freePort()}`
    const run = await cli(['sentinel:register', ...fleet.r(), ...sentinels.flags(), '--sentinel', nobody])
    expect(run.exitCode).to.equal(1)
    expect(run.stderr).to.include(`cannot reach Sentinel ${nobody}: connection refused`)
    expect(await fleet.dump()).to.deep.equal(before)
    for (const seen of await monitoredBy(sentinels)) expect(seen).to.deep.equal({})
  })

  it('says a Sentinel refused the password, without printing it', async () => {
    const password = secret('s3ntinel-Pa55')
    const guarded = await startSentinels(1, [`requirepass ${password}`])
    try {
      await initBoth()
      const before = await fleet.dump()
      const wrong = secret('not-the-Pa55word')
      const run = await spawnCli(['sentinel:register', ...fleet.r(), ...guarded.flags(), '--json'], {
        env: {SHARDCTL_SENTINEL_PASSWORD: wrong},
      })
      expect(run.exitCode).to.equal(1)
      const error = JSON.parse(run.stdout).error
      expect(error.code).to.equal('EAUTH')
      expect(error.message).to.include(`authentication failed for Sentinel ${guarded.sentinels[0].address}`)
      expect(error.hint).to.include('SHARDCTL_SENTINEL_PASSWORD')
      expect(await fleet.dump()).to.deep.equal(before)
      // The right one works.
      const right = await spawnCli(['sentinel:register', ...fleet.r(), ...guarded.flags(), '--quorum', '1', '--json'], {
        env: {SHARDCTL_SENTINEL_PASSWORD: password},
      })
      expect(right.exitCode, right.stderr).to.equal(0)
      await spawnCli(['sentinel:unregister', ...fleet.r(), '--yes', '--json'], {env: {SHARDCTL_SENTINEL_PASSWORD: password}})
    } finally {
      await guarded.stop()
    }
  })
})

import {expect} from 'chai'

import {cli, spawnCli, ttyCli, until} from '../helpers/cli.js'
import {startServer, useFleet} from '../helpers/fleet.js'

describe('shards:add and shards:remove', () => {
  const fleet = useFleet({instances: 1, replicas: 1})
  const master = (db: number) => fleet.instances[0].master.address(db)
  const replica = (db: number) => fleet.instances[0].replicas[0].address(db)

  it('add writes exactly the schema: the shard hash and its weight, credentials stripped', async () => {
    const {exitCode, stdout} = await cli([
      'shards:add',
      's1',
      '--master',
      `redis://u:secret@${master(1)}`,
      '--replica',
      replica(1),
      '--replica',
      '127.0.0.1:1/1',
      '--persist',
      '127.0.0.1:2/1',
      '--weight',
      '2.5',
      ...fleet.r(),
    ])
    expect(exitCode).to.equal(0)
    expect(stdout).to.match(/Added shard s1/)
    expect(await fleet.reg.hgetall('shards.s1')).to.deep.equal({
      master: master(1),
      slave0: replica(1),
      slave1: '127.0.0.1:1/1',
      persist0: '127.0.0.1:2/1',
    })
    expect(await fleet.reg.zscore('shards.list', 's1')).to.equal('2.5')
  })

  it('add publishes one event and records it in the history', async () => {
    const sub = fleet.registry.client()
    const events: string[] = []
    await sub.subscribe('shards._events')
    sub.on('message', (_c, m) => events.push(m))
    await cli(['shards:add', 's1', '--master', master(1), ...fleet.r()])
    await until('the event arrived', () => events.length > 0)
    sub.disconnect()
    expect(events).to.have.length(1)
    const event = JSON.parse(events[0])
    expect(event).to.include({type: 'shards.added', command: 'shards:add'})
    expect(event.ids).to.deep.equal(['s1'])
    expect(JSON.parse((await fleet.reg.lrange('shards._history', 0, -1))[0])).to.deep.equal(event)
  })

  it('add refuses an existing id, a used database, a duplicate instance; nothing changes', async () => {
    await cli(['shards:add', 's1', '--master', master(1), ...fleet.r()])
    const before = await fleet.dump()
    for (const [args, message] of [
      [['s1', '--master', master(2)], /already exists/],
      [['s2', '--master', master(1)], /already the master of shard s1/],
      [['s2', '--master', master(2), '--replica', master(5)], /named twice/],
    ] as const) {
      const {exitCode, stderr} = await cli(['shards:add', ...args, ...fleet.r()])
      expect(exitCode).to.equal(2)
      expect(stderr).to.match(message)
    }
    expect(await fleet.dump()).to.deep.equal(before)
  })

  it('add refuses one database or one instance named twice, however spelled: case, IPv6 forms, loopback names', async () => {
    const port = fleet.instances[0].master.port
    expect((await cli(['shards:add', 's1', '--master', `127.0.0.1:${port}/0`, ...fleet.r()])).exitCode).to.equal(0)
    expect((await cli(['shards:add', 's2', '--master', `[::1]:${port}/2`, ...fleet.r()])).exitCode).to.equal(0)
    const before = await fleet.dump()
    for (const [args, message] of [
      [['x', '--master', `LOCALHOST:${port}/0`], /is already the master of shard s1/],
      [['x', '--master', `[0:0:0:0:0:0:0:1]:${port}/2`], /is already the master of shard s2/],
      [['x', '--master', `127.0.0.1:${port}/92`, '--replica', `localhost:${port}/92`], /are one instance, named twice for shard x/],
    ] as const) {
      const run = await cli(['shards:add', ...args, ...fleet.r()])
      expect(run.exitCode, args.join(' ')).to.equal(2)
      expect(run.stderr).to.match(message)
    }
    expect(await fleet.dump()).to.deep.equal(before)
  })

  it('add refuses two names of one server, told apart by its run_id where it answers', async () => {
    const twoNames = await startServer(['--bind', '127.0.0.1', '127.0.0.2'])
    try {
      expect((await cli(['shards:add', 'a', '--master', `127.0.0.1:${twoNames.port}/0`, ...fleet.r()])).exitCode).to.equal(0)
      const before = await fleet.dump()
      const same = await cli(['shards:add', 'b', '--master', `127.0.0.2:${twoNames.port}/0`, ...fleet.r()])
      expect(same.exitCode).to.equal(2)
      expect(same.stderr).to.match(/is already the master of shard a/)
      const self = await cli([
        'shards:add',
        'c',
        '--master',
        `127.0.0.1:${twoNames.port}/1`,
        '--replica',
        `127.0.0.2:${twoNames.port}/1`,
        ...fleet.r(),
      ])
      expect(self.exitCode).to.equal(2)
      expect(self.stderr).to.match(/are one instance, named twice for shard c/)
      expect(await fleet.dump()).to.deep.equal(before)
    } finally {
      await twoNames.stop()
    }
  })

  it('add --dry-run changes nothing', async () => {
    const {exitCode, stdout} = await cli(['shards:add', 's1', '--master', master(1), '--dry-run', ...fleet.r()])
    expect(exitCode).to.equal(0)
    expect(stdout).to.match(/Would add/)
    expect(await fleet.dump()).to.deep.equal({})
  })

  describe('remove', () => {
    beforeEach(async () => {
      await cli(['shards:add', 's1', '--master', master(1), ...fleet.r()])
      await cli(['shards:add', 's2', '--master', master(2), ...fleet.r()])
    })

    it('is refused while hashes point at the shard; --drain sets weight 0 instead', async () => {
      await fleet.reg.hset('shards.map', 'h1', 's1')
      const before = await fleet.dump()
      const refused = await cli(['shards:remove', 's1', '--yes', ...fleet.r()])
      expect(refused.exitCode).to.equal(3)
      expect(refused.stderr).to.match(/1 hash still points at shard s1 .*--drain/)
      // Nothing changed but the history, which records the refusal.
      const after = await fleet.dump()
      const [refusal] = await fleet.reg.lrange('shards._history', 0, 0)
      expect(JSON.parse(refusal)).to.include({type: 'shard.remove-refused', id: 's1', hashes: 1})
      delete after['shards._history']
      delete before['shards._history']
      expect(after).to.deep.equal(before)

      const drained = await cli(['shards:remove', 's1', '--drain', ...fleet.r()])
      expect(drained.exitCode).to.equal(0)
      expect(await fleet.reg.zscore('shards.list', 's1')).to.equal('0')
      expect(await fleet.reg.exists('shards.s1')).to.equal(1)
    })

    it('--drain --json reports the hashes the shard keeps serving', async () => {
      await fleet.reg.hset('shards.map', 'h1', 's1', 'h2', 's1', 'h3', 's2')
      const run = await cli(['shards:remove', 's1', '--drain', '--json', ...fleet.r()])
      expect(run.exitCode, run.stderr).to.equal(0)
      expect(JSON.parse(run.stdout)).to.include({id: 's1', action: 'drain', hashes: 2, applied: true})
    })

    it('--drain of a shard drained already changes nothing: no event, no history entry', async () => {
      expect((await cli(['shards:remove', 's1', '--drain', ...fleet.r()])).exitCode).to.equal(0)
      const before = await fleet.dump()
      const subscriber = fleet.registry.client()
      const heard: string[] = []
      subscriber.on('message', (_channel: string, message: string) => heard.push(message))
      await subscriber.subscribe('shards._events')
      try {
        const again = await cli(['shards:remove', 's1', '--drain', ...fleet.r()])
        expect(again.exitCode, again.stderr).to.equal(0)
        expect(again.stdout).to.include('Shard s1 is drained already (weight 0); nothing changed.')
        // An event published after ours proves ours would have arrived first, had there been one.
        await fleet.reg.publish('shards._events', 'marker')
        await until('the marker arrived', () => heard.includes('marker'))
        expect(heard).to.deep.equal(['marker'])
        expect(await fleet.dump()).to.deep.equal(before)
      } finally {
        subscriber.disconnect()
      }
    })

    it('--force removes it anyway, with --yes', async () => {
      await fleet.reg.hset('shards.map', 'h1', 's1')
      const {exitCode} = await cli(['shards:remove', 's1', '--force', '--yes', ...fleet.r()])
      expect(exitCode).to.equal(0)
      expect(await fleet.reg.exists('shards.s1')).to.equal(0)
      expect(await fleet.reg.zscore('shards.list', 's1')).to.equal(null)
    })

    it('non-interactive without --yes: exit 2, nothing removed', async () => {
      const before = await fleet.dump()
      const {exitCode, stderr} = await spawnCli(['shards:remove', 's1', ...fleet.r()])
      expect(exitCode).to.equal(2)
      expect(stderr).to.match(/confirmation needed.*--yes/)
      expect(await fleet.dump()).to.deep.equal(before)
    })

    it('non-interactive with --yes (or SHARDCTL_YES): removed', async () => {
      expect((await spawnCli(['shards:remove', 's1', '--yes', ...fleet.r()])).exitCode).to.equal(0)
      expect((await spawnCli(['shards:remove', 's2', ...fleet.r()], {env: {SHARDCTL_YES: '1'}})).exitCode).to.equal(0)
      expect(await fleet.reg.zcard('shards.list')).to.equal(0)
    })

    it('--json without --yes: a JSON error on stdout, exit 2; with --yes: a JSON result', async () => {
      const refused = await spawnCli(['shards:remove', 's1', '--json', ...fleet.r()])
      expect(refused.exitCode).to.equal(2)
      expect(JSON.parse(refused.stdout).error.code).to.equal('ENOTTY')
      const done = await spawnCli(['shards:remove', 's1', '--json', '--yes', ...fleet.r()])
      expect(done.exitCode).to.equal(0)
      expect(JSON.parse(done.stdout)).to.deep.equal({id: 's1', hashes: 0, action: 'remove', applied: true})
    })

    it('interactive: asks on the terminal; "n" keeps the shard, "y" removes it', async () => {
      const no = await ttyCli(['shards:remove', 's1', ...fleet.r()], 'n\r')
      expect(no.screen).to.match(/Remove shard s1\?/)
      expect(no.exitCode).to.equal(0)
      expect(await fleet.reg.exists('shards.s1')).to.equal(1)
      const yes = await ttyCli(['shards:remove', 's1', ...fleet.r()], 'y\r')
      expect(yes.exitCode).to.equal(0)
      expect(yes.screen).to.match(/Removed shard s1/)
      expect(await fleet.reg.exists('shards.s1')).to.equal(0)
    })

    it('an open question holds no lock; a change while it is open makes the answer void (exit 3)', async () => {
      const other = await ttyCli(['shards:remove', 's2', ...fleet.r()], 'y\r', {}, async () => {
        // Another operator can work while this one decides...
        expect(await fleet.reg.exists('shards._lock')).to.equal(0)
        expect((await cli(['shards:weight', 's1', '5', ...fleet.r()])).exitCode).to.equal(0)
        // ...and what they change decides the plan: a hash now points at s2.
        await fleet.reg.hset('shards.map', 'h2', 's2')
      })
      expect(other.exitCode, other.screen).to.equal(3)
      expect(other.screen).to.match(/changed while the question was open; nothing was changed/)
      expect(await fleet.reg.exists('shards.s2')).to.equal(1)
    })

    it('--dry-run reports and changes nothing', async () => {
      const before = await fleet.dump()
      const {exitCode, stdout} = await cli(['shards:remove', 's1', '--dry-run', ...fleet.r()])
      expect(exitCode).to.equal(0)
      expect(stdout).to.match(/Would remove shard s1/)
      expect(await fleet.dump()).to.deep.equal(before)
    })
  })
})

import {expect} from 'chai'

import {cli, spawnCli} from '../helpers/cli.js'
import {useFleet} from '../helpers/fleet.js'

describe('shards:history', () => {
  const fleet = useFleet()

  it('lists every change, newest first, with who, command and details', async () => {
    await cli(['shards:add', 's1', '--master', '127.0.0.1:1/0', ...fleet.r()])
    await cli(['shards:weight', 's1', '3', ...fleet.r()])
    await cli(['shards:remove', 's1', '--yes', ...fleet.r()])
    const run = await cli(['shards:history', '--json', ...fleet.r()])
    expect(run.exitCode).to.equal(0)
    const {events} = JSON.parse(run.stdout)
    expect(events.map((e: {type: string}) => e.type)).to.deep.equal(['shard.removed', 'weights.changed', 'shards.added'])
    expect(events[1]).to.include({command: 'shards:weight'})
    expect(events[1].weights).to.deep.equal({s1: 3})
    expect(events[1].by).to.match(/^.+@.+$/)
    const limited = JSON.parse((await cli(['shards:history', '--limit', '1', '--json', ...fleet.r()])).stdout)
    expect(limited.events).to.have.length(1)
    const table = await cli(['shards:history', ...fleet.r()])
    expect(table.stdout).to.match(/weights\.changed\s+weights=\{"s1":3\}/)
  })

  it('in a pipe, details are never cut', async () => {
    const ids = Array.from({length: 30}, (_, i) => `shard-number-${i}`)
    for (const id of ids) await fleet.reg.zadd('shards.list', 1, id)
    await fleet.reg.lpush(
      'shards._history',
      JSON.stringify({v: 1, type: 'shards.added', at: '2026-12-01T00:00:00.000Z', by: 'ops@host', command: 'shards:init', ids}),
    )
    const piped = await spawnCli(['shards:history', ...fleet.r()])
    expect(piped.stdout).to.include('shard-number-29')
    expect(piped.stdout).not.to.include('…')
  })

  const history = async () => JSON.parse((await cli(['shards:history', '--json', ...fleet.r()])).stdout).events

  it('records assigns: one entry per run with its count and shards, --force with the hashes it moved', async () => {
    await cli(['shards:add', 'a1', '--master', '127.0.0.1:1/0', ...fleet.r()])
    await cli(['shards:add', 'a2', '--master', '127.0.0.1:1/1', ...fleet.r()])
    // A bulk assign of three batches: one entry, not one per hash or per batch.
    const hashes = Array.from({length: 2500}, (_, i) => `h${i}`)
    const bulk = await spawnCli(['shards:assign', '--stdin', '--quiet', ...fleet.r()], {input: `${hashes.join('\n')}\n`})
    expect(bulk.exitCode, bulk.stderr).to.equal(0)
    let [entry] = await history()
    expect(entry).to.include({type: 'hashes.assigned', command: 'shards:assign', assigned: 2500})
    expect(entry.perShard.a1 + entry.perShard.a2).to.equal(2500)
    // --shard --force re-routes hashes that had a shard: recorded with how many moved.
    const onA1 = (await fleet.reg.hgetall('shards.map')).h0 === 'a1' ? 'a2' : 'a1'
    const was = (await fleet.reg.hgetall('shards.map')).h0
    const forced = await cli(['shards:assign', 'h0', 'new1', '--shard', onA1, '--force', '--yes', ...fleet.r()])
    expect(forced.exitCode, forced.stderr).to.equal(0)
    const events = await history()
    expect(events).to.have.length(4)
    ;[entry] = events
    expect(entry).to.include({type: 'hashes.assigned', shard: onA1, force: true, assigned: 2, moved: 1})
    expect(entry.perShard).to.deep.equal({[onA1]: 2})
    // …and where they came from: their keys are still there.
    expect(entry.movedFrom).to.deep.equal({[was]: 1})
    // Nothing new assigned: nothing to record.
    await cli(['shards:assign', 'h0', ...fleet.r()])
    expect(await history()).to.have.length(4)
  })

  it('records a refused remove, and shows "-" for a field an entry lacks', async () => {
    await cli(['shards:add', 'r1', '--master', '127.0.0.1:1/0', ...fleet.r()])
    await cli(['shards:assign', 'x1', 'x2', '--shard', 'r1', ...fleet.r()])
    const refused = await cli(['shards:remove', 'r1', '--yes', ...fleet.r()])
    expect(refused.exitCode).to.equal(3)
    const [entry] = await history()
    expect(entry).to.include({type: 'shard.remove-refused', id: 'r1', hashes: 2, command: 'shards:remove'})
    await fleet.reg.lpush('shards._history', JSON.stringify({v: 1, type: 'by.hand', note: 'x'}))
    const table = await spawnCli(['shards:history', ...fleet.r()])
    expect(table.stdout).to.match(/by\.hand\s+note=x/)
    expect(table.stdout).not.to.include('undefined')
  })

  it('an empty history, a wrong key type, and a bad --limit', async () => {
    expect((await cli(['shards:history', ...fleet.r()])).stderr).to.match(/No history yet/)
    expect((await spawnCli(['shards:history', '--limit', '0', ...fleet.r()])).exitCode).to.equal(2)
    await fleet.reg.set('shards._history', 'x')
    const run = await spawnCli(['shards:history', ...fleet.r()])
    expect(run.exitCode).to.equal(1)
    expect(run.stderr).to.match(/shards\._history has the wrong type/)
  })
})

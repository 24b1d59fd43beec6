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

  it('an empty history, a wrong key type, and a bad --limit', async () => {
    expect((await cli(['shards:history', ...fleet.r()])).stderr).to.match(/No history yet/)
    expect((await spawnCli(['shards:history', '--limit', '0', ...fleet.r()])).exitCode).to.equal(2)
    await fleet.reg.set('shards._history', 'x')
    const run = await spawnCli(['shards:history', ...fleet.r()])
    expect(run.exitCode).to.equal(1)
    expect(run.stderr).to.match(/shards\._history has the wrong type/)
  })
})

import {hostname} from 'node:os'

import {expect} from 'chai'

import {connect, close, type ScriptedRedis} from '../../src/fleet/connect.js'
import {OperatorLock} from '../../src/ops/lock.js'
import {Registry, currentActor} from '../../src/registry/registry.js'
import {registryKeys} from '../../src/registry/schema.js'
import {cli, spawnCli, until} from '../helpers/cli.js'
import {useFleet} from '../helpers/fleet.js'
import {startServer} from '../helpers/redis.js'

/** A lease a test sets for another holder: it outlives the test, however slowly its commands start. */
const LONG_LEASE_MS = 600_000

describe('the operator lock', () => {
  const fleet = useFleet({instances: 1})
  const holder = (extra: Record<string, unknown> = {}) =>
    JSON.stringify({
      token: 't1',
      holder: 'alice@ops-1',
      host: 'ops-1',
      pid: 4242,
      command: 'shards:split',
      since: new Date(Date.now() - 90_000).toISOString(),
      ...extra,
    })

  it('a second operator fails at once with exit 4, naming holder and age; nothing changes', async () => {
    const since = Date.now() - 90_000
    await fleet.reg.set('shards._lock', holder({since: new Date(since).toISOString()}), 'PX', LONG_LEASE_MS)
    const before = await fleet.dump()
    for (const args of [
      ['shards:add', 's1', '--master', '127.0.0.1:1/0'],
      ['shards:weight', 's1', '2'],
      ['shards:remove', 's1', '--yes'],
      ['shards:init', '--yes', '--instance', '127.0.0.1:1', '--count', '1'],
      ['shards:promote', '127.0.0.1:1', '--yes'],
    ]) {
      const run = await spawnCli([...args, ...fleet.r()])
      expect(run.exitCode, args.join(' ')).to.equal(4)
      const age = /another operator holds the lock: alice@ops-1 \(shards:split, pid 4242\) since \S+ \((\d+) ?s ago\)/.exec(run.stderr)
      expect(age, run.stderr).to.not.equal(null)
      // The lock's age by the clock, whatever time the commands before this one took.
      expect(Number(age![1])).to.be.within(90, Math.ceil((Date.now() - since) / 1000))
      const json = await spawnCli([...args, '--json', ...fleet.r()])
      expect(JSON.parse(json.stdout).error).to.include({code: 'ELOCKED', exitCode: 4})
    }
    expect(await fleet.dump()).to.deep.equal(before)
  })

  it('--dry-run and read-only commands need no lock', async () => {
    await fleet.reg.set('shards._lock', holder(), 'PX', LONG_LEASE_MS)
    expect((await cli(['shards:list', ...fleet.r()])).exitCode).to.equal(0)
    expect((await cli(['shards:add', 's1', '--master', '127.0.0.1:1/0', '--dry-run', ...fleet.r()])).exitCode).to.equal(0)
  })

  it('is released on every exit path: success, refusal, and error', async () => {
    expect((await cli(['shards:add', 's1', '--master', '127.0.0.1:1/0', ...fleet.r()])).exitCode).to.equal(0)
    expect(await fleet.reg.exists('shards._lock')).to.equal(0)
    const exists = await cli(['shards:add', 's1', '--master', '127.0.0.1:1/0', ...fleet.r()])
    expect(exists.exitCode, 'refused: the shard exists').to.equal(2)
    expect(await fleet.reg.exists('shards._lock')).to.equal(0)
    const unconfirmed = await spawnCli(['shards:remove', 's1', ...fleet.r()])
    expect(unconfirmed.exitCode, 'refused: no terminal to confirm').to.equal(2)
    expect(await fleet.reg.exists('shards._lock')).to.equal(0)
    const unknown = await cli(['shards:weight', 'nope', '2', '--yes', ...fleet.r()])
    expect(unknown.exitCode, 'refused: an unknown shard').to.equal(2)
    expect(await fleet.reg.exists('shards._lock')).to.equal(0)
  })

  it('a lease whose holder stopped renewing expires by itself', async () => {
    await fleet.reg.set('shards._lock', holder(), 'PX', 300)
    await until('the lease ran out', async () => (await fleet.reg.exists('shards._lock')) === 0)
    expect((await cli(['shards:add', 's1', '--master', '127.0.0.1:1/0', ...fleet.r()])).exitCode).to.equal(0)
  })

  it('a holder on this host whose process is gone is taken over at once', async () => {
    await fleet.reg.set('shards._lock', holder({host: hostname(), pid: 2 ** 22 + 17}), 'PX', LONG_LEASE_MS)
    expect((await cli(['shards:add', 's1', '--master', '127.0.0.1:1/0', ...fleet.r()])).exitCode).to.equal(0)
  })

  it('shards:unlock breaks a stale lease on purpose, naming the holder, and records it', async () => {
    await fleet.reg.set('shards._lock', holder(), 'PX', LONG_LEASE_MS)
    const dry = await spawnCli(['shards:unlock', '--dry-run', ...fleet.r()])
    expect(dry.stdout).to.match(/held by alice@ops-1 .*dry run/)
    expect(await fleet.reg.exists('shards._lock')).to.equal(1)
    const refused = await spawnCli(['shards:unlock', ...fleet.r()])
    expect(refused.exitCode).to.equal(2)
    expect(refused.stderr).to.match(/Break the lock held by alice@ops-1/)
    const wrong = await spawnCli(['shards:unlock', '--holder', 'bob@ops-2', '--yes', ...fleet.r()])
    expect(wrong.exitCode).to.equal(4)
    expect(await fleet.reg.exists('shards._lock')).to.equal(1)
    const run = await spawnCli(['shards:unlock', '--holder', 'alice@ops-1', '--yes', ...fleet.r()])
    expect(run.exitCode).to.equal(0)
    expect(run.stdout).to.match(/Broke the lock held by alice@ops-1/)
    expect(await fleet.reg.exists('shards._lock')).to.equal(0)
    expect(JSON.parse((await fleet.reg.lrange('shards._history', 0, 0))[0])).to.include({type: 'lock.broken', holder: 'alice@ops-1'})
  })

  it('a long operation keeps its lease while its main thread is busy for longer than the lease', async () => {
    const source = fleet.instances[0].master
    const target = await startServer()
    try {
      expect(
        (await cli(['shards:init', '--yes', '--instance', `127.0.0.1:${source.port}`, '--count', '2', ...fleet.r()])).exitCode,
      ).to.equal(0)
      const run = await spawnCli(
        ['shards:split', `127.0.0.1:${source.port}`, '--to', `127.0.0.1:${target.port}`, '--grace', '100ms', '--yes', ...fleet.r()],
        {
          env: {SHARDCTL_LOCK_LEASE: '1s', SHARDCTL_FAILPOINT: 'copy:after:busy-3000'},
        },
      )
      expect(run.exitCode, run.stderr).to.equal(0)
      const masters = [await fleet.reg.hget('shards.s000', 'master'), await fleet.reg.hget('shards.s001', 'master')]
      expect(masters.filter((m) => m?.startsWith(`127.0.0.1:${target.port}/`))).to.have.length(1)
    } finally {
      await target.stop()
    }
  })

  it('fences every change: once the lease is lost, nothing more is written', async () => {
    let client: ScriptedRedis | undefined
    try {
      client = await connect({host: '127.0.0.1', port: fleet.registry.port, db: 0}, {timeoutMs: 2000})
      const registry = new Registry(client, registryKeys('shards'), currentActor('test'))
      const lock = await OperatorLock.acquire(client, registry.keys.lock, registry.actor)
      registry.fence = {key: lock.key, value: lock.value}
      await fleet.reg.del('shards._lock') // broken by someone else
      try {
        await registry.addShards([{id: 's1', weight: 1, master: {host: 'h', port: 1, db: 0}, replicas: [], persist: [], extra: {}}])
        expect.fail('a change without the lease must be refused')
      } catch (error) {
        expect((error as Error).message).to.match(/operator lock was lost/)
      }
      expect(await fleet.reg.exists('shards.s1')).to.equal(0)
      await lock.release()
    } finally {
      await close(client)
    }
  })
})

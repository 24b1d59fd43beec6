import {expect} from 'chai'
import {type Redis} from 'ioredis'

import {cli, spawnCli, until} from '../helpers/cli.js'
import {readJournal, resume, stoppedAt} from '../helpers/ops.js'
import {type TestServer, startReplicated, withClients} from '../helpers/redis.js'
import {killHard, restart, roleOfPort, sentinelClient, useSentinels} from '../helpers/sentinel.js'
import {ContinuousWriter, missingWrites} from '../helpers/writer.js'

/**
 * The registry itself behind Sentinel (SPEC §4.12): reached by redis+sentinel://, found
 * again at its new address when it fails over, and every journal write and routing
 * change confirmed on one of its replicas before shardctl acts on it.
 */
describe('sentinel: the registry behind Sentinel @timing-sensitive', () => {
  const sentinels = useSentinels(3)
  let registry: {master: TestServer; replicas: TestServer[]}
  /** Every server of the registry, whichever is master now. */
  let registryServers: TestServer[]
  let fleet: {master: TestServer; replicas: TestServer[]}
  const NAME = 'registry'

  const r = () => ['-r', sentinels.url(NAME)]
  /** The registry's master as the Sentinels name it now. */
  const registryMaster = async (): Promise<TestServer> => {
    const c = sentinels.sentinels[0].client()
    try {
      const [, port] = (await c.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', NAME)) as string[]
      return registryServers.find((s) => s.port === Number(port))!
    } finally {
      c.disconnect()
    }
  }
  const onMaster = async <T>(fn: (c: Redis) => Promise<T>): Promise<T> => withClients([await registryMaster()], ([c]) => fn(c))

  /** Kill the registry's master and wait until the Sentinels have promoted another, then bring the old one back. */
  const failOverRegistry = async (): Promise<{from: TestServer; to: TestServer}> => {
    const from = await registryMaster()
    killHard(from)
    let to: TestServer | undefined
    await until('the Sentinels promoted another registry master', async () => {
      const now = await registryMaster()
      if (now.port === from.port || (await roleOfPort(now.port)) !== 'master') return false
      to = now
      return true
    })
    await sentinels.agreeOn(NAME, to!.port)
    return {from, to: to!}
  }

  before(async () => {
    registry = await startReplicated(2)
    registryServers = [registry.master, ...registry.replicas]
    fleet = await startReplicated(1)
    await sentinels.monitor(NAME, registry.master)
    await sentinels.settled(NAME, 2)
  })

  after(async () => {
    await Promise.all([...registryServers, fleet.master, ...fleet.replicas].map((s) => s.stop()))
  })

  beforeEach(async () => {
    await onMaster((c) => c.flushall())
  })

  it('runs every command against a registry reached through Sentinel, each change confirmed on a registry replica', async () => {
    const waitsBefore = await onMaster(async (c) => Number(/cmdstat_wait:calls=(\d+)/.exec(await c.info('commandstats'))?.[1] ?? 0))
    const init = await cli([
      'shards:init',
      ...r(),
      '--instance',
      fleet.master.address().replace(/\/0$/, ''),
      '--replica',
      fleet.replicas[0].address().replace(/\/0$/, ''),
      '--count',
      '4',
      '--yes',
    ])
    expect(init.exitCode, init.stderr).to.equal(0)
    const list = await cli(['shards:list', ...r(), '--json'])
    expect(list.exitCode, list.stderr).to.equal(0)
    expect((list.result as {shards: unknown[]}).shards).to.have.length(4)
    expect(await onMaster((c) => c.hget('shards.s000', 'master'))).to.equal(fleet.master.address(0))
    const waitsAfter = await onMaster(async (c) => Number(/cmdstat_wait:calls=(\d+)/.exec(await c.info('commandstats'))?.[1] ?? 0))
    expect(waitsAfter, 'WAIT after the change').to.be.greaterThan(waitsBefore)
  })

  it('stops before acting when no replica of the registry confirms a change, and says why', async () => {
    const master = await registryMaster()
    const stopped = registryServers.filter((s) => s !== master)
    for (const s of stopped) process.kill(s.pid, 'SIGSTOP')
    try {
      const add = await spawnCli(['shards:add', 'x1', '--master', fleet.master.address(9), ...r(), '--timeout', '1s', '--json'])
      expect(add.exitCode).to.equal(1)
      expect(JSON.parse(add.stdout).error).to.include({code: 'EUNCONFIRMED'})
      expect(JSON.parse(add.stdout).error.message).to.match(/no replica of the registry confirmed/)
    } finally {
      for (const s of stopped) process.kill(s.pid, 'SIGCONT')
    }
  })

  // The split twice: before its cut-over (it may still roll back), and once its targets are promoted (only forward).
  for (const [operation, point] of [
    ['promote', 'registry:after:stop'],
    ['split', 'hold:after:stop'],
    ['split', 'promote:after:stop'],
  ] as const) {
    it(`a ${operation} whose registry master dies midway (${point.replace(/:stop$/, '')}) ends through the new registry master: nothing journaled lost, every acknowledged write where the registry routes`, async () => {
      // A fleet of its own, so that the instances are as new for each operation.
      const {master, replicas} = await startReplicated(1)
      const target = operation === 'split' ? await startReplicated(0) : undefined
      const servers = [master, ...replicas, ...(target ? [target.master] : [])]
      let from: TestServer | undefined
      try {
        const init = await cli([
          'shards:init',
          ...r(),
          '--instance',
          master.address().replace(/\/0$/, ''),
          '--replica',
          replicas[0].address().replace(/\/0$/, ''),
          '--count',
          '4',
          '--yes',
        ])
        expect(init.exitCode, init.stderr).to.equal(0)
        const appRegistry = sentinelClient(sentinels, NAME)
        const writer = new ContinuousWriter(appRegistry, ['s000', 's001', 's002', 's003'])
        writer.start()
        await writer.waitFor(200)

        const args =
          operation === 'promote'
            ? ['shards:promote', master.address().replace(/\/0$/, ''), ...r(), '--yes', '--timeout', '10s']
            : [
                'shards:split',
                master.address().replace(/\/0$/, ''),
                '--to',
                target!.master.address().replace(/\/0$/, ''),
                ...r(),
                '--yes',
                '--grace',
                '300ms',
                '--timeout',
                '10s',
              ]
        const run = await stoppedAt(args, point)
        const journaled = await onMaster((c) => readJournal(c))
        expect(journaled, 'the journal before the registry failover').to.not.equal(null)
        from = (await failOverRegistry()).from
        // What the new registry master holds: every step recorded before the failover.
        const kept = await onMaster((c) => readJournal(c))
        expect(kept?.steps).to.deep.equal(journaled!.steps)
        resume(run)
        let outcome = await run.done
        if (outcome.exitCode !== 0) {
          // Stopped where it was safe: the next run finishes or rolls it back through the new master.
          outcome = await spawnCli([...args.filter((a) => a !== '--yes'), '--yes'])
        }
        expect(outcome.exitCode, outcome.stderr).to.be.oneOf([0, 3])
        expect(await onMaster((c) => c.get('shards._journal'))).to.equal(null)
        if (point === 'promote:after:stop') {
          // Past its point of no return, the split was finished, not rolled back: the target serves the moved shards.
          const masters = await onMaster((c) => Promise.all(['s000', 's001', 's002', 's003'].map((id) => c.hget(`shards.${id}`, 'master'))))
          expect(masters.filter((m) => m?.startsWith(`127.0.0.1:${target!.master.port}/`)).length).to.be.greaterThan(0)
        }
        await writer.resumesThenStop()
        const missing = await onMaster((c) => missingWrites(c, writer))
        expect(missing, 'acknowledged writes missing where the registry routes').to.deep.equal([])
        appRegistry.disconnect()
      } finally {
        await Promise.all(servers.map((s) => s.stop()))
        // The registry keeps three servers for the next test: the old master rejoins as a replica.
        if (from) {
          await restart(from)
          await until('the old registry master rejoined as a replica', async () => (await roleOfPort(from!.port)) === 'slave')
          await sentinels.settled(NAME, 2)
        }
      }
    })
  }
})

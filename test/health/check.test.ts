import {expect} from 'chai'

import type {CheckReport} from '../../src/health/check.js'
import {parseInfo} from '../../src/fleet/info.js'
import {ANSI, cli, spawnCli, until} from '../helpers/cli.js'
import {useFleet} from '../helpers/fleet.js'
import {type TestServer, startServer, useSharedServers, waitForCatchUp, waitForStreaming, withClients} from '../helpers/redis.js'

/** Instances as production should run them: AOF fsynced every second, RDB saves, fenced by one replica. */
const HEALTHY = [
  '--appendonly',
  'yes',
  '--appendfsync',
  'everysec',
  '--save',
  '3600 1',
  '--min-replicas-to-write',
  '1',
  '--min-replicas-max-lag',
  '10',
]

/**
 * A registry, a master with two replicas and three shards on its dbs 0-2, as new for
 * each test: each test breaks one thing and expects exactly that to be reported.
 */
describe('shards:check', () => {
  const fleet = useFleet()
  let master: TestServer
  let replicas: TestServer[]
  let extra: TestServer[] = []
  const inst = (s: TestServer) => `127.0.0.1:${s.port}`

  // Started once, put back as new before each test (a server a test broke is started afresh).
  const shared = useSharedServers([null, 0, 0], HEALTHY)

  beforeEach(async () => {
    ;[master, ...replicas] = await shared.fresh()
    extra = []
    const init = await cli([
      'shards:init',
      '--yes',
      '--instance',
      inst(master),
      ...replicas.flatMap((x) => ['--replica', inst(x)]),
      '--count',
      '3',
      ...fleet.r(),
    ])
    expect(init.exitCode, init.stderr).to.equal(0)
  })
  afterEach(async () => {
    await Promise.all(extra.map((s) => s.stop()))
  })

  async function check(...flags: string[]): Promise<{exitCode: number; report: CheckReport; stderr: string}> {
    const run = await cli(['shards:check', '--json', ...flags, ...fleet.r()])
    return {exitCode: run.exitCode, report: JSON.parse(run.stdout) as CheckReport, stderr: run.stderr}
  }

  /** A master with no replica at all (healthy otherwise), serving shard "solo". */
  async function soloShard(): Promise<TestServer> {
    const lonely = await startServer(
      HEALTHY.filter((a, i, all) => !a.startsWith('--min-replicas') && !all[i - 1]?.startsWith('--min-replicas')),
    )
    extra.push(lonely)
    await fleet.reg.hset('shards.solo', 'master', lonely.address(4))
    await fleet.reg.zadd('shards.list', 1, 'solo')
    return lonely
  }

  /** Every problem of a report, flat. */
  const problems = (report: CheckReport) =>
    [
      ...report.broken,
      ...report.topology,
      ...report.fencing,
      ...(report.canary ?? []),
      ...(report.persistence ?? []),
      ...report.unreplicated,
      ...report.leftovers,
    ].flatMap((r) => r.problems)

  async function canaryKeys(server: TestServer): Promise<string[]> {
    const keys: string[] = []
    for (const db of [0, 1, 2]) {
      const c = server.client(db)
      keys.push(...(await c.keys('shardctl:canary:*')))
      c.disconnect()
    }
    return keys
  }

  /** Deletions replicate asynchronously: wait until no canary key is left on a server. */
  async function expectNoCanaryLeft(servers: TestServer[]): Promise<void> {
    for (const server of servers) await until(`no canary key left on ${server.port}`, async () => (await canaryKeys(server)).length === 0)
  }

  it('a healthy fleet: exit 0, every concern green, and no canary key left behind', async () => {
    const {exitCode, report} = await check('--canary', '--persistence')
    expect(problems(report)).to.deep.equal([])
    expect(exitCode).to.equal(0)
    expect(report).to.include({healthy: true, problems: 0, shards: 3, instances: 3})
    expect(report.topology).to.have.length(1)
    expect(report.topology[0].replicas.map((r) => r.linkUp)).to.deep.equal([true, true])
    expect(report.fencing[0]).to.include({fenced: true, minReplicasToWrite: 1, goodReplicas: 2})
    for (const r of report.canary![0].replicas) {
      expect(r).to.include({seen: 3, expected: 3})
      expect(r.pubsubMs).to.be.a('number')
    }
    expect(report.persistence!.map((p) => p.aof)).to.deep.equal([true, true, true])
    await expectNoCanaryLeft([master, ...replicas])

    const human = await cli(['shards:check', '--canary', '--persistence', ...fleet.r()])
    expect(human.exitCode, human.stderr).to.equal(0)
    for (const title of ['Topology', 'Fencing', 'Canary', 'Persistence']) expect(human.stdout).to.include(title)
    expect(human.stdout).not.to.match(ANSI)
    expect(human.stderr).to.match(/3 shards on 3 instances: healthy/)
  })

  it('a detached replica (REPLICAOF NO ONE) is reported precisely, exit 3', async () => {
    await replicas[0].client().replicaof('NO', 'ONE')
    const {exitCode, report} = await check()
    expect(exitCode).to.equal(3)
    expect(problems(report)).to.include(`replica ${inst(replicas[0])} is a master, not a replica`)
    expect(report.topology[0].replicas[1].problems).to.deep.equal([])
  })

  it('a replica that takes writes of its own (replica-read-only no) is reported, exit 3', async () => {
    await replicas[1].client().config('SET', 'replica-read-only', 'no')
    const {exitCode, report} = await check()
    expect(exitCode).to.equal(3)
    expect(problems(report)).to.include(
      `replica ${inst(replicas[1])} takes writes of its own (replica-read-only no): they reach no master and vanish at its next full sync`,
    )
    expect(report.topology[0].replicas[0].problems).to.deep.equal([])
  })

  it('a killed replica is unreachable, exit 3, within --timeout', async () => {
    await replicas[1].stop()
    const {exitCode, report} = await check('--timeout', '1s')
    expect(exitCode).to.equal(3)
    expect(problems(report).join('\n')).to.match(new RegExp(`replica ${inst(replicas[1])} unreachable`))
  })

  it('a replica following the wrong master', async () => {
    const stranger = await startServer()
    extra.push(stranger)
    await replicas[0].client().replicaof('127.0.0.1', stranger.port)
    const {exitCode, report} = await check()
    expect(exitCode).to.equal(3)
    expect(problems(report)).to.include(`replica ${inst(replicas[0])} follows 127.0.0.1:${stranger.port}, not the master`)
  })

  it('a master down: its shards are named, exit 3, and the canary says it could not run', async () => {
    await master.stop()
    const {exitCode, report} = await check('--canary', '--timeout', '1s')
    expect(exitCode).to.equal(3)
    expect(report.topology[0].shards).to.deep.equal(['s000', 's001', 's002'])
    expect(report.topology[0].problems[0]).to.match(new RegExp(`^master ${inst(master)} unreachable`))
    expect(report.canary![0].problems[0]).to.match(/not run/)
  })

  it('a replica lagging beyond --max-lag (its link up, its stream not applied)', async () => {
    const paused = replicas[0].client()
    await paused.call('CLIENT', 'PAUSE', '20000', 'WRITE')
    try {
      await master.client(1).set('big', 'x'.repeat(20_000))
      // The healthy replica has applied the write: only the paused one lags.
      await waitForCatchUp(replicas[1], master)
      const {exitCode, report} = await check('--max-lag', '1000')
      expect(exitCode).to.equal(3)
      const lagging = report.topology[0].replicas[0]
      expect(lagging.linkUp).to.equal(true)
      expect(lagging.lagBytes).to.be.greaterThan(1000)
      expect(lagging.problems[0]).to.match(/^lags [\d,]+ bytes \(limit 1000\)$/)
      expect(report.topology[0].replicas[1].problems).to.deep.equal([])
    } finally {
      await paused.call('CLIENT', 'UNPAUSE')
    }
  })

  it('the canary finds a replica that stopped applying the stream, and leaves no key behind', async () => {
    const paused = replicas[1].client()
    await paused.call('CLIENT', 'PAUSE', '20000', 'WRITE')
    let report: CheckReport
    try {
      // Long enough for the healthy replica on a busy machine (an AOF fsync can stall
      // an instance for up to 2 s); the paused one never sees the canary anyway.
      ;({report} = await check('--canary', '--timeout', '4s'))
    } finally {
      await paused.call('CLIENT', 'UNPAUSE')
    }
    const [ok, stuck] = report.canary![0].replicas
    expect(ok).to.include({instance: inst(replicas[0]), seen: 3, expected: 3})
    expect(ok.problems).to.deep.equal([])
    expect(stuck).to.include({instance: inst(replicas[1]), seen: 0, expected: 3})
    expect(stuck.problems.join('\n')).to.match(/never saw the canary write of 3 of 3 databases within 4000 ms/)
    expect(report.healthy).to.equal(false)
    await expectNoCanaryLeft([master, ...replicas])
  })

  it('AOF off on a persistence replica', async () => {
    for (const id of ['s000', 's001', 's002']) {
      const fields = await fleet.reg.hgetall(`shards.${id}`)
      await fleet.reg.hdel(`shards.${id}`, 'slave1')
      await fleet.reg.hset(`shards.${id}`, 'persist0', fields.slave1)
    }
    await replicas[1].client().config('SET', 'appendonly', 'no')
    const {exitCode, report} = await check('--persistence')
    expect(exitCode).to.equal(3)
    const row = report.persistence!.find((p) => p.instance === inst(replicas[1]))!
    expect(row).to.include({role: 'persist', aof: false})
    expect(row.problems).to.deep.equal(['append-only file off'])
    // Only the persistence replica is held to persisting; the master only to not wiping.
    expect(report.persistence!.map((p) => p.instance).sort()).to.deep.equal([inst(master), inst(replicas[1])].sort())
    expect(problems(report)).to.have.length(1)
  })

  it('a stale RDB save, and a master that persists nothing', async () => {
    await master.client(0).set('k', 'v')
    // Older than the limit by the server's own clock (the check rounds to whole seconds).
    await until('the last save is over 1 s old', async () => {
      const info = parseInfo(await withClients([master], ([c]) => c.info()))
      return Math.round(Number(info.server_time_usec) / 1e6 - Number(info.rdb_last_save_time)) > 1
    })
    const stale = await check('--persistence', '--max-save-age', '1')
    expect(stale.exitCode).to.equal(3)
    const row = stale.report.persistence!.find((p) => p.instance === inst(master))!
    expect(row.problems.join('\n')).to.match(/^last RDB save \d+ s ago, 1 change since \(limit 1 s\)$/)

    await replicas[0].client().config('SET', 'appendfsync', 'no')
    const unsynced = await check('--persistence', '--max-save-age', '0')
    expect(unsynced.exitCode).to.equal(3)
    expect(problems(unsynced.report)).to.deep.equal(['appendfsync no: writes are not fsynced every second'])

    const c = master.client()
    await c.config('SET', 'appendonly', 'no')
    await c.config('SET', 'save', '')
    const bare = await check('--persistence')
    expect(bare.exitCode).to.equal(3)
    expect(bare.report.persistence!.find((p) => p.instance === inst(master))!.problems[0]).to.match(/^persists nothing/)
  })

  it('a master without fencing is flagged; --fence asks, --dry-run only says, --yes fixes it', async () => {
    const c = master.client()
    await c.config('SET', 'min-replicas-to-write', '0')
    const before = await check()
    expect(before.exitCode).to.equal(3)
    expect(problems(before.report)).to.deep.equal(['keeps accepting writes when cut off from every replica (min-replicas-to-write is 0)'])

    const dry = await check('--fence', '--dry-run')
    expect(dry.exitCode).to.equal(3)
    expect(dry.report.fencing[0].action).to.equal('would fence')
    expect(await c.config('GET', 'min-replicas-to-write')).to.deep.equal(['min-replicas-to-write', '0'])

    const unasked = await spawnCli(['shards:check', '--fence', ...fleet.r()])
    expect(unasked.exitCode).to.equal(2)
    expect(unasked.stderr).to.match(/confirmation needed/)
    expect(await c.config('GET', 'min-replicas-to-write')).to.deep.equal(['min-replicas-to-write', '0'])

    const fixed = await check('--fence', '--yes', '--fence-max-lag', '7')
    expect(fixed.exitCode, fixed.stderr).to.equal(0)
    expect(fixed.report.fencing[0]).to.include({action: 'fenced', minReplicasToWrite: 1, minReplicasMaxLag: 7})
    // Started without a config file, the setting cannot be saved: said, not hidden.
    expect(fixed.report.fencing[0].actionNote).to.match(/^not saved in a config file .*a restart undoes it$/)
    expect(await c.config('GET', 'min-replicas-to-write')).to.deep.equal(['min-replicas-to-write', '1'])
    expect(await c.config('GET', 'min-replicas-max-lag')).to.deep.equal(['min-replicas-max-lag', '7'])
    const history = (await fleet.reg.lrange('shards._history', 0, 0)).map((e) => JSON.parse(e))
    expect(history[0]).to.include({type: 'instances.fenced'})
    expect(history[0].masters).to.deep.equal([inst(master)])
    expect((await check()).exitCode).to.equal(0)
  })

  it('--fence refuses to fence a master whose replicas are not connected (it would stop its writes)', async () => {
    const c = master.client()
    await c.config('SET', 'min-replicas-to-write', '0')
    await Promise.all(replicas.map((r) => r.client().replicaof('NO', 'ONE')))
    const {report} = await check('--fence', '--yes')
    expect(report.fencing[0]).to.include({action: 'not fenced'})
    expect(report.fencing[0].actionNote).to.match(/only 0 replicas connected/)
    expect(await c.config('GET', 'min-replicas-to-write')).to.deep.equal(['min-replicas-to-write', '0'])
  })

  it('an instance replicating a master that the registry does not name', async () => {
    const stranger = await startServer(['--replicaof', '127.0.0.1', String(master.port)])
    extra.push(stranger)
    await waitForStreaming(stranger, master)
    const {exitCode, report} = await check()
    expect(exitCode).to.equal(3)
    expect(problems(report)).to.deep.equal([
      `127.0.0.1:${stranger.port} replicates master ${inst(master)}, but the registry does not name it`,
    ])
  })

  it('a master with no replica is a problem, unless accepted with --allow-no-replica', async () => {
    const lonely = await soloShard()
    const {exitCode, report} = await check()
    expect(exitCode).to.equal(3)
    expect(problems(report)).to.deep.equal([
      `master ${inst(lonely)} has no replica: losing it loses its shards (add replicas, or pass --allow-no-replica)`,
    ])
    // In the table on stdout, on the master's line, not only in a warning.
    const table = await cli(['shards:check', ...fleet.r()])
    const line = table.stdout.split('\n').find((l) => l.includes(inst(lonely)))
    expect(line, table.stdout).to.match(/solo.*none.*has no replica/)
    expect(table.stderr).not.to.include('has no replica')
    const accepted = await check('--allow-no-replica')
    expect(accepted.exitCode).to.equal(0)
    expect(accepted.report.unreplicated).to.deep.equal([{master: inst(lonely), shards: ['solo'], accepted: true, problems: []}])
  })

  it('two shards on one database are reported, naming both', async () => {
    await fleet.reg.hset('shards.twin', 'master', master.address(1), 'slave0', replicas[0].address(1), 'slave1', replicas[1].address(1))
    await fleet.reg.zadd('shards.list', 1, 'twin')
    const {exitCode, report} = await check()
    expect(exitCode).to.equal(3)
    expect(problems(report)).to.deep.equal([
      `is the master database of 2 shards (s001, twin): a database holds one shard; they share and overwrite each other's keys`,
    ])
    expect(report.leftovers[0].subject).to.equal(master.address(1))
  })

  it('a fence an interrupted cut-over left on, and stray writes waiting to be reconciled, are reported', async () => {
    await master.client().config('SET', 'min-replicas-to-write', '1000000')
    await fleet.reg.hset('shards._strays', `${inst(master)}/7`, JSON.stringify({shard: 's001', keys: 3, at: new Date().toISOString()}))
    const {exitCode, report} = await check()
    expect(exitCode).to.equal(3)
    expect(problems(report)).to.have.members([
      "refuses every write: shardctl's write fence is on (min-replicas-to-write 1000000), yet no open operation set it: see shards:history, then lift it by hand (CONFIG SET min-replicas-to-write to its usual value)",
      'holds 3 keys written after shard s001 moved away: run shards:reconcile',
    ])
    await master.client().config('SET', 'min-replicas-to-write', '1')
  })

  it('a former master the registry no longer names, still running as a master that refuses writes, with a registered replica following it', async () => {
    // As after an emergency failover: the old master left the shards, then came back.
    const revived = await startServer(['--min-replicas-to-write', '1', '--min-replicas-max-lag', '10'])
    extra.push(revived)
    await fleet.reg.lpush(
      'shards._history',
      JSON.stringify({
        v: 1,
        type: 'shards.promoted',
        at: new Date().toISOString(),
        by: 't',
        command: 'shards:promote',
        mode: 'emergency',
        from: inst(revived),
        removedMaster: inst(revived),
      }),
    )
    const alone = await check()
    expect(alone.exitCode).to.equal(3)
    expect(alone.report.leftovers.find((r) => r.subject === inst(revived))!.problems).to.deep.equal([
      "is not in the registry but runs as a master (it refuses writes now: NOREPLICAS); no shard routes to it: make it a replica of the shards' master or shut it down",
    ])
    // A registered replica that follows it: said on both sides.
    await replicas[1].client().replicaof('127.0.0.1', revived.port)
    await waitForStreaming(replicas[1], revived)
    const followed = await check()
    expect(followed.report.leftovers.find((r) => r.subject === inst(revived))!.problems[1]).to.equal(
      `still has 1 registered replica following it: 127.0.0.1:${replicas[1].port}`,
    )
    expect(problems(followed.report)).to.include(`replica ${inst(replicas[1])} follows 127.0.0.1:${revived.port}, not the master`)
  })

  it('--shard keeps what was left behind of that shard: its stray writes, a database it shares; not what is not its own', async () => {
    await fleet.reg.hset('shards._strays', `${inst(master)}/7`, JSON.stringify({shard: 's001', keys: 3, at: new Date().toISOString()}))
    const strays = await check('--shard', 's001')
    expect(strays.exitCode).to.equal(3)
    expect(problems(strays.report)).to.deep.equal(['holds 3 keys written after shard s001 moved away: run shards:reconcile'])
    const other = await check('--shard', 's002')
    expect(other.exitCode, "the strays are not s002's").to.equal(0)
    await fleet.reg.del('shards._strays')
    await fleet.reg.hset('shards.twin', 'master', master.address(1), 'slave0', replicas[0].address(1), 'slave1', replicas[1].address(1))
    await fleet.reg.zadd('shards.list', 1, 'twin')
    const shared = await check('--shard', 's001')
    expect(shared.exitCode).to.equal(3)
    expect(problems(shared.report)).to.deep.equal([
      `is the master database of 2 shards (s001, twin): a database holds one shard; they share and overwrite each other's keys`,
    ])
  })

  it('--canary honours --allow-no-replica: a master accepted without replicas is not a canary failure', async () => {
    const lonely = await soloShard()
    const accepted = await check('--canary', '--allow-no-replica')
    expect(accepted.exitCode, JSON.stringify(problems(accepted.report))).to.equal(0)
    expect(accepted.report.canary!.find((r) => r.master === inst(lonely))!.skipped).to.match(/no replica .*accepted/)
    const refused = await check('--canary')
    expect(refused.exitCode).to.equal(3)
  })

  it('an empty registry fails the gate (nothing was checked), unless --allow-empty', async () => {
    const empty = await check('--prefix', 'empty')
    expect(empty.exitCode).to.equal(3)
    expect(empty.report.healthy).to.equal(false)
    expect(empty.report.empty!.problems[0]).to.match(/no shard under this prefix: nothing was checked/)
    const text = await cli(['shards:check', '--prefix', 'empty', ...fleet.r()])
    expect(text.exitCode).to.equal(3)
    expect(text.stderr).to.match(/No shards under "empty" in 127\.0\.0\.1:\d+\/0: nothing was checked/)
    const allowed = await cli(['shards:check', '--prefix', 'empty', '--allow-empty', ...fleet.r()])
    expect(allowed.exitCode).to.equal(0)
  })

  it('--shard narrows the check; an unknown shard is a usage error; a corrupt entry is a problem', async () => {
    const one = await check('--shard', 's001')
    expect(one.exitCode).to.equal(0)
    expect(one.report.topology[0].shards).to.deep.equal(['s001'])

    const unknown = await cli(['shards:check', '--shard', 'nope', ...fleet.r()])
    expect(unknown.exitCode).to.equal(2)
    expect(unknown.stderr).to.match(/unknown shard "nope"/)

    await fleet.reg.hset('shards.s002', 'master', 'not an address')
    const corrupt = await check()
    expect(corrupt.exitCode).to.equal(3)
    expect(corrupt.report.broken.map((b) => b.id)).to.deep.equal(['s002'])
  })
})

import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {expect} from 'chai'
import type {Redis} from 'ioredis'

import {freePort, portIsFree} from '../../src/sandbox/redis-process.js'
import {ANSI_ALL, cli, spawnCli, startCli, ttyCli, until} from '../helpers/cli.js'
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
  untilStepDone,
} from '../helpers/ops.js'
import {startReplyDelayProxy} from '../helpers/proxy.js'
import {type TestServer, startServer, stopServersIn, useSharedServers, waitForStreaming, withClients} from '../helpers/redis.js'
import {type ContinuousWriter, LateHearingWriter, lostWrites, missingWrites, startedWriter, whileHearingLate} from '../helpers/writer.js'

const SHARDS = ['s000', 's001', 's002', 's003', 's004', 's005']

/** Keys per db, from INFO keyspace. */
async function keyspace(server: TestServer): Promise<Record<number, number>> {
  return withClients([server], async ([c]) => {
    const out: Record<number, number> = {}
    for (const line of (await c.info('keyspace')).split('\n')) {
      const m = /^db(\d+):keys=(\d+)/.exec(line)
      if (m) out[Number(m[1])] = Number(m[2])
    }
    return out
  })
}

describe('shards:split', () => {
  let reg: Redis
  let source: TestServer
  let target: TestServer
  const r = () => fleet.r()
  const inst = (s: TestServer) => `127.0.0.1:${s.port}`
  const BOUNDS = ['--timeout', '10s', '--grace', '300ms']

  const fleet = useFleet()
  // Started once, put back as new before each test.
  const shared = useSharedServers([null, null])
  before(() => {
    reg = fleet.reg
  })

  beforeEach(async () => {
    ;[source, target] = await shared.fresh()
    expect((await cli(['shards:init', '--instance', inst(source), '--count', '6', '--yes', ...r()])).exitCode).to.equal(0)
    // db N holds (6 - N) * 100 keys: 600, 500, ... 100.
    for (let db = 0; db < 6; db++) {
      await withClients([source], async ([c]) => {
        await c.select(db)
        await c.mset(Object.fromEntries(Array.from({length: (6 - db) * 100}, (_, i) => [`seed:${i}`, String(db)])))
      })
    }
  })
  /** Each shard's seed data is where the registry says, and nowhere else; no fence, journal or lock is left. */
  async function expectPlaced(moved: string[], servers: TestServer[] = [source, target]): Promise<void> {
    const spaces = new Map(await Promise.all(servers.map(async (s) => [inst(s), await keyspace(s)] as const)))
    for (const id of SHARDS) {
      const master = (await reg.hget(`shards.${id}`, 'master'))!
      const [, where, db] = /^(.+)\/(\d+)$/.exec(master)!
      expect(where, id).to.equal(moved.includes(id) ? inst(target) : inst(source))
      expect(spaces.get(where)![Number(db)], `${id} keys`).to.be.at.least((6 - Number(db)) * 100)
      for (const [other, space] of spaces) if (other !== where) expect(space[Number(db)] ?? 0, `${id} left on ${other}`).to.equal(0)
    }
    expect(await reg.exists('shards._journal', 'shards._lock')).to.equal(0)
    expect(await fencesOf(servers)).to.deep.equal([])
    expect(await takesWrites(source)).to.equal(true)
  }

  const startWriter = (shards = SHARDS) => startedWriter(reg, shards)
  const expectNothingLost = async (writer: ContinuousWriter) => expect(await lostWrites(reg, writer)).to.deep.equal([])

  it('under a continuous writer: every acknowledged write is where the registry says, nothing stays behind', async () => {
    const writer = await startWriter()
    const run = await spawnCli([
      'shards:split',
      inst(source),
      '--to',
      inst(target),
      '--max-pause',
      '5s',
      ...BOUNDS,
      '--yes',
      '--json',
      ...r(),
    ])
    expect(run.exitCode, run.stderr).to.equal(0)
    await expectNothingLost(writer)
    const result = JSON.parse(run.stdout)
    expect(result.applied).to.equal(true)
    expect(result.pauseMs).to.be.a('number')
    expect(result.heldMs).to.be.a('number')
    expect(result.keptOnSource).to.deep.equal([])
    expect(result.strays).to.deep.equal({})
    expect(result.droppedFromSource).to.have.length(3)
    await expectPlaced(result.plan.moves.map((m: {id: string}) => m.id))
  })

  it('in a pipe, each step is one line with its duration, and no bar is drawn', async () => {
    const run = await spawnCli(['shards:split', inst(source), '--to', inst(target), ...BOUNDS, '--yes', ...r()])
    expect(run.exitCode, run.stderr).to.equal(0)
    for (const step of ['copy', 'registry', 'hold', 'fence', 'catch-up', 'promote', 'release', 'grace', 'clean-target']) {
      expect(run.stderr).to.match(new RegExp(`^  ${step}\\s+\\d+(\\.\\d)? (ms|s)$`, 'm'))
    }
    expect(run.stderr).not.to.match(/\r|\u001B\[/)
  })

  it('plans half the shards so that keys end up balanced, says which shards lose replicas, and --dry-run changes nothing', async () => {
    const replica = await startServer()
    try {
      await reg.hset('shards.s001', 'slave0', replica.address(1))
      const run = await spawnCli(['shards:split', inst(source), '--to', inst(target), '--dry-run', '--json', ...r()])
      expect(run.exitCode, run.stderr).to.equal(0)
      const plan = JSON.parse(run.stdout).plan
      expect(plan.moves.map((m: {id: string}) => m.id).sort()).to.deep.equal(['s001', 's002', 's005'])
      expect(plan.fewerReplicas).to.deep.equal([{id: 's001', before: 1, after: 0}])
      const [src, tgt] = plan.balance.map((b: {keys: number}) => b.keys)
      expect(Math.abs(src - tgt)).to.be.lessThan(0.1 * (src + tgt))
      expect(await reg.hget('shards.s001', 'master')).to.equal(source.address(1))
      expect(await keyspace(target)).to.deep.equal({})
      const human = await spawnCli(['shards:split', inst(source), '--to', inst(target), '--dry-run', ...r()])
      expect(human.stderr).to.match(/s001 goes from 1 replica to 0/)
    } finally {
      await replica.stop()
    }
  })

  it('--shards moves exactly those, spread over several targets', async () => {
    const second = await startServer()
    try {
      const run = await spawnCli([
        'shards:split',
        inst(source),
        '--to',
        inst(target),
        '--to',
        inst(second),
        '--shards',
        's000,s003,s004',
        ...BOUNDS,
        '--yes',
        '--json',
        ...r(),
      ])
      expect(run.exitCode, run.stderr).to.equal(0)
      const moves = JSON.parse(run.stdout).plan.moves as {id: string; to: string}[]
      expect(moves.map((m) => m.id).sort()).to.deep.equal(['s000', 's003', 's004'])
      expect(new Set(moves.map((m) => m.to))).to.deep.equal(new Set([inst(target), inst(second)]))
      for (const m of moves) {
        const db = Number(m.id.slice(1))
        expect(await reg.hget(`shards.${m.id}`, 'master')).to.equal(`${m.to}/${db}`)
        const owner = m.to === inst(target) ? target : second
        const other = m.to === inst(target) ? second : target
        expect((await keyspace(owner))[db]).to.equal((6 - db) * 100)
        expect((await keyspace(other))[db]).to.equal(undefined)
        expect((await keyspace(source))[db]).to.equal(undefined)
      }
    } finally {
      await second.stop()
    }
  })

  it('a client that reconnects by itself and hears of the split 1 s late: no acknowledged write ends off its route', async () => {
    const split = ['shards:split', inst(source), '--to', inst(target), '--max-pause', '5s', '--quiet', '500ms', ...BOUNDS]
    const {done, missing, heard} = await whileHearingLate(reg, SHARDS, () => spawnCli([...split, '--yes', '--json', ...r()]))
    expect(done.exitCode, done.stderr + done.stdout).to.equal(0)
    expect(JSON.parse(done.stdout).strays).to.deep.equal({})
    expect(missing).to.deep.equal([])
    expect(heard).to.be.greaterThan(0)
  })

  /** A split whose hold never clears: rolled back, exit 3 naming the clients, routing unchanged, nothing lost. */
  async function expectHeldBack(app: LateHearingWriter, hold: string, quiet: string): Promise<void> {
    const args = ['--hold', hold, '--quiet', quiet, ...BOUNDS, '--yes', '--json', ...r()]
    const run = await spawnCli(['shards:split', inst(source), '--to', inst(target), ...args])
    await app.stop()
    expect(run.exitCode, run.stderr).to.equal(3)
    const {error} = JSON.parse(run.stdout)
    expect(error).to.include({code: 'EHELD'})
    expect(error.message).to.match(/clients kept using the moved databases .*127\.0\.0\.1:\d+.*rolled back/)
    for (const id of SHARDS) expect(await reg.hget(`shards.${id}`, 'master')).to.equal(source.address(Number(id.slice(1))))
    expect(await missingWrites(reg, app)).to.deep.equal([])
    expect(await keyspace(target)).to.deep.equal({})
    expect((await roleOf(target)).role).to.equal('master')
    expect(await reg.exists('shards._journal', 'shards._lock')).to.equal(0)
  }

  it('a client that never reloads its routing keeps the moved databases busy: past --hold the split is rolled back, exit 3, nothing lost', async () => {
    // Hears nothing for a minute: its pool reconnects to the source every time it is cut off,
    // one connection back within milliseconds while the others reconnect. The hold would clear
    // only if every connection stayed away for --quiet: a pause no busy machine gives a process.
    const app = new LateHearingWriter(reg, ['s001', 's002', 's005'], {hearsAfterMs: 60_000, connections: 4})
    await app.start()
    await app.waitFor(100)
    await expectHeldBack(app, '1s', '500ms')
  })

  it('a client that never reloads and writes only every 150 ms is seen by the hold with --quiet 1s: past --hold the split is rolled back, nothing lost', async () => {
    // Back every 150 ms: the hold would clear only if a busy machine held it off for 850 ms more.
    const app = new LateHearingWriter(reg, ['s001'], {hearsAfterMs: 60_000, everyMs: 150})
    await app.start()
    await app.waitFor(2)
    await expectHeldBack(app, '2s', '1s')
  })

  it('a write after the cut-over from a client with stale routing: named, kept, exit 3; shards:reconcile moves it where the registry routes', async () => {
    // Stopped once the cut-over is done, before the grace period: the stale writes land in between.
    const run = await stoppedAt(
      ['shards:split', inst(source), '--to', inst(target), '--shards', 's002', ...BOUNDS, '--yes', '--json', ...r()],
      'grace:before:stop',
    )
    expect(stepDone(await readJournal(reg), 'release')).to.equal(true)
    await withClients([source], async ([stale]) => {
      await stale.select(2)
      await stale.set('written-after-cut-over', 'x')
      await stale.set('also-on-target', 'stray')
    })
    await withClients([target], async ([c]) => {
      await c.select(2)
      await c.set('also-on-target', 'newer')
    })
    resume(run)
    const done = await run.done
    expect(done.exitCode, done.stderr).to.equal(3)
    const result = JSON.parse(done.stdout)
    expect(result.strays['2']).to.deep.include({shard: 's002', keys: 2})
    expect(result.strays['2'].sample.sort()).to.deep.equal(['also-on-target', 'written-after-cut-over'])
    expect(result.keptOnSource).to.deep.equal([2])
    expect((await keyspace(source))[2]).to.equal(2)
    expect(await reg.hexists('shards._strays', `${inst(source)}/2`)).to.equal(1)

    const dry = await spawnCli(['shards:reconcile', '--dry-run', '--json', ...r()])
    expect(dry.exitCode, dry.stderr).to.equal(0)
    expect(JSON.parse(dry.stdout).strays[0]).to.include({
      source: `${inst(source)}/2`,
      shard: 's002',
      to: target.address(2),
      keys: 2,
      conflictCount: 1,
    })
    const moved = await spawnCli(['shards:reconcile', '--yes', '--json', ...r()])
    expect(moved.exitCode, moved.stderr).to.equal(3)
    expect(JSON.parse(moved.stdout).strays[0]).to.include({moved: 1, conflictCount: 1, done: false})
    expect(JSON.parse(moved.stdout).strays[0].conflicts).to.deep.equal(['also-on-target'])
    const replaced = await spawnCli(['shards:reconcile', '--replace', '--yes', '--json', ...r()])
    expect(replaced.exitCode, replaced.stderr).to.equal(0)
    await withClients([target], async ([c]) => {
      await c.select(2)
      expect(await c.get('written-after-cut-over')).to.equal('x')
      expect(await c.get('also-on-target')).to.equal('stray')
    })
    expect((await keyspace(source))[2]).to.equal(undefined)
    expect(await reg.exists('shards._strays')).to.equal(0)
  })

  it('a client with stale routing that deletes on a moved database after the cut-over (no key left to find): named, cut off, exit 3', async () => {
    // Stopped once the cut-over is done, before the grace period that must see the delete.
    const run = await stoppedAt(
      ['shards:split', inst(source), '--to', inst(target), '--shards', 's002', ...BOUNDS, '--yes', '--json', ...r()],
      'grace:before:stop',
    )
    expect(stepDone(await readJournal(reg), 'release')).to.equal(true)
    // An application's pooled connection: it stays open, as they do.
    const stale = source.client(2)
    try {
      expect(await stale.del('seed:0')).to.equal(0) // acknowledged, and applied nowhere the registry routes
      resume(run)
      const done = await run.done
      expect(done.exitCode, done.stderr).to.equal(3)
      const result = JSON.parse(done.stdout)
      expect(result.strays['2']).to.deep.include({shard: 's002', keys: 0, sample: []})
      expect(result.strays['2'].writers).to.have.length(1)
      expect(result.strays['2'].writers[0]).to.match(/^127\.0\.0\.1:\d+ \(del\)$/)
      expect(result.keptOnSource).to.deep.equal([])
      expect(await reg.exists('shards._strays')).to.equal(0)
      // Cut off, so that it re-reads its routing; the data is intact where the registry routes.
      const ids = await withClients([source], async ([c]) => String(await c.call('CLIENT', 'LIST')))
      expect(ids).to.not.match(/db=2 .*cmd=del/)
      await withClients([target], async ([c]) => {
        await c.select(2)
        expect(await c.exists('seed:0')).to.equal(1)
      })
    } finally {
      stale.disconnect()
    }
  })

  it('killed after promote, and the source lost its fence meanwhile (as a restart does): the rerun keeps its copies and exits 3 saying why', async () => {
    const killed = await spawnCli(
      ['shards:split', inst(source), '--to', inst(target), '--shards', 's001,s002', ...BOUNDS, '--yes', ...r()],
      {
        env: {SHARDCTL_FAILPOINT: 'promote:after:kill'},
      },
    )
    expect(killed.exitCode, killed.stderr).to.not.equal(0)
    await withClients([source], async ([c]) => {
      await c.config('SET', 'min-replicas-to-write', '0')
      await c.call('CLIENT', 'UNPAUSE')
    })
    const again = await spawnCli(['shards:split', inst(source), ...BOUNDS, '--yes', ...r()])
    expect(again.exitCode, again.stderr).to.equal(3)
    expect(again.stdout).to.match(/Finished the interrupted split/)
    expect(again.stderr).to.match(/lost its fence during the cut-over, so its copy of db 1, 2 was kept/)
    const space = await keyspace(source)
    expect([space[1], space[2]]).to.deep.equal([500, 400])
  })

  it("the source's own fencing cannot be met at release (its replica died): the moved databases are dropped all the same, its fencing restored", async () => {
    const replica = await startServer(['--replicaof', '127.0.0.1', String(source.port)])
    try {
      await waitForStreaming(replica, source)
      await withClients([source], ([c]) => c.config('SET', 'min-replicas-to-write', '1', 'min-replicas-max-lag', '10'))
      const run = await stoppedAt(
        ['shards:split', inst(source), '--to', inst(target), '--shards', 's001,s002', ...BOUNDS, '--yes', '--json', ...r()],
        'release:before:stop',
      )
      await replica.stop()
      await until('the source has no replica left', async () =>
        /connected_slaves:0/.test(await withClients([source], ([c]) => c.info('replication'))),
      )
      resume(run)
      const done = await run.done
      expect(done.exitCode, done.stderr + done.stdout).to.equal(0)
      expect(JSON.parse(done.stdout).droppedFromSource).to.deep.equal([1, 2])
      const space = await keyspace(source)
      expect([space[1], space[2]]).to.deep.equal([undefined, undefined])
      expect(await withClients([source], ([c]) => c.config('GET', 'min-replicas-to-write'))).to.deep.equal(['min-replicas-to-write', '1'])
    } finally {
      await replica.stop()
    }
  })

  it('Ctrl-C in the middle: exit 130 saying how to finish; the rerun finishes it', async () => {
    const run = await startCli(['shards:split', inst(source), '--to', inst(target), ...BOUNDS, '--yes', ...r()], {
      env: {SHARDCTL_FAILPOINT: 'registry:after:sleep-60000'},
    })
    await untilStepDone(reg, 'registry')
    process.kill(run.pid, 'SIGINT')
    const done = await run.done
    expect(done.exitCode).to.equal(130)
    expect(done.stderr).to.match(
      new RegExp(
        `Interrupted\\. The split is recorded in the registry's journal; run shardctl shards:split --recover -r redis://127\\.0\\.0\\.1:\\d+/0 to finish or roll it back\\.`,
      ),
    )
    const again = await spawnCli(['shards:split', inst(source), ...BOUNDS, '--yes', '--json', ...r()])
    expect(again.exitCode, again.stderr).to.equal(0)
    expect(JSON.parse(again.stdout).recovered).to.equal('rolled-forward')
    await expectPlaced(JSON.parse(again.stdout).plan.moves.map((m: {id: string}) => m.id))
  })

  describe('killed at each step, then run again', () => {
    const steps: [string, 'rolled-back' | 'rolled-forward'][] = [
      ['copy:after', 'rolled-back'],
      ['registry:before', 'rolled-back'],
      ['registry:after', 'rolled-forward'],
      ['hold:after', 'rolled-forward'],
      ['fence:after', 'rolled-forward'],
      ['catch-up:after', 'rolled-forward'],
      ['promote:before', 'rolled-forward'],
      ['promote:after', 'rolled-forward'],
      ['release:before', 'rolled-forward'],
      ['release:after', 'rolled-forward'],
      ['grace:after', 'rolled-forward'],
      ['clean-target:after', 'rolled-forward'],
    ]
    it('a rerun naming other targets after a kill past the switch: the interrupted split is finished, and exit 3 says the one asked for was not made', async () => {
      const killed = await spawnCli(['shards:split', inst(source), '--to', inst(target), ...BOUNDS, '--yes', ...r()], {
        env: {SHARDCTL_FAILPOINT: 'release:before:kill'},
      })
      expect(killed.exitCode, killed.stderr).to.not.equal(0)
      const other = await startServer()
      try {
        const again = await spawnCli(['shards:split', inst(source), '--to', inst(other), ...BOUNDS, '--yes', ...r()])
        expect(again.exitCode, again.stderr).to.equal(3)
        expect(again.stderr).to.match(/the interrupted split \(onto 127\.0\.0\.1:\d+\) was finished, not the one asked for/)
        expect(await reg.exists('shards._journal')).to.equal(0)
        expect((await keyspace(other))[1]).to.equal(undefined)
      } finally {
        await other.stop()
      }
    })

    it('the whole command run again after a kill that rolls back: exit 3 (the split asked for was not made)', async () => {
      const command = ['shards:split', inst(source), '--to', inst(target), ...BOUNDS, '--yes', ...r()]
      const killed = await spawnCli(command, {env: {SHARDCTL_FAILPOINT: 'copy:after:kill'}})
      expect(killed.exitCode, killed.stderr).to.not.equal(0)
      const again = await spawnCli([...command, '--json'])
      expect(again.exitCode, again.stderr + again.stdout).to.equal(3)
      expect(JSON.parse(again.stdout).recovered).to.equal('rolled-back')
      await expectPlaced([])
      expect(await reg.exists('shards._journal')).to.equal(0)
    })

    for (const [failpoint, outcome] of steps) {
      it(`SIGKILL at ${failpoint}: the next run ${outcome === 'rolled-back' ? 'rolls back' : 'finishes'}, nothing lost`, async () => {
        const writer = await startWriter(['s000', 's001', 's002'])
        const killed = await spawnCli(
          ['shards:split', inst(source), '--to', inst(target), '--max-pause', '5s', ...BOUNDS, '--yes', ...r()],
          {
            env: {SHARDCTL_FAILPOINT: `${failpoint}:kill`},
          },
        )
        expect(killed.exitCode, killed.stderr).to.not.equal(0)
        expect(await reg.exists('shards._journal'), killed.stderr).to.equal(1)
        const again = await spawnCli(['shards:split', inst(source), ...BOUNDS, '--yes', '--json', ...r()])
        expect(again.exitCode, again.stderr + again.stdout).to.equal(0)
        const result = JSON.parse(again.stdout)
        expect(result.recovered).to.equal(outcome)
        await expectNothingLost(writer)
        await expectPlaced(outcome === 'rolled-back' ? [] : result.plan.moves.map((m: {id: string}) => m.id))
        if (outcome === 'rolled-back') expect((await roleOf(target)).role).to.equal('master')
      })
    }
  })

  describe('frozen for 1.5 s after a step, with the default --max-pause: nothing lost', () => {
    for (const step of ['registry', 'hold', 'fence', 'catch-up', 'promote', 'release']) {
      it(`stopped (SIGSTOP) after ${step}`, async () => {
        const writer = await startWriter()
        const run = await stoppedAt(
          ['shards:split', inst(source), '--to', inst(target), ...BOUNDS, '--yes', '--json', ...r()],
          `${step}:after:stop`,
        )
        await frozenFor(run, PAST_MAX_PAUSE_MS)
        const done = await run.done
        expect(done.exitCode, done.stderr + done.stdout).to.equal(0)
        await expectNothingLost(writer)
        const result = JSON.parse(done.stdout)
        expect(result.strays).to.deep.equal({})
        await expectPlaced(result.plan.moves.map((m: {id: string}) => m.id))
        if (['fence', 'catch-up', 'promote'].includes(step)) expect(result.pauseExceeded).to.equal(true)
      })
    }
  })

  describe('the registry answers 1.5 s late at a step: nothing lost', () => {
    for (const step of ['copy', 'registry', 'fence', 'promote']) {
      it(`late after ${step}`, async () => {
        const proxy = await startReplyDelayProxy(fleet.registry.port)
        try {
          const writer = await startWriter()
          const run = await startCli([
            'shards:split',
            inst(source),
            '--to',
            inst(target),
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
          await expectPlaced(JSON.parse(done.stdout).plan.moves.map((m: {id: string}) => m.id))
        } finally {
          await proxy.close()
        }
      })
    }
  })

  describe('a stale operator: stopped past its lease, overtaken and recovered, then resumed', () => {
    for (const step of ['registry', 'fence', 'promote', 'release']) {
      it(`stopped after ${step}: once resumed it changes nothing anywhere and exits 4`, async () => {
        const writer = await startWriter(['s000', 's001', 's002'])
        const stale = await stoppedAt(
          ['shards:split', inst(source), '--to', inst(target), ...BOUNDS, '--yes', ...r()],
          `${step}:after:stop`,
          {SHARDCTL_LOCK_LEASE: '1s'},
        )
        await until('the stale lease expired', async () => (await reg.exists('shards._lock')) === 0)
        const recovery = await spawnCli(['shards:split', inst(source), ...BOUNDS, '--yes', '--json', ...r()])
        expect(recovery.exitCode, recovery.stderr + recovery.stdout).to.equal(0)
        await expectNothingLost(writer)
        const settled = await fleetState(reg, [source, target])
        resume(stale)
        const resumed = await stale.done
        expect(resumed.exitCode, resumed.stderr).to.equal(4)
        expect(resumed.stderr).to.match(/lock was lost/)
        expect(await fleetState(reg, [source, target])).to.deep.equal(settled)
        await expectPlaced(JSON.parse(recovery.stdout).plan.moves.map((m: {id: string}) => m.id))
      })
    }
  })

  describe('refusals: nothing changes', () => {
    async function refused(args: string[], message: RegExp, code = 2): Promise<void> {
      const before = await fleet.dump()
      const run = await spawnCli(['shards:split', ...args, '--yes', ...r()])
      expect(run.exitCode, run.stderr).to.equal(code)
      expect(run.stderr.trim().split('\n').at(-1)).to.match(message)
      expect(await fleet.dump()).to.deep.equal(before)
    }

    it('a target that is not empty', async () => {
      await withClients([target], async ([c]) => {
        await c.select(7)
        await c.set('precious', '1')
      })
      await refused([inst(source), '--to', inst(target)], /target 127\.0\.0\.1:\d+ is not empty: 1 key in db 7/)
      expect((await keyspace(target))[7]).to.equal(1)
    })

    it('a target that would take writes while it follows the source (replica-read-only no): exit 3', async () => {
      await withClients([target], ([c]) => c.config('SET', 'replica-read-only', 'no'))
      await refused([inst(source), '--to', inst(target)], /target 127\.0\.0\.1:\d+ has replica-read-only no/, 3)
    })

    it('a target that already serves a shard', async () => {
      await cli(['shards:add', 'far', '--master', target.address(9), ...r()])
      await refused([inst(source), '--to', inst(target)], /127\.0\.0\.1:\d+ already serves shard far/)
    })

    it('a moved database that another shard also uses (two shards on one database)', async () => {
      // Written behind shardctl's back: the registry can hold what shardctl never would.
      await reg.hset('shards.twin', 'master', source.address(1))
      await reg.zadd('shards.list', 1, 'twin')
      await refused([inst(source), '--to', inst(target), '--shards', 's001'], /db 1 of 127\.0\.0\.1:\d+ holds two shards, s001 and twin/)
      expect((await keyspace(source))[1]).to.equal(500)
    })

    it('a target that serves a shard under another spelling of its address', async () => {
      await cli(['shards:add', 'far', '--master', `localhost:${target.port}/9`, ...r()])
      await refused([inst(source), '--to', inst(target)], /127\.0\.0\.1:\d+ already serves shard far/)
    })

    it('a broken shard record: where it lives is unknown, so no target can be proved free (exit 1)', async () => {
      await reg.hset('shards.lost', 'master', 'nonsense')
      await reg.zadd('shards.list', 1, 'lost')
      await refused(
        [inst(source), '--to', inst(target)],
        /shard lost in shards\.lost is corrupt: .*; a split cannot tell which databases it uses/,
        1,
      )
    })

    it('a source named otherwise than the registry names it', async () => {
      await refused([`localhost:${source.port}`, '--to', inst(target)], /the registry names localhost:\d+ 127\.0\.0\.1:\d+ \(shard s000\)/)
    })

    it('the source under another name as the target', async () => {
      await refused([inst(source), '--to', `localhost:${source.port}`], /target localhost:\d+ is the source itself/)
    })

    it('an unreachable target', async () => {
      await refused([inst(source), '--to', '127.0.0.1:1'], /cannot reach the target 127\.0\.0\.1:1: (?!.*cannot reach)/, 1)
    })

    it('a target with too few databases', async () => {
      const small = await startServer(['--databases', '4'])
      try {
        await refused([inst(source), '--to', inst(small)], /has 4 databases; the source uses db 5/)
      } finally {
        await small.stop()
      }
    })

    it('a source that is not in the registry', async () => {
      await refused([inst(target), '--to', inst(source)], /no shard in the registry has its master on/)
    })

    it('a shard that is not on the source, and an unknown shard', async () => {
      await refused([inst(source), '--to', '127.0.0.1:1', '--shards', 'nope'], /unknown shard "nope"/)
    })

    for (const [name, args, message] of [
      ['a malformed source', ['nothost', '--to', 'T'], /invalid address/],
      ['a malformed target', ['S', '--to', 'x:y'], /invalid port/],
      ['the source as its own target', ['S', '--to', 'S'], /is the source itself/],
      ['a bad --max-pause', ['S', '--to', 'T', '--max-pause', 'never'], /invalid duration/],
      ['a bad --hold', ['S', '--to', 'T', '--hold', '-1s'], /invalid duration/],
      ['a bad --quiet', ['S', '--to', 'T', '--quiet', 'soon'], /invalid duration/],
      ['no target at all', ['S'], /no target/],
    ] as const) {
      it(`bad input, ${name}: exit 2, one line`, async () => {
        const sub = (a: string) => (a === 'S' ? inst(source) : a === 'T' ? inst(target) : a)
        await refused(args.map(sub), message)
      })
    }
  })

  it('--spawn --dry-run shows the plan onto the instance it would start, and starts nothing', async () => {
    const port = await freePort()
    const run = await spawnCli(['shards:split', inst(source), '--spawn', '--port', String(port), '--dry-run', '--json', ...r()])
    expect(run.exitCode, run.stderr + run.stdout).to.equal(0)
    const {plan} = JSON.parse(run.stdout)
    expect(plan.targets).to.deep.equal([{instance: `127.0.0.1:${port}`, replicas: []}])
    expect(plan.moves.map((m: {to: string}) => m.to)).to.deep.equal([`127.0.0.1:${port}`, `127.0.0.1:${port}`, `127.0.0.1:${port}`])
    expect(await portIsFree(port)).to.equal(true)
    const text = await spawnCli(['shards:split', inst(source), '--spawn', '--port', String(port), '--dry-run', ...r()])
    expect(text.stderr).to.match(new RegExp(`to be started by --spawn: 127\\.0\\.0\\.1:${port}`))
  })

  it('--spawn answered "no" at its one question: nothing started, nothing changed, no lock held while asking', async () => {
    const port = await freePort()
    const before = await fleet.dump()
    const run = await ttyCli(['shards:split', inst(source), '--spawn', '--port', String(port), ...r()], 'n\r', {}, async () => {
      expect(await reg.exists('shards._lock')).to.equal(0)
    })
    expect(run.exitCode, run.screen).to.equal(0)
    // The terminal wraps the question: compare it as one line, without escape codes.
    const screen = run.screen.replace(ANSI_ALL, '').replace(/\s+/g, ' ')
    expect(screen).to.include(`Start 1 new redis-server on this machine (127.0.0.1:${port}) and move 3 shards off`)
    expect(await portIsFree(port)).to.equal(true)
    expect(await fleet.dump()).to.deep.equal(before)
  })

  it("--spawn starts the target with the source's settings and a replica, end to end", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'shardctl-spawn-'))
    try {
      const run = await spawnCli([
        'shards:split',
        inst(source),
        '--spawn',
        '--spawn-replicas',
        '1',
        '--dir',
        dir,
        ...BOUNDS,
        '--yes',
        '--json',
        ...r(),
      ])
      expect(run.exitCode, run.stderr).to.equal(0)
      const result = JSON.parse(run.stdout)
      const {spawned} = result
      expect(spawned).to.have.length(2)
      const [newMaster, newReplica] = spawned
      for (const m of result.plan.moves as {id: string; db: number}[]) {
        expect(await reg.hgetall(`shards.${m.id}`)).to.deep.equal({
          master: `127.0.0.1:${newMaster.port}/${m.db}`,
          slave0: `127.0.0.1:${newReplica.port}/${m.db}`,
        })
      }
      const list = await spawnCli(['shards:list', '--json', ...r()])
      for (const s of JSON.parse(list.stdout).shards) expect(s.problems, s.id).to.deep.equal([])
    } finally {
      await stopServersIn(dir)
      rmSync(dir, {recursive: true, force: true})
    }
  })
})

import {expect} from 'chai'
import type {Redis} from 'ioredis'

import {parseRate} from '../../src/commands/shards/move.js'
import {rdbVersionOf} from '../../src/ops/move.js'
import {cli, spawnCli, until} from '../helpers/cli.js'
import {startClockProxy, startReplyProxy} from '../helpers/reply-proxy.js'
import {useFleet} from '../helpers/fleet.js'
import {fencesOf, fleetState, readJournal, resume, stepDone, stoppedAt, takesWrites} from '../helpers/ops.js'
import {startReplyDelayProxy} from '../helpers/proxy.js'
import {type TestServer, dumpDb, startServer, waitForStreaming, withClients} from '../helpers/redis.js'
import {type ContinuousWriter, lostWrites, startedWriter, whileHearingLate} from '../helpers/writer.js'

/**
 * shards:move: shards of a source instance (s000-s003 in db 0-3, db N holding (4 - N) * 100
 * keys) move into free databases of a target instance that already serves a shard of its
 * own ("far", db 0). The servers are shared by every test; each test starts from the same
 * data and registry.
 */

const SOURCE_SHARDS = ['s000', 's001', 's002', 's003']
const LIBRARY = "#!lua name=shardlib\nredis.register_function('hello', function() return 1 end)"

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

/** Every key and value of one database. */
async function dbContent(server: TestServer, db: number): Promise<Record<string, unknown>> {
  const client = server.client(db)
  try {
    return await dumpDb(client)
  } finally {
    client.disconnect()
  }
}

describe('shards:move', () => {
  let reg: Redis
  let source: TestServer
  let target: TestServer
  const r = () => fleet.r()
  const inst = (s: TestServer) => `127.0.0.1:${s.port}`
  const BOUNDS = ['--timeout', '10s', '--grace', '300ms']

  const fleet = useFleet()
  before(async () => {
    reg = fleet.reg
    ;[source, target] = await Promise.all([startServer(), startServer()])
  })
  after(async () => {
    await Promise.all([source.stop(), target.stop()])
  })

  beforeEach(async () => {
    await withClients([source, target], async ([s, t]) => {
      await Promise.all([s.flushall(), t.flushall()])
      await Promise.all([s.config('SET', 'maxmemory', '0', 'min-replicas-to-write', '0'), t.config('SET', 'maxmemory', '0')])
      for (let db = 0; db < 4; db++) {
        await s.select(db)
        await s.mset(Object.fromEntries(Array.from({length: (4 - db) * 100}, (_, i) => [`seed:${i}`, String(db)])))
      }
      await s.select(0)
      await t.mset({'far:1': 'a', 'far:2': 'b'})
    })
    expect((await cli(['shards:init', '--instance', inst(source), '--count', '4', '--yes', ...r()])).exitCode).to.equal(0)
    expect((await cli(['shards:add', 'far', '--master', target.address(0), ...r()])).exitCode).to.equal(0)
  })

  /** The moved shards are routed to the target and hold their seed there; nothing is left on the source; no fence, journal or lock. */
  async function expectMoved(moved: Record<string, number>): Promise<void> {
    const space = await keyspace(source)
    const onTarget = await keyspace(target)
    for (const [id, toDb] of Object.entries(moved)) {
      const db = Number(id.slice(1))
      expect(await reg.hget(`shards.${id}`, 'master'), id).to.equal(target.address(toDb))
      expect(onTarget[toDb], `${id} on the target`).to.be.at.least((4 - db) * 100)
      expect(space[db] ?? 0, `${id} left on the source`).to.equal(0)
    }
    expect(await reg.hget('shards.far', 'master')).to.equal(target.address(0))
    expect(await reg.exists('shards._journal', 'shards._lock')).to.equal(0)
    expect(await fencesOf([source, target])).to.deep.equal([])
    expect(await takesWrites(source)).to.equal(true)
  }

  const startWriter = (shards = SOURCE_SHARDS) => startedWriter(reg, shards)
  const expectNothingLost = async (writer: ContinuousWriter) => expect(await lostWrites(reg, writer)).to.deep.equal([])

  describe('plan and preflight', () => {
    it('--dry-run: each shard to the lowest free database, the preflight and the replicas said, nothing changed', async () => {
      await reg.hset('shards.s001', 'slave0', '127.0.0.1:1/1')
      const before = await fleet.dump()
      const run = await cli(['shards:move', 's001', 's002', '--to', inst(target), '--dry-run', '--json', ...r()])
      expect(run.exitCode, run.stderr).to.equal(0)
      const {plan, applied} = JSON.parse(run.stdout)
      expect(applied).to.equal(false)
      expect(plan.source).to.equal(inst(source))
      expect(plan.target).to.equal(inst(target))
      expect(plan.moves.map((m: {id: string; db: number; toDb: number}) => [m.id, m.db, m.toDb])).to.deep.equal([
        ['s001', 1, 1],
        ['s002', 2, 2],
      ])
      expect(plan.moves[0].after).to.deep.equal({master: target.address(1), replicas: [], persist: []})
      expect(plan.moves[0].keys).to.equal(300)
      expect(plan.moves[0].bytes).to.be.greaterThan(0)
      expect(plan.fewerReplicas).to.deep.equal([{id: 's001', before: 1, after: 0}])
      expect(plan.preflight.rdb.source.version).to.equal(plan.preflight.rdb.target.version)
      expect(plan.preflight.memory.arriving).to.equal(plan.moves[0].bytes + plan.moves[1].bytes)
      expect(plan.preflight.clock.skewMs).to.be.lessThan(plan.preflight.clock.maxSkewMs)
      expect(await fleet.dump()).to.deep.equal(before)
      expect(await keyspace(target)).to.deep.equal({0: 2})

      const human = await spawnCli(['shards:move', 's001', '--to', `${inst(target)}/7`, '--rate', '20MB/s', '--dry-run', ...r()])
      expect(human.exitCode, human.stderr).to.equal(0)
      expect(human.stdout).to.include(target.address(7))
      expect(human.stderr).to.match(/Preflight: target databases empty and unused/)
      expect(human.stderr).to.match(/s001 goes from 1 replica to 0/)
      expect(human.stderr).to.match(/copy throttled to 20\.0 MB\/s/)
      expect(human.stderr).to.match(/Dry run: nothing changed/)
    })

    it("the moved shards' replicas are the target instance's replicas", async () => {
      const replica = await startServer(['--replicaof', '127.0.0.1', String(target.port)])
      try {
        await withClients([target], async ([t]) => {
          for (let i = 0; i < 200; i++) {
            if (/slave0:/.test(await t.info('replication'))) return
            await new Promise((resolve) => setTimeout(resolve, 10))
          }
        })
        const run = await cli(['shards:move', 's003', '--to', inst(target), '--dry-run', '--json', ...r()])
        expect(run.exitCode, run.stderr).to.equal(0)
        const {plan} = JSON.parse(run.stdout)
        expect(plan.targetReplicas).to.deep.equal([inst(replica)])
        expect(plan.moves[0].after.replicas).to.deep.equal([replica.address(1)])
        expect(plan.fewerReplicas).to.deep.equal([])
      } finally {
        await replica.stop()
      }
    })

    describe('refusals: one line, nothing changes', () => {
      /** The refusal's line, matched. */
      async function refused(args: string[], message: RegExp, code = 2): Promise<RegExpMatchArray> {
        const before = await fleet.dump()
        const space = [await keyspace(source), await keyspace(target)]
        const run = await cli(['shards:move', ...args, '--yes', ...r()])
        expect(run.exitCode, run.stderr).to.equal(code)
        const line = run.stderr.trim().split('\n').at(-1)!
        expect(line).to.match(message)
        expect(await fleet.dump()).to.deep.equal(before)
        expect([await keyspace(source), await keyspace(target)]).to.deep.equal(space)
        return line.match(message)!
      }

      it('a function library the source has and the target lacks, named before anything is copied', async () => {
        await withClients([source], ([s]) => s.call('FUNCTION', 'LOAD', LIBRARY))
        try {
          await refused(
            ['s001', '--to', inst(target)],
            new RegExp(`${inst(source)} has the function library shardlib, which ${inst(target)} lacks: nothing was copied`),
          )
        } finally {
          await withClients([source], ([s]) => s.call('FUNCTION', 'DELETE', 'shardlib'))
        }
      })

      it('a module the source has and the target lacks, named before anything is copied', async () => {
        // Debian's redis-server ships no module: the source is seen through a proxy whose MODULE LIST names one.
        const path = '/usr/lib/redis/modules/redisbloom.so'
        const listing = `*1\r\n*8\r\n$4\r\nname\r\n$2\r\nbf\r\n$3\r\nver\r\n:20612\r\n$4\r\npath\r\n$${path.length}\r\n${path}\r\n$4\r\nargs\r\n*0\r\n`
        const proxy = await startReplyProxy(source.port, (command) => (command === 'MODULE' ? () => Buffer.from(listing) : undefined))
        try {
          await reg.hset('shards.s003', 'master', `127.0.0.1:${proxy.port}/3`)
          await refused(
            ['s003', '--to', inst(target)],
            new RegExp(`127\\.0\\.0\\.1:${proxy.port} has the module bf, which ${inst(target)} lacks: nothing was copied`),
          )
        } finally {
          await proxy.close()
        }
      })

      it("clocks further apart than --max-clock-skew (the target's TIME 5 s ahead): both clocks and the skew named", async () => {
        const proxy = await startClockProxy(target.port, 5000)
        try {
          const [, sourceClock, targetClock, skew] = await refused(
            ['s001', '--to', `127.0.0.1:${proxy.port}`],
            new RegExp(
              `the clocks of ${inst(source)} \\((\\S+)\\) and 127\\.0\\.0\\.1:${proxy.port} \\((\\S+)\\) are (\\d+) ms apart \\(at most 1000 ms\\): keys would expire that much early or late`,
            ),
          )
          expect(Number(skew)).to.be.within(4500, 5500)
          // Each rounded to the millisecond on its own.
          expect(Math.abs(Date.parse(targetClock) - Date.parse(sourceClock) - Number(skew))).to.be.at.most(1)
          expect(Math.abs(Date.parse(sourceClock) - Date.now())).to.be.below(60_000)
        } finally {
          await proxy.close()
        }
      })

      it('a target database that is not empty', async () => {
        await withClients([target], async ([t]) => {
          await t.select(5)
          await t.set('precious', '1')
        })
        await refused(['s001', '--to', `${inst(target)}/5`], /db 5 of 127\.0\.0\.1:\d+ is not empty: 1 key/)
      })

      it('a target database a shard of the registry uses', async () => {
        await refused(['s001', '--to', `${inst(target)}/0`], /db 0 of 127\.0\.0\.1:\d+ is used by shard far/)
      })

      it('a target database a shard uses only as its replica', async () => {
        await reg.hset('shards.s000', 'slave0', target.address(6))
        await refused(['s001', '--to', `${inst(target)}/6`], /db 6 of 127\.0\.0\.1:\d+ is used by shard s000/)
      })

      it('a target with no free database left', async () => {
        const small = await startServer(['--databases', '2'])
        try {
          await withClients([small], async ([c]) => {
            await c.select(1)
            await c.set('taken', '1')
          })
          await cli(['shards:add', 'tiny', '--master', small.address(0), ...r()])
          await refused(['s001', '--to', inst(small)], /has 1 database no shard uses, 0 of them empty; 1 shard to move/)
        } finally {
          await small.stop()
        }
      })

      it('a target without room under its maxmemory', async () => {
        await withClients([target], async ([t]) => {
          const used = Number(/used_memory:(\d+)/.exec(await t.info('memory'))![1])
          await t.config('SET', 'maxmemory', String(used + 1000))
        })
        await refused(['s000', '--to', inst(target)], /free under maxmemory .*; the moved shard holds ~/)
      })

      it('a target that is a replica', async () => {
        const replica = await startServer(['--replicaof', '127.0.0.1', String(target.port)])
        try {
          await refused(['s001', '--to', inst(replica)], /target 127\.0\.0\.1:\d+ is a replica of 127\.0\.0\.1:\d+/)
        } finally {
          await replica.stop()
        }
      })

      it('the source under another name: localhost, or another address of the same server (the same run_id)', async () => {
        await refused(['s001', '--to', `localhost:${source.port}`], /shard s001 is on 127\.0\.0\.1:\d+ already/)
        // A second name of one server: a proxy to it answers with its run_id.
        const proxy = await startReplyProxy(source.port, () => undefined)
        try {
          await refused(
            ['s001', '--to', `127.0.0.1:${proxy.port}`],
            new RegExp(`target 127\\.0\\.0\\.1:${proxy.port} is the source ${inst(source)} under another name \\(the same run_id\\)`),
          )
        } finally {
          await proxy.close()
        }
      })

      it('a target the registry names another way: named as the registry does, its databases in use are seen', async () => {
        await reg.hset('shards.far', 'master', `localhost:${target.port}/0`)
        await refused(['s001', '--to', `${inst(target)}/5`], /the registry names 127\.0\.0\.1:\d+ localhost:\d+ \(shard far\)/)
        await refused(['s001', '--to', `localhost:${target.port}/0`], /db 0 of localhost:\d+ is used by shard far/)
        // Unnumbered, the move skips it for the next free database.
        const run = await cli(['shards:move', 's001', '--to', `localhost:${target.port}`, '--dry-run', '--json', ...r()])
        expect(run.exitCode, run.stderr).to.equal(0)
        expect(JSON.parse(run.stdout).plan.moves[0].toDb).to.equal(1)
      })

      it('a source the registry names in two ways', async () => {
        await reg.hset('shards.s002', 'master', `localhost:${source.port}/2`)
        await refused(
          ['s001', '--to', inst(target)],
          /the registry names 127\.0\.0\.1:\d+ in more than one way \(shard s002 is on localhost:\d+\/2\)/,
        )
      })

      it('a broken shard record anywhere: which databases it names is unknown, so nothing moves (exit 1)', async () => {
        // far names db 0 of the target: broken, it would leave db 0 looking free.
        await withClients([target], ([t]) => t.flushdb())
        await reg.hset('shards.far', 'master', 'nonsense')
        await refused(
          ['s001', '--to', `${inst(target)}/0`],
          /shard far in shards\.far is corrupt: .*; a move cannot tell which databases it uses/,
          1,
        )
        await refused(['far', '--to', inst(target)], /shard far in shards\.far is corrupt/, 1)
      })

      it('an unreachable target', async () => {
        await refused(['s001', '--to', '127.0.0.1:1'], /cannot reach the target 127\.0\.0\.1:1: (?!.*cannot reach)/, 1)
      })

      for (const [name, args, message] of [
        ['an unknown shard', ['nope', '--to', 'T'], /unknown shard "nope"/],
        ['shards of two instances', ['s001', 'far', '--to', 'T'], /shards s001 and far live on different instances/],
        ['a shard on the target already', ['far', '--to', 'T'], /shard far is on 127\.0\.0\.1:\d+ already/],
        ['one database for two shards', ['s001', 's002', '--to', 'T/9'], /names one database, for 2 shards/],
        ['a shard named twice', ['s001', 's001', '--to', 'T'], /shard s001 is named twice/],
        ['no target', ['s001'], /no target/],
        ['no shard', ['--to', 'T'], /name the shards to move/],
        ['a malformed target', ['s001', '--to', 'x:y'], /--to: invalid port/],
        ['a bad --rate', ['s001', '--to', 'T', '--rate', 'fast'], /invalid --rate "fast"/],
        ['a bad --max-pause', ['s001', '--to', 'T', '--max-pause', 'never'], /invalid duration/],
        ['a database beyond the target', ['s001', '--to', 'T/99'], /has 16 databases: there is no db 99/],
      ] as const) {
        it(`bad input, ${name}: exit 2`, async () => {
          await refused(
            args.map((a) => a.replace(/^T/, inst(target))),
            message,
          )
        })
      }
    })

    it('clocks apart within --max-clock-skew (the target 300 ms ahead): accepted, and the skew said', async () => {
      const proxy = await startClockProxy(target.port, 300)
      try {
        const run = await cli(['shards:move', 's001', '--to', `127.0.0.1:${proxy.port}`, '--dry-run', '--json', ...r()])
        expect(run.exitCode, run.stderr).to.equal(0)
        const {plan} = JSON.parse(run.stdout)
        expect(plan.preflight.clock.skewMs).to.be.within(150, 450)
        expect(plan.preflight.clock.maxSkewMs).to.equal(1000)
      } finally {
        await proxy.close()
      }
    })

    it('--rate reads keys/s and MB/s; the RDB version of a Redis release', () => {
      expect(parseRate('5000')).to.deep.equal({keysPerSecond: 5000})
      expect(parseRate('5000keys/s')).to.deep.equal({keysPerSecond: 5000})
      expect(parseRate('2.5MB/s')).to.deep.equal({bytesPerSecond: 2_500_000})
      expect(() => parseRate('0')).to.throw(/invalid --rate/)
      expect(rdbVersionOf('7.0.15')).to.equal(10)
      expect(rdbVersionOf('7.2.4')).to.equal(11)
      expect(rdbVersionOf('7.4.1')).to.equal(12)
      expect(rdbVersionOf('8.0.0')).to.equal(12)
      expect(rdbVersionOf('6.2.14')).to.equal(9)
    })
  })

  describe('the move', () => {
    /** Run `args` (a move of s001 into db 1 of the target), stopped once its copy is live while `write` writes into that database. */
    const writeDuringCopy = async (args: string[], write: (t: Redis) => Promise<unknown>) => {
      const run = await stoppedAt(args, 'copy:after:stop')
      await withClients([target], async ([t]) => {
        await t.select(1)
        await write(t)
      })
      resume(run)
      return run.done
    }

    it("under a continuous writer: every acknowledged write is on the target, the target's other databases unchanged", async () => {
      const far = await dbContent(target, 0)
      const writer = await startWriter()
      const run = await spawnCli([
        'shards:move',
        's001',
        's002',
        '--to',
        inst(target),
        '--max-pause',
        '5s',
        ...BOUNDS,
        '--yes',
        '--json',
        ...r(),
      ])
      expect(run.exitCode, run.stderr + run.stdout).to.equal(0)
      await expectNothingLost(writer)
      const result = JSON.parse(run.stdout)
      expect(result.applied).to.equal(true)
      expect(result.pauseMs).to.be.a('number')
      expect(result.proof.applied.every((o: number) => o >= result.proof.offset)).to.equal(true)
      expect(result.droppedFromSource).to.deep.equal([1, 2])
      expect(result.strays).to.deep.equal({})
      // Compared before the switch: every key of both shards, and what differed re-checked under the fence.
      expect(
        result.verified.shards.map((v: {id: string; keys: number}) => [v.id, v.keys >= (4 - Number(v.id.slice(1))) * 100]),
      ).to.deep.equal([
        ['s001', true],
        ['s002', true],
      ])
      expect(result.verified.recheckMs).to.be.a('number')
      await expectMoved({s001: 1, s002: 2})
      expect(await dbContent(target, 0)).to.deep.equal(far)
      const history = await spawnCli(['shards:history', '--json', ...r()])
      expect(history.stdout).to.include('shards.moved')
    })

    it('in a pipe, each step is one line with its duration on stderr, and the result on stdout', async () => {
      const run = await spawnCli(['shards:move', 's003', '--to', inst(target), ...BOUNDS, '--yes', ...r()])
      expect(run.exitCode, run.stderr).to.equal(0)
      for (const step of ['copy', 'verify', 'fence', 'catch-up', 'stop-stream', 'recheck', 'registry', 'hold', 'release', 'grace']) {
        expect(run.stderr).to.match(new RegExp(`^  ${step}\\s+\\d+(\\.\\d)? (ms|s)$`, 'm'))
      }
      expect(run.stderr).not.to.match(/\r|\u001B\[/)
      expect(run.stdout).to.match(
        new RegExp(`Moved 1 shard from ${inst(source)} to ${inst(target)} \\(s003 → db 1\\); writes to the source paused \\d+ ms`),
      )
      await expectMoved({s003: 1})
    })

    it("the source's own fencing (min-replicas-to-write 1, which the copy raises by one meanwhile) is what it was, after a killed move and after a move", async () => {
      const replica = await startServer(['--replicaof', '127.0.0.1', String(source.port)])
      try {
        await waitForStreaming(replica, source)
        await withClients([source], ([c]) => c.config('SET', 'min-replicas-to-write', '1', 'min-replicas-max-lag', '10'))
        const fencing = () => withClients([source], ([c]) => c.config('GET', 'min-replicas-to-write'))
        const killed = await spawnCli(['shards:move', 's001', '--to', inst(target), ...BOUNDS, '--yes', ...r()], {
          env: {SHARDCTL_FAILPOINT: 'copy:after:kill'},
        })
        expect(killed.exitCode, killed.stderr).to.not.equal(0)
        expect(await fencing()).to.deep.equal(['min-replicas-to-write', '2'])
        const back = await spawnCli(['shards:move', '--recover', ...BOUNDS, '--json', ...r()])
        expect(back.exitCode, back.stderr + back.stdout).to.equal(0)
        expect(JSON.parse(back.stdout).recovered).to.equal('rolled-back')
        expect(await fencing()).to.deep.equal(['min-replicas-to-write', '1'])
        const run = await spawnCli(['shards:move', 's001', '--to', inst(target), ...BOUNDS, '--yes', '--json', ...r()])
        expect(run.exitCode, run.stderr + run.stdout).to.equal(0)
        expect(await fencing()).to.deep.equal(['min-replicas-to-write', '1'])
        await expectMoved({s001: 1})
      } finally {
        await withClients([source], ([c]) => c.config('SET', 'min-replicas-to-write', '0'))
        await replica.stop()
      }
    })

    for (const [what, run, keysLeft] of [
      [
        'MOVE of a key into the moved database',
        async (c: Redis) => {
          await c.set('moved-in', 'x')
          expect(await c.move('moved-in', 1)).to.equal(1)
        },
        {0: 400, 1: 301},
      ],
      [
        'COPY … DB out of the moved database',
        async (c: Redis) => {
          await c.select(1)
          expect(await c.call('COPY', 'seed:7', 'copied-out', 'DB', '0')).to.equal(1)
        },
        {0: 401, 1: 300},
      ],
    ] as const) {
      it(`${what} stops the copy: the move heals by rolling back, exit 3, nothing lost`, async () => {
        const move = await stoppedAt(['shards:move', 's001', '--to', inst(target), ...BOUNDS, '--yes', '--json', ...r()], 'copy:after:stop')
        await withClients([source], ([c]) => run(c))
        resume(move)
        const done = await move.done
        expect(done.exitCode, done.stderr + done.stdout).to.equal(3)
        const result = JSON.parse(done.stdout)
        expect(result.recovered).to.equal('rolled-back')
        expect(result.healed.after).to.match(new RegExp(what.split(' ')[0]))
        expect(await reg.hget('shards.s001', 'master')).to.equal(source.address(1))
        expect((await keyspace(target))[1]).to.equal(undefined)
        const space = await keyspace(source)
        expect([space[0], space[1]]).to.deep.equal([keysLeft[0], keysLeft[1]])
        expect(await reg.exists('shards._journal', 'shards._lock')).to.equal(0)
        expect(await fencesOf([source])).to.deep.equal([])
        expect(await takesWrites(source, 1)).to.equal(true)
      })
    }

    it('a function library on the source that the target has too: the move goes on', async () => {
      await withClients([source, target], (clients) => Promise.all(clients.map((c) => c.call('FUNCTION', 'LOAD', LIBRARY))))
      try {
        const run = await spawnCli(['shards:move', 's003', '--to', inst(target), ...BOUNDS, '--yes', '--json', ...r()])
        expect(run.exitCode, run.stderr + run.stdout).to.equal(0)
        await expectMoved({s003: 1})
      } finally {
        await withClients([source, target], (clients) => Promise.all(clients.map((c) => c.call('FUNCTION', 'DELETE', 'shardlib'))))
      }
    })

    it('a key written into the target database during the copy stops the cut-over: rolled back, exit 3 naming it, nothing lost; --no-verify lets it through', async () => {
      const writer = await startWriter(['s000', 's001'])
      const args = ['shards:move', 's001', '--to', inst(target), '--max-pause', '5s', ...BOUNDS, '--yes', '--json', ...r()]
      const plant = () => writeDuringCopy(args, (t) => t.set('planted', 'not from the source'))
      const done = await plant()
      expect(done.exitCode, done.stderr + done.stdout).to.equal(3)
      const {error} = JSON.parse(done.stdout)
      expect(error.code, error.message).to.equal('EDIFFERS')
      expect(error.message, error.message).to.match(
        /^the copy of shard s001 on 127\.0\.0\.1:\d+\/1 differs from 127\.0\.0\.1:\d+\/1 under the fence, with every write applied \(1 key: planted: a string, only on 127\.0\.0\.1:\d+\/1\); the move was rolled back: 127\.0\.0\.1:\d+ takes writes again/,
      )
      expect(await reg.hget('shards.s001', 'master')).to.equal(source.address(1))
      expect((await keyspace(target))[1]).to.equal(undefined)
      expect(await reg.exists('shards._journal', 'shards._lock')).to.equal(0)
      expect(await fencesOf([source])).to.deep.equal([])
      expect(await takesWrites(source, 1)).to.equal(true)
      await expectNothingLost(writer)

      // The control: without the verify the same copy is switched, the planted key with it.
      args.splice(args.indexOf('--yes'), 0, '--no-verify')
      const unchecked = await plant()
      expect(unchecked.exitCode, unchecked.stderr + unchecked.stdout).to.equal(0)
      expect(JSON.parse(unchecked.stdout).verified).to.equal(undefined)
      expect(await reg.hget('shards.s001', 'master')).to.equal(target.address(1))
      await withClients([target], async ([t]) => {
        await t.select(1)
        expect(await t.get('planted')).to.equal('not from the source')
      })
    })

    it('a value changed on the target during the copy, its length kept, stops the cut-over (the verify compares values): rolled back, exit 3 naming it; --no-verify-values lets it through', async () => {
      await withClients([source], async ([s]) => {
        await s.select(1)
        await s.set('fixed', 'from the source')
      })
      const args = ['shards:move', 's001', '--to', inst(target), ...BOUNDS, '--yes', '--json', ...r()]
      // Type, expiry and length as on the source: only a comparison of the values tells them apart.
      const change = () => writeDuringCopy(args, (t) => t.set('fixed', 'FROM THE SOURCE'))
      const done = await change()
      expect(done.exitCode, done.stderr + done.stdout).to.equal(3)
      const {error} = JSON.parse(done.stdout)
      expect(error.code, error.message).to.equal('EDIFFERS')
      expect(error.message).to.match(
        /^the copy of shard s001 on 127\.0\.0\.1:\d+\/1 differs from 127\.0\.0\.1:\d+\/1 .*\(1 key: fixed: the values differ\)/,
      )
      expect(await reg.hget('shards.s001', 'master')).to.equal(source.address(1))
      expect((await keyspace(target))[1]).to.equal(undefined)
      expect(await takesWrites(source, 1)).to.equal(true)

      // The control: comparing keys, types, expiries and lengths only, the same copy is switched.
      args.splice(args.indexOf('--yes'), 0, '--no-verify-values')
      const unchecked = await change()
      expect(unchecked.exitCode, unchecked.stderr + unchecked.stdout).to.equal(0)
      expect(await reg.hget('shards.s001', 'master')).to.equal(target.address(1))
      await withClients([target], async ([t]) => {
        await t.select(1)
        expect(await t.get('fixed')).to.equal('FROM THE SOURCE')
      })
    })

    it('the registry answers 3 s late at the switch: the pause runs past --max-pause, exit 0, nothing lost', async () => {
      const proxy = await startReplyDelayProxy(fleet.registry.port)
      try {
        const writer = await startWriter(['s000', 's001', 'far'])
        const run = await stoppedAt(
          ['shards:move', 's001', '--to', inst(target), ...BOUNDS, '--yes', '--json', '-r', `redis://127.0.0.1:${proxy.port}/0`],
          'registry:before:stop',
        )
        proxy.stallFor(3000)
        resume(run)
        const done = await run.done
        expect(done.exitCode, done.stderr + done.stdout).to.equal(0)
        const result = JSON.parse(done.stdout)
        expect(result.pauseExceeded).to.equal(true)
        expect(result.pauseMs).to.be.at.least(3000)
        expect(result.strays).to.deep.equal({})
        await expectNothingLost(writer)
        await expectMoved({s001: 1})
      } finally {
        await proxy.close()
      }
    })

    it('a client that reconnects by itself and hears of the move 1 s late: no acknowledged write ends off its route', async () => {
      const move = ['shards:move', 's001', 's002', '--to', inst(target), '--max-pause', '5s', '--quiet', '500ms', ...BOUNDS]
      const shards = ['s000', 's001', 's002']
      const {done, missing, heard} = await whileHearingLate(reg, shards, () => spawnCli([...move, '--yes', '--json', ...r()]))
      expect(done.exitCode, done.stderr + done.stdout).to.equal(0)
      expect(JSON.parse(done.stdout).strays).to.deep.equal({})
      expect(missing).to.deep.equal([])
      expect(heard).to.be.greaterThan(0)
      await expectMoved({s001: 1, s002: 2})
    })

    it('a second operator meanwhile gets exit 4; the move finishes', async () => {
      const run = await stoppedAt(['shards:move', 's003', '--to', inst(target), ...BOUNDS, '--yes', '--json', ...r()], 'copy:after:stop')
      const second = await cli(['shards:move', 's000', '--to', inst(target), ...BOUNDS, '--yes', ...r()])
      expect(second.exitCode, second.stderr).to.equal(4)
      expect(second.stderr).to.match(/running the move of 127\.0\.0\.1:\d+/)
      resume(run)
      const done = await run.done
      expect(done.exitCode, done.stderr + done.stdout).to.equal(0)
      await expectMoved({s003: 1})
    })

    it('a write after the cut-over from a client with stale routing: named, kept, exit 3, recorded for shards:reconcile', async () => {
      const run = await stoppedAt(['shards:move', 's002', '--to', inst(target), ...BOUNDS, '--yes', '--json', ...r()], 'grace:before:stop')
      expect(stepDone(await readJournal(reg), 'release')).to.equal(true)
      await withClients([source], async ([stale]) => {
        await stale.select(2)
        await stale.set('written-after-cut-over', 'x')
      })
      resume(run)
      const done = await run.done
      expect(done.exitCode, done.stderr).to.equal(3)
      const result = JSON.parse(done.stdout)
      expect(result.strays['2']).to.deep.include({shard: 's002', to: target.address(1), keys: 1, sample: ['written-after-cut-over']})
      expect(result.keptOnSource).to.deep.equal([2])
      expect((await keyspace(source))[2]).to.equal(1)
      expect(await reg.hexists('shards._strays', `${inst(source)}/2`)).to.equal(1)
      expect(await reg.hget('shards.s002', 'master')).to.equal(target.address(1))
    })

    describe('a stale operator: stopped past its lease, overtaken and recovered, then resumed', () => {
      for (const [step, outcome] of [
        ['copy', 'rolled-back'],
        ['registry', 'rolled-forward'],
      ] as const) {
        it(`stopped after ${step}: once resumed it changes nothing anywhere and exits 4`, async () => {
          const writer = await startWriter(['s000', 's001'])
          const stale = await stoppedAt(['shards:move', 's001', '--to', inst(target), ...BOUNDS, '--yes', ...r()], `${step}:after:stop`, {
            SHARDCTL_LOCK_LEASE: '1s',
          })
          await until('the stale lease expired', async () => (await reg.exists('shards._lock')) === 0)
          const recovery = await spawnCli(['shards:move', '--recover', ...BOUNDS, '--json', ...r()])
          expect(recovery.exitCode, recovery.stderr + recovery.stdout).to.equal(0)
          expect(JSON.parse(recovery.stdout).recovered).to.equal(outcome)
          await expectNothingLost(writer)
          const settled = await fleetState(reg, [source, target])
          resume(stale)
          const resumed = await stale.done
          expect(resumed.exitCode, resumed.stderr).to.equal(4)
          expect(resumed.stderr).to.match(/lock was lost/)
          expect(await fleetState(reg, [source, target])).to.deep.equal(settled)
          if (outcome === 'rolled-forward') await expectMoved({s001: 1})
          else expect((await keyspace(target))[1]).to.equal(undefined)
        })
      }
    })

    describe('killed at a step, then run again', () => {
      const steps: [string, 'rolled-back' | 'rolled-forward'][] = [
        ['copy:after', 'rolled-back'],
        ['verify:after', 'rolled-back'],
        ['fence:after', 'rolled-back'],
        ['catch-up:after', 'rolled-back'],
        ['stop-stream:after', 'rolled-back'],
        ['recheck:after', 'rolled-back'],
        ['registry:before', 'rolled-back'],
        ['registry:after', 'rolled-forward'],
        ['hold:after', 'rolled-forward'],
        ['release:before', 'rolled-forward'],
        ['release:after', 'rolled-forward'],
        ['grace:after', 'rolled-forward'],
      ]
      it('the whole command run again after a kill that rolls back: exit 3 (the move asked for was not made); once more, it is made', async () => {
        const command = ['shards:move', 's001', '--to', inst(target), ...BOUNDS, '--yes', ...r()]
        const killed = await spawnCli(command, {env: {SHARDCTL_FAILPOINT: 'copy:after:kill'}})
        expect(killed.exitCode, killed.stderr).to.not.equal(0)
        const again = await spawnCli([...command, '--json'])
        expect(again.exitCode, again.stderr + again.stdout).to.equal(3)
        expect(JSON.parse(again.stdout).recovered).to.equal('rolled-back')
        expect(await reg.hget('shards.s001', 'master')).to.equal(source.address(1))
        const human = await spawnCli(command, {env: {SHARDCTL_FAILPOINT: 'copy:after:kill'}})
        expect(human.exitCode).to.not.equal(0)
        const told = await spawnCli(command)
        expect(told.exitCode, told.stderr).to.equal(3)
        expect(told.stderr).to.match(
          /the move asked for was not made \(the interrupted one was rolled back first\): run the command again to make it/,
        )
        const made = await spawnCli(command)
        expect(made.exitCode, made.stderr).to.equal(0)
        await expectMoved({s001: 1})
      })

      it('a rerun naming another move after a kill past the switch: the interrupted move is finished, and exit 3 says the one asked for was not made', async () => {
        const killed = await spawnCli(['shards:move', 's001', '--to', inst(target), ...BOUNDS, '--yes', ...r()], {
          env: {SHARDCTL_FAILPOINT: 'release:before:kill'},
        })
        expect(killed.exitCode, killed.stderr).to.not.equal(0)
        const other = await spawnCli(['shards:move', 's001', '--to', `${inst(target)}/7`, ...BOUNDS, '--yes', ...r()])
        expect(other.exitCode, other.stderr).to.equal(3)
        expect(other.stderr).to.match(
          /the interrupted move \(s001 to 127\.0\.0\.1:\d+\) was finished, not the one asked for \(s001 to 127\.0\.0\.1:\d+\)/,
        )
        await expectMoved({s001: 1})
      })

      for (const [failpoint, outcome] of steps) {
        it(`SIGKILL at ${failpoint}: the rerun ${outcome === 'rolled-back' ? 'rolls back' : 'finishes'}, nothing lost`, async () => {
          const far = await dbContent(target, 0)
          const writer = await startWriter(['s000', 's001', 'far'])
          const killed = await spawnCli(['shards:move', 's001', '--to', inst(target), '--max-pause', '5s', ...BOUNDS, '--yes', ...r()], {
            env: {SHARDCTL_FAILPOINT: `${failpoint}:kill`},
          })
          expect(killed.exitCode, killed.stderr).to.not.equal(0)
          expect(await reg.exists('shards._journal'), killed.stderr).to.equal(1)
          const again = await spawnCli(['shards:move', 's001', ...BOUNDS, '--yes', '--json', ...r()])
          expect(again.exitCode, again.stderr + again.stdout).to.equal(0)
          expect(JSON.parse(again.stdout).recovered).to.equal(outcome)
          await expectNothingLost(writer)
          if (outcome === 'rolled-forward') {
            await expectMoved({s001: 1})
          } else {
            expect(await reg.hget('shards.s001', 'master')).to.equal(source.address(1))
            expect((await keyspace(target))[1]).to.equal(undefined)
            expect(await reg.exists('shards._journal', 'shards._lock')).to.equal(0)
            expect(await fencesOf([source])).to.deep.equal([])
          }
          // The writer wrote to far too: its keys are far's seed plus the writer's, nothing of s001's.
          const now = await dbContent(target, 0)
          for (const [key, value] of Object.entries(far)) expect(now[key]).to.deep.equal(value)
          expect(Object.keys(now).filter((k) => k.startsWith('seed:'))).to.deep.equal([])
        })
      }
    })
  })
})

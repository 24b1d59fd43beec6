import {setTimeout as sleep} from 'node:timers/promises'

import {expect} from 'chai'
import type {Redis} from 'ioredis'

import {PauseClock} from '../../src/ops/cutover.js'
import {type CliResult, cli, spawnCli, until} from '../helpers/cli.js'
import {useFleet} from '../helpers/fleet.js'
import {fencesOf, resume, roleOf, stoppedAt, takesWrites} from '../helpers/ops.js'
import {type ReplyDelayProxy, startReplyDelayProxy} from '../helpers/proxy.js'
import {type TestServer, useSharedServers, withClients} from '../helpers/redis.js'
import {type ContinuousWriter, lostWrites, startedWriter} from '../helpers/writer.js'

/**
 * A cut-over that fails half-way (issue 20): a host or the registry goes silent at a
 * precise step, with --timeout 1s and a writer that records every acknowledged write.
 * A fault of 1.5 s heals within the default --heal-within (--max-pause + 5 s): the run
 * finishes (exit 0) or rolls back (exit 3), writes flow, nothing is lost. A fault that
 * outlasts the bound: the run gives up, names every instance that still refuses writes
 * and the command that finishes the operation, exits 5; that command, run once the
 * fault is over, leaves every write flowing and nothing lost.
 */

const SHORT_MS = 1500

/** A fault that starts now and ends when `end` is called. */
interface Fault {
  end: () => void
}

function frozen(server: TestServer): Fault {
  process.kill(server.pid, 'SIGSTOP')
  return {end: () => process.kill(server.pid, 'SIGCONT')}
}

function stalled(proxy: ReplyDelayProxy): Fault {
  proxy.stall()
  return {end: () => proxy.release()}
}

/**
 * Start the command stopped at `failpoint`, start the fault, let the command go on. A short
 * fault ends after `ms`; a lasting one (no `ms`) holds until the command has ended: it must
 * give up while the fault still holds, and once it has, holding on proves nothing more.
 */
async function withFault(args: string[], failpoint: string, start: () => Fault, ms?: number): Promise<CliResult> {
  const run = await stoppedAt(args, failpoint)
  const fault = start()
  resume(run)
  try {
    if (ms !== undefined) {
      await sleep(ms)
      fault.end()
    }
    return await run.done
  } finally {
    fault.end()
  }
}

/** The command a run that gave up names, run as it is written (without the program name). */
async function runNamed(command: string, extra: string[] = []): Promise<CliResult> {
  const [bin, ...args] = command.split(' ')
  expect(bin).to.equal('shardctl')
  return spawnCli([...args, ...extra])
}

interface GaveUp {
  code: string
  exitCode: number
  message: string
  recover: string
  refusing: {instance: string; why: string; shards: string[]; fencedSince?: string}[]
  lossless: boolean
}

function gaveUp(done: CliResult): GaveUp {
  expect(done.exitCode, done.stderr + done.stdout).to.equal(5)
  const {error} = JSON.parse(done.stdout) as {error: GaveUp}
  expect(error).to.include({code: 'EDEGRADED', exitCode: 5, lossless: true})
  expect(error.message).to.match(/stopped half-way and did not heal within --heal-within 6\.0 s/)
  expect(error.message).to.match(/no acknowledged write was lost/)
  expect(error.recover).to.match(/^shardctl shards:(split|promote|move) --recover -r redis:\/\/127\.0\.0\.1:\d+\/0$/)
  for (const r of error.refusing) expect(error.message, r.instance).to.include(r.instance)
  return error
}

/** A run that healed within the default bound, by finishing (exit 0) or by rolling back (exit 3), and says so. */
function healed(done: CliResult, outcome: 'rolled-back' | 'rolled-forward'): void {
  expect(done.exitCode, done.stderr + done.stdout).to.equal(outcome === 'rolled-back' ? 3 : 0)
  const result = JSON.parse(done.stdout)
  expect(result.recovered).to.equal(outcome)
  expect(result.healed).to.include({withinMs: 6000})
}

describe('ops/cutover: the pause clock', () => {
  it('adds up the pauses of a run that lifted its fence and set it again', async () => {
    const clock = new PauseClock()
    const later = async (than: number) => until('the clock moved on', () => Date.now() > than)
    expect(clock.ms).to.equal(undefined)
    clock.start()
    await later(Date.now())
    clock.end()
    const first = clock.ms!
    expect(first).to.be.greaterThan(0)
    await later(Date.now())
    expect(clock.ms, 'no pause between the lift and the next fence').to.equal(first)
    clock.start()
    clock.start() // a fence set again while on: the same pause
    await later(Date.now())
    clock.end()
    clock.end()
    expect(clock.ms).to.be.greaterThan(first)
  })
})

describe('ops/cutover: a cut-over that fails half-way heals itself, or says what it left', () => {
  const fleet = useFleet()
  let reg: Redis
  let proxy: ReplyDelayProxy
  const inst = (s: TestServer) => `127.0.0.1:${s.port}`
  before(() => {
    reg = fleet.reg
  })
  beforeEach(async () => {
    proxy = await startReplyDelayProxy(fleet.registry.port)
  })
  afterEach(async () => {
    await proxy.close()
  })
  /** shardctl reaches the registry through the proxy; the writer and the test do not. */
  const viaProxy = () => ['-r', `redis://127.0.0.1:${proxy.port}/0`]
  /** A split's or a move's bounds: --timeout 1s, a short grace; JSON; the registry through the proxy. */
  const cutOverFlags = () => ['--timeout', '1s', '--grace', '300ms', '--yes', '--json', ...viaProxy()]

  /** `count` shards in the first databases of the source, 100 keys each (seed:0-99, valued by their db). */
  async function seeded(source: TestServer, count: number): Promise<void> {
    const init = await cli(['shards:init', '--instance', inst(source), '--count', String(count), '--yes', ...fleet.r()])
    expect(init.exitCode, init.stderr).to.equal(0)
    await withClients([source], async ([c]) => {
      for (let db = 0; db < count; db++) {
        await c.select(db)
        await c.mset(Object.fromEntries(Array.from({length: 100}, (_, i) => [`seed:${i}`, String(db)])))
      }
    })
  }

  const startWriter = (shards: string[]) => startedWriter(reg, shards)
  const expectNothingLost = async (writer: ContinuousWriter) => expect(await lostWrites(reg, writer)).to.deep.equal([])

  describe('shards:split', () => {
    const SHARDS = ['s000', 's001', 's002', 's003', 's004', 's005']
    let source: TestServer
    let target: TestServer
    const shared = useSharedServers([null, null])

    beforeEach(async () => {
      ;[source, target] = await shared.fresh()
      await seeded(source, SHARDS.length)
    })

    const split = (...extra: string[]) => ['shards:split', inst(source), '--to', inst(target), ...cutOverFlags(), ...extra]

    /** Every shard is where the registry routes it, with its data, and every instance takes writes. */
    async function expectSplitDone(): Promise<void> {
      const moved = []
      for (const id of SHARDS) {
        const master = (await reg.hget(`shards.${id}`, 'master'))!
        if (master.startsWith(inst(target))) moved.push(id)
      }
      expect(moved).to.have.length(3)
      expect(await reg.exists('shards._journal', 'shards._lock')).to.equal(0)
      expect(await fencesOf([source, target])).to.deep.equal([])
      expect(await takesWrites(source)).to.equal(true)
      expect((await roleOf(target)).role).to.equal('master')
    }

    const faults: [string, string, () => Fault][] = [
      ['the source silent during the catch-up', 'catch-up:before:stop', () => frozen(source)],
      ['the registry silent after the promote step', 'promote:after:stop', () => stalled(proxy)],
      ['the target silent at the promote step', 'promote:before:stop', () => frozen(target)],
    ]

    for (const [name, failpoint, fault] of faults) {
      it(`${name} for 1.5 s: the run heals and finishes, exit 0, nothing lost`, async () => {
        const writer = await startWriter(SHARDS)
        const done = await withFault(split(), failpoint, fault, SHORT_MS)
        expect(done.exitCode, done.stderr + done.stdout).to.equal(0)
        const result = JSON.parse(done.stdout)
        expect(result.applied).to.equal(true)
        expect(result.healed).to.include({withinMs: 6000})
        expect(result.healed.attempts).to.be.at.least(1)
        await expectNothingLost(writer)
        await expectSplitDone()
      })

      it(`${name} until the run gives up (past --heal-within): it names what refuses writes and the command, exit 5; that command finishes it`, async () => {
        const writer = await startWriter(SHARDS)
        const done = await withFault(split(), failpoint, fault)
        const error = gaveUp(done)
        const fenced = error.refusing.find((r) => r.instance === inst(source))
        expect(fenced, 'the source refuses writes').to.not.equal(undefined)
        expect(fenced!.fencedSince).to.be.a('string')
        expect(fenced!.shards).to.have.length(3)
        const recovered = await runNamed(error.recover, ['--json'])
        expect(recovered.exitCode, recovered.stderr + recovered.stdout).to.equal(0)
        expect(JSON.parse(recovered.stdout).recovered).to.equal('rolled-forward')
        await expectNothingLost(writer)
        await expectSplitDone()
      })
    }

    it('the registry silent for longer than the lease: once it answers, the run takes its lock again and finishes, nothing lost', async () => {
      const writer = await startWriter(SHARDS)
      const run = await stoppedAt(split('--heal-within', '30s'), 'promote:after:stop', {SHARDCTL_LOCK_LEASE: '2s'})
      const fault = stalled(proxy)
      resume(run)
      try {
        // Nothing can renew a lease the registry does not hear: it runs out.
        await until('the lease ran out', async () => (await reg.exists('shards._lock')) === 0)
      } finally {
        fault.end()
      }
      const done = await run.done
      expect(done.exitCode, done.stderr + done.stdout).to.equal(0)
      expect(JSON.parse(done.stdout).healed.attempts).to.be.at.least(1)
      await expectNothingLost(writer)
      await expectSplitDone()
    })

    it('in a terminal log, the last line names the fenced source, its shards, and the command; nothing lost once it is run', async () => {
      const writer = await startWriter(SHARDS)
      const args = split().filter((a) => a !== '--json')
      const done = await withFault(args, 'catch-up:before:stop', () => frozen(source))
      expect(done.exitCode, done.stderr).to.equal(5)
      const last = done.stderr.trim().split('\n').at(-1)!
      expect(last).to.match(
        new RegExp(`^Error: the split of ${inst(source)} stopped half-way and did not heal within --heal-within 6\\.0 s`),
      )
      expect(last).to.match(
        new RegExp(
          `writes are refused by ${inst(source)} \\(it does not answer; shardctl's write fence is on since \\S+ \\([\\d.]+ s ago\\); 3 shards`,
        ),
      )
      expect(last).to.match(new RegExp(`and by ${inst(target)} \\(still a replica, yet the registry routes 3 shards`))
      expect(last).to.match(
        /no acknowledged write was lost — to finish or roll it back, run: shardctl shards:split --recover -r redis:\/\/127\.0\.0\.1:\d+\/0 \(/,
      )
      expect(done.stderr).to.match(
        /Healing: the split finishes or rolls back by itself as a rerun would, trying for up to 6\.0 s \(--heal-within\)/,
      )
      const recovered = await runNamed(/run: (shardctl shards:split --recover -r \S+)/.exec(last)![1])
      expect(recovered.exitCode, recovered.stderr).to.equal(0)
      await expectNothingLost(writer)
      await expectSplitDone()
    })
  })

  describe('shards:move', () => {
    const SHARDS = ['s000', 's001', 's002']
    let source: TestServer
    let target: TestServer
    const shared = useSharedServers([null, null])

    beforeEach(async () => {
      ;[source, target] = await shared.fresh()
      await seeded(source, SHARDS.length)
    })

    const move = () => ['shards:move', 's001', '--to', inst(target), ...cutOverFlags()]

    /** s001 where the outcome put it, with its seed, and nothing of it on the other side; every write flows. */
    async function expectMoveDone(outcome: 'rolled-back' | 'rolled-forward'): Promise<void> {
      const [at, other, db] = outcome === 'rolled-forward' ? [target, source, 0] : [source, target, 1]
      expect(await reg.hget('shards.s001', 'master')).to.equal(at.address(db))
      await withClients([at, other], async ([here, there]) => {
        await here.select(db)
        expect(await here.get('seed:99')).to.equal('1')
        await there.select(outcome === 'rolled-forward' ? 1 : 0)
        expect(await there.dbsize(), 'nothing of s001 left on the other side').to.equal(0)
      })
      expect(await reg.exists('shards._journal', 'shards._lock')).to.equal(0)
      expect(await fencesOf([source, target])).to.deep.equal([])
      expect(await takesWrites(source)).to.equal(true)
      expect(await takesWrites(target)).to.equal(true)
    }

    // The copy lives in the run: before the switch a fault rolls the move back; after it, forward.
    // A silent target keeps no fence on: writes go on on the source while its copy waits to be dropped.
    const faults: [string, string, () => Fault, 'rolled-back' | 'rolled-forward', 'fenced' | 'nothing refuses'][] = [
      ['the source silent during the catch-up', 'catch-up:before:stop', () => frozen(source), 'rolled-back', 'fenced'],
      ['the target silent at the re-check under the fence', 'recheck:before:stop', () => frozen(target), 'rolled-back', 'nothing refuses'],
      ['the registry silent after the registry step', 'registry:after:stop', () => stalled(proxy), 'rolled-forward', 'fenced'],
    ]

    for (const [name, failpoint, fault, outcome, left] of faults) {
      const expected = outcome === 'rolled-back' ? 'rolls back, exit 3' : 'finishes, exit 0'
      it(`${name} for 1.5 s: the run heals and ${expected}, nothing lost`, async () => {
        const writer = await startWriter(SHARDS)
        const done = await withFault(move(), failpoint, fault, SHORT_MS)
        healed(done, outcome)
        await expectNothingLost(writer)
        await expectMoveDone(outcome)
      })

      const gives =
        left === 'fenced' ? 'names the fenced source and the command, exit 5' : 'says nothing refuses writes and names the command, exit 1'
      it(`${name} until the run gives up (past --heal-within): it ${gives}; that command ${outcome === 'rolled-back' ? 'rolls it back' : 'finishes it'}`, async () => {
        const writer = await startWriter(SHARDS)
        const done = await withFault(move(), failpoint, fault)
        let recover: string
        if (left === 'fenced') {
          const error = gaveUp(done)
          const fenced = error.refusing.find((r) => r.instance === inst(source))
          expect(fenced, 'the source refuses writes').to.not.equal(undefined)
          expect(fenced!.fencedSince).to.be.a('string')
          expect(fenced!.shards).to.include('s000')
          recover = error.recover
        } else {
          expect(done.exitCode, done.stderr + done.stdout).to.equal(1)
          const {error} = JSON.parse(done.stdout) as {error: GaveUp}
          expect(error).to.include({code: 'EOPEN', lossless: true})
          expect(error.refusing).to.deep.equal([])
          expect(error.message).to.match(
            /did not heal within --heal-within 6\.0 s \(the target does not answer, so its copy cannot be dropped\): no instance refuses writes/,
          )
          expect(await takesWrites(source), 'the source takes writes while the target is silent').to.equal(true)
          recover = error.recover
        }
        const recovered = await runNamed(recover, ['--json'])
        expect(recovered.exitCode, recovered.stderr + recovered.stdout).to.equal(0)
        expect(JSON.parse(recovered.stdout).recovered).to.equal(outcome)
        await expectNothingLost(writer)
        await expectMoveDone(outcome)
      })
    }
  })

  describe('shards:promote', () => {
    const SHARDS = ['s000', 's001', 's002']
    let master: TestServer
    let replica: TestServer

    const shared = useSharedServers([null, 0])

    beforeEach(async () => {
      ;[master, replica] = await shared.fresh()
      const init = await cli(['shards:init', '--instance', inst(master), '--replica', inst(replica), '--count', '3', '--yes', ...fleet.r()])
      expect(init.exitCode, init.stderr).to.equal(0)
    })

    const promote = () => [
      'shards:promote',
      inst(master),
      '--replica',
      inst(replica),
      '--max-lag',
      '1000000000',
      '--timeout',
      '1s',
      '--yes',
      '--json',
      ...viaProxy(),
    ]

    /** The registry, the roles and the fencing agree with `newMaster` as the master; every write flows. */
    async function expectPromoted(newMaster: TestServer, follower: TestServer): Promise<void> {
      for (const id of SHARDS) expect(await reg.hget(`shards.${id}`, 'master'), id).to.equal(newMaster.address(Number(id.slice(1))))
      expect((await roleOf(newMaster)).role).to.equal('master')
      expect(await roleOf(follower)).to.include({role: 'slave', masterPort: newMaster.port})
      expect(await reg.exists('shards._journal', 'shards._lock')).to.equal(0)
      expect(await fencesOf([master, replica])).to.deep.equal([])
      expect(await takesWrites(newMaster)).to.equal(true)
    }

    const faults: [string, string, () => Fault, 'rolled-back' | 'rolled-forward'][] = [
      ['the master silent during the catch-up', 'catch-up:before:stop', () => frozen(master), 'rolled-back'],
      ['the registry silent after the promote step', 'promote:after:stop', () => stalled(proxy), 'rolled-forward'],
      ['the replica silent at the promote step', 'promote:before:stop', () => frozen(replica), 'rolled-forward'],
    ]

    for (const [name, failpoint, fault, outcome] of faults) {
      const expected = outcome === 'rolled-back' ? 'rolls back, exit 3' : 'finishes, exit 0'
      it(`${name} for 1.5 s: the run heals and ${expected}, nothing lost`, async () => {
        const writer = await startWriter(SHARDS)
        const done = await withFault(promote(), failpoint, fault, SHORT_MS)
        healed(done, outcome)
        await expectNothingLost(writer)
        if (outcome === 'rolled-back') await expectPromoted(master, replica)
        else await expectPromoted(replica, master)
      })

      it(`${name} until the run gives up (past --heal-within): it names what refuses writes and the command, exit 5; that command ${outcome === 'rolled-back' ? 'rolls it back' : 'finishes it'}`, async () => {
        const writer = await startWriter(SHARDS)
        const done = await withFault(promote(), failpoint, fault)
        const error = gaveUp(done)
        expect(error.refusing.map((r) => r.instance)).to.include(inst(failpoint.startsWith('promote:before') ? replica : master))
        const recovered = await runNamed(error.recover, ['--json'])
        expect(recovered.exitCode, recovered.stderr + recovered.stdout).to.equal(0)
        expect(JSON.parse(recovered.stdout).recovered).to.equal(outcome)
        await expectNothingLost(writer)
        if (outcome === 'rolled-back') await expectPromoted(master, replica)
        else await expectPromoted(replica, master)
      })
    }
  })
})

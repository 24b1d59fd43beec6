import {expect} from 'chai'
import type {Redis} from 'ioredis'

import {fencedSince} from '../../src/ops/journal.js'
import {type CliResult, cli, spawnCli, startCli} from '../helpers/cli.js'
import {useFleet} from '../helpers/fleet.js'
import {fencesOf, untilStepDone} from '../helpers/ops.js'
import {type TestServer, startReplicated, startServer, withClients} from '../helpers/redis.js'

/**
 * A second operator is told the truth (issue 19): while a split runs, every command
 * that reads the journal says that another operator holds the lock, who and since when,
 * and what it is running (exit 4), never that the split was interrupted. Once the run is
 * gone (killed), the split is interrupted, and only then is the recovering command named.
 */
describe('ops/journal: when the fence went on', () => {
  const at = (name: string, state: 'started' | 'done', t: number) => ({name, state, at: `2026-12-01T10:00:0${t}.000Z`})
  it('is the start of the last fence step that no lift, release or undo followed', () => {
    expect(fencedSince({steps: [at('copy', 'started', 0), at('copy', 'done', 1)]})).to.equal(undefined)
    expect(fencedSince({steps: [at('fence', 'started', 1)]})).to.equal('2026-12-01T10:00:01.000Z')
    expect(fencedSince({steps: [at('fence', 'started', 1), at('fence', 'done', 2), at('release', 'started', 3)]})).to.equal(
      '2026-12-01T10:00:01.000Z',
    )
    expect(fencedSince({steps: [at('fence', 'started', 1), at('fence', 'done', 2), at('release', 'done', 3)]})).to.equal(undefined)
    // A run that heals lifted the fence and set it again.
    const again = [at('fence', 'started', 1), at('lift', 'done', 2), at('hold', 'done', 3), at('fence', 'started', 4)]
    expect(fencedSince({steps: again})).to.equal('2026-12-01T10:00:04.000Z')
    expect(fencedSince({steps: [at('fence', 'started', 1), at('undo', 'done', 2)]})).to.equal(undefined)
  })
})

describe('an operation open in the journal: running or interrupted', () => {
  const fleet = useFleet()
  let reg: Redis
  let source: TestServer
  let target: TestServer
  let spare: TestServer
  let other: {master: TestServer; replicas: TestServer[]}
  const inst = (s: TestServer) => `127.0.0.1:${s.port}`
  const r = () => fleet.r()

  before(() => {
    reg = fleet.reg
  })
  beforeEach(async () => {
    ;[source, target, spare, other] = await Promise.all([startServer(), startServer(), startServer(), startReplicated(1)])
    expect((await cli(['shards:init', '--instance', inst(source), '--count', '4', '--yes', ...r()])).exitCode).to.equal(0)
    const far = await cli(['shards:add', 'far', '--master', other.master.address(0), '--replica', other.replicas[0].address(0), ...r()])
    expect(far.exitCode, far.stderr).to.equal(0)
    await withClients([source], async ([c]) => c.mset({a: '1', b: '2'}))
  })
  afterEach(async () => {
    await Promise.all([source, target, spare, other.master, ...other.replicas].map((s) => s.stop()))
  })

  /** Every command that reads the journal, each run plainly and with --json. */
  const readers = (): string[][] => [
    ['shards:promote', inst(other.master), '--yes'],
    ['shards:promote', inst(source), '--yes'],
    ['shards:promote', 'far', '--dry-run'],
    ['shards:promote', '--recover'],
    ['shards:split', inst(source), '--yes'],
    ['shards:split', inst(other.master), '--to', inst(spare), '--yes'],
    ['shards:split', inst(source), '--to', inst(target), '--dry-run'],
    ['shards:split', '--recover'],
  ]

  async function both(args: string[]): Promise<{plain: CliResult; json: CliResult}> {
    return {plain: await cli([...args, ...r()]), json: await cli([...args, '--json', ...r()])}
  }

  it('while a split runs, each of them exits 4 naming the holder, since when and the running split; shards:check says it runs', async () => {
    // Stays in its cut-over, alive and renewing its lease, with the source fenced.
    const split = await startCli(['shards:split', inst(source), '--to', inst(target), '--yes', ...r()], {
      env: {SHARDCTL_FAILPOINT: 'fence:after:sleep-120000'},
    })
    try {
      await untilStepDone(reg, 'fence')
      const running = new RegExp(
        `another operator holds the lock: \\S+ \\(shards:split, pid ${split.pid}\\) since \\S+ \\(\\d+s ago\\); it is running the split of ${inst(source)}, now at step "fence" \\(done\\)`,
      )
      for (const args of readers()) {
        const {plain, json} = await both(args)
        expect(plain.exitCode, `${args.join(' ')}: ${plain.stderr}`).to.equal(4)
        expect(plain.stderr.trim().split('\n').at(-1), args.join(' ')).to.match(running)
        expect(plain.stderr, args.join(' ')).not.to.match(/interrupted/)
        const {error} = JSON.parse(json.stdout) as {error: {code: string; exitCode: number; message: string}}
        expect(json.exitCode, args.join(' ')).to.equal(4)
        expect(error, args.join(' ')).to.include({code: 'ELOCKED', exitCode: 4})
        expect(error.message, args.join(' ')).to.match(running)
      }

      const check = await spawnCli(['shards:check', '--allow-no-replica', ...r()])
      expect(check.exitCode).to.equal(3)
      expect(check.stdout).to.match(/running now \(\S+ \(shards:split, pid \d+\) since/)
      const report = JSON.parse((await spawnCli(['shards:check', '--allow-no-replica', '--json', ...r()])).stdout)
      const row = report.leftovers.find((l: {subject: string}) => l.subject === inst(source))
      expect(row.fence).to.include({running: true})
      expect(row.fence.operation).to.include({type: 'split', target: inst(source)})
      expect(row.problems[0]).to.match(
        new RegExp(
          `^refuses every write since \\S+ \\(\\d+s\\): the split of ${inst(source)}, running now \\(.*pid ${split.pid}.*\\), has it fenced`,
        ),
      )
    } finally {
      process.kill(split.pid, 'SIGKILL')
      await split.done
    }
  })

  it('once the run is gone, the split is interrupted: each names shards:split --recover; check says since when; --recover finishes it', async () => {
    const killed = await spawnCli(['shards:split', inst(source), '--to', inst(target), '--yes', ...r()], {
      env: {SHARDCTL_FAILPOINT: 'fence:after:kill'},
    })
    expect(killed.exitCode).to.not.equal(0)
    expect(await fencesOf([source])).to.deep.equal([String(source.port)])

    const interrupted = new RegExp(`an interrupted split of ${inst(source)}, started by \\S+ at \\S+, stopped at step "fence" \\(done\\)`)
    for (const args of readers().filter((a) => !(a[0] === 'shards:split' && (a[1] === inst(source) || a[1] === '--recover')))) {
      const {plain, json} = await both(args)
      expect(plain.exitCode, `${args.join(' ')}: ${plain.stderr}`).to.equal(1)
      expect(plain.stderr, args.join(' ')).to.match(interrupted)
      expect(plain.stderr, args.join(' ')).to.match(/run shardctl shards:split --recover to finish or roll it back first/)
      const {error} = JSON.parse(json.stdout) as {error: {code: string; exitCode: number}}
      expect(error, args.join(' ')).to.include({code: 'EPENDING', exitCode: 1})
    }

    const check = JSON.parse((await spawnCli(['shards:check', '--allow-no-replica', '--json', ...r()])).stdout)
    const row = check.leftovers.find((l: {subject: string}) => l.subject === inst(source))
    expect(row.fence).to.include({running: false})
    expect(row.fence.since).to.be.a('string')
    expect(row.fence.onForMs).to.be.a('number')
    expect(row.fence.recover).to.equal(`shardctl shards:split --recover -r ${fleet.registry.url}`)
    expect(row.problems[0]).to.match(
      new RegExp(
        `^refuses every write since \\S+ \\(\\d+s\\): an interrupted split of ${inst(source)} \\(started by \\S+ at \\S+\\) left its fence on; run shardctl shards:split --recover -r redis://127\\.0\\.0\\.1:\\d+/0 to finish or roll it back$`,
      ),
    )

    // What a cron job runs: no argument, the split is found in the journal.
    const recovered = await spawnCli(['shards:split', '--recover', '--json', ...r()])
    expect(recovered.exitCode, recovered.stderr).to.equal(0)
    expect(JSON.parse(recovered.stdout)).to.include({recovered: 'rolled-forward', applied: true})
    expect(await fencesOf([source, target])).to.deep.equal([])
    expect(await reg.exists('shards._journal', 'shards._lock')).to.equal(0)

    for (const command of ['shards:split', 'shards:promote']) {
      const nothing = await spawnCli([command, '--recover', ...r()])
      expect(nothing.exitCode, nothing.stderr).to.equal(0)
      expect(nothing.stdout).to.match(/Nothing to recover: no operation is open in the journal\./)
      expect(JSON.parse((await spawnCli([command, '--recover', '--json', ...r()])).stdout)).to.deep.equal({
        applied: false,
        recovered: 'nothing',
      })
    }
  })

  it('--recover takes no plan: naming targets or shards with it is a usage error', async () => {
    for (const args of [
      ['shards:split', '--recover', '--to', inst(target)],
      ['shards:split', '--recover', '--dry-run'],
      ['shards:promote', '--recover', '--replica', inst(other.replicas[0])],
    ]) {
      const run = await spawnCli([...args, ...r()])
      expect(run.exitCode, args.join(' ')).to.equal(2)
      expect(run.stderr.trim().split('\n')).to.have.length(1)
    }
    for (const [command, what] of [
      ['shards:split', /name the instance to split/],
      ['shards:promote', /name a shard or its master instance/],
    ] as const) {
      const run = await spawnCli([command, ...r()])
      expect(run.exitCode).to.equal(2)
      expect(run.stderr).to.match(what)
    }
  })
})

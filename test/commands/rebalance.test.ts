import {expect} from 'chai'
import {Redis} from 'ioredis'

import {ANSI_ALL, cli, isStopped, spawnCli, ttyCli, until} from '../helpers/cli.js'
import {resume, stoppedAt} from '../helpers/ops.js'
import {type TestServer, dumpDb, startServer, withClients} from '../helpers/redis.js'

/**
 * shards:rebalance --by keys over three instances: A serves s1-s4 (db 0-3, 100 keys each),
 * B serves s5 and C serves s6 (db 0, 100 keys each). The mean is 200 keys, so the plan is
 * two moves off A, one onto B and one onto C. The tests run in order on the same fleet:
 * the plan, then --apply, then the rerun that finds it balanced; then D and E, two new
 * instances that serve no shard, are --include'd and take a shard each.
 */
describe('shards:rebalance', () => {
  let registry: TestServer
  let reg: Redis
  let a: TestServer
  let b: TestServer
  let c: TestServer
  let d: TestServer
  let e: TestServer
  const r = () => ['-r', registry.url]
  const inst = (s: TestServer) => `127.0.0.1:${s.port}`

  interface Planned {
    by: string
    instances: {instance: string; before: {keys: number}; after: {keys: number}}[]
    moves: {shard: string; from: string; to: string; command: string}[]
    applied: boolean
    done: string[]
  }

  const plan = async (...args: string[]): Promise<Planned> => {
    const run = await cli(['shards:rebalance', '--by', 'keys', '--json', ...args, ...r()])
    expect(run.exitCode, run.stderr).to.equal(0)
    return JSON.parse(run.stdout) as Planned
  }

  before(async () => {
    ;[registry, a, b, c, d, e] = await Promise.all(Array.from({length: 6}, () => startServer()))
    reg = registry.client()
    const seed = async (server: TestServer, db: number, shard: string) => {
      await withClients([server], async ([client]) => {
        await client.select(db)
        await client.mset(Object.fromEntries(Array.from({length: 100}, (_, i) => [`${shard}:${i}`, shard])))
      })
      expect((await cli(['shards:add', shard, '--master', server.address(db), ...r()])).exitCode).to.equal(0)
    }
    for (const [i, shard] of ['s1', 's2', 's3', 's4'].entries()) await seed(a, i, shard)
    await seed(b, 0, 's5')
    await seed(c, 0, 's6')
  })

  after(async () => {
    reg?.disconnect()
    await Promise.all([registry, a, b, c, d, e].map((s) => s?.stop()))
  })

  it('prints the plan: each instance before and after, and the moves as shards:move command lines for this fleet', async () => {
    const run = await cli(['shards:rebalance', '--by', 'keys', ...r()])
    expect(run.exitCode, run.stderr).to.equal(0)
    const commands = run.stdout.split('\n').filter((line) => line.startsWith('shardctl shards:move'))
    expect(commands).to.have.length(2)
    for (const line of commands)
      expect(line).to.match(new RegExp(`^shardctl shards:move s[1-4] --to 127\\.0\\.0\\.1:\\d+/1 -r ${registry.url}$`))
    for (const s of [a, b, c]) expect(run.stdout).to.include(inst(s))
  })

  it('--json: the instances before and after, and the moves off A, one onto B and one onto C', async () => {
    const planned = await plan()
    expect(planned.by).to.equal('keys')
    const keys = Object.fromEntries(planned.instances.map((i) => [i.instance, [i.before.keys, i.after.keys]]))
    expect(keys).to.deep.equal({[inst(a)]: [400, 200], [inst(b)]: [100, 200], [inst(c)]: [100, 200]})
    expect(planned.moves.map((m) => m.from.split('/')[0])).to.deep.equal([inst(a), inst(a)])
    expect(planned.moves.map((m) => m.to).sort()).to.deep.equal([`${inst(b)}/1`, `${inst(c)}/1`].sort())
    for (const m of planned.moves) expect(m.command).to.equal(`shardctl shards:move ${m.shard} --to ${m.to} -r ${registry.url}`)
    expect(planned.applied).to.equal(false)
  })

  it('--max-moves bounds the plan', async () => {
    const planned = await plan('--max-moves', '1')
    expect(planned.moves).to.have.length(1)
    expect(planned.instances.find((i) => i.instance === inst(a))?.after.keys).to.equal(300)
  })

  it('a plan made while an interrupted move is open says its moves are refused until that move is over', async () => {
    const killed = await spawnCli(['shards:move', 's4', '--to', inst(d), '--yes', ...r()], {env: {SHARDCTL_FAILPOINT: 'copy:after:kill'}})
    expect(killed.exitCode).to.not.equal(0)
    try {
      const run = await cli(['shards:rebalance', '--by', 'keys', ...r()])
      expect(run.exitCode, run.stderr).to.equal(0)
      expect(run.stderr).to.match(
        /an interrupted move of .*: these moves are refused until it is over \(run shardctl shards:move --recover/,
      )
    } finally {
      expect((await cli(['shards:move', '--recover', '--yes', ...r()])).exitCode).to.equal(0)
    }
    expect((await cli(['shards:rebalance', '--by', 'keys', ...r()])).stderr).not.to.match(/refused until/)
  })

  it('--rate, --max-pause, --grace, --hold and --quiet given are passed on: shown in each command line', async () => {
    const planned = await plan('--grace', '200ms', '--rate', '5000', '--quiet', '50ms')
    expect(planned.moves).to.have.length(2)
    for (const m of planned.moves)
      expect(m.command).to.equal(`shardctl shards:move ${m.shard} --to ${m.to} --rate 5000 --grace 200ms --quiet 50ms -r ${registry.url}`)
  })

  it('bad input: --by foo, --max-moves 0, -1 and abc, a bad --grace or --rate, an --include naming a database, are refused, exit 2', async () => {
    for (const [args, said] of [
      [['--by', 'foo'], /by/],
      [['--by', 'keys', '--max-moves', '0'], /max-moves/],
      [['--by', 'keys', '--max-moves', '-1'], /max-moves/],
      [['--by', 'keys', '--max-moves', 'abc'], /max-moves/],
      [['--by', 'keys', '--grace', 'soon'], /duration "soon"/],
      [['--by', 'keys', '--rate', '0'], /--rate "0"/],
      [['--by', 'keys', '--max-pause', '2m'], /--max-pause/],
      [['--by', 'keys', '--include', `${inst(d)}/3`], /names a database/],
    ] as const) {
      const run = await cli(['shards:rebalance', ...args, ...r()])
      expect(run.exitCode, args.join(' ')).to.equal(2)
      expect(run.stderr, args.join(' ')).to.match(said)
    }
  })

  it('--include of an instance that cannot take shards is refused, not planned around: unreachable exit 1, no maxmemory (--by memory) exit 3', async () => {
    const unreachable = await cli(['shards:rebalance', '--by', 'keys', '--include', '127.0.0.1:1', ...r()])
    expect(unreachable.exitCode).to.equal(1)
    expect(unreachable.stderr).to.match(/--include 127\.0\.0\.1:1 cannot take shards: unreachable/)
    const noMax = await cli(['shards:rebalance', '--by', 'memory', '--include', inst(d), ...r()])
    expect(noMax.exitCode).to.equal(3)
    expect(noMax.stderr).to.include(`--include ${inst(d)} cannot take shards: no maxmemory`)
  })

  it('--apply without --yes and without a terminal: exit 2 naming --yes, nothing moved', async () => {
    const before = await dumpDb(reg)
    const run = await spawnCli(['shards:rebalance', '--by', 'keys', '--apply', ...r()])
    expect(run.exitCode).to.equal(2)
    expect(run.stderr).to.include('--yes')
    expect(await dumpDb(reg)).to.deep.equal(before)
  })

  it('--apply on a terminal asks, holding no lock while the question is open; "n" moves nothing', async () => {
    let whileOpen: {lock: string | null; weight: number} | undefined
    const run = await ttyCli(['shards:rebalance', '--by', 'keys', '--apply', ...r()], 'n\r', {}, async () => {
      // Another operator can work while this one decides.
      whileOpen = {lock: await reg.get('shards._lock'), weight: (await cli(['shards:weight', 's5', '3', '--yes', ...r()])).exitCode}
      expect((await cli(['shards:weight', 's5', '1', '--yes', ...r()])).exitCode).to.equal(0)
    })
    expect(run.exitCode, run.screen).to.equal(0)
    expect(run.screen).to.match(/Make 2 moves \(/)
    expect(run.screen).to.include('Nothing changed.')
    expect(whileOpen).to.deep.equal({lock: null, weight: 0})
    for (const shard of ['s1', 's2', 's3', 's4']) expect(await reg.hget(`shards.${shard}`, 'master')).to.match(new RegExp(`:${a.port}/`))
  })

  it('--apply stops at the first move that fails, with its exit code, naming what was done and what was not', async () => {
    const [first, second] = (await plan()).moves
    // The first move stops itself once the registry routes to its target; meanwhile the
    // second one's target database gets a key, so its preflight refuses it (exit 2).
    const run = await stoppedAt(
      ['shards:rebalance', '--by', 'keys', '--grace', '100ms', '--apply', '--yes', '--json', ...r()],
      'registry:after:stop',
    )
    const [host, port, db] = second.to.split(/[:/]/)
    const junk = new Redis({host, port: Number(port), db: Number(db)})
    await junk.set('junk', '1')
    resume(run)
    const {exitCode, stdout} = await run.done
    expect(exitCode).to.equal(2)
    const {error} = JSON.parse(stdout) as {
      error: {code: string; message: string; done: string[]; failed: string; notDone: string[]; move?: unknown}
    }
    expect(error).to.include({code: 'EREBALANCE', failed: second.shard})
    expect(error.done).to.deep.equal([first.shard])
    expect(error.notDone).to.deep.equal([])
    // shards:move's own error, which --json would otherwise not show.
    expect(error).to.have.nested.property('move.exitCode', 2)
    expect(error.message).to.include(`done: ${first.shard}; not made: ${second.shard}`)
    expect(await reg.hget(`shards.${first.shard}`, 'master')).to.equal(first.to)
    expect(await reg.hget(`shards.${second.shard}`, 'master')).to.equal(second.from)
    await junk.del('junk')
    junk.disconnect()
  })

  it('--apply --yes makes the planned moves, keeping its lease while a move keeps the main thread busy past it: the registry routes them to the targets and the data is there; a rerun finds the fleet balanced', async () => {
    const planned = await plan('--grace', '100ms')
    const run = await spawnCli(['shards:rebalance', '--by', 'keys', '--grace', '100ms', '--apply', '--yes', '--json', ...r()], {
      env: {SHARDCTL_LOCK_LEASE: '1s', SHARDCTL_FAILPOINT: 'copy:after:busy-3000'},
    })
    expect(run.exitCode, run.stderr).to.equal(0)
    const applied = JSON.parse(run.stdout) as Planned
    expect(applied.applied).to.equal(true)
    expect(applied.moves).to.deep.equal(planned.moves)
    expect(applied.done).to.deep.equal(planned.moves.map((m) => m.shard))
    for (const m of planned.moves) {
      expect(await reg.hget(`shards.${m.shard}`, 'master'), m.shard).to.equal(m.to)
      const [host, port, db] = m.to.split(/[:/]/)
      const target = [b, c].find((s) => `${host}:${s.port}` === `${host}:${port}`)!
      await withClients([target], async ([client]) => {
        await client.select(Number(db))
        expect(await client.dbsize()).to.equal(100)
        expect(await client.get(`${m.shard}:7`)).to.equal(m.shard)
      })
    }
    const again = await cli(['shards:rebalance', '--by', 'keys', ...r()])
    expect(again.exitCode).to.equal(0)
    expect(again.stdout).to.match(/Balanced by keys/)
    expect((await plan()).moves).to.deep.equal([])
  })

  it('--apply --include on a terminal: a plan that changes while the question is open is not carried out; exit 3, nothing moved', async () => {
    const include = ['--include', inst(d), '--include', inst(e)]
    const routes = async () => Promise.all(['s1', 's2', 's3', 's4', 's5', 's6'].map((s) => reg.hget(`shards.${s}`, 'master')))
    const before = await routes()
    // D fills up (keys in a database no shard uses) while the operator reads the plan: it can take no shard now.
    const fill = async (client: Redis) => {
      await client.select(9)
      await client.mset(Object.fromEntries(Array.from({length: 300}, (_, i) => [`other:${i}`, 'x'])))
    }
    const run = await ttyCli(['shards:rebalance', '--by', 'keys', ...include, '--apply', ...r()], 'y\r', {}, () =>
      withClients([d], async ([client]) => fill(client)),
    )
    try {
      expect(run.screen.replaceAll(ANSI_ALL, '')).to.include('Make 2 moves (')
      expect(run.exitCode, run.screen).to.equal(3)
      expect(run.screen).to.include('the registry or the fleet changed while the question was open; nothing was changed')
      expect(await routes()).to.deep.equal(before)
      expect(await reg.get('shards._lock')).to.equal(null)
      expect(await reg.get('shards._journal')).to.equal(null)
    } finally {
      await withClients([d], async ([client]) => {
        await client.select(9)
        await client.flushdb()
      })
    }
  })

  it('--include: new instances that serve no shard take shards; --apply holds one lock across the moves, so another operator, during a move or between two, exits 4 naming the rebalance', async () => {
    const include = ['--include', inst(d), '--include', inst(e)]
    const planned = await plan(...include)
    const keys = Object.fromEntries(planned.instances.map((i) => [i.instance, [i.before.keys, i.after.keys]]))
    expect(keys[inst(d)]).to.deep.equal([0, 100])
    expect(keys[inst(e)]).to.deep.equal([0, 100])
    expect(planned.moves.map((m) => m.to.split('/')[0]).sort()).to.deep.equal([inst(d), inst(e)].sort())

    // Stopped in the first move (the registry routes to its target), then between the two moves.
    const run = await stoppedAt(
      ['shards:rebalance', '--by', 'keys', ...include, '--grace', '100ms', '--apply', '--yes', '--json', ...r()],
      'registry:after:stop,rebalance-move:after:stop',
      {SHARDCTL_LOCK_LEASE: '60s'},
    )
    const holder = async () => JSON.parse((await reg.get('shards._lock')) ?? 'null') as {command: string; pid: number} | null
    expect(await holder()).to.include({command: 'shards:rebalance', pid: run.pid})
    const weight = await cli(['shards:weight', 's5', '7', '--yes', ...r()])
    expect(weight.exitCode, weight.stderr).to.equal(4)
    expect(weight.stderr).to.include(`(shards:rebalance, pid ${run.pid})`)
    resume(run)
    await until('the rebalance stopped between its two moves', () => isStopped(run.pid))
    expect(await holder()).to.include({command: 'shards:rebalance', pid: run.pid})
    expect(await reg.get('shards._journal')).to.equal(null)
    const move = await cli(['shards:move', 's5', '--to', inst(d), '--yes', ...r()])
    expect(move.exitCode, move.stderr).to.equal(4)
    expect(move.stderr).to.include(`(shards:rebalance, pid ${run.pid})`)
    resume(run)
    const {exitCode, stdout, stderr} = await run.done
    expect(exitCode, stderr).to.equal(0)
    const applied = JSON.parse(stdout) as Planned
    expect(applied.done).to.deep.equal(planned.moves.map((m) => m.shard))
    for (const m of planned.moves) expect(await reg.hget(`shards.${m.shard}`, 'master'), m.shard).to.equal(m.to)
    expect(await reg.hget('shards.s5', 'weight')).to.not.equal('7')
    expect(await holder()).to.equal(null)
  })
})

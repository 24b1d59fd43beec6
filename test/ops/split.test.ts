import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {expect} from 'chai'
import type {Redis} from 'ioredis'

import {stopRedis} from '../../src/sandbox/redis-process.js'
import {cli, spawnCli} from '../helpers/cli.js'
import {type TestServer, startServer} from '../helpers/redis.js'
import {useFleet} from '../helpers/fleet.js'
import {ContinuousWriter, missingWrites} from '../helpers/writer.js'

const SHARDS = ['s000', 's001', 's002', 's003', 's004', 's005']

/** Keys per db, from INFO keyspace. */
async function keyspace(server: TestServer): Promise<Record<number, number>> {
  const c = server.client()
  try {
    const out: Record<number, number> = {}
    for (const line of (await c.info('keyspace')).split('\n')) {
      const m = /^db(\d+):keys=(\d+)/.exec(line)
      if (m) out[Number(m[1])] = Number(m[2])
    }
    return out
  } finally {
    c.disconnect()
  }
}

describe('shards:split', () => {
  let reg: Redis
  let source: TestServer
  let target: TestServer
  const r = () => fleet.r()
  const inst = (s: TestServer) => `127.0.0.1:${s.port}`

  const fleet = useFleet()
  before(() => {
    reg = fleet.reg
  })

  beforeEach(async () => {
    ;[source, target] = await Promise.all([startServer(), startServer()])
    expect((await cli(['shards:init', '--instance', inst(source), '--count', '6', ...r()])).exitCode).to.equal(0)
    // db N holds (6 - N) * 100 keys: 600, 500, ... 100.
    for (let db = 0; db < 6; db++) {
      const c = source.client(db)
      await c.mset(Object.fromEntries(Array.from({length: (6 - db) * 100}, (_, i) => [`seed:${i}`, String(db)])))
      c.disconnect()
    }
  })
  afterEach(async () => {
    await Promise.all([source.stop(), target.stop()])
  })

  /** Each shard's data is where the registry says, and nowhere else. */
  async function expectPlaced(moved: string[], servers: TestServer[]): Promise<void> {
    const spaces = new Map(await Promise.all(servers.map(async (s) => [inst(s), await keyspace(s)] as const)))
    for (const id of SHARDS) {
      const master = (await reg.hget(`shards.${id}`, 'master'))!
      const [, where, db] = /^(.+)\/(\d+)$/.exec(master)!
      expect(where, id).to.equal(moved.includes(id) ? inst(target) : inst(source))
      expect(spaces.get(where)![Number(db)], `${id} keys`).to.be.at.least((6 - Number(db)) * 100)
      for (const [other, space] of spaces) if (other !== where) expect(space[Number(db)] ?? 0, `${id} left on ${other}`).to.equal(0)
    }
  }

  it('under a continuous writer: every acknowledged write is where the registry says, nothing stays behind', async () => {
    const writer = new ContinuousWriter(reg, SHARDS)
    writer.start()
    await writer.waitFor(2000)
    const run = await spawnCli(['shards:split', inst(source), '--to', inst(target), '--max-pause', '5s', '--grace', '500ms', '--yes', '--json', ...r()])
    await writer.resumesThenStop()
    expect(run.exitCode, run.stderr).to.equal(0)
    const result = JSON.parse(run.stdout)
    expect(result.applied).to.equal(true)
    expect(result.pauseMs).to.be.a('number')
    expect(result.keptOnSource).to.deep.equal([])
    const moved = result.plan.moves.map((m: {id: string}) => m.id)
    expect(await missingWrites(reg, writer)).to.deep.equal([])
    await expectPlaced(moved, [source, target])
    expect(await reg.exists('shards._journal', 'shards._lock')).to.equal(0)
  })

  it('plans half the shards so that keys end up balanced, and --dry-run changes nothing', async () => {
    const run = await spawnCli(['shards:split', inst(source), '--to', inst(target), '--dry-run', '--json', ...r()])
    expect(run.exitCode, run.stderr).to.equal(0)
    const plan = JSON.parse(run.stdout).plan
    expect(plan.moves.map((m: {id: string}) => m.id).sort()).to.deep.equal(['s001', 's002', 's005'])
    const [src, tgt] = plan.balance.map((b: {keys: number}) => b.keys)
    expect(Math.abs(src - tgt)).to.be.lessThan(0.1 * (src + tgt))
    expect(await reg.hget('shards.s001', 'master')).to.equal(source.address(1))
    expect(await keyspace(target)).to.deep.equal({})
  })

  it('--shards moves exactly those, spread over several targets', async () => {
    const second = await startServer()
    try {
      const run = await spawnCli(['shards:split', inst(source), '--to', inst(target), '--to', inst(second), '--shards', 's000,s003,s004', '--grace', '200ms', '--yes', '--json', ...r()])
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

  it('keeps the source copy of a database a stale client wrote to after the cut-over, and says so', async () => {
    const child = spawnCli(['shards:split', inst(source), '--to', inst(target), '--shards', 's002', '--grace', '3s', '--yes', '--json', ...r()])
    for (let i = 0; i < 1000 && (await reg.hget('shards.s002', 'master')) !== target.address(2); i++) await new Promise((r) => setTimeout(r, 5))
    await new Promise((r) => setTimeout(r, 300)) // writes have resumed on the source
    const stale = source.client(2)
    await stale.set('written-after-cut-over', 'x')
    stale.disconnect()
    const run = await child
    expect(run.exitCode, run.stderr).to.equal(0)
    const result = JSON.parse(run.stdout)
    expect(result.keptOnSource).to.deep.equal([2])
    expect(result.strayWrites['2']).to.be.at.least(1)
    expect((await keyspace(source))[2]).to.equal(401)
  })

  describe('killed at each step, then run again', () => {
    const steps: [string, 'rolled-back' | 'rolled-forward'][] = [
      ['copy:after', 'rolled-back'],
      ['pause:after', 'rolled-back'],
      ['catch-up:after', 'rolled-back'],
      ['promote:after', 'rolled-back'],
      ['registry:before', 'rolled-back'],
      ['registry:after', 'rolled-forward'],
      ['isolate:after', 'rolled-forward'],
      ['resume:after', 'rolled-forward'],
      ['grace:after', 'rolled-forward'],
      ['clean-target:after', 'rolled-forward'],
      ['clean-source:after', 'rolled-forward'],
    ]
    for (const [failpoint, outcome] of steps) {
      it(`SIGKILL at ${failpoint}: the next run ${outcome === 'rolled-back' ? 'rolls back' : 'finishes'}, nothing lost`, async () => {
        const writer = new ContinuousWriter(reg, ['s000', 's001', 's002'])
        writer.start()
        await writer.waitFor(300)
        const killed = await spawnCli(['shards:split', inst(source), '--to', inst(target), '--max-pause', '5s', '--grace', '200ms', '--yes', ...r()], {
          env: {SHARDCTL_FAILPOINT: `${failpoint}:kill`},
        })
        expect(killed.exitCode, killed.stderr).to.not.equal(0)
        expect(await reg.exists('shards._journal'), killed.stderr).to.equal(1)
        const again = await spawnCli(['shards:split', inst(source), '--yes', '--json', ...r()])
        expect(again.exitCode, again.stderr + again.stdout).to.equal(0)
        const result = JSON.parse(again.stdout)
        expect(result.recovered).to.equal(outcome)
        await writer.resumesThenStop()
        const missing = await missingWrites(reg, writer)
        if (failpoint === 'registry:after') {
          // Killed between the switch and the disconnection of stale clients: when the
          // bounded pause ran out, their writes landed on the source. None is lost: the
          // source keeps those databases, and the recovery says so.
          const kept = new Set(result.keptOnSource as number[])
          for (const key of missing) {
            const db = Number(/^w:s(\d+):/.exec(key)![1])
            expect(kept.has(db), key).to.equal(true)
            const c = source.client(db)
            expect(await c.exists(key), key).to.equal(1)
            c.disconnect()
          }
        } else {
          expect(missing).to.deep.equal([])
        }
        expect(await reg.exists('shards._journal', 'shards._lock')).to.equal(0)
        // Keyspace notifications, turned on to watch for stray writes, are off again.
        const c = source.client()
        expect(((await c.config('GET', 'notify-keyspace-events')) as string[])[1]).to.equal('')
        c.disconnect()
        if (outcome === 'rolled-back') {
          for (const id of SHARDS) expect(await reg.hget(`shards.${id}`, 'master')).to.equal(source.address(Number(id.slice(1))))
          expect(await keyspace(target)).to.deep.equal({})
        } else {
          const moved = (result.plan.moves as {id: string; db: number}[]).sort((a, b) => a.db - b.db)
          for (const m of moved) expect(await reg.hget(`shards.${m.id}`, 'master')).to.equal(target.address(m.db))
          // The target owns only what moved; the source keeps its moved copies unless it had dropped them.
          const space = await keyspace(target)
          expect(Object.keys(space).map(Number).sort()).to.deep.equal(moved.map((m) => m.db))
          if (failpoint !== 'clean-source:after') expect(result.keptOnSource).to.deep.equal(moved.map((m) => m.db))
        }
      })
    }
  })

  describe('refusals: nothing changes', () => {
    async function refused(args: string[], message: RegExp, code = 2): Promise<void> {
      const before = await reg.hgetall('shards.s001')
      const run = await spawnCli(['shards:split', ...args, '--yes', ...r()])
      expect(run.exitCode, run.stderr).to.equal(code)
      expect(run.stderr.trim().split('\n').at(-1)).to.match(message)
      expect(await reg.hgetall('shards.s001')).to.deep.equal(before)
      expect(await reg.exists('shards._journal', 'shards._lock')).to.equal(0)
    }

    it('a target that is not empty', async () => {
      const c = target.client(7)
      await c.set('precious', '1')
      c.disconnect()
      await refused([inst(source), '--to', inst(target)], /target 127\.0\.0\.1:\d+ is not empty: 1 keys in db 7/)
      expect((await keyspace(target))[7]).to.equal(1)
    })

    it('an unreachable target', async () => {
      await refused([inst(source), '--to', '127.0.0.1:1'], /cannot reach the target 127\.0\.0\.1:1/, 1)
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

    it('a shard that is not on the source', async () => {
      await cli(['shards:add', 'far', '--master', target.address(9), ...r()])
      await refused([inst(source), '--to', '127.0.0.1:1', '--shards', 'far'], /shard far is not on 127\.0\.0\.1:\d+/)
      await refused([inst(source), '--to', '127.0.0.1:1', '--shards', 'nope'], /unknown shard "nope"/)
    })

    it('bad input', async () => {
      await refused(['nothost', '--to', inst(target)], /invalid address/)
      await refused([inst(source), '--to', 'x:y'], /invalid port/)
      await refused([inst(source), '--to', inst(source)], /is the source itself/)
      await refused([inst(source), '--to', inst(target), '--max-pause', 'never'], /invalid duration/)
      await refused([inst(source)], /no target/)
    })
  })

  it('--spawn starts the target with the source\'s settings and a replica, end to end', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'shardctl-spawn-'))
    let spawned: {pid: number; port: number}[] = []
    try {
      const run = await spawnCli(['shards:split', inst(source), '--spawn', '--spawn-replicas', '1', '--dir', dir, '--grace', '200ms', '--yes', '--json', ...r()])
      expect(run.exitCode, run.stderr).to.equal(0)
      const result = JSON.parse(run.stdout)
      spawned = result.spawned
      expect(spawned).to.have.length(2)
      const [newMaster, newReplica] = spawned
      for (const m of result.plan.moves as {id: string; db: number}[]) {
        expect(await reg.hgetall(`shards.${m.id}`)).to.deep.equal({master: `127.0.0.1:${newMaster.port}/${m.db}`, slave0: `127.0.0.1:${newReplica.port}/${m.db}`})
      }
      const list = await spawnCli(['shards:list', '--json', ...r()])
      for (const s of JSON.parse(list.stdout).shards) expect(s.problems, s.id).to.deep.equal([])
    } finally {
      for (const p of spawned) await stopRedis(p)
      rmSync(dir, {recursive: true, force: true})
    }
  })
})

import {expect} from 'chai'

import {parseInfo} from '../../src/fleet/info.js'
import {cli, spawnCli} from '../helpers/cli.js'
import {useFleet} from '../helpers/fleet.js'
import {startSilentServer} from '../helpers/proxy.js'
import {freePort} from '../../src/sandbox/redis-process.js'

interface ListJson {
  shards: {
    id: string
    weight: number
    share: number
    hashes?: number
    master: {address: string; reachable?: boolean; role?: string; keys?: number}
    replicas: {address: string; reachable?: boolean; followsMaster?: boolean; linkUp?: boolean; lagBytes?: number}[]
    problems: string[]
  }[]
  broken: {id: string; problems: string[]}[]
  orphanHashes?: number
  totalWeight: number
}

describe('shards:list', () => {
  const fleet = useFleet({instances: 2, replicas: 1})
  const addr = (i: number, db: number) => fleet.instances[i].master.address(db)
  const replicaAddr = (i: number, db: number) => fleet.instances[i].replicas[0].address(db)

  async function seed(): Promise<void> {
    for (const [id, i, db, weight] of [
      ['s1', 0, 1, 1],
      ['s2', 0, 2, 3],
      ['s3', 1, 1, 0],
    ] as const) {
      const {exitCode} = await cli([
        'shards:add',
        id,
        '--master',
        addr(i, db),
        '--replica',
        replicaAddr(i, db),
        '--weight',
        String(weight),
        ...fleet.r(),
      ])
      expect(exitCode).to.equal(0)
    }
  }

  async function list(...args: string[]): Promise<ListJson> {
    const {exitCode, stdout} = await cli(['shards:list', '--json', ...args, ...fleet.r()])
    expect(exitCode).to.equal(0)
    return JSON.parse(stdout) as ListJson
  }

  it('says there are no shards in an empty registry and returns an empty list', async () => {
    const {exitCode, stderr} = await cli(['shards:list', ...fleet.r()])
    expect(exitCode).to.equal(0)
    expect(stderr).to.match(/No shards/)
    expect((await list()).shards).to.deep.equal([])
  })

  it('shows weight, share, master, replicas and live health of every shard', async () => {
    await seed()
    const m = fleet.instances[0].master.client(2)
    await m.mset('a', '1', 'b', '2', 'c', '3')
    m.disconnect()
    const json = await list()
    expect(json.shards.map((s) => s.id)).to.deep.equal(['s1', 's2', 's3'])
    expect(json.totalWeight).to.equal(4)
    const s2 = json.shards[1]
    expect(s2.share).to.equal(0.75)
    expect(s2.master).to.include({address: addr(0, 2), reachable: true, role: 'master', keys: 3})
    expect(s2.replicas[0]).to.include({address: replicaAddr(0, 2), reachable: true, followsMaster: true, linkUp: true})
    expect(s2.replicas[0].lagBytes).to.be.a('number')
    expect(s2.problems).to.deep.equal([])

    const {stdout} = await cli(['shards:list', ...fleet.r()])
    expect(stdout).to.match(/s2\s+3\s+75\.0%/)
    expect(stdout).to.include(addr(1, 1))
  })

  it('at scale: --filter, --sort, --columns, a compact replicas column, --wide', async () => {
    await seed()
    await fleet.instances[0].master.client().flushall()
    for (const db of [1, 2, 3]) {
      const c = fleet.instances[0].master.client(db)
      await c.mset(...Array.from({length: db * 10}, (_, i) => [`k${i}`, 'v']).flat())
      c.disconnect()
    }
    const ids = async (...args: string[]) => (await list(...args)).shards.map((s) => s.id)
    expect(await ids('--filter', `instance=127.0.0.1:${fleet.instances[1].master.port}`)).to.deep.equal(['s3'])
    expect(await ids('--filter', `instance=127.0.0.1:${fleet.instances[0].replicas[0].port}`)).to.deep.equal(['s1', 's2'])
    expect(await ids('--filter', 'id=s*', '--filter', 'health=ok')).to.have.length(3)
    expect(await ids('--filter', 'health=problem')).to.deep.equal([])
    expect(await ids('--sort', 'keys')).to.deep.equal(['s2', 's1', 's3'])
    const narrow = await cli(['shards:list', '--columns', 'id,keys', ...fleet.r()])
    expect(narrow.stdout.split('\n')[0].trim().split(/\s+/)).to.deep.equal(['ID', 'KEYS'])
    const compact = await cli(['shards:list', ...fleet.r()])
    expect(compact.stdout).to.match(/1\/1 ok, lag \d+ B/)
    for (const line of compact.stdout.split('\n')) expect(line.length, line).to.be.at.most(80)
    const wide = await cli(['shards:list', '--wide', ...fleet.r()])
    expect(wide.stdout).to.include(replicaAddr(0, 1))
    const bad = await cli(['shards:list', '--filter', 'colour=blue', ...fleet.r()])
    expect(bad.exitCode).to.equal(2)
    expect(bad.stderr).to.match(/invalid filter "colour=blue"/)
    expect((await cli(['shards:list', '--columns', 'id,nope', ...fleet.r()])).stderr).to.match(/unknown column "nope"/)
  })

  it('--sort master orders databases as numbers (/1, /2, /10); --columns id,id shows ID once', async () => {
    for (const [id, db] of [
      ['x10', 10],
      ['x2', 2],
      ['x1', 1],
    ] as const) {
      expect((await cli(['shards:add', id, '--master', addr(0, db), ...fleet.r()])).exitCode).to.equal(0)
    }
    expect((await list('--no-probe', '--sort', 'master')).shards.map((s) => s.id)).to.deep.equal(['x1', 'x2', 'x10'])
    const twice = await cli(['shards:list', '--no-probe', '--columns', 'id,id,weight,ID', ...fleet.r()])
    expect(twice.exitCode, twice.stderr).to.equal(0)
    expect(twice.stdout.split('\n')[0].trim().split(/\s+/)).to.deep.equal(['ID', 'WEIGHT'])
  })

  it('--sort hashes and --columns hashes count the hashes without --counts; --filter instance= is validated and spelling-blind; --chart needs --instances', async () => {
    await seed()
    await fleet.reg.hset('shards.map', 'a', 's3', 'b', 's3', 'c', 's1')
    expect((await list('--no-probe', '--sort', 'hashes')).shards.map((s) => s.id)).to.deep.equal(['s3', 's1', 's2'])
    const hashes = await cli(['shards:list', '--no-probe', '--columns', 'id,hashes', ...fleet.r()])
    expect(hashes.exitCode, hashes.stderr).to.equal(0)
    expect(hashes.stdout.split('\n').map((l) => l.trim().split(/\s+/))).to.deep.include.members([
      ['ID', 'HASHES'],
      ['s3', '2'],
      ['s2', '0'],
    ])
    const port = fleet.instances[1].master.port
    expect((await list('--no-probe', '--filter', `instance=LOCALHOST:${port}`)).shards.map((s) => s.id)).to.deep.equal(['s3'])
    for (const bad of [
      ['--filter', 'instance=bad'],
      ['--chart', 'memory'],
    ]) {
      const run = await cli(['shards:list', '--no-probe', ...bad, ...fleet.r()])
      expect(run.exitCode, bad.join(' ')).to.equal(2)
      expect(run.stderr.trim().split('\n'), run.stderr).to.have.length(1)
    }
  })

  it('--instances: one line per instance with keys, memory and a bar chart; --exit-status gates on problems', async () => {
    await seed()
    await fleet.instances[0].master.client().flushall()
    const c = fleet.instances[0].master.client(2)
    await c.mset(...Array.from({length: 40}, (_, i) => [`k${i}`, 'v']).flat())
    c.disconnect()
    const json = await list('--instances')
    const rows = (json as unknown as {instanceRows: {instance: string; shards: number; keys: number; usedMemory: number}[]}).instanceRows
    const master = rows.find((r) => r.instance === `127.0.0.1:${fleet.instances[0].master.port}`)!
    expect(master).to.include({shards: 2, keys: 40})
    expect(master.usedMemory).to.be.greaterThan(0)
    const text = await cli(['shards:list', '--instances', ...fleet.r()])
    expect(text.stdout).to.match(/INSTANCE\s+ROLE\s+SHARDS\s+KEYS\s+MEMORY/)
    expect(text.stdout).to.include('█')
    expect((await cli(['shards:list', '--exit-status', ...fleet.r()])).exitCode).to.equal(0)
    await fleet.instances[1].master.client().replicaof('127.0.0.1', fleet.instances[0].master.port)
    const gated = await cli(['shards:list', '--exit-status', ...fleet.r()])
    expect(gated.exitCode).to.equal(3)
    expect(gated.stderr).to.match(/1 shard with problems: s3/)
    await fleet.instances[1].master.client().replicaof('NO', 'ONE')
  })

  it('--instances honours --filter (the instances of the shards kept) and --sort; a sort of shards only is refused', async () => {
    await seed()
    await fleet.instances[1].master.client().flushall()
    const c = fleet.instances[1].master.client(1)
    await c.mset(...Array.from({length: 100}, (_, i) => [`k${i}`, 'v']).flat())
    c.disconnect()
    type Rows = {instanceRows: {instance: string; keys: number}[]}
    const filtered = (await list('--instances', '--filter', 'id=s3')) as unknown as Rows
    const ofS3 = [fleet.instances[1].master, fleet.instances[1].replicas[0]].map((x) => `127.0.0.1:${x.port}`)
    expect(filtered.instanceRows.map((r) => r.instance)).to.have.members(ofS3)
    const byKeys = ((await list('--instances', '--sort', 'keys')) as unknown as Rows).instanceRows
    expect(byKeys).to.have.length(4)
    expect(byKeys[0].keys)
      .to.equal(Math.max(...byKeys.map((r) => r.keys)))
      .and.to.be.at.least(100)
    const refused = await spawnCli(['shards:list', '--instances', '--sort', 'weight', ...fleet.r()])
    expect(refused.exitCode).to.equal(2)
    expect(refused.stderr.trim().split('\n')).to.have.length(1)
    expect(refused.stderr).to.include('--sort weight orders shards, not instances')
  })

  it('probes each instance over one connection, however many shards it holds', async () => {
    await seed()
    const master = fleet.instances[0].master.client()
    const connections = async () => Number(parseInfo(await master.info('stats')).total_connections_received)
    const before = await connections()
    await list()
    const after = await connections()
    master.disconnect()
    // s1 and s2 both live on instance 0: one probe connection serves both.
    expect(after - before).to.equal(1)
  })

  it('reports an unreachable master and a replica that follows no one, without failing', async () => {
    const dead = await freePort()
    await cli(['shards:add', 'gone', '--master', `127.0.0.1:${dead}/0`, ...fleet.r()])
    await seed()
    const replica = fleet.instances[1].replicas[0].client()
    await replica.replicaof('NO', 'ONE')
    try {
      const json = await list('--timeout', '2s')
      const gone = json.shards.find((s) => s.id === 'gone')!
      expect(gone.master.reachable).to.equal(false)
      expect(gone.problems.join()).to.match(/unreachable/)
      const s3 = json.shards.find((s) => s.id === 's3')!
      expect(s3.problems.join()).to.match(/does not follow the master/)
    } finally {
      await replica.replicaof('127.0.0.1', String(fleet.instances[1].master.port))
      replica.disconnect()
    }
  })

  it('reports two shards on one database, however spelled, and a replica that is the master itself', async () => {
    const port = fleet.instances[0].master.port
    await fleet.reg.hset('shards.a', 'master', `127.0.0.1:${port}/5`)
    await fleet.reg.hset('shards.b', 'master', `LOCALHOST:${port}/5`)
    await fleet.reg.hset('shards.c', 'master', `127.0.0.1:${port}/6`, 'slave0', `localhost:${port}/6`)
    await fleet.reg.zadd('shards.list', 1, 'a', 1, 'b', 1, 'c')
    const run = await cli(['shards:list', '--json', '--exit-status', ...fleet.r()])
    expect(run.exitCode).to.equal(3)
    const problems = Object.fromEntries((JSON.parse(run.stdout) as ListJson).shards.map((s) => [s.id, s.problems]))
    expect(problems.a).to.include(`master 127.0.0.1:${port}/5 is also the master of b: a database holds one shard`)
    expect(problems.b).to.include(`master LOCALHOST:${port}/5 is also the master of a: a database holds one shard`)
    expect(problems.c).to.include(`replica localhost:${port}/6 is the master itself`)
    const text = await cli(['shards:list', ...fleet.r()])
    expect(text.stderr).not.to.match(/all healthy/)
    const check = await cli(['shards:check', '--json', '--allow-no-replica', ...fleet.r()])
    expect(check.exitCode).to.equal(3)
    expect(check.stdout).to.match(/is the master database of 2 shards \(a, b\)/)
    expect(check.stdout).to.match(/replica localhost:\d+ is the master itself/)
  })

  it('--no-probe touches no instance', async () => {
    const dead = await freePort()
    await cli(['shards:add', 'gone', '--master', `127.0.0.1:${dead}/0`, ...fleet.r()])
    const json = await list('--no-probe')
    expect(json.shards[0].master).to.deep.equal({address: `127.0.0.1:${dead}/0`})
    expect(json.shards[0].problems).to.deep.equal([])
  })

  it('--counts counts the hashes per shard, and those pointing at unknown shards', async () => {
    await seed()
    const hashes: string[] = []
    for (let i = 0; i < 5000; i++) hashes.push(`h${i}`, i % 5 === 0 ? 's1' : 's2')
    await fleet.reg.hset('shards.map', ...hashes, 'stray', 'nowhere')
    const json = await list('--counts', '--no-probe')
    expect(json.shards.map((s) => s.hashes)).to.deep.equal([1000, 4000, 0])
    expect(json.orphanHashes).to.equal(1)
  })

  it('shows a corrupt shard apart from the healthy ones', async () => {
    await seed()
    await fleet.reg.hset('shards.s2', 'master', 'not an address')
    await fleet.reg.zadd('shards.list', 1, 'ghost')
    const json = await list('--no-probe')
    expect(json.shards.map((s) => s.id)).to.deep.equal(['s1', 's3'])
    expect(json.broken.map((b) => b.id)).to.deep.equal(['ghost', 's2'])
    const {stderr} = await cli(['shards:list', '--no-probe', ...fleet.r()])
    expect(stderr).to.match(/shard s2 is not readable: master is not an address/)
    // Unreadable shards gate --exit-status like unhealthy ones.
    const gated = await cli(['shards:list', '--no-probe', '--exit-status', ...fleet.r()])
    expect(gated.exitCode).to.equal(3)
    expect(gated.stderr).to.match(/2 shards with problems: ghost, s2/)
  })

  it('fails with one line naming the key when a registry key has the wrong type', async () => {
    await fleet.reg.set('shards.list', 'oops')
    for (const json of [false, true]) {
      const {exitCode, stderr, stdout} = await spawnCli(['shards:list', ...(json ? ['--json'] : []), ...fleet.r()])
      expect(exitCode).to.equal(1)
      const text = json ? JSON.parse(stdout).error.message : stderr.trim()
      expect(text).to.match(/shards\.list has the wrong type/)
      expect(stderr.trim().split('\n')).to.have.length(json ? 1 : 1)
      expect(stderr + stdout).not.to.match(/\n\s+at /)
    }
  })

  describe('never hangs', () => {
    let silent: {port: number; close: () => Promise<void>}
    let port: number
    before(async () => {
      silent = await startSilentServer()
      port = silent.port
    })
    after(() => silent.close())

    it('a silent registry fails at --timeout with a message naming the host', async () => {
      const {exitCode, stderr} = await spawnCli(['shards:list', '-r', `127.0.0.1:${port}`, '--timeout', '300ms'])
      expect(exitCode).to.equal(1)
      expect(stderr).to.match(new RegExp(`cannot reach 127\\.0\\.0\\.1:${port}: timed out`))
    })

    it('a silent instance is reported unreachable and the listing still completes', async () => {
      await cli(['shards:add', 'mute', '--master', `127.0.0.1:${port}/0`, ...fleet.r()])
      const json = await list('--timeout', '300ms')
      expect(json.shards[0].master.reachable).to.equal(false)
    })
  })
})

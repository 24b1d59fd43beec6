import {existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {expect} from 'chai'
import {Redis} from 'ioredis'

import {isAlive, stopRedis} from '../../src/sandbox/redis-process.js'
import {type SpawnedInstance, spawnedFor} from '../../src/sandbox/spawn.js'
import {spawnCli, until} from '../helpers/cli.js'
import {freeRange, stopServersIn} from '../helpers/redis.js'

describe('sandbox:up, sandbox:status, sandbox:down', () => {
  let dir: string
  let base: number

  /** sandbox:up of one instance with one replica, at this test's ports and directory. */
  const oneInstanceUp = (args: string[]) =>
    spawnCli(['sandbox:up', '--dir', dir, '--port', String(base), '--instances', '1', '--replicas', '1', ...args, '--json'])

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'shardctl-sandbox-'))
    // The sandbox takes base..base+5, a spawned split target base+10 and its replica base+11.
    base = await freeRange(12)
  })

  afterEach(async () => {
    // Whatever a test started under its directory, stopped without starting one more process.
    await stopServersIn(dir)
    rmSync(dir, {recursive: true, force: true})
  })

  it('starts real processes that outlive the command, registers the shards, and down stops exactly them', async () => {
    const up = await spawnCli([
      'sandbox:up',
      '--dir',
      dir,
      '--port',
      String(base),
      '--instances',
      '2',
      '--replicas',
      '1',
      '--shards',
      '6',
      '--json',
    ])
    expect(up.exitCode, up.stderr + up.stdout).to.equal(0)
    const state = JSON.parse(up.stdout)
    expect(state.registry).to.equal(`redis://127.0.0.1:${base}/0`)
    expect(state.nodes.map((n: {role: string}) => n.role)).to.deep.equal(['registry', 'master', 'replica', 'master', 'replica'])
    for (const node of state.nodes) expect(isAlive(node.pid), `pid ${node.pid}`).to.equal(true)

    const list = await spawnCli(['shards:list', '--json'], {env: {SHARDCTL_REGISTRY: state.registry}})
    expect(list.exitCode).to.equal(0)
    const shards = JSON.parse(list.stdout).shards
    expect(shards).to.have.length(6)
    for (const s of shards) expect(s.problems, s.id).to.deep.equal([])
    // A fresh sandbox runs as production should: replicated, fenced, persisted.
    const check = await spawnCli(['shards:check', '--canary', '--persistence', '--json'], {env: {SHARDCTL_REGISTRY: state.registry}})
    expect(check.exitCode, check.stdout).to.equal(0)

    const status = await spawnCli(['sandbox:status', '--dir', dir])
    expect(status.exitCode).to.equal(0)
    expect(status.stdout.match(/running/g)).to.have.length(5)

    const down = await spawnCli(['sandbox:down', '--dir', dir, '--json'])
    expect(down.exitCode).to.equal(0)
    expect(JSON.parse(down.stdout).stopped).to.equal(5)
    for (const node of state.nodes) expect(isAlive(node.pid)).to.equal(false)
    expect(existsSync(join(dir, 'sandbox.json'))).to.equal(false)
  })

  it('--sentinels 3 starts Sentinels beside the fleet and registers it with them; down stops them too', async () => {
    const up = await oneInstanceUp(['--shards', '2', '--sentinels', '3'])
    expect(up.exitCode, up.stderr + up.stdout).to.equal(0)
    const state = JSON.parse(up.stdout) as {registry: string; nodes: {role: string; port: number; pid: number}[]}
    expect(state.nodes.map((n) => n.role)).to.deep.equal(['registry', 'master', 'replica', 'sentinel', 'sentinel', 'sentinel'])
    const sentinelPorts = state.nodes.filter((n) => n.role === 'sentinel').map((n) => n.port)
    expect(sentinelPorts).to.deep.equal([base + 3, base + 4, base + 5])
    for (const port of sentinelPorts) {
      const c = new Redis({port, host: '127.0.0.1', protocol: 2, maxRetriesPerRequest: 1})
      try {
        expect(await c.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', 'shards-s000'), `Sentinel ${port}`).to.deep.equal([
          '127.0.0.1',
          String(base + 1),
        ])
      } finally {
        c.disconnect()
      }
    }
    // The registry records them, and every Sentinel agrees with it (once each has read the master's replicas).
    const env = {SHARDCTL_REGISTRY: state.registry}
    await until(
      'shards:check with its Sentinel section is clean',
      async () => (await spawnCli(['shards:check', '--json'], {env})).exitCode === 0,
    )
    const check = JSON.parse((await spawnCli(['shards:check', '--json'], {env})).stdout) as {sentinel?: {groups: unknown[]}}
    expect(check.sentinel?.groups).to.have.length(1)

    const down = await spawnCli(['sandbox:down', '--dir', dir, '--json'])
    expect(down.exitCode).to.equal(0)
    expect(JSON.parse(down.stdout).stopped).to.equal(6)
    for (const node of state.nodes) expect(isAlive(node.pid), `${node.role} ${node.port}`).to.equal(false)
  })

  it('a sandbox instance splits onto a spawned instance end to end', async () => {
    const up = await oneInstanceUp(['--shards', '4'])
    expect(up.exitCode, up.stderr + up.stdout).to.equal(0)
    const env = {SHARDCTL_REGISTRY: JSON.parse(up.stdout).registry, SHARDCTL_SPAWN_DIR: join(dir, 'spawned')}
    // Data elsewhere (--dir): still recorded where sandbox:status and sandbox:down look.
    const elsewhere = join(dir, 'elsewhere')
    const split = await spawnCli(
      [
        'shards:split',
        `127.0.0.1:${base + 1}`,
        '--spawn',
        '--dir',
        elsewhere,
        '--port',
        String(base + 10),
        '--spawn-replicas',
        '1',
        '--grace',
        '200ms',
        '--yes',
        '--json',
      ],
      {env},
    )
    expect(split.exitCode, split.stderr + split.stdout).to.equal(0)
    const result = JSON.parse(split.stdout)
    try {
      expect(result.plan.moves).to.have.length(2)
      const list = JSON.parse((await spawnCli(['shards:list', '--json'], {env})).stdout)
      const masters = list.shards.map((s: {master: {address: string}}) => s.master.address.replace(/\/\d+$/, ''))
      expect(masters.filter((m: string) => m === `127.0.0.1:${base + 10}`)).to.have.length(2)
      for (const s of list.shards) expect(s.problems, s.id).to.deep.equal([])
      // The spawned instance took the source's persistence and, having a replica, its fencing.
      const check = await spawnCli(['shards:check', '--canary', '--persistence', '--json'], {env})
      expect(check.exitCode, check.stdout).to.equal(0)
      // What --spawn started is listed with the sandbox, and stopped with it.
      const status = await spawnCli(['sandbox:status', '--dir', dir, '--json'], {env})
      const listed = JSON.parse(status.stdout).spawned as {port: number; dir: string; stoppedWithSandbox: boolean}[]
      expect(listed.map((i) => i.port)).to.have.members([base + 10, base + 11])
      for (const i of listed) expect(i).to.include({dir: join(elsewhere, String(i.port)), stoppedWithSandbox: true})
      const down = await spawnCli(['sandbox:down', '--dir', dir, '--json'], {env})
      expect(JSON.parse(down.stdout)).to.include({spawned: 2})
      for (const p of result.spawned) expect(isAlive(p.pid), `spawned pid ${p.pid}`).to.equal(false)
    } finally {
      for (const p of result.spawned ?? []) await stopRedis(p)
    }
  })

  it('status exits 3 when a recorded process died; up refuses while one runs', async () => {
    const up = await spawnCli([
      'sandbox:up',
      '--dir',
      dir,
      '--port',
      String(base),
      '--instances',
      '1',
      '--replicas',
      '0',
      '--shards',
      '2',
      '--json',
    ])
    expect(up.exitCode, up.stderr + up.stdout).to.equal(0)
    const again = await spawnCli(['sandbox:up', '--dir', dir, '--port', String(base + 10)])
    expect(again.exitCode).to.equal(2)
    expect(again.stderr).to.match(/already runs/)
    // The dry run says what the real run would do: refuse, with the same exit code.
    const dry = await spawnCli(['sandbox:up', '--dir', dir, '--port', String(base + 10), '--dry-run'])
    expect(dry.exitCode).to.equal(2)
    expect(dry.stderr).to.match(/already runs/)
    expect(dry.stdout + dry.stderr).not.to.match(/Would start/)
    const master = JSON.parse(up.stdout).nodes[1]
    process.kill(master.pid, 'SIGKILL')
    const status = await spawnCli(['sandbox:status', '--dir', dir, '--json'])
    expect(status.exitCode).to.equal(3)
    expect(JSON.parse(status.stdout).running).to.equal(1)
  })

  it('down never signals a process that is not the recorded redis-server', async () => {
    // A record whose pid is this test process: a reused pid must be left alone.
    writeFileSync(
      join(dir, 'sandbox.json'),
      JSON.stringify({
        version: 1,
        dir,
        prefix: 'shards',
        registryUrl: '',
        createdAt: '',
        nodes: [{role: 'registry', port: 1, pid: process.pid, dir: join(dir, 'x')}],
      }),
    )
    const down = await spawnCli(['sandbox:down', '--dir', dir, '--json'])
    expect(down.exitCode).to.equal(0)
    expect(JSON.parse(down.stdout).stopped).to.equal(0)
  })

  it('refuses a busy port before starting anything', async () => {
    const busy = await spawnCli(['sandbox:up', '--dir', dir, '--port', String(base), '--instances', '1', '--replicas', '0'])
    expect(busy.exitCode).to.equal(0)
    const other = mkdtempSync(join(tmpdir(), 'shardctl-sandbox-'))
    try {
      const clash = await spawnCli(['sandbox:up', '--dir', other, '--port', String(base)])
      expect(clash.exitCode).to.equal(2)
      expect(clash.stderr).to.match(new RegExp(`port ${base} is in use`))
      expect(existsSync(join(other, 'sandbox.json'))).to.equal(false)
    } finally {
      rmSync(other, {recursive: true, force: true})
    }
  })

  it('--dry-run shows the ports and starts nothing; down --dry-run stops nothing', async () => {
    const up = await spawnCli(['sandbox:up', '--dir', dir, '--port', String(base), '--instances', '1', '--replicas', '1', '--dry-run'])
    expect(up.exitCode).to.equal(0)
    expect(up.stdout).to.match(new RegExp(`replica\\s+${base + 2}\\s+of ${base + 1}`))
    expect(existsSync(join(dir, 'sandbox.json'))).to.equal(false)
    const json = await oneInstanceUp(['--dry-run'])
    expect(JSON.parse(json.stdout).nodes).to.deep.equal([
      {role: 'registry', port: base},
      {role: 'master', port: base + 1},
      {role: 'replica', port: base + 2, replicaOf: base + 1},
    ])
    await spawnCli(['sandbox:up', '--dir', dir, '--port', String(base), '--instances', '1', '--replicas', '0', '--shards', '1'])
    const down = await spawnCli(['sandbox:down', '--dir', dir, '--dry-run', '--json'])
    expect(JSON.parse(down.stdout).wouldStop).to.have.length(2)
    expect((await spawnCli(['sandbox:status', '--dir', dir])).exitCode).to.equal(0)
  })

  it('status leaves out what --spawn started for splits of other fleets', async () => {
    const spawnDir = join(dir, 'spawned')
    mkdirSync(spawnDir)
    const elsewhere: SpawnedInstance = {port: 1, pid: 2 ** 22 + 1, dir: '/nowhere', startedAt: '', forSplitOf: '10.9.9.9:6379'}
    writeFileSync(join(spawnDir, 'spawned.json'), JSON.stringify({version: 1, instances: [elsewhere]}))
    const status = await spawnCli(['sandbox:status', '--dir', dir, '--json'], {env: {SHARDCTL_SPAWN_DIR: spawnDir}})
    expect(status.exitCode, status.stderr).to.equal(0)
    expect(JSON.parse(status.stdout).spawned).to.deep.equal([])
    const text = await spawnCli(['sandbox:status', '--dir', dir], {env: {SHARDCTL_SPAWN_DIR: spawnDir}})
    expect(text.stdout).not.to.include('10.9.9.9')
    expect(text.stderr).to.match(/No sandbox/)
  })

  it('says how to get redis-server when it is missing', async () => {
    const run = await spawnCli(['sandbox:up', '--dir', dir, '--port', String(base)], {
      env: {SHARDCTL_REDIS_SERVER: '/nonexistent/redis-server'},
    })
    expect(run.exitCode).to.equal(1)
    expect(run.stderr).to.match(/redis-server not found — install it: apt-get install -y redis-server/)
    expect(existsSync(join(dir, 'sandbox.json'))).to.equal(false)
  })
})

describe('sandbox/spawn spawnedFor: what --spawn started that goes with a sandbox', () => {
  const spawned = (port: number, forSplitOf: string): SpawnedInstance => ({port, pid: 1, dir: `/d/${port}`, startedAt: '', forSplitOf})
  const record = [
    spawned(7010, '127.0.0.1:7001'), // a split of a sandbox instance
    spawned(7011, '127.0.0.1:7001'), // its replica
    spawned(7020, '127.0.0.1:7010'), // a split of that spawned instance in turn
    spawned(7030, '127.0.0.1:9000'), // a split of another local instance
    spawned(7040, '10.0.0.5:7001'), // same port, another host: not the sandbox's
    spawned(7050, 'not an address'), // a damaged record never matches
  ]
  const cases: [string, number[], number[]][] = [
    ['the sandbox on 7000-7001', [7000, 7001], [7010, 7011, 7020]],
    ['no sandbox instance split', [7002], []],
    ['the other instance', [9000], [7030]],
    ['no sandbox', [], []],
  ]
  for (const [what, ports, expected] of cases) {
    it(what, () => expect(spawnedFor(ports, record).sort()).to.deep.equal(expected))
  }
})

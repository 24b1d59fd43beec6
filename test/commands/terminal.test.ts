import {mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {expect} from 'chai'

import {ANSI, binary, cli, spawnCli, ttyCli, until, secret as registerSecret} from '../helpers/cli.js'
import {portIsFree} from '../../src/sandbox/redis-process.js'
import {startServer, useFleet} from '../helpers/fleet.js'
import {startSilentServer} from '../helpers/proxy.js'

describe('terminal manners', () => {
  const fleet = useFleet({instances: 1})

  beforeEach(async () => {
    await cli(['shards:init', '--yes', '--instance', `127.0.0.1:${fleet.instances[0].master.port}`, '--count', '2', ...fleet.r()])
  })

  it('colours a terminal, and not under NO_COLOR, --no-color, a pipe or --json', async () => {
    expect((await ttyCli(['shards:list', ...fleet.r()], '')).screen).to.match(ANSI)
    expect((await ttyCli(['shards:list', ...fleet.r()], '', {NO_COLOR: '1'})).screen).not.to.match(ANSI)
    expect((await ttyCli(['shards:list', ...fleet.r()], '', {NO_COLOR: ''})).screen, 'NO_COLOR set to nothing').to.match(ANSI)
    expect((await ttyCli(['shards:list', '--no-color', ...fleet.r()], '')).screen).not.to.match(ANSI)
    const json = await ttyCli(['shards:list', '--json', ...fleet.r()], '')
    expect(json.screen).not.to.match(ANSI)
    const piped = await spawnCli(['shards:list', ...fleet.r()], {env: {FORCE_COLOR: '1'}})
    expect(piped.stdout + piped.stderr).not.to.match(ANSI)
  })

  it('stdout carries only the data; the summary goes to stderr', async () => {
    const run = await spawnCli(['shards:list', ...fleet.r()])
    expect(run.stdout.trim().split('\n')).to.have.length(3) // head and two shards
    expect(run.stderr).to.match(/2 shards on 1 instance,/)
  })

  it('errors are one line without a stack trace, unless DEBUG is set', async () => {
    const plain = await spawnCli(['shards:list', '-r', '127.0.0.1:1'])
    expect(plain.stderr.trim().split('\n')).to.have.length(1)
    const debug = await spawnCli(['shards:list', '-r', '127.0.0.1:1'], {env: {DEBUG: '1'}})
    expect(debug.stderr).to.match(/\n\s+at /)
  })

  it('never prints a password from the registry URL', async () => {
    const secret = registerSecret('hunter2-secret')
    for (const args of [
      ['-r', `redis://admin:${secret}@127.0.0.1:1/0`],
      ['-r', `redis://admin:${secret}@127.0.0.1:99999/0`],
    ]) {
      for (const json of [[], ['--json']]) {
        const run = await spawnCli(['shards:list', ...args, ...json], {env: {DEBUG: undefined}})
        expect(run.exitCode).to.not.equal(0)
        expect(run.stdout + run.stderr).not.to.include(secret)
      }
    }
  })

  it('help documents the exit codes and the environment variables', async () => {
    const help = await spawnCli(['shards:remove', '--help'])
    expect(help.stdout).to.match(/EXIT CODES[\s\S]*4 +another operator holds the lock/)
    expect(help.stdout).to.match(/SHARDCTL_REGISTRY/)
    expect(help.stdout).to.match(/SHARDCTL_YES/)
  })

  it('Ctrl-C exits 130 and closes its connections', async () => {
    const {execa} = await import('execa')
    const child = execa('node', [binary, 'shards:assign', '--stdin', ...fleet.r()], {reject: false, stdin: 'pipe'})
    let answered = ''
    child.stdout.on('data', (chunk: Buffer) => {
      answered += chunk.toString()
    })
    child.stdin.write('a\nb\n')
    try {
      // Connected and reading once both hashes are answered; stdin stays open.
      await until('both hashes answered', () => answered.split('\n').length > 2)
    } finally {
      child.kill('SIGINT')
    }
    const done = await child
    expect(done.exitCode).to.equal(130)
    expect(String(done.stderr)).to.match(/Interrupted/)
  })
})

describe('the wire contract', () => {
  const fleet = useFleet({instances: 1, replicas: 1})

  it('an application that knows only the three keys routes every hash shardctl assigned', async () => {
    const port = fleet.instances[0].master.port
    const replica = fleet.instances[0].replicas[0].port
    await cli([
      'shards:init',
      '--yes',
      '--instance',
      `127.0.0.1:${port}`,
      '--replica',
      `127.0.0.1:${replica}`,
      '--count',
      '5',
      ...fleet.r(),
    ])
    await cli(['shards:weight', 's002', '0', ...fleet.r()])
    const hashes = Array.from({length: 200}, (_, i) => `user:${i}`)
    expect((await cli(['shards:assign', ...hashes, ...fleet.r()])).exitCode).to.equal(0)

    // The application's view: shards.map, shards.<id>, shards.list, nothing else.
    const weights = await fleet.reg.zrange('shards.list', '0', '-1', 'WITHSCORES')
    expect(weights).to.deep.equal(['s002', '0', 's000', '1', 's001', '1', 's003', '1', 's004', '1'])
    for (const hash of hashes) {
      const id = await fleet.reg.hget('shards.map', hash)
      expect(id).to.be.a('string').and.not.equal('s002')
      const shard = await fleet.reg.hgetall(`shards.${id}`)
      expect(Object.keys(shard).sort()).to.deep.equal(['master', 'slave0'])
      const [, hostPort, db] = /^(.+)\/(\d+)$/.exec(shard.master)!
      expect(hostPort).to.equal(`127.0.0.1:${port}`)
      expect(Number(db)).to.equal(Number(id!.slice(1)))
      expect(shard.slave0).to.equal(`127.0.0.1:${replica}/${db}`)
    }
    // shardctl's own keys are named so that no shard id can take them.
    const keys = (await fleet.reg.keys('*')).sort()
    expect(keys).to.deep.equal([
      'shards._history',
      'shards.list',
      'shards.map',
      'shards.s000',
      'shards.s001',
      'shards.s002',
      'shards.s003',
      'shards.s004',
    ])
  })

  it('keeps fields it does not own untouched', async () => {
    await fleet.reg.hset('shards.x1', 'master', '127.0.0.1:1/0', 'owner', 'team-a')
    await fleet.reg.zadd('shards.list', 1, 'x1')
    await cli(['shards:weight', 'x1', '4', ...fleet.r()])
    expect(await fleet.reg.hgetall('shards.x1')).to.deep.equal({master: '127.0.0.1:1/0', owner: 'team-a'})
  })
})

describe('the command line forgives and explains', () => {
  const fleet = useFleet({instances: 1})

  beforeEach(async () => {
    await cli(['shards:init', '--yes', '--instance', `127.0.0.1:${fleet.instances[0].master.port}`, '--count', '2', ...fleet.r()])
  })

  it('words separated by a space name the command as the colon does; -h is --help', async () => {
    const spaced = await spawnCli(['shards', 'list', '--json', ...fleet.r()])
    expect(spaced.exitCode, spaced.stderr).to.equal(0)
    expect(JSON.parse(spaced.stdout).shards).to.have.length(2)
    const help = await spawnCli(['shards:list', '-h'])
    expect(help.exitCode).to.equal(0)
    expect(help.stdout).to.match(/^List every shard/)
  })

  it('a mistyped command or flag: exit 2, one line with the closest one, never run in its place', async () => {
    for (const [args, message] of [
      [['shards:lsit'], /^Error: shards lsit is not a shardctl command; did you mean shards:list\?/],
      [['shards', 'lst'], /^Error: shards lst is not a shardctl command; did you mean shards:list\?/],
      [['shards', 'nosuchthing'], /^Error: shards nosuchthing is not a shardctl command — see shardctl --help/],
      [['shards:remove', 's000', '--yse', ...fleet.r()], /^Error: Nonexistent flag: --yse — did you mean --yes\?/],
    ] as const) {
      const run = await spawnCli([...args])
      expect(run.exitCode, run.stderr).to.equal(2)
      expect(run.stderr.trim().split('\n'), run.stderr).to.have.length(1)
      expect(run.stderr).to.match(message)
    }
    const json = await spawnCli(['shards:lsit', '--json'])
    expect(json.exitCode).to.equal(2)
    expect(JSON.parse(json.stdout).error).to.include({code: 'EUSAGE', exitCode: 2})
    expect(await fleet.reg.exists('shards.s000')).to.equal(1)
  })

  it('errors say what is true: refused is not slow, a password problem is not unreachable, another service is not Redis', async () => {
    const refused = await spawnCli(['shards:list', '-r', 'redis://127.0.0.1:1/0'])
    expect(refused.stderr).to.match(/cannot reach 127\.0\.0\.1:1: connection refused — nothing listens there/)
    expect(refused.stderr).not.to.match(/--timeout/)
    const http = await startSilentServer('HTTP/1.1 400 Bad Request\r\n\r\n')
    try {
      const run = await spawnCli(['shards:list', '--timeout', '2s', '-r', `redis://127.0.0.1:${http.port}/0`])
      expect(run.exitCode).to.equal(1)
      expect(run.stderr).to.match(new RegExp(`127\\.0\\.0\\.1:${http.port} does not speak the Redis protocol`))
    } finally {
      await http.close()
    }
  })

  it('with no registry named, an unreachable default says it was the default and how to name one', async function () {
    if (!(await portIsFree(6379))) this.skip() // a Redis on the default port answers here
    const run = await spawnCli(['shards:list'], {env: {SHARDCTL_REGISTRY: undefined}})
    expect(run.exitCode).to.equal(1)
    expect(run.stderr).to.match(
      /no registry given, and the default one \(127\.0\.0\.1:6379\) cannot be reached: connection refused — name the registry with -r host:port\/db or SHARDCTL_REGISTRY/,
    )
  })
})

describe('several fleets: named contexts', () => {
  const fleet = useFleet({instances: 1})
  let dir: string
  let file: string

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'shardctl-config-'))
    file = join(dir, 'config.json')
  })
  after(() => rmSync(dir, {recursive: true, force: true}))

  beforeEach(async () => {
    await cli(['shards:init', '--yes', '--instance', `127.0.0.1:${fleet.instances[0].master.port}`, '--count', '2', ...fleet.r()])
    writeFileSync(
      file,
      JSON.stringify({current: 'down', contexts: {test: {registry: fleet.registry.url}, down: {registry: 'redis://127.0.0.1:1/0'}}}),
    )
  })

  it('--context picks a fleet, the file names the current one, a flag still wins', async () => {
    const env = {SHARDCTL_CONFIG: file, SHARDCTL_REGISTRY: undefined}
    const picked = await spawnCli(['shards:list', '--context', 'test', '--json'], {env})
    expect(picked.exitCode, picked.stderr).to.equal(0)
    expect(JSON.parse(picked.stdout).shards).to.have.length(2)
    const current = await spawnCli(['shards:list'], {env})
    expect(current.exitCode).to.equal(1)
    expect(current.stderr).to.match(/cannot reach 127\.0\.0\.1:1/)
    const flag = await spawnCli(['shards:list', '--json', ...fleet.r()], {env})
    expect(flag.exitCode).to.equal(0)
    // The environment names the registry as a flag does: it wins over the current context too.
    const fromEnv = await spawnCli(['shards:list', '--json'], {env: {...env, SHARDCTL_REGISTRY: fleet.registry.url}})
    expect(fromEnv.exitCode, fromEnv.stderr).to.equal(0)
    expect(JSON.parse(fromEnv.stdout).shards).to.have.length(2)
    const unknown = await spawnCli(['shards:list', '--context', 'nope'], {env})
    expect(unknown.exitCode).to.equal(2)
    expect(unknown.stderr).to.match(/no context "nope" in .*config\.json — it has test, down/)
  })

  it('a confirmation names the fleet acted on: an explicit -r is named by the context it matches, else by its address alone', async () => {
    const env = {SHARDCTL_CONFIG: file, SHARDCTL_REGISTRY: undefined}
    // The current context is "down"; -r names the registry of "test".
    const matching = await spawnCli(['shards:remove', 's000', ...fleet.r()], {env})
    expect(matching.exitCode).to.equal(2)
    expect(matching.stderr).to.match(
      new RegExp(`confirmation needed: on fleet test \\(127\\.0\\.0\\.1:${fleet.registry.port}/0\\): Remove`),
    )
    // A registry no context names: its address alone, never the current context's name.
    const other = await startServer()
    try {
      await cli(['shards:add', 'a1', '--master', '10.0.0.1:6379/1', '-r', other.url])
      const unnamed = await spawnCli(['shards:remove', 'a1', '-r', other.url], {env})
      expect(unnamed.exitCode).to.equal(2)
      expect(unnamed.stderr).to.match(new RegExp(`confirmation needed: on registry 127\\.0\\.0\\.1:${other.port}/0: Remove shard a1\\?`))
      expect(unnamed.stderr).not.to.match(/fleet down/)
      // The fleet is its registry and its prefix: another prefix on test's registry is not test.
      await cli(['shards:add', 'p1', '--master', '10.0.0.1:6379/5', '--prefix', 'other', ...fleet.r()])
      const prefixed = await spawnCli(['shards:remove', 'p1', '--prefix', 'other', '--context', 'test'], {env})
      expect(prefixed.exitCode).to.equal(2)
      expect(prefixed.stderr).to.match(
        new RegExp(`confirmation needed: on registry 127\\.0\\.0\\.1:${fleet.registry.port}/0: Remove shard p1\\?`),
      )
    } finally {
      await other.stop()
    }
  })

  it('every confirmation names the fleet it is about', async () => {
    const env = {SHARDCTL_CONFIG: file, SHARDCTL_REGISTRY: undefined}
    const run = await spawnCli(['shards:remove', 's000', '--context', 'test'], {env})
    expect(run.exitCode).to.equal(2)
    expect(run.stderr).to.match(
      new RegExp(`confirmation needed: on fleet test \\(127\\.0\\.0\\.1:${fleet.registry.port}/0\\): Remove shard s000\\?`),
    )
  })
})

import {expect} from 'chai'

import {ANSI, binary, cli, spawnCli, ttyCli, until, secret as registerSecret} from '../helpers/cli.js'
import {useFleet} from '../helpers/fleet.js'

describe('terminal manners', () => {
  const fleet = useFleet({instances: 1})

  beforeEach(async () => {
    await cli(['shards:init', '--instance', `127.0.0.1:${fleet.instances[0].master.port}`, '--count', '2', ...fleet.r()])
  })

  it('colours a terminal, and not under NO_COLOR, --no-color, a pipe or --json', async () => {
    expect((await ttyCli(['shards:list', ...fleet.r()], '')).screen).to.match(ANSI)
    expect((await ttyCli(['shards:list', ...fleet.r()], '', {NO_COLOR: '1'})).screen).not.to.match(ANSI)
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
    for (const args of [['-r', `redis://admin:${secret}@127.0.0.1:1/0`], ['-r', `redis://admin:${secret}@127.0.0.1:99999/0`]]) {
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
    await cli(['shards:init', '--instance', `127.0.0.1:${port}`, '--replica', `127.0.0.1:${replica}`, '--count', '5', ...fleet.r()])
    await cli(['shards:weight', 's002', '0', ...fleet.r()])
    const hashes = Array.from({length: 200}, (_, i) => `user:${i}`)
    expect((await cli(['shards:assign', ...hashes, ...fleet.r()])).exitCode).to.equal(0)

    // The application's view: shards.map, shards.<id>, shards.list, nothing else.
    const weights = await fleet.reg.zrange('shards.list', 0, -1, 'WITHSCORES')
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
    expect(keys).to.deep.equal(['shards._history', 'shards.list', 'shards.map', 'shards.s000', 'shards.s001', 'shards.s002', 'shards.s003', 'shards.s004'])
  })

  it('keeps fields it does not own untouched', async () => {
    await fleet.reg.hset('shards.x1', 'master', '127.0.0.1:1/0', 'owner', 'team-a')
    await fleet.reg.zadd('shards.list', 1, 'x1')
    await cli(['shards:weight', 'x1', '4', ...fleet.r()])
    expect(await fleet.reg.hgetall('shards.x1')).to.deep.equal({master: '127.0.0.1:1/0', owner: 'team-a'})
  })
})

import {expect} from 'chai'
import {Redis} from 'ioredis'

import {mapLimited} from '../../src/fleet/probe.js'
import {redact} from '../../src/registry/address.js'
import {secret, spawnCli} from '../helpers/cli.js'
import {type TestServer, startServer} from '../helpers/redis.js'

/**
 * SPEC §4.8, whatever the password holds: every error path, plain and --json, with
 * passwords of every awkward shape. The root hook also fails the run if any password
 * a test registered was ever printed.
 */
const SHAPES = ['pa/ss-word1', 'pa#ss-word2', 'pa?ss-word3', 'p@ss-word4', 'pa%ss-word5', 'pa:ss-word6', 'pa ss word7', 'a/b#c?d@e%f:g h-8']

describe('no credential is ever printed, whatever the URL looks like', () => {
  let guarded: TestServer
  before(async () => {
    guarded = await startServer(['--requirepass', 'the-right-one'])
  })
  after(() => guarded.stop())

  it('redact hides everything up to the last "@", keeping the user', () => {
    expect(redact('redis://alice:a/b#c?d@e@h:1/0')).to.equal('redis://alice:***@h:1/0')
    expect(redact('rediss://only-a-password@h:1')).to.equal('rediss://***@h:1')
    expect(redact('cannot reach redis://u:p w@h:1 now')).to.equal('cannot reach redis://u:***@h:1 now')
  })

  for (const password of SHAPES) {
    it(`password ${JSON.stringify(password.replace(/[a-z-]+\d$/, '…'))}: unreachable, bad port, bad db, wrong scheme, wrong password — never printed`, async () => {
      const pw = secret(password)
      // Exit 1 where the URL parses and the host fails, 2 where the URL itself is refused (a raw "%" is an invalid escape).
      const cases: {args: string[]; env?: Record<string, string>; exit: number[]}[] = [
        {args: ['-r', `redis://admin:${pw}@127.0.0.1:1/0`], exit: [1, 2]},
        {args: ['-r', `redis://admin:${pw}@127.0.0.1:99999/0`], exit: [2]},
        {args: ['-r', `redis://admin:${pw}@127.0.0.1:6379/notadb`], exit: [2]},
        {args: ['-r', `http://admin:${pw}@127.0.0.1:6379`], exit: [2]},
        {args: ['-r', `admin:${pw}@127.0.0.1:6379`], exit: [2]},
        {args: [], env: {SHARDCTL_REGISTRY: `redis://admin:${pw}@127.0.0.1:1/0`}, exit: [1, 2]},
        {args: ['-r', `redis://127.0.0.1:${guarded.port}/0`], env: {SHARDCTL_REGISTRY_PASSWORD: pw}, exit: [1, 2]},
        {args: ['-r', `redis://default:${encodeURIComponent(pw)}@127.0.0.1:${guarded.port}/0`], exit: [1, 2]},
      ]
      // Every run only reads (or fails to): four at a time.
      const runs = cases.flatMap(({args, env, exit}) => [[], ['--json']].map((json) => ({args, env, exit, json})))
      await mapLimited(runs, 4, async ({args, env, exit, json}) => {
        const run = await spawnCli(['shards:list', '--timeout', '1s', ...args, ...json], {env})
        const label = `${args.join(' ')} ${json.join('')}`.replaceAll(pw, '<pw>')
        expect(run.exitCode, label).to.be.oneOf(exit)
        expect(run.stdout + run.stderr, label).not.to.include(pw)
        expect(run.stdout + run.stderr, label).not.to.include(encodeURIComponent(pw))
        if (json.length > 0) expect(JSON.parse(run.stdout).error.message, label).to.be.a('string')
        else expect(run.stderr.trim().split('\n'), label).to.have.length(1)
      })
    })
  }

  it('DEBUG=ioredis:* or DEBUG=* prints no credential: library debug output never shows', async () => {
    const pw = secret('the-right-one')
    for (const debug of ['ioredis:*', '*']) {
      const run = await spawnCli(['shards:list', '--no-probe', '-r', `redis://127.0.0.1:${guarded.port}/0`], {
        env: {SHARDCTL_REGISTRY_PASSWORD: pw, DEBUG: debug},
      })
      expect(run.exitCode, run.stderr).to.equal(0)
      expect(run.stdout + run.stderr, debug).not.to.include(pw)
      expect(run.stderr, debug).not.to.match(/ioredis:|auth\(/)
    }
  })

  it('a wrong password says authentication failed for that host, not that it is unreachable', async () => {
    const run = await spawnCli(['shards:list', '-r', `redis://127.0.0.1:${guarded.port}/0`], {
      env: {SHARDCTL_REGISTRY_PASSWORD: secret('wrong-one-123')},
    })
    expect(run.exitCode).to.equal(1)
    expect(run.stderr).to.match(new RegExp(`127\\.0\\.0\\.1:${guarded.port}: (WRONGPASS|invalid username-password)`))
  })
})

/** The registry reached as an ACL user, the instances with their default user: one server, two databases. */
describe('instance credentials beside a registry ACL user', () => {
  let server: TestServer
  const registryPassword = secret('reg-pass-41')
  const instancePassword = secret('inst-pass-42')
  const run = (env: Record<string, string>) =>
    spawnCli(['shards:list', '--json', '-r', `redis://127.0.0.1:${server.port}/0`], {
      env: {SHARDCTL_REGISTRY_USER: 'registrar', SHARDCTL_REGISTRY_PASSWORD: registryPassword, ...env},
    })

  before(async () => {
    server = await startServer(['--requirepass', instancePassword])
    const admin = new Redis({port: server.port, password: instancePassword, lazyConnect: true})
    await admin.connect()
    await admin.call('ACL', 'SETUSER', 'registrar', 'on', `>${registryPassword}`, '~*', '&*', '+@all')
    await admin.hset('shards.s1', 'master', `127.0.0.1:${server.port}/1`)
    await admin.zadd('shards.list', 1, 's1')
    await admin.quit()
  })
  after(() => server.stop())

  it("SHARDCTL_INSTANCE_PASSWORD without SHARDCTL_INSTANCE_USER is the default user's password, not the registry user's", async () => {
    const listed = await run({SHARDCTL_INSTANCE_PASSWORD: instancePassword})
    expect(listed.exitCode, listed.stderr).to.equal(0)
    const [shard] = JSON.parse(listed.stdout).shards
    expect(shard.master).to.include({reachable: true, role: 'master'})
    expect(shard.problems).to.deep.equal([])
  })

  it('a refused password is "auth failed" in the status, not "unreachable"', async () => {
    const listed = await run({SHARDCTL_INSTANCE_PASSWORD: secret('wrong-pass-43')})
    expect(listed.exitCode, listed.stderr).to.equal(0)
    const [shard] = JSON.parse(listed.stdout).shards
    expect(shard.problems).to.deep.equal([`master 127.0.0.1:${server.port}/1 auth failed`])
  })
})

import {expect} from 'chai'
import {Redis} from 'ioredis'

import type {VerifyResult} from '../../src/commands/shards/verify.js'
import {cli, secret} from '../helpers/cli.js'
import {useFleet} from '../helpers/fleet.js'
import {type TestServer, startServer} from '../helpers/redis.js'

describe('shards:verify', () => {
  const fleet = useFleet()
  let source: TestServer
  let copy: TestServer
  let a: Redis
  let b: Redis
  const password = secret('copy pass#/@:word')

  before(async () => {
    ;[source, copy] = await Promise.all([startServer(), startServer(['--requirepass', password])])
    a = source.client(2)
    b = new Redis({port: copy.port, password, db: 7, protocol: 2})
  })
  after(() => b.disconnect())
  beforeEach(async () => {
    await Promise.all([a.flushall(), b.flushall()])
    expect((await cli(['shards:add', 's1', '--master', source.address(2), ...fleet.r()])).exitCode).to.equal(0)
  })

  const against = () => `redis://:${encodeURIComponent(password)}@127.0.0.1:${copy.port}/7`
  const verify = (...args: string[]) => cli(['shards:verify', 's1', '--against', against(), '--interval', '10ms', ...args, ...fleet.r()])

  async function seed(client: Redis): Promise<void> {
    await client.mset('k1', 'v1', 'k2', 'v2', 'k3', 'v3')
    await client.hset('h', 'f', 'v')
    await client.set('t', 'x', 'PX', 3_600_000)
    await client.pexpireat('t', 4_102_444_800_000)
  }

  it('exits 0 and says so when the copies are equal', async () => {
    await seed(a)
    await seed(b)
    const {exitCode, stdout} = await verify()
    expect(exitCode).to.equal(0)
    expect(stdout).to.match(new RegExp(`^Equal: 5 keys on 127.0.0.1:${source.port}/2, 5 on 127.0.0.1:${copy.port}/7; 1 round`))

    const json = await verify('--json')
    expect(json.exitCode).to.equal(0)
    const result = JSON.parse(json.stdout) as VerifyResult
    expect(result).to.include({shard: 's1', equal: true, differing: 0})
  })

  it('exits 3 naming the keys that differ, by kind, in a table and in --json', async () => {
    await seed(a)
    await seed(b)
    await b.del('k1')
    await b.set('k2', 'other')
    await b.pexpireat('t', 4_102_444_800_000 + 60_000)
    await b.del('h')
    await b.sadd('h', 'f')
    await b.set('extra', '1')

    const {exitCode, stdout, stderr} = await verify('--rounds', '2')
    expect(exitCode).to.equal(3)
    expect(stdout).to.match(new RegExp(`missing on 127.0.0.1:${copy.port}/7\\s+1\\s+k1\\s+a string, only on 127.0.0.1:${source.port}/2`))
    expect(stdout).to.match(new RegExp(`missing on 127.0.0.1:${source.port}/2\\s+1\\s+extra`))
    expect(stdout).to.match(/type differs\s+1\s+h\s+a hash on .*, a set on/)
    expect(stdout).to.match(/value differs\s+1\s+k2\s+2 bytes on .*, 5 bytes on/)
    expect(stdout).to.match(
      /expiry differs \(> 1\.0 s\)\s+1\s+t\s+expiry 2100-01-01T00:00:00.000Z on .*, 2100-01-01T00:01:00.000Z on .* \(60000 ms apart\)/,
    )
    expect(stdout).to.match(/^Different: .*; 2 rounds \(10 keys compared, 5 differed; 5 re-checked, 5 still differ\)/m)
    expect(stderr).to.match(/5 keys still differ after 2 rounds/)

    const json = await verify('--json', '--rounds', '1')
    expect(json.exitCode).to.equal(3)
    const result = JSON.parse(json.stdout) as VerifyResult
    expect(result.equal).to.equal(false)
    expect(result.differing).to.equal(5)
    expect(result.differences.missingInB.keys.map((k) => k.key)).to.deep.equal(['k1'])
    expect(result.differences.missingInA.keys.map((k) => k.key)).to.deep.equal(['extra'])
    expect(result.differences.type.keys.map((k) => k.key)).to.deep.equal(['h'])
    expect(result.differences.value.keys.map((k) => k.key)).to.deep.equal(['k2'])
    expect(result.differences.ttl.keys.map((k) => k.key)).to.deep.equal(['t'])
  })

  it('refuses an unknown shard, its own database, or a malformed copy address with exit 2', async () => {
    const unknown = await cli(['shards:verify', 'nope', '--against', against(), ...fleet.r()])
    expect(unknown.exitCode).to.equal(2)
    expect(unknown.stderr).to.match(/unknown shard "nope"/)
    const own = await cli(['shards:verify', 's1', '--against', source.address(2), ...fleet.r()])
    expect(own.exitCode).to.equal(2)
    expect(own.stderr).to.match(/is shard s1's own database/)
    const bad = await cli(['shards:verify', 's1', '--against', '127.0.0.1', ...fleet.r()])
    expect(bad.exitCode).to.equal(2)
    expect(bad.stderr).to.match(/invalid address/)
    const beyond = await cli(['shards:verify', 's1', '--against', `127.0.0.1:${source.port}/16`, ...fleet.r()])
    expect(beyond.exitCode).to.equal(2)
    expect(beyond.stderr.trim().split('\n').at(-1)).to.match(/--against 127\.0\.0\.1:\d+ has 16 databases: there is no db 16/)
    const duration = await cli(['shards:verify', 's1', '--against', against(), '--interval', 'soon', ...fleet.r()])
    expect(duration.exitCode).to.equal(2)
    expect(duration.stderr).to.match(/--interval: invalid duration "soon"/)
  })

  it('--ttl-tolerance 0: only equal expiry times are equal', async () => {
    await seed(a)
    await seed(b)
    await b.pexpireat('t', 4_102_444_800_000 + 1)
    expect((await verify('--ttl-tolerance', '1')).exitCode).to.equal(0)
    const exact = await verify('--ttl-tolerance', '0', '--json')
    expect(exact.exitCode).to.equal(3)
    expect((JSON.parse(exact.stdout) as VerifyResult).differences.ttl.keys.map((k) => k.key)).to.deep.equal(['t'])
  })

  it('fails in one line naming the copy when its password is wrong', async () => {
    const {exitCode, stderr} = await cli(['shards:verify', 's1', '--against', `redis://:wrong@127.0.0.1:${copy.port}/7`, ...fleet.r()])
    expect(exitCode).to.equal(1)
    expect(stderr).to.match(new RegExp(`authentication failed for 127.0.0.1:${copy.port}`))
    expect(stderr.trim().split('\n')).to.have.length(1)
  })
})

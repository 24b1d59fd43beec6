import {expect} from 'chai'

import {cli, spawnCli, ttyCli, secret as registerSecret} from '../helpers/cli.js'
import {type TestServer, startServer} from '../helpers/redis.js'
import {type TlsTestServer, startTlsServer} from '../helpers/tls.js'

describe('TLS', () => {
  let tls: TlsTestServer
  let server: TestServer
  let tlsPort: number
  const file = (name: string) => tls.file(name)

  before(async () => {
    // The registry and a shard instance in one server: plain port for the test's own setup, TLS for shardctl.
    tls = await startTlsServer()
    ;({server, tlsPort} = tls)
    const c = server.client()
    await c.hset('shards.s1', 'master', `127.0.0.1:${tlsPort}/1`)
    await c.zadd('shards.list', 1, 's1')
    c.disconnect()
  })
  after(() => tls.stop())

  const url = () => `rediss://127.0.0.1:${tlsPort}/0`

  it('rediss:// with --tls-ca verifies the server, and instances are probed over TLS too', async () => {
    const run = await cli(['shards:list', '-r', url(), '--tls-ca', file('ca.crt'), '--json'])
    expect(run.exitCode, run.stderr).to.equal(0)
    const shard = JSON.parse(run.stdout).shards[0]
    expect(shard.master).to.include({reachable: true, role: 'master'})
  })

  it('an unverifiable certificate fails with one line saying so', async () => {
    const run = await spawnCli(['shards:list', '-r', url(), '--no-probe'])
    expect(run.exitCode).to.equal(1)
    expect(run.stderr.trim().split('\n')).to.have.length(1)
    expect(run.stderr).to.match(new RegExp(`cannot reach 127\\.0\\.0\\.1:${tlsPort}: TLS failed`))
  })

  it('--tls-insecure connects anyway, and warns', async () => {
    const run = await spawnCli(['shards:list', '-r', url(), '--no-probe', '--tls-insecure'])
    expect(run.exitCode, run.stderr).to.equal(0)
    expect(run.stderr).to.match(/TLS certificates are not verified/)
  })

  it('a client certificate from --tls-cert / --tls-key (or their environment variables)', async () => {
    const c = server.client()
    await c.config('SET', 'tls-auth-clients', 'yes')
    try {
      const without = await spawnCli(['shards:list', '-r', url(), '--no-probe', '--tls-ca', file('ca.crt')])
      expect(without.exitCode).to.equal(1)
      const withCert = await spawnCli(['shards:list', '-r', url(), '--no-probe'], {
        env: {SHARDCTL_TLS_CA: file('ca.crt'), SHARDCTL_TLS_CERT: file('client.crt'), SHARDCTL_TLS_KEY: file('client.key')},
      })
      expect(withCert.exitCode, withCert.stderr).to.equal(0)
    } finally {
      await c.config('SET', 'tls-auth-clients', 'optional')
      c.disconnect()
    }
  })

  it('--tls-cert without --tls-key (or the other way round) is a usage error naming both, before connecting', async () => {
    for (const [given, missing] of [
      ['--tls-cert', '--tls-key'],
      ['--tls-key', '--tls-cert'],
    ]) {
      const file_ = given === '--tls-cert' ? file('client.crt') : file('client.key')
      const run = await spawnCli(['shards:list', '-r', url(), '--no-probe', '--tls-ca', file('ca.crt'), given, file_])
      expect(run.exitCode, run.stderr).to.equal(2)
      expect(run.stderr.trim().split('\n')).to.have.length(1)
      expect(run.stderr).to.include(`${given} needs ${missing}`)
    }
  })

  it('rediss:// to a server that speaks plain Redis says TLS failed and that it speaks plain Redis, not that the host is down', async () => {
    const run = await spawnCli([
      'shards:list',
      '-r',
      `rediss://127.0.0.1:${server.port}/0`,
      '--timeout',
      '500ms',
      '--tls-ca',
      file('ca.crt'),
    ])
    expect(run.exitCode).to.equal(1)
    expect(run.stderr.trim().split('\n')).to.have.length(1)
    expect(run.stderr).to.include(
      `the TLS handshake with 127.0.0.1:${server.port} did not complete within 500 ms: it speaks plain Redis, not TLS`,
    )
    expect(run.stderr).not.to.include('check that the host is up')
  })

  it('--instance-tls to an instance that speaks plain Redis: its status says TLS failed, not unreachable', async () => {
    const c = server.client()
    await c.hset('plain.p1', 'master', `127.0.0.1:${server.port}/2`)
    await c.zadd('plain.list', 1, 'p1')
    c.disconnect()
    const run = await spawnCli([
      'shards:list',
      '--json',
      '--prefix',
      'plain',
      '-r',
      `redis://127.0.0.1:${server.port}/0`,
      '--instance-tls',
      '--timeout',
      '500ms',
    ])
    expect(run.exitCode, run.stderr).to.equal(0)
    expect(JSON.parse(run.stdout).shards[0].problems).to.deep.equal([`master 127.0.0.1:${server.port}/2 TLS failed: speaks plain Redis`])
  })

  it('a --tls-ca that is not a certificate is a usage error, even where nothing speaks TLS', async () => {
    const run = await spawnCli(['shards:list', '-r', `redis://127.0.0.1:${server.port}/0`, '--no-probe', '--tls-ca', file('ext')])
    expect(run.exitCode).to.equal(2)
    expect(run.stderr.trim().split('\n')).to.have.length(1)
    expect(run.stderr).to.include(`--tls-ca ${file('ext')} is not a certificate`)
  })

  it('a missing certificate file is a usage error naming it', async () => {
    const run = await spawnCli(['shards:list', '-r', url(), '--tls-ca', '/nonexistent/ca.crt'])
    expect(run.exitCode).to.equal(2)
    expect(run.stderr).to.match(/cannot read --tls-ca \/nonexistent\/ca\.crt: ENOENT/)
  })
})

describe('credentials and ACLs', () => {
  let server: TestServer
  const secret = registerSecret('reader-Secret-4711')
  const adminSecret = registerSecret('admin-Secret-0815')

  before(async () => {
    server = await startServer()
    const c = server.client()
    await c.hset('shards.s1', 'master', `127.0.0.1:${server.port}/1`)
    await c.zadd('shards.list', 1, 's1')
    await c.call(
      'ACL',
      'SETUSER',
      'reader',
      'on',
      `>${secret}`,
      '~shards.*',
      '&*',
      '+@read',
      '+@connection',
      '+info',
      '-@write',
      '-@scripting',
    )
    await c.call('ACL', 'SETUSER', 'admin', 'on', `>${adminSecret}`, '~*', '&*', '+@all')
    c.disconnect()
  })
  after(() => server.stop())

  it('a read-only ACL user lists and checks the shards but cannot change the registry, and is told so in one line', async () => {
    const env = {SHARDCTL_REGISTRY: `redis://reader:${secret}@127.0.0.1:${server.port}/0`}
    const list = await spawnCli(['shards:list', '--json'], {env})
    expect(list.exitCode, list.stderr).to.equal(0)
    expect(JSON.parse(list.stdout).shards[0].master.reachable).to.equal(true)
    const check = await spawnCli(['shards:check', '--allow-no-replica', '--json'], {env})
    expect(check.exitCode, check.stdout).to.equal(0)
    expect(JSON.parse(check.stdout).topology[0].masterRole).to.equal('master')
    const change = await spawnCli(['shards:weight', 's1', '2'], {env})
    expect(change.exitCode).to.equal(1)
    expect(change.stderr.trim().split('\n')).to.have.length(1)
    expect(change.stderr).to.match(/the Redis ACL does not allow this/)
    for (const run of [list, check, change]) expect(run.stdout + run.stderr).not.to.include(secret)
  })

  it('takes the password from SHARDCTL_REGISTRY_USER / SHARDCTL_REGISTRY_PASSWORD, and instance credentials apart', async () => {
    const run = await spawnCli(['shards:list', '-r', `127.0.0.1:${server.port}`, '--json'], {
      env: {
        SHARDCTL_REGISTRY_USER: 'reader',
        SHARDCTL_REGISTRY_PASSWORD: secret,
        SHARDCTL_INSTANCE_USER: 'admin',
        SHARDCTL_INSTANCE_PASSWORD: adminSecret,
      },
    })
    expect(run.exitCode, run.stderr).to.equal(0)
    expect(JSON.parse(run.stdout).shards[0].master.reachable).to.equal(true)
  })

  it('a wrong password fails naming the host, never the password', async () => {
    const run = await spawnCli(['shards:list', '--json'], {
      env: {SHARDCTL_REGISTRY: `redis://reader:wrong-${secret}@127.0.0.1:${server.port}/0`},
    })
    expect(run.exitCode).to.equal(1)
    expect(JSON.parse(run.stdout).error).to.include({code: 'EAUTH'})
    expect(run.stdout + run.stderr).not.to.include(secret)
  })

  it('--ask-password prompts on the terminal without echoing', async () => {
    const run = await ttyCli(
      ['shards:list', '-r', `reader@127.0.0.1:${server.port}`.replace(/^/, 'redis://'), '--ask-password', '--no-probe'],
      `${secret}\r`,
    )
    expect(run.screen).to.match(/Password for the registry/)
    expect(run.exitCode, run.screen).to.equal(0)
    expect(run.screen).to.match(/s1/)
    expect(run.screen).not.to.include(secret)
  })

  it('--ask-password without a terminal is a usage error', async () => {
    const run = await spawnCli(['shards:list', '-r', `127.0.0.1:${server.port}`, '--ask-password'])
    expect(run.exitCode).to.equal(2)
    expect(run.stderr).to.match(/--ask-password needs a terminal/)
  })
})

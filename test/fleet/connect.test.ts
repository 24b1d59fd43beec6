import {expect} from 'chai'

import {ConnectionPool, close, connect, reopen} from '../../src/fleet/connect.js'
import {until} from '../helpers/cli.js'
import {type TestServer, startServer} from '../helpers/redis.js'

/**
 * A connection never comes back by itself (a run that lost its lock must not act
 * through one): it is opened again only on request, and then every older connection of
 * the same run to that server is cut, so that nothing sent on one can run afterwards.
 */
describe('fleet/connect: opening again what died', () => {
  let server: TestServer
  let other: TestServer
  before(async () => {
    ;[server, other] = await Promise.all([startServer(), startServer()])
  })
  after(async () => {
    await Promise.all([server.stop(), other.stop()])
  })
  const target = (s: TestServer) => ({host: '127.0.0.1', port: s.port, db: 0})
  const options = {timeoutMs: 300, clientName: 'shardctl-reopen-test'}

  it('a connection to a host that went silent stays dead until reopened; reopening cuts the older connections of the same name', async () => {
    const client = await connect(target(server), options)
    const older = await connect(target(server), options)
    try {
      process.kill(server.pid, 'SIGSTOP')
      try {
        const failure = await client.get('k').then(
          () => undefined,
          (error: Error & {code?: string}) => error,
        )
        expect(failure?.code).to.equal('ETIMEOUT')
      } finally {
        process.kill(server.pid, 'SIGCONT')
      }
      await until('the silent connection ended', () => client.status === 'end')
      expect(await client.ping().catch(() => 'dead')).to.equal('dead')

      await reopen(client)
      expect(await client.ping()).to.equal('PONG')
      await until('the older connection was cut', () => older.status === 'end')
      const names = String(await client.call('CLIENT', 'LIST'))
        .split('\n')
        .filter((line) => line.includes(`name=${options.clientName} `))
      expect(names).to.have.length(1)
    } finally {
      await Promise.all([close(client), close(older)])
    }
  })

  it('pool.revive opens again a connection that failed, and leaves a live one as it is', async () => {
    const pool = new ConnectionPool(options)
    try {
      const live = await pool.get(target(other))
      process.kill(server.pid, 'SIGSTOP')
      try {
        expect(
          await pool.get(target(server)).then(
            () => 'opened',
            () => 'failed',
          ),
        ).to.equal('failed')
      } finally {
        process.kill(server.pid, 'SIGCONT')
      }
      // Remembered as failed: nothing opens it again by itself.
      expect(
        await pool.get(target(server)).then(
          () => 'opened',
          () => 'failed',
        ),
      ).to.equal('failed')
      await pool.revive()
      expect(await (await pool.get(target(server))).ping()).to.equal('PONG')
      expect(await pool.get(target(other))).to.equal(live)
    } finally {
      await pool.closeAll()
    }
  })
})

import {randomBytes} from 'node:crypto'
import {mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {type Readable} from 'node:stream'

import {expect} from 'chai'

import {ShardctlError} from '../../src/errors.js'
import {crc64} from '../../src/rdb/crc64.js'
import {type ConnectTarget} from '../../src/registry/address.js'
import {streamSnapshot} from '../../src/replication/snapshot.js'
import {freePort} from '../../src/sandbox/redis-process.js'
import {rejectionOf, until} from '../helpers/cli.js'
import {type TestServer, startServer, withClients} from '../helpers/redis.js'
import {type TlsTestServer, startTlsServer} from '../helpers/tls.js'

const TIMEOUT = {timeoutMs: 5000}

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of stream) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

async function failureOf(stream: Readable): Promise<Error> {
  try {
    await collect(stream)
  } catch (error) {
    return error as Error
  }
  throw new Error('the stream ended without an error')
}

const local = (server: {port: number}, more: Partial<ConnectTarget> = {}): ConnectTarget => ({
  host: '127.0.0.1',
  port: server.port,
  db: 0,
  ...more,
})

/** An RDB file as Redis 7.0 writes it: its magic, and a CRC-64 trailer that matches the bytes before it. */
function expectWholeRdb(rdb: Buffer): void {
  expect(rdb.subarray(0, 9).toString()).to.equal('REDIS0010')
  expect(rdb[rdb.length - 9]).to.equal(0xff) // the EOF opcode before the checksum
  expect(crc64(rdb.subarray(0, rdb.length - 8))).to.equal(rdb.readBigUInt64LE(rdb.length - 8))
}

/** Keys per db, as INFO keyspace says. */
async function keyspace(server: TestServer): Promise<string> {
  return withClients([server], async ([c]) =>
    (await c.info('keyspace'))
      .split('\n')
      .filter((line) => line.startsWith('db'))
      .map((line) => line.replace(/,avg_ttl=\d+/, '').trim())
      .join(' '),
  )
}

describe('replication/snapshot: an RDB over the replication protocol, as redis-cli --rdb takes it', () => {
  let server: TestServer
  before(async () => {
    server = await startServer(['--enable-debug-command', 'yes'])
    await withClients([server], async ([c]) => {
      await c.call('DEBUG', 'POPULATE', '20000', 'key', '100')
      await c.select(3)
      await c.call('DEBUG', 'POPULATE', '500', 'three', '10')
      await c.set('ttl', 'v', 'PX', 3_600_000)
      // Incompressible bytes, far more than socket buffers hold: back-pressure must reach the master.
      await c.select(5)
      for (let i = 0; i < 10; i++) await c.set(`random:${i}`, randomBytes(2_000_000))
    })
  })
  after(() => server.stop())
  // Diskless, with no wait, unless a test says otherwise.
  beforeEach(() => withClients([server], ([c]) => c.config('SET', 'repl-diskless-sync', 'yes', 'repl-diskless-sync-delay', '0')))

  for (const diskless of ['yes', 'no']) {
    it(`repl-diskless-sync ${diskless}: the stream is a whole RDB with a valid checksum that loads with every key`, async () => {
      await withClients([server], ([c]) => c.config('SET', 'repl-diskless-sync', diskless))
      const {stream, length} = await streamSnapshot(local(server), TIMEOUT)
      const rdb = await collect(stream)
      if (diskless === 'yes') expect(length).to.equal(undefined)
      else expect(length).to.equal(rdb.length)
      expectWholeRdb(rdb)

      const dir = mkdtempSync(join(tmpdir(), 'shardctl-rdb-'))
      try {
        writeFileSync(join(dir, 'dump.rdb'), rdb)
        const {execa} = await import('execa')
        const check = await execa('redis-check-rdb', [join(dir, 'dump.rdb')], {reject: false})
        expect(check.stdout).to.include('RDB looks OK')
        const loaded = await startServer(['--dir', dir])
        try {
          expect(await keyspace(loaded)).to.equal(await keyspace(server))
          expect(await keyspace(loaded)).to.equal('db0:keys=20000,expires=0 db3:keys=501,expires=1 db5:keys=10,expires=0')
        } finally {
          await loaded.stop()
        }
      } finally {
        rmSync(dir, {recursive: true, force: true})
      }
    })
  }

  it("the master's wait before a diskless snapshot (repl-diskless-sync-delay) is kept alive by its newlines, which are skipped", async () => {
    await withClients([server], ([c]) => c.config('SET', 'repl-diskless-sync', 'yes', 'repl-diskless-sync-delay', '4'))
    const started = Date.now()
    // Silence longer than 2.5 s would fail it; the master's wait is 4 s, with a newline each second.
    const {stream} = await streamSnapshot(local(server), {...TIMEOUT, idleTimeoutMs: 2500})
    expect(Date.now() - started).to.be.at.least(3000)
    expectWholeRdb(await collect(stream))
  })

  it('memory stays bounded: a slow reader holds at most the high-water mark plus a socket read', async () => {
    const highWaterMark = 64 * 1024
    const {stream} = await streamSnapshot(local(server), {...TIMEOUT, highWaterMark})
    let most = 0
    let total = 0
    for await (const chunk of stream) {
      most = Math.max(most, stream.readableLength)
      total += (chunk as Buffer).length
      // A reader slower than the network: let the socket deliver whatever it would.
      await new Promise((resolve) => setImmediate(resolve))
      await new Promise((resolve) => setImmediate(resolve))
    }
    expect(total).to.be.greaterThan(8 * highWaterMark)
    expect(most).to.be.at.most(highWaterMark + 256 * 1024)
  })

  it('a reader that stops: the socket pauses and the master waits; the rest arrives when reading resumes', async () => {
    const {stream} = await streamSnapshot(local(server), {...TIMEOUT, highWaterMark: 16 * 1024})
    await until('the stream buffered its high-water mark', () => stream.readableLength >= 16 * 1024)
    // The master holds what we do not read: the replica is still being sent its snapshot.
    const states = await withClients([server], async ([c]) => (await c.info('replication')).match(/state=\w+/g) ?? [])
    expect(states).to.deep.equal(['state=wait_bgsave'])
    expect(stream.readableLength).to.be.at.most(16 * 1024 + 256 * 1024)
    expectWholeRdb(await collect(stream))
  })

  it('the link lost mid-snapshot fails the stream in one line, naming the host and how far it got', async () => {
    const {stream} = await streamSnapshot(local(server), {...TIMEOUT, highWaterMark: 16 * 1024})
    await until('the stream buffered its high-water mark', () => stream.readableLength >= 16 * 1024)
    await withClients([server], ([c]) => c.call('CLIENT', 'KILL', 'TYPE', 'replica'))
    const error = await failureOf(stream)
    expect(error).to.be.instanceOf(ShardctlError)
    expect(error.message).to.match(
      new RegExp(`^lost the connection to 127\\.0\\.0\\.1:${server.port} during the snapshot, after [\\d,]+ bytes$`),
    )
  })

  it('an abort signal stops the snapshot and closes the link', async () => {
    const controller = new AbortController()
    const {stream} = await streamSnapshot(local(server), {...TIMEOUT, highWaterMark: 16 * 1024, signal: controller.signal})
    await until('the stream buffered its high-water mark', () => stream.readableLength >= 16 * 1024)
    controller.abort()
    const error = await failureOf(stream)
    expect((error as ShardctlError).code).to.equal('EABORTED')
    await until('the master dropped the replica', async () =>
      withClients([server], async ([c]) => !/slave0:/.test(await c.info('replication'))),
    )
  })

  it('a master that goes silent fails at the idle timeout, naming the host', async () => {
    const frozen = await startServer(['--enable-debug-command', 'yes'])
    try {
      await withClients([frozen], ([c]) => c.call('DEBUG', 'POPULATE', '20000', 'key', '100'))
      const {stream} = await streamSnapshot(local(frozen), {...TIMEOUT, highWaterMark: 16 * 1024, idleTimeoutMs: 300})
      await until('the stream buffered its high-water mark', () => stream.readableLength >= 16 * 1024)
      process.kill(frozen.pid, 'SIGSTOP')
      try {
        const error = await failureOf(stream)
        expect(error.message).to.match(new RegExp(`^127\\.0\\.0\\.1:${frozen.port} sent nothing for 300 ms during the snapshot, after`))
      } finally {
        process.kill(frozen.pid, 'SIGCONT')
      }
    } finally {
      await frozen.stop()
    }
  })

  describe('credentials and refusals', () => {
    before(async () => {
      await withClients([server], async ([c]) => {
        await c.call('ACL', 'SETUSER', 'backup', 'on', '>backup-secret', '+sync', '+replconf')
        await c.call('ACL', 'SETUSER', 'nosync', 'on', '>nosync-secret', '+replconf')
      })
    })

    it('a user with only +sync +replconf takes a snapshot', async () => {
      const {stream} = await streamSnapshot(local(server, {username: 'backup', password: 'backup-secret'}), TIMEOUT)
      expectWholeRdb(await collect(stream))
    })

    it('a wrong password fails as authentication, naming the host and never the password', async () => {
      const error = await rejectionOf(streamSnapshot(local(server, {username: 'backup', password: 'wrong-secret'}), TIMEOUT))
      expect(error.message).to.match(new RegExp(`^authentication failed for 127\\.0\\.0\\.1:${server.port}: WRONGPASS`))
      expect(error.message).not.to.include('wrong-secret')
    })

    it("a user without +sync is refused SYNC, in the instance's words, with the host", async () => {
      const error = await rejectionOf(streamSnapshot(local(server, {username: 'nosync', password: 'nosync-secret'}), TIMEOUT))
      expect(error.message).to.match(new RegExp(`^127\\.0\\.0\\.1:${server.port} refused SYNC: NOPERM`))
    })

    it('nothing listening: connection refused, in one line', async () => {
      const port = await freePort()
      const error = await rejectionOf(streamSnapshot({host: '127.0.0.1', port, db: 0}, TIMEOUT))
      expect(error.message).to.equal(`cannot reach 127.0.0.1:${port}: connection refused`)
    })
  })

  describe('over TLS', () => {
    let tls: TlsTestServer
    before(async () => {
      tls = await startTlsServer(['--tls-replication', 'yes'])
      await withClients([tls.server], ([c]) => c.set('over', 'tls'))
    })
    after(() => tls.stop())

    it('verifies the server with the CA and streams the snapshot', async () => {
      const {stream} = await streamSnapshot(
        {host: '127.0.0.1', port: tls.tlsPort, db: 0, tls: true},
        {...TIMEOUT, tls: {ca: readFileSync(tls.file('ca.crt'))}},
      )
      const rdb = await collect(stream)
      expectWholeRdb(rdb)
      expect(rdb.includes(Buffer.from('over'))).to.equal(true)
    })

    it('an unknown CA fails as TLS, naming the host', async () => {
      const error = await rejectionOf(streamSnapshot({host: '127.0.0.1', port: tls.tlsPort, db: 0, tls: true}, TIMEOUT))
      expect(error.message).to.match(new RegExp(`^cannot reach 127\\.0\\.0\\.1:${tls.tlsPort}: TLS failed`))
    })
  })
})

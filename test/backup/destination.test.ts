import {createHash, randomBytes} from 'node:crypto'
import {mkdtempSync, readdirSync, rmSync, statSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {Readable} from 'node:stream'

import {expect} from 'chai'

import {type Destination, openDestination} from '../../src/backup/destination.js'
import {readAll} from '../../src/backup/layout.js'
import {parseS3Url} from '../../src/backup/s3.js'
import {type ShardctlError} from '../../src/errors.js'
import {type TestS3, startS3, useS3Credentials} from '../helpers/s3.js'

/** A stream of `chunks`, then a failure: what a snapshot that does not check out looks like to a destination. */
function failingAfter(chunks: Buffer[]): Readable {
  return new Readable({
    read() {
      const next = chunks.shift()
      if (next) this.push(next)
      else this.destroy(new Error('the snapshot did not check out'))
    },
  })
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex')

function behavesAsADestination(name: string, open: () => Promise<Destination>) {
  describe(name, () => {
    let destination: Destination
    before(async () => {
      destination = await open()
    })

    it('stores a stream larger than one multipart part and reads it back byte for byte', async () => {
      const data = randomBytes(12 * 1024 * 1024)
      await destination.write('run1/fleet/a.rdb', Readable.from([data.subarray(0, 7e6), data.subarray(7e6)]))
      expect(sha(await readAll(await destination.read('run1/fleet/a.rdb')))).to.equal(sha(data))
      const [listed] = await destination.list('run1/')
      expect(listed).to.include({key: 'run1/fleet/a.rdb', bytes: data.length})
    })

    it('leaves nothing under the key when the stream fails half-way', async () => {
      const error = await destination.write('run1/fleet/b.rdb', failingAfter([randomBytes(6 * 1024 * 1024), randomBytes(1024)])).then(
        () => undefined,
        (e: Error) => e,
      )
      expect(error?.message).to.equal('the snapshot did not check out')
      expect((await destination.list()).map((o) => o.key)).not.to.include('run1/fleet/b.rdb')
      expect((await destination.list()).filter((o) => o.key.includes('b.rdb'))).to.deep.equal([])
    })

    it('says plainly that an object does not exist', async () => {
      const error = (await destination.read('run1/fleet/none.json').catch((e: Error) => e)) as ShardctlError
      expect(error.code).to.equal('ENOBACKUPFILE')
      expect(error.message).to.match(/: run1\/fleet\/none\.json does not exist$/)
    })

    it('an exclusive write never replaces an object; a fence that rejects leaves nothing under the key', async () => {
      const key = 'run3/fleet/manifest.json'
      await destination.write(key, Readable.from([Buffer.from('first')]), {exclusive: true})
      const error = (await destination
        .write(key, Readable.from([Buffer.from('second')]), {exclusive: true})
        .catch((e: Error) => e)) as ShardctlError
      expect(error.code).to.equal('EOBJECTEXISTS')
      expect(error.message).to.match(/: run3\/fleet\/manifest\.json exists already$/)
      expect((await readAll(await destination.read(key))).toString()).to.equal('first')
      const fence = async () => {
        throw new Error('the lease is lost')
      }
      const fenced = await destination.write('run3/fleet/a.rdb', Readable.from([Buffer.from('data')]), {fence}).catch((e: Error) => e)
      expect((fenced as Error).message).to.equal('the lease is lost')
      expect((await destination.list('run3/')).map((o) => o.key)).to.deep.equal([key])
    })

    it('removes objects, and one already gone is not an error', async () => {
      await destination.write('run2/fleet/x.json', Readable.from([Buffer.from('{}')]))
      await destination.remove(['run2/fleet/x.json', 'run2/fleet/gone.json'])
      expect((await destination.list('run2/')).length).to.equal(0)
    })
  })
}

describe('backup destinations', () => {
  let dir: string
  let s3: TestS3
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'shardctl-dest-'))
    s3 = await startS3()
    useS3Credentials()
  })
  after(async () => {
    rmSync(dir, {recursive: true, force: true})
    await s3.stop()
  })

  behavesAsADestination('a local directory', () => openDestination(join(dir, 'backups'), {timeoutMs: 5000}))
  behavesAsADestination('S3 (a real S3 server on loopback)', () =>
    openDestination(s3.url('prod/eu'), {timeoutMs: 5000, s3: {endpoint: s3.endpoint}}),
  )

  it('a local directory: files readable by their owner only (0600 in 0700 directories)', async () => {
    const destination = await openDestination(join(dir, 'private'), {timeoutMs: 5000})
    await destination.write('r/fleet/manifest.json', Readable.from([Buffer.from('{}')]))
    expect(statSync(join(dir, 'private', 'r', 'fleet', 'manifest.json')).mode & 0o777).to.equal(0o600)
    expect(statSync(join(dir, 'private', 'r', 'fleet')).mode & 0o777).to.equal(0o700)
    expect(statSync(join(dir, 'private', 'r')).mode & 0o777).to.equal(0o700)
    // No temporary file is left beside it.
    expect(readdirSync(join(dir, 'private', 'r', 'fleet'))).to.deep.equal(['manifest.json'])
  })

  it('S3: an unreachable endpoint fails with one line naming it', async () => {
    const destination = await openDestination(s3.url(), {timeoutMs: 2000, s3: {endpoint: 'http://127.0.0.1:1'}})
    const error = (await destination.list().catch((e: Error) => e)) as ShardctlError
    expect(error.message).to.match(/^s3:\/\/backups\/: cannot reach the S3 endpoint http:\/\/127\.0\.0\.1:1: ECONNREFUSED/)
  })

  it('S3 URLs: a bucket and a prefix; bad bucket names refused', () => {
    expect(parseS3Url('s3://backups')).to.deep.equal({bucket: 'backups', prefix: ''})
    expect(parseS3Url('s3://backups/prod//eu/')).to.deep.equal({bucket: 'backups', prefix: 'prod/eu/'})
    expect(() => parseS3Url('s3://b/x')).to.throw(/invalid S3 bucket name/)
    expect(() => parseS3Url('s3://Backups/x')).to.throw(/invalid S3 bucket name/)
    expect(() => parseS3Url('s3://backups/../x')).to.throw(/invalid S3 prefix/)
  })
})

import {expect} from 'chai'

import {ShardctlError} from '../../src/errors.js'
import {
  canonicalDatabase,
  canonicalHost,
  describeTarget,
  formatAddress,
  parseAddress,
  parseInstance,
  parseRegistryAddress,
  redact,
} from '../../src/registry/address.js'

describe('registry/address', () => {
  it('parses host:port/db and defaults the db to 0', () => {
    expect(parseAddress('10.0.0.5:6379/3')).to.deep.equal({host: '10.0.0.5', port: 6379, db: 3})
    expect(parseAddress('redis-a.internal:6380')).to.deep.equal({host: 'redis-a.internal', port: 6380, db: 0})
  })

  it('parses bracketed IPv6 and formats it back with brackets', () => {
    const a = parseAddress('[::1]:6379/3')
    expect(a).to.deep.equal({host: '::1', port: 6379, db: 3})
    expect(formatAddress(a)).to.equal('[::1]:6379/3')
    expect(formatAddress(parseAddress('[fd00::5]:7000'))).to.equal('[fd00::5]:7000/0')
  })

  it('parses redis:// and rediss:// URLs with credentials kept apart', () => {
    expect(parseAddress('redis://u:p%40ss@h:1/2')).to.deep.equal({host: 'h', port: 1, db: 2, username: 'u', password: 'p@ss'})
    expect(parseAddress('rediss://h')).to.deep.equal({host: 'h', port: 6379, db: 0, tls: true})
    expect(parseAddress('redis://[::1]:7000/4')).to.deep.equal({host: '::1', port: 7000, db: 4})
    expect(formatAddress(parseAddress('redis://u:secret@h:1/2'))).to.equal('h:1/2')
  })

  const bad = [
    '',
    'redis://%@h:1',
    'redis://u:%zz@h:1',
    'host',
    'host:',
    ':6379',
    'host:0',
    'host:65536',
    'host:abc',
    'host:6379/x',
    'host:6379/-1',
    '[::1:6379',
    'a b:1',
    'http://h:1',
    'redis://h:1/db',
    '::1:6379',
    'host:6379/3/4',
  ]
  for (const input of bad) {
    it(`refuses ${JSON.stringify(input)} with a usage error`, () => {
      expect(() => parseAddress(input))
        .to.throw(ShardctlError)
        .with.property('exitCode', 2)
    })
  }

  it('never echoes a password in its error', () => {
    try {
      parseAddress('redis://user:hunter2@h:99999/0')
      expect.fail('should throw')
    } catch (error) {
      expect((error as Error).message).not.to.include('hunter2')
    }
    expect(redact('redis://user:hunter2@h:1')).to.equal('redis://user:***@h:1')
    expect(redact('rediss://hunter2@h:1')).to.equal('rediss://***@h:1')
  })

  it('refuses a database where an instance is expected', () => {
    expect(parseInstance('h:6379')).to.deep.equal({host: 'h', port: 6379, db: 0})
    expect(() => parseInstance('h:6379/3')).to.throw(/instance was expected/)
  })

  describe('the registry behind Sentinel', () => {
    it('parses redis+sentinel:// with its Sentinels (port 26379 unless given), the master name and the db', () => {
      expect(parseRegistryAddress('redis+sentinel://u:p%40ss@10.0.0.7:26380,sentinel-b,[::1]:5000/registry/2')).to.deep.equal({
        host: '',
        port: 0,
        db: 2,
        username: 'u',
        password: 'p@ss',
        sentinel: {
          sentinels: [
            {host: '10.0.0.7', port: 26380},
            {host: 'sentinel-b', port: 26379},
            {host: '::1', port: 5000},
          ],
          name: 'registry',
        },
      })
      const tls = parseRegistryAddress('rediss+sentinel://h1,h2,h3/reg')
      expect(tls).to.include({db: 0, tls: true})
      expect(describeTarget(tls)).to.equal('rediss+sentinel://h1:26379,h2:26379,h3:26379/reg/0')
      // Anything else is an ordinary address.
      expect(parseRegistryAddress('redis://h:1/2')).to.deep.equal({host: 'h', port: 1, db: 2})
    })

    for (const input of [
      'redis+sentinel://h1,h2/',
      'redis+sentinel:///name',
      'redis+sentinel://h1,,h2/name',
      'redis+sentinel://h1:0/name',
      'redis+sentinel://h1/na me',
      'redis+sentinel://h1,h1:26379/name',
      'redis+sentinel://h1/name/x',
      'redis+sentinel://h1/name/1/2',
    ]) {
      it(`refuses ${JSON.stringify(input)} with a usage error`, () => {
        expect(() => parseRegistryAddress(input))
          .to.throw(ShardctlError)
          .with.property('exitCode', 2)
      })
    }

    it('never echoes the password, and a shard address may not be a Sentinel URL', () => {
      expect(redact('redis+sentinel://u:hunter2@h1,h2/reg')).to.equal('redis+sentinel://u:***@h1,h2/reg')
      expect(redact('rediss+sentinel://hunter2@h1/reg')).to.equal('rediss+sentinel://***@h1/reg')
      try {
        parseRegistryAddress('redis+sentinel://u:hunter2@h1,h2/bad name')
        expect.fail('should throw')
      } catch (error) {
        expect((error as Error).message).not.to.include('hunter2')
      }
      expect(() => parseAddress('redis+sentinel://h1/reg')).to.throw(/unsupported scheme/)
    })
  })

  it('names one host one way, whatever its spelling', () => {
    const same = [
      ['LOCALHOST', '127.0.0.1'],
      ['localhost', '::1'],
      ['0:0:0:0:0:0:0:1', '::1'],
      ['127.1', '127.0.0.1'],
      ['FD00::1', 'fd00:0:0::1'],
      ['Db5.Internal.', 'db5.internal'],
    ]
    for (const [a, b] of same) expect(canonicalHost(a), `${a} = ${b}`).to.equal(canonicalHost(b))
    expect(canonicalHost('10.0.0.5')).not.to.equal(canonicalHost('10.0.0.6'))
    expect(canonicalDatabase(parseAddress('LOCALHOST:6379/3'))).to.equal(canonicalDatabase(parseAddress('[::1]:6379/3')))
    expect(canonicalDatabase(parseAddress('LOCALHOST:6379/3'))).not.to.equal(canonicalDatabase(parseAddress('[::1]:6379/4')))
  })
})

import {expect} from 'chai'

import {ShardctlError} from '../../src/errors.js'
import {canonicalDatabase, canonicalHost, formatAddress, parseAddress, parseInstance, redact} from '../../src/registry/address.js'

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

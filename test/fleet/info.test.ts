import {expect} from 'chai'

import {hasWorked, isWriteCommand, parseClientLine} from '../../src/fleet/clients.js'
import {parseInfo, parseKeyspace, parseReplication, sameHost} from '../../src/fleet/info.js'
import {isWriteFence} from '../../src/fleet/replication.js'

describe('fleet/info: what an instance says about itself', () => {
  it('parseInfo reads fields, skips sections and blank lines, keeps colons in values', () => {
    expect(
      parseInfo('# Server\r\nredis_version:7.0.15\r\n\r\nexecutable:/usr/bin/redis-server\r\nconfig_file:\r\nweird:a:b\r\n'),
    ).to.deep.equal({
      redis_version: '7.0.15',
      executable: '/usr/bin/redis-server',
      config_file: '',
      weird: 'a:b',
    })
  })

  it('parseKeyspace: keys per database', () => {
    const keys = parseKeyspace(parseInfo('# Keyspace\ndb0:keys=3,expires=1,avg_ttl=5\ndb12:keys=100,expires=0,avg_ttl=0\n'))
    expect([...keys]).to.deep.equal([
      [0, 3],
      [12, 100],
    ])
  })

  const cases: [string, string, Partial<ReturnType<typeof parseReplication>>][] = [
    [
      'a master with two replicas, one still waiting for its copy',
      'role:master\nconnected_slaves:2\nslave0:ip=127.0.0.1,port=7002,state=online,offset=120,lag=0\nslave1:ip=10.0.0.5,port=7003,state=wait_bgsave,offset=0,lag=3\nmaster_replid:abc\nmaster_repl_offset:130\n',
      {
        role: 'master',
        offset: 130,
        replid: 'abc',
        replicas: [
          {host: '127.0.0.1', port: 7002, state: 'online', offset: 120, lagSeconds: 0},
          {host: '10.0.0.5', port: 7003, state: 'wait_bgsave', offset: 0, lagSeconds: 3},
        ],
      },
    ],
    [
      'a replica streaming: its own processed offset, not the master one it inherited',
      'role:slave\nmaster_host:127.0.0.1\nmaster_port:7001\nmaster_link_status:up\nmaster_last_io_seconds_ago:1\nmaster_sync_in_progress:0\nslave_repl_offset:118\nmaster_repl_offset:118\n',
      {role: 'slave', masterHost: '127.0.0.1', masterPort: 7001, linkUp: true, syncInProgress: false, offset: 118, lastIoSeconds: 1},
    ],
    [
      'a replica still loading its first copy: link down, sync in progress',
      'role:slave\nmaster_host:h\nmaster_port:1\nmaster_link_status:down\nmaster_sync_in_progress:1\nslave_repl_offset:0\n',
      {role: 'slave', linkUp: false, syncInProgress: true, offset: 0},
    ],
    ['an empty reply: unknown role, offset 0', '', {role: 'unknown', offset: 0, replicas: []}],
  ]
  for (const [name, text, expected] of cases) {
    it(`parseReplication: ${name}`, () => {
      expect(parseReplication(parseInfo(text))).to.deep.include(expected)
    })
  }

  it('sameHost: loopback names are one host, others are exact', () => {
    expect(sameHost('127.0.0.1', 'localhost')).to.equal(true)
    expect(sameHost('::1', '127.0.0.1')).to.equal(true)
    expect(sameHost('10.0.0.5', '10.0.0.5')).to.equal(true)
    expect(sameHost('10.0.0.5', '10.0.0.6')).to.equal(false)
    expect(sameHost(undefined, '10.0.0.5')).to.equal(false)
  })

  it('parseClientLine: id, address, name and database of a CLIENT LIST line', () => {
    const line =
      'id=7 addr=127.0.0.1:5301 laddr=127.0.0.1:7001 fd=9 name=shardctl-ab12 age=3 idle=0 flags=N db=3 sub=0 psub=0 cmd=client|list user=default resp=2'
    expect(parseClientLine(line)).to.deep.equal({id: 7, addr: '127.0.0.1:5301', name: 'shardctl-ab12', db: 3, cmd: 'client|list'})
    expect(parseClientLine('id=8 addr=[::1]:5302 name= db=0')).to.deep.equal({id: 8, addr: '[::1]:5302', name: '', db: 0, cmd: 'NULL'})
    expect(parseClientLine('')).to.equal(undefined)
  })

  it("hasWorked: a connection that ran only its library's reconnection is not using its database", () => {
    const client = (cmd: string) => ({id: 1, addr: '', name: '', db: 3, cmd})
    for (const cmd of ['NULL', 'select', 'auth', 'hello', 'ping', 'info', 'client|setname', 'client|setinfo'])
      expect(hasWorked(client(cmd)), cmd).to.equal(false)
    for (const cmd of ['set', 'get', 'hset', 'eval', 'exec', 'client|kill']) expect(hasWorked(client(cmd)), cmd).to.equal(true)
  })

  it('isWriteCommand: a command that can change data, by its COMMAND INFO flags; EXEC and an unknown command count as writes', () => {
    const table: [string, string[] | undefined, boolean][] = [
      ['set', ['write', 'denyoom'], true],
      ['del', ['write'], true],
      ['expire', ['write', 'fast'], true],
      ['get', ['readonly', 'fast'], false],
      ['scan', ['readonly'], false],
      ['eval', ['noscript', 'skip_monitor', 'may_replicate', 'no_mandatory_keys', 'stale'], true],
      ['fcall', ['noscript', 'skip_monitor', 'may_replicate', 'no_mandatory_keys', 'stale'], true],
      ['eval_ro', ['noscript', 'skip_monitor', 'no_mandatory_keys', 'stale', 'readonly'], false],
      ['exec', ['noscript', 'loading', 'stale', 'skip_slowlog'], true],
      ['EXEC', [], true],
      ['module.cmd', undefined, true],
    ]
    for (const [name, flags, write] of table) expect(isWriteCommand(name, flags), name).to.equal(write)
  })

  it("isWriteFence: only shardctl's own fence value, not an operator's fencing", () => {
    expect(isWriteFence({'min-replicas-to-write': '1000000'})).to.equal(true)
    expect(isWriteFence({'min-replicas-to-write': '1'})).to.equal(false)
    expect(isWriteFence({'min-replicas-to-write': '0'})).to.equal(false)
  })
})

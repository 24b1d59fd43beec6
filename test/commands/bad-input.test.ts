import {expect} from 'chai'

import {spawnCli} from '../helpers/cli.js'
import {useFleet} from '../helpers/fleet.js'

/**
 * SPEC §4.6: bad input gets one clear line, a non-zero exit code, no stack trace and
 * no change to the registry — for every command, in the real binary, text and --json.
 */
describe('bad input, every command', () => {
  const fleet = useFleet({instances: 1})
  const inst = () => `127.0.0.1:${fleet.instances[0].master.port}`

  beforeEach(async () => {
    // A registry with content, so "no change" means something.
    await fleet.reg.hset('shards.s000', 'master', `${inst()}/0`)
    await fleet.reg.hset('shards.s001', 'master', `${inst()}/1`)
    await fleet.reg.zadd('shards.list', 1, 's000', 2, 's001')
    await fleet.reg.hset('shards.map', 'h1', 's000')
  })

  const cases: [string, string[], RegExp][] = [
    ['list: malformed registry address', ['shards:list', '-r', 'localhost:notaport'], /invalid port/],
    ['list: bad timeout', ['shards:list', '--timeout', '-5'], /invalid duration/],
    ['list: bad prefix', ['shards:list', '--prefix', 'a b'], /invalid prefix/],
    ['list: unknown flag', ['shards:list', '--nope'], /Nonexistent flag: --nope/],
    ['add: malformed id', ['shards:add', '_bad', '--master', '127.0.0.1:1/0'], /invalid shard id/],
    ['add: reserved id', ['shards:add', 'map', '--master', '127.0.0.1:1/0'], /reserved/],
    ['add: malformed master', ['shards:add', 's9', '--master', 'nohostport'], /invalid address/],
    ['add: bad db', ['shards:add', 's9', '--master', '127.0.0.1:1/x'], /invalid database number/],
    ['add: malformed replica', ['shards:add', 's9', '--master', '127.0.0.1:1/0', '--replica', '[::1'], /invalid address/],
    ['add: negative weight', ['shards:add', 's9', '--master', '127.0.0.1:1/0', '--weight', '-1'], /negative/],
    ['add: NaN weight', ['shards:add', 's9', '--master', '127.0.0.1:1/0', '--weight', 'NaN'], /invalid weight/],
    ['add: Infinity weight', ['shards:add', 's9', '--master', '127.0.0.1:1/0', '--weight', 'Infinity'], /invalid weight/],
    ['add: overflowing weight', ['shards:add', 's9', '--master', '127.0.0.1:1/0', '--weight', '1e400'], /not finite/],
    ['add: missing master', ['shards:add', 's9'], /Missing required flag master/],
    ['remove: unknown shard', ['shards:remove', 'zzz', '--yes'], /unknown shard "zzz"/],
    ['remove: malformed id', ['shards:remove', 'a.b', '--yes'], /invalid shard id/],
    ['init: instance with a db', ['shards:init', '--instance', '127.0.0.1:1/3', '--count', '2'], /instance was expected/],
    ['init: zero count', ['shards:init', '--instance', '127.0.0.1:1', '--count', '0'], /count 0 out of range/],
    ['init: count not a number', ['shards:init', '--instance', '127.0.0.1:1', '--count', 'ten'], /invalid count/],
    ['init: bad id prefix', ['shards:init', '--instance', '127.0.0.1:1', '--count', '1', '--id-prefix', '_x'], /invalid id prefix/],
    ['weight: unknown shard', ['shards:weight', 'zzz', '1'], /unknown shard "zzz"/],
    ['weight: negative', ['shards:weight', 's000', '--', '-2'], /negative/],
    ['weight: NaN', ['shards:weight', 's000', 'NaN'], /invalid weight/],
    ['weight: Infinity', ['shards:weight', 's000', 'Infinity'], /invalid weight/],
    ['weight: missing weight', ['shards:weight', 's000'], /give a shard id and a weight/],
    ['weight: --even with an id', ['shards:weight', 's000', '1', '--even'], /--even takes no shard id/],
    ['weight: bad --by', ['shards:weight', '--even', '--by', 'memory'], /Expected --by=memory to be one of: keys, hashes/],
    ['assign: no hashes', ['shards:assign'], /no hashes given/],
    ['assign: unknown --shard', ['shards:assign', 'x', '--shard', 'zzz'], /unknown shard "zzz"/],
    ['assign: malformed --shard', ['shards:assign', 'x', '--shard', 'a b'], /invalid shard id/],
    ['assign: --force without --shard', ['shards:assign', 'x', '--force'], /--shard/],
    ['assign: empty hash', ['shards:assign', ''], /empty shard hash/],
    ['assign: hash too long', ['shards:assign', 'x'.repeat(2000)], /too long/],
    ['assign: args and --stdin', ['shards:assign', 'x', '--stdin'], /not both/],
    ['lookup: no hashes', ['shards:lookup'], /no hashes given/],
    ['check: unknown --shard', ['shards:check', '--shard', 'zzz'], /unknown shard "zzz"/],
    ['check: malformed --shard', ['shards:check', '--shard', 'a b'], /invalid shard id/],
    ['check: bad --max-lag', ['shards:check', '--max-lag', '-1'], /--max-lag: invalid byte count "-1"/],
    ['check: bad --max-save-age', ['shards:check', '--max-save-age', '1h'], /--max-save-age: invalid number of seconds "1h"/],
    ['check: --fence-replicas 0', ['shards:check', '--fence', '--fence-replicas', '0'], /--fence-replicas: replica count 0 out of range/],
    ['watch: malformed --via', ['shards:watch', '--via', 'nohostport'], /--via: invalid address "nohostport"/],
    ['watch: bad --count', ['shards:watch', '--count', '0'], /--count: count 0 out of range/],
    ['sandbox:up: bad port', ['sandbox:up', '--port', '80'], /port 80 out of range/],
    ['sandbox:up: bad count', ['sandbox:up', '--instances', 'many'], /invalid instances/],
  ]

  for (const db of ['16', '99']) {
    it(`list: a registry database that does not exist (/${db}): one line naming it, exit 2, never db 0's shards`, async () => {
      for (const json of [[], ['--json']]) {
        const run = await spawnCli(['shards:list', ...json, '-r', `redis://127.0.0.1:${fleet.registry.port}/${db}`])
        expect(run.exitCode, run.stderr).to.equal(2)
        const message = json.length > 0 ? JSON.parse(run.stdout).error.message : run.stderr.trim()
        expect(message).to.match(
          new RegExp(`database ${db} does not exist on 127\\.0\\.0\\.1:${fleet.registry.port} \\(it has 16: 0 to 15\\)`),
        )
        expect(run.stdout).not.to.include('s000')
      }
    })
  }

  for (const [name, args, message] of cases) {
    it(`${name}: one line, exit 2, registry unchanged`, async () => {
      const before = await fleet.dump()
      const registryArgs = args.includes('-r') || args[0].startsWith('sandbox') ? [] : fleet.r()
      const argv = [args[0], ...registryArgs, ...args.slice(1)]
      // Both refused before anything is read or changed: run at once.
      const [text, json] = await Promise.all([spawnCli(argv), spawnCli([args[0], '--json', ...argv.slice(1)])])
      expect(text.exitCode, text.stderr).to.equal(2)
      expect(text.stdout).to.equal('')
      const lines = text.stderr.trim().split('\n')
      expect(lines, text.stderr).to.have.length(1)
      expect(lines[0]).to.match(/^Error: /)
      expect(lines[0]).to.match(message)

      expect(json.exitCode).to.equal(2)
      const error = JSON.parse(json.stdout).error
      expect(error.exitCode).to.equal(2)
      expect(error.message).to.match(message)
      expect(json.stderr).to.equal('')
      expect(await fleet.dump()).to.deep.equal(before)
    })
  }

  const corrupt: [string, () => Promise<unknown>, string[], RegExp][] = [
    [
      'the weights key is a string',
      () => fleet.reg.del('shards.list').then(() => fleet.reg.set('shards.list', 'x')),
      ['shards:weight', 's000', '3'],
      /shards\.list has the wrong type/,
    ],
    [
      'the map is a list',
      () => fleet.reg.del('shards.map').then(() => fleet.reg.rpush('shards.map', 'x')),
      ['shards:assign', 'h9'],
      /shards\.map has the wrong type/,
    ],
    [
      'the map is a list (lookup)',
      () => fleet.reg.del('shards.map').then(() => fleet.reg.rpush('shards.map', 'x')),
      ['shards:lookup', 'h1'],
      /shards\.map has the wrong type/,
    ],
    [
      'the map is a list (remove)',
      () => fleet.reg.del('shards.map').then(() => fleet.reg.rpush('shards.map', 'x')),
      ['shards:remove', 's000', '--yes'],
      /shards\.map has the wrong type/,
    ],
    [
      'a shard key is a string',
      () => fleet.reg.del('shards.s000').then(() => fleet.reg.set('shards.s000', 'x')),
      ['shards:assign', 'h9', '--shard', 's000'],
      /shards\.s000 has the wrong type/,
    ],
    [
      'a shard hash has no master',
      () => fleet.reg.hdel('shards.s000', 'master').then(() => fleet.reg.hset('shards.s000', 'slave0', 'h:1')),
      ['shards:assign', 'h9', '--shard', 's000'],
      /shard s000 .* is corrupt: no master field/,
    ],
    [
      'a shard hash holds garbage',
      () => fleet.reg.hset('shards.s000', 'master', '%%%'),
      ['shards:assign', 'h9', '--shard', 's000'],
      /corrupt: master is not an address/,
    ],
    [
      'the history is a string (a script must not half-apply)',
      () => fleet.reg.set('shards._history', 'x'),
      ['shards:weight', 's000', '3'],
      /shards\._history is a string, expected list/,
    ],
    [
      'the list is a hash (add)',
      () => fleet.reg.del('shards.list').then(() => fleet.reg.hset('shards.list', 'a', 'b')),
      ['shards:add', 's5', '--master', '127.0.0.1:1/5'],
      /shards\.list/,
    ],
  ]

  for (const [name, breakIt, args, message] of corrupt) {
    it(`corrupt registry, ${name}: one line naming it, exit 1, nothing changed`, async () => {
      await breakIt()
      const before = await fleet.dump()
      const run = await spawnCli([...args, ...fleet.r()])
      expect(run.exitCode, run.stderr).to.equal(1)
      const lines = run.stderr.trim().split('\n')
      expect(lines.at(-1)).to.match(message)
      expect(run.stderr).not.to.match(/\n\s+at /)
      expect(await fleet.dump()).to.deep.equal(before)
    })
  }
})

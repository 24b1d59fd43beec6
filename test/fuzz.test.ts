import {expect} from 'chai'
import fc from 'fast-check'

import {ShardctlError} from '../src/errors.js'
import {parseDuration, parseInstant} from '../src/flags.js'
import {formatAddress, parseAddress} from '../src/registry/address.js'
import {parseDocument} from '../src/registry/document.js'
import {isShardProblem, parseShardFields, parseWeight, validateShardId} from '../src/registry/schema.js'
import {cli} from './helpers/cli.js'
import {useFleet} from './helpers/fleet.js'

/** Either a value, or a usage error (exit 2) — never anything else. */
function totalOrUsage<T>(fn: () => T): T | undefined {
  try {
    return fn()
  } catch (error) {
    expect(error).to.be.instanceOf(ShardctlError)
    expect((error as ShardctlError).exitCode).to.equal(2)
    expect((error as Error).message).not.to.include('\n')
    return undefined
  }
}

const noisy = fc.oneof(
  fc.string(),
  fc.fullUnicodeString(),
  fc.stringOf(fc.constantFrom(...':/[]@.0123456789abcdefrs-_%'.split('')), {maxLength: 30}),
  fc
    .tuple(
      fc.constantFrom('redis://', 'rediss://', '', '['),
      fc.string(),
      fc.constantFrom(':', ']:'),
      fc.integer({min: -5, max: 70_000}),
      fc.constantFrom('', '/', '/0', '/x', '/99999999'),
    )
    .map((p) => p.join('')),
)

describe('property: parsers never crash', () => {
  it('addresses: a parsed address formats to a form that parses back to itself', () => {
    fc.assert(
      fc.property(noisy, (input) => {
        const address = totalOrUsage(() => parseAddress(input))
        if (address) {
          const again = parseAddress(formatAddress(address))
          expect({host: again.host, port: again.port, db: again.db}).to.deep.equal({host: address.host, port: address.port, db: address.db})
        }
      }),
      {numRuns: 2000},
    )
  })

  it('weights are finite and >= 0, or refused', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.double().map(String), fc.integer().map(String)), (input) => {
        const weight = totalOrUsage(() => parseWeight(input))
        if (weight !== undefined) expect(Number.isFinite(weight) && weight >= 0).to.equal(true)
      }),
      {numRuns: 2000},
    )
  })

  it('ids, durations and shard hashes of any content', () => {
    fc.assert(
      fc.property(fc.fullUnicodeString(), (input) => {
        totalOrUsage(() => validateShardId(input))
        const ms = totalOrUsage(() => parseDuration(input))
        const at = totalOrUsage(() => parseInstant(input, '--at'))
        if (at !== undefined) expect(Number.isNaN(at.getTime())).to.equal(false)
        if (ms !== undefined) expect(ms).to.be.greaterThan(0)
        const fields = Object.fromEntries([
          ['master', input],
          ['slave0', input],
        ])
        const entry = parseShardFields('s1', 1, fields)
        if (!isShardProblem(entry)) expect(entry.master.port).to.be.within(1, 65_535)
      }),
      {numRuns: 1000},
    )
  })

  it('times: the same moment on every machine, UTC without a zone, nothing rolled over', () => {
    const iso = (input: string) => parseInstant(input, '--at').toISOString()
    expect(iso('2026-12-02T13:00')).to.equal('2026-12-02T13:00:00.000Z')
    expect(iso('2026-12-02 13:00:05.25')).to.equal('2026-12-02T13:00:05.250Z')
    expect(iso('2026-12-02')).to.equal('2026-12-02T00:00:00.000Z')
    expect(iso('2026-12-02T14:00+01:00')).to.equal('2026-12-02T13:00:00.000Z')
    expect(iso('2026-12-02T08:00-0500')).to.equal('2026-12-02T13:00:00.000Z')
    for (const bad of ['5', 'Dec 25 2026', '2026-13-01', '2026-02-30', '2026-12-02T24:00', '2026-12-02T13:61', '2026-12-02T13:00 PST', ''])
      expect(
        totalOrUsage(() => parseInstant(bad, '--at')),
        bad,
      ).to.equal(undefined)
  })

  it('registry documents: any JSON is a document or a usage error', () => {
    const shard = fc.record(
      {id: fc.string(), weight: fc.oneof(fc.double(), fc.string()), master: noisy, replicas: fc.array(noisy, {maxLength: 2})},
      {requiredKeys: []},
    )
    const doc = fc.record(
      {
        format: fc.constantFrom('shardctl-registry', 'x'),
        version: fc.constantFrom(1, 2, '1'),
        shards: fc.oneof(fc.array(shard, {maxLength: 3}), fc.anything()),
        map: fc.anything(),
      },
      {requiredKeys: []},
    )
    fc.assert(
      fc.property(
        fc.oneof(
          doc.map((d) => JSON.stringify(d)),
          fc.json(),
          fc.string(),
        ),
        (text) => {
          totalOrUsage(() => parseDocument(text))
        },
      ),
      {numRuns: 1000},
    )
  })
})

describe('property: a corrupted registry gets one line and a defined exit code, and is never changed', () => {
  const fleet = useFleet()

  type Corruption = {key: string; kind: 'string' | 'list' | 'set' | 'hash' | 'zset'; value: string}
  const corruption = fc.record({
    key: fc.constantFrom('shards.map', 'shards.list', 'shards.s1', 'shards.s2', 'shards._journal', 'shards._history'),
    kind: fc.constantFrom('string' as const, 'list' as const, 'set' as const, 'hash' as const, 'zset' as const),
    value: fc.oneof(fc.string({maxLength: 20}), fc.constantFrom('h:1/99999999', '', 'nan', 'inf', '-1', '127.0.0.1:0/0', '[::1', 'master')),
  })
  const commands = [
    ['shards:list', '--no-probe'],
    ['shards:list', '--counts', '--no-probe'],
    ['shards:weight', 's1', '2'],
    ['shards:assign', 'h1'],
    ['shards:assign', 'h1', '--shard', 's2'],
    ['shards:lookup', 'h1'],
    ['shards:remove', 's2', '--yes'],
    ['shards:add', 's3', '--master', '127.0.0.1:1/3'],
    ['shards:history'],
    ['shards:export'],
    ['shards:promote', 's1', '--yes', '--timeout', '200ms'],
  ]

  async function corrupt(c: Corruption): Promise<void> {
    await fleet.reg.del(c.key)
    if (c.kind === 'string') await fleet.reg.set(c.key, c.value)
    if (c.kind === 'list') await fleet.reg.rpush(c.key, c.value)
    if (c.kind === 'set') await fleet.reg.sadd(c.key, c.value)
    if (c.kind === 'hash') await fleet.reg.hset(c.key, c.value || 'f', c.value)
    if (c.kind === 'zset') await fleet.reg.zadd(c.key, c.value === 'inf' ? '+inf' : 1, c.value || 'm')
  }

  it('for any corruption and any command', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(corruption, {minLength: 1, maxLength: 3}), fc.constantFrom(...commands), async (corruptions, command) => {
        await fleet.reg.flushall()
        await fleet.reg.hset('shards.s1', 'master', '127.0.0.1:1/1')
        await fleet.reg.hset('shards.s2', 'master', '127.0.0.1:1/2', 'slave0', '127.0.0.1:2/2')
        await fleet.reg.zadd('shards.list', 1, 's1', 2, 's2')
        for (const c of corruptions) await corrupt(c)
        const before = await fleet.dump()
        const run = await cli([...command, '-r', fleet.registry.url])
        expect([0, 1, 2, 3], `${command.join(' ')}: ${run.stderr}`).to.include(run.exitCode)
        expect(run.stderr, command.join(' ')).not.to.match(/\n\s+at /)
        if (run.exitCode !== 0 && run.exitCode !== 3) expect(run.stderr.trim().split('\n').at(-1)).to.match(/^Error: /)
        if (run.exitCode !== 0) {
          const after = await fleet.dump()
          expect(after, command.join(' ')).to.deep.equal(before)
        }
      }),
      {numRuns: 300},
    )
  })
})

import {expect} from 'chai'

import {ShardctlError} from '../../src/errors.js'
import {WeightedPicker} from '../../src/registry/assign.js'
import {proposeEvenWeights} from '../../src/registry/manage.js'
import {isShardProblem, parseShardFields, parseWeight, registryKeys, shardFields, validateShardId} from '../../src/registry/schema.js'

describe('registry/schema', () => {
  it('puts the keys under the prefix, its own keys where no id can go', () => {
    const keys = registryKeys('app')
    expect([keys.map, keys.list, keys.shard('s1')]).to.deep.equal(['app.map', 'app.list', 'app.s1'])
    for (const own of [keys.events, keys.lock, keys.journal, keys.history]) {
      expect(() => validateShardId(own.slice('app.'.length))).to.throw(ShardctlError)
    }
  })

  it('accepts valid ids and refuses the rest', () => {
    for (const id of ['s1', '0', 'A-b_c', 'x'.repeat(64)]) expect(validateShardId(id)).to.equal(id)
    for (const id of ['', '_x', '-x', 'map', 'list', 'a.b', 'a b', 'x'.repeat(65), 'é', 's1\n']) {
      expect(() => validateShardId(id), id)
        .to.throw(ShardctlError)
        .with.property('exitCode', 2)
    }
  })

  it('accepts finite weights >= 0 and refuses the rest', () => {
    expect(parseWeight('0')).to.equal(0)
    expect(parseWeight('2.5')).to.equal(2.5)
    expect(parseWeight('1e3')).to.equal(1000)
    for (const w of ['-1', '-0.5', 'NaN', 'Infinity', '-Infinity', '1e999', '', 'abc', '0x10', '1,5', ' ']) {
      expect(() => parseWeight(w), w)
        .to.throw(ShardctlError)
        .with.property('exitCode', 2)
    }
  })

  it('reads a shard hash and writes it back the same', () => {
    const fields = {master: 'h:1/2', slave0: 'r1:1/2', slave1: 'r2:1/2', persist0: 'p:1/2', owner: 'team-a'}
    const shard = parseShardFields('s1', 1, fields)
    expect(isShardProblem(shard)).to.equal(false)
    if (!isShardProblem(shard)) expect(shardFields(shard)).to.deep.equal(fields)
  })

  it('reports corrupt shard hashes instead of throwing', () => {
    const cases: [Record<string, string>, RegExp][] = [
      [{}, /no hash/],
      [{slave0: 'h:1'}, /no master/],
      [{master: 'garbage'}, /master is not an address/],
      [{master: 'h:1', slave1: 'h:2'}, /numbered from 0/],
      [{master: 'h:1', slave0: 'nope'}, /slave0 is not an address/],
      [{master: 'redis://u:p@h:1'}, /credentials/],
    ]
    for (const [fields, problem] of cases) {
      const entry = parseShardFields('s1', 1, fields)
      expect(isShardProblem(entry), JSON.stringify(fields)).to.equal(true)
      if (isShardProblem(entry)) expect(entry.problems.join('; ')).to.match(problem)
    }
    const inf = parseShardFields('s1', Number.POSITIVE_INFINITY, {master: 'h:1'})
    expect(isShardProblem(inf)).to.equal(true)
  })
})

describe('registry/assign WeightedPicker', () => {
  it('maps the unit interval onto weights in proportion and never picks weight 0', () => {
    const picker = new WeightedPicker(
      new Map([
        ['a', 1],
        ['zero', 0],
        ['b', 3],
      ]),
    )
    expect(picker.pick(0)).to.equal('a')
    expect(picker.pick(0.2499)).to.equal('a')
    expect(picker.pick(0.25)).to.equal('b')
    expect(picker.pick(0.9999)).to.equal('b')
    for (let r = 0; r < 1; r += 0.001) expect(picker.pick(r)).not.to.equal('zero')
  })

  it('refuses to draw when every weight is 0', () => {
    expect(() => new WeightedPicker(new Map([['a', 0]])).pick(0.5)).to.throw(/every weight is 0/)
  })
})

describe('registry/manage proposeEvenWeights', () => {
  it('gives the emptier shards more weight and keeps drained shards drained', () => {
    const current = new Map([
      ['full', 1],
      ['half', 1],
      ['empty', 1],
      ['drained', 0],
    ])
    const fill = new Map([
      ['full', 100],
      ['half', 50],
      ['empty', 0],
      ['drained', 0],
    ])
    const proposed = Object.fromEntries(proposeEvenWeights(current, fill).map((c) => [c.id, c.proposed]))
    expect(proposed.drained).to.equal(0)
    expect(proposed.full, 'past its target: weighted down, never drained').to.equal(1)
    expect(proposed.empty).to.be.greaterThan(proposed.half)
    expect(proposed.half).to.be.greaterThan(proposed.full)
  })

  it('proposes equal weights for an empty fleet', () => {
    const changes = proposeEvenWeights(
      new Map([
        ['a', 5],
        ['b', 1],
      ]),
      new Map(),
    )
    expect(changes.map((c) => c.proposed)).to.deep.equal([100, 100])
  })
})

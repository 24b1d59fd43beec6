import {expect} from 'chai'
import fc from 'fast-check'

import {WeightedPicker, pipelined, shares} from '../../src/registry/assign.js'

describe('registry/assign pipelined', () => {
  const collect = async <R>(source: AsyncGenerator<R>): Promise<{results: R[]; error?: Error}> => {
    const results: R[] = []
    try {
      for await (const r of source) results.push(r)
    } catch (error) {
      return {results, error: error as Error}
    }
    return {results}
  }

  it('a failed send stops the input, yet every other batch that went through is still reported, then the error', async () => {
    const sent: number[] = []
    let release!: () => void
    const held = new Promise<void>((resolve) => {
      release = resolve
    })
    const batches = Array.from({length: 20}, (_, i) => [i])
    const {results, error} = await collect(
      pipelined(batches, 4, async ([n]) => {
        sent.push(n)
        if (n === 1) {
          // Fails only once the batches after it are in flight: they went through, and must be reported.
          await held
          throw new Error('batch 1 failed')
        }
        if (n === 3) release()
        return n
      }),
    )
    expect(error?.message).to.equal('batch 1 failed')
    expect(results).to.deep.equal([0, 2, 3, 4])
    expect(sent).to.deep.equal([0, 1, 2, 3, 4])
  })

  it('a failing input stops reading; the batches in flight are reported before its error', async () => {
    async function* input(): AsyncGenerator<number[]> {
      yield [1]
      yield [2]
      throw new Error('bad line')
    }
    const {results, error} = await collect(pipelined(input(), 8, async ([n]) => n * 10))
    expect(results).to.deep.equal([10, 20])
    expect(error?.message).to.equal('bad line')
  })
})

describe('property: the weighted draw follows the weights, for any finite weights', () => {
  const grid = (n: number) => Array.from({length: n}, (_, j) => (j + 0.5) / n)
  const picks = (weights: number[], points: number[]) => {
    const picker = new WeightedPicker(new Map(weights.map((w, i) => [`s${i}`, w])))
    return points.map((r) => picker.pick(r))
  }
  const someWeight = fc.array(fc.integer({min: 0, max: 1000}), {minLength: 1, maxLength: 12}).filter((w) => w.some((x) => x > 0))

  it('each shard gets the part of the unit interval its weight says (to one point in ten thousand), weight 0 none', () => {
    fc.assert(
      fc.property(someWeight, (weights) => {
        const total = weights.reduce((a, b) => a + b, 0)
        const points = grid(10_000)
        const counts = new Map<string, number>()
        for (const id of picks(weights, points)) counts.set(id, (counts.get(id) ?? 0) + 1)
        weights.forEach((w, i) => {
          if (w === 0) expect(counts.has(`s${i}`)).to.equal(false)
          else expect(Math.abs((counts.get(`s${i}`) ?? 0) - (points.length * w) / total)).to.be.at.most(2)
        })
      }),
      {numRuns: 300},
    )
  })

  it('scaling every weight by the same power of two, up to 1e308 and beyond their sum, changes no draw', () => {
    fc.assert(
      fc.property(someWeight, fc.integer({min: -1000, max: 1013}), (weights, k) => {
        const scaled = weights.map((w) => w * 2 ** k)
        expect(picks(scaled, grid(997))).to.deep.equal(picks(weights, grid(997)))
      }),
      {numRuns: 300},
    )
  })

  it('three shards of 1e308: a third each, in draws and in shares', () => {
    const weights = new Map([
      ['a', 1e308],
      ['b', 1e308],
      ['c', 1e308],
    ])
    expect([...shares(weights).values()].map((s) => s.toFixed(6))).to.deep.equal(['0.333333', '0.333333', '0.333333'])
    const picker = new WeightedPicker(weights)
    expect([0.1, 0.5, 0.9].map((r) => picker.pick(r))).to.deep.equal(['a', 'b', 'c'])
  })
})

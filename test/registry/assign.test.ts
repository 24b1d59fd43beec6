import {expect} from 'chai'

import {pipelined} from '../../src/registry/assign.js'

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

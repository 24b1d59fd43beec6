import {expect} from 'chai'
import fc from 'fast-check'

import {type BalanceBy, type PlanInstance, type PlanShard, type RebalanceInput, planRebalance, spread} from '../../src/rebalance/plan.js'

const MB = 1_000_000

/** A fleet as measured: instances with shards on some of their databases, the rest free or taken by other data. */
const fleetArbitrary = (by: BalanceBy) =>
  fc
    .array(
      fc.record({
        maxMemory: by === 'memory' ? fc.integer({min: 100, max: 4000}).map((n) => n * MB) : fc.constantFrom(0, 1000 * MB, 4000 * MB),
        overhead: fc.integer({min: 1, max: 50}).map((n) => n * MB),
        otherKeys: fc.integer({min: 0, max: 1000}),
        shards: fc.array(fc.record({memory: fc.integer({min: 0, max: 600}).map((n) => n * MB), keys: fc.integer({min: 0, max: 100_000})}), {
          maxLength: 8,
        }),
        // Of the 16 databases not used by a shard: which are free (the others hold other data).
        free: fc.array(fc.boolean(), {minLength: 16, maxLength: 16}),
      }),
      {minLength: 1, maxLength: 7},
    )
    .map((rows) => {
      const instances: PlanInstance[] = []
      const shards: PlanShard[] = []
      rows.forEach((row, i) => {
        const instance = `10.0.0.${i + 1}:6379`
        row.shards.forEach((s, j) => shards.push({id: `s${i}-${j}`, instance, db: j, memory: s.memory, keys: s.keys}))
        const used = row.overhead + row.shards.reduce((n, s) => n + s.memory, 0)
        instances.push({
          instance,
          usedMemory: used,
          maxMemory: row.maxMemory,
          keys: row.otherKeys + row.shards.reduce((n, s) => n + s.keys, 0),
          freeDbs: row.free.map((f, k) => (f ? k + 8 : -1)).filter((k) => k >= 0),
        })
      })
      return {instances, shards}
    })

const settingsArbitrary = fc.record({
  maxMoves: fc.oneof(fc.integer({min: 0, max: 6}), fc.constant(Number.POSITIVE_INFINITY)),
  tolerance: fc.constantFrom(0, 0.01, 0.05, 0.2),
  maxFill: fc.constantFrom(0.5, 0.8, 0.95, 1),
})

const inputArbitrary = fc
  .constantFrom<BalanceBy>('memory', 'keys')
  .chain((by) => fc.tuple(fc.constant(by), fleetArbitrary(by), settingsArbitrary))
  .map(([by, fleet, settings]): RebalanceInput => ({by, ...fleet, ...settings}))

/** Replay a plan's moves on the input, checking each against the fleet as it is at that moment. */
function replay(
  input: RebalanceInput,
  check: (
    state: Map<string, {used: number; keys: number; free: Set<number>}>,
    move: ReturnType<typeof planRebalance>['moves'][number],
  ) => void,
) {
  const state = new Map(input.instances.map((i) => [i.instance, {used: i.usedMemory, keys: i.keys, free: new Set(i.freeDbs)}]))
  const plan = planRebalance(input)
  for (const move of plan.moves) {
    check(state, move)
    const [from, to] = [state.get(move.from.instance)!, state.get(move.to.instance)!]
    from.used -= move.memory
    from.keys -= move.keys
    to.used += move.memory
    to.keys += move.keys
    to.free.delete(move.to.db)
  }
  return {plan, state}
}

const RUNS = {numRuns: 400}

describe('planRebalance', () => {
  it('never moves a shard onto an instance without room: a free database, and memory within maxFill of its maxmemory', () => {
    fc.assert(
      fc.property(inputArbitrary, (input) => {
        replay(input, (state, move) => {
          const target = state.get(move.to.instance)!
          const max = input.instances.find((i) => i.instance === move.to.instance)!.maxMemory
          expect(target.free.has(move.to.db), `db ${move.to.db} free on ${move.to.instance}`).to.equal(true)
          if (max > 0) expect(target.used + move.memory).to.be.at.most(input.maxFill * max)
          expect(move.to.instance).to.not.equal(move.from.instance)
        })
      }),
      RUNS,
    )
  })

  it('never plans more than --max-moves moves, and moves each shard at most once, from where it is', () => {
    fc.assert(
      fc.property(inputArbitrary, (input) => {
        const plan = planRebalance(input)
        expect(plan.moves.length).to.be.at.most(input.maxMoves)
        expect(new Set(plan.moves.map((m) => m.shard)).size).to.equal(plan.moves.length)
        for (const move of plan.moves) {
          const shard = input.shards.find((s) => s.id === move.shard)!
          expect(move.from).to.deep.equal({instance: shard.instance, db: shard.db})
        }
        if (plan.stopped === 'max-moves') expect(plan.moves.length).to.equal(input.maxMoves)
      }),
      RUNS,
    )
  })

  it('never makes the spread worse, move after move', () => {
    fc.assert(
      fc.property(inputArbitrary, (input) => {
        const plan = planRebalance(input)
        let last = plan.spreadBefore
        for (const move of plan.moves) {
          expect(move.spreadAfter).to.be.at.most(last + 1e-9)
          last = move.spreadAfter
        }
        expect(plan.spreadAfter).to.be.at.most(plan.spreadBefore + 1e-9)
        if (plan.stopped === 'balanced') expect(plan.spreadAfter).to.be.at.most(input.tolerance + 1e-9)
      }),
      RUNS,
    )
  })

  it('gives no move for a fleet already within the tolerance', () => {
    fc.assert(
      fc.property(inputArbitrary, (input) => {
        const first = planRebalance(input)
        const balanced = planRebalance({...input, tolerance: first.spreadBefore})
        expect(balanced.moves).to.deep.equal([])
        expect(balanced.stopped).to.equal('balanced')
      }),
      RUNS,
    )
  })

  it('says where every instance ends, as the moves add up, the same plan every time', () => {
    fc.assert(
      fc.property(inputArbitrary, (input) => {
        const {plan, state} = replay(input, () => undefined)
        for (const row of plan.instances) {
          expect(row.after.usedMemory).to.equal(state.get(row.instance)!.used)
          expect(row.after.keys).to.equal(state.get(row.instance)!.keys)
        }
        expect(plan.spreadAfter).to.be.closeTo(spread(plan.instances.map((i) => i.after.fill)), 1e-12)
        expect(planRebalance(input)).to.deep.equal(plan)
      }),
      RUNS,
    )
  })

  it('moves the heavy shard off the full instance onto the empty one, keeping its database number when free', () => {
    const plan = planRebalance({
      by: 'memory',
      maxMoves: Number.POSITIVE_INFINITY,
      tolerance: 0.05,
      maxFill: 0.8,
      instances: [
        {instance: 'a:1', usedMemory: 900 * MB, maxMemory: 1000 * MB, keys: 0, freeDbs: [5, 6]},
        {instance: 'b:1', usedMemory: 100 * MB, maxMemory: 1000 * MB, keys: 0, freeDbs: [1, 2, 3]},
      ],
      shards: [
        {id: 'big', instance: 'a:1', db: 1, memory: 400 * MB, keys: 10},
        {id: 'small', instance: 'a:1', db: 2, memory: 50 * MB, keys: 10},
        {id: 'tiny', instance: 'a:1', db: 3, memory: 10 * MB, keys: 10},
      ],
    })
    expect(plan.moves.map((m) => [m.shard, m.to])).to.deep.equal([['big', {instance: 'b:1', db: 1}]])
    expect(plan.stopped).to.equal('balanced')
    expect(plan.spreadBefore).to.be.closeTo(0.8, 1e-9)
    expect(plan.spreadAfter).to.be.closeTo(0, 1e-9)
  })

  it('stops when no move would help: the only shard is too big for the room on the others', () => {
    const plan = planRebalance({
      by: 'memory',
      maxMoves: Number.POSITIVE_INFINITY,
      tolerance: 0.05,
      maxFill: 0.8,
      instances: [
        {instance: 'a:1', usedMemory: 900 * MB, maxMemory: 1000 * MB, keys: 0, freeDbs: [5]},
        {instance: 'b:1', usedMemory: 500 * MB, maxMemory: 1000 * MB, keys: 0, freeDbs: [1]},
      ],
      shards: [{id: 'huge', instance: 'a:1', db: 1, memory: 850 * MB, keys: 10}],
    })
    expect(plan.moves).to.deep.equal([])
    expect(plan.stopped).to.equal('no-move-helps')
  })

  it('evens key counts with --by keys, taking an instance without maxmemory as having room', () => {
    const input: RebalanceInput = {
      by: 'keys',
      maxMoves: Number.POSITIVE_INFINITY,
      tolerance: 0.05,
      maxFill: 0.8,
      instances: [
        {instance: 'a:1', usedMemory: 0, maxMemory: 0, keys: 3000, freeDbs: []},
        {instance: 'b:1', usedMemory: 0, maxMemory: 0, keys: 0, freeDbs: [0]},
        {instance: 'c:1', usedMemory: 0, maxMemory: 0, keys: 0, freeDbs: [0]},
      ],
      shards: [1, 2, 3].map((db) => ({id: `s${db}`, instance: 'a:1', db, memory: 0, keys: 1000})),
    }
    const all = planRebalance(input)
    expect(all.moves.map((m) => m.to)).to.have.deep.members([
      {instance: 'b:1', db: 0},
      {instance: 'c:1', db: 0},
    ])
    expect(all.spreadAfter).to.equal(0)
    expect(all.stopped).to.equal('balanced')

    const one = planRebalance({...input, maxMoves: 1})
    expect(one.moves).to.deep.equal(all.moves.slice(0, 1))
    expect(one.stopped).to.equal('max-moves')
    // A limit the plan never reaches is not what stopped it.
    expect(planRebalance({...input, maxMoves: 2}).stopped).to.equal('balanced')
  })

  it('says it stopped at --max-moves only when one more move would have helped', () => {
    // One move (s1 to b) is all that helps; a second would only swap the fullest.
    const input: Parameters<typeof planRebalance>[0] = {
      by: 'keys',
      maxMoves: 1,
      tolerance: 0,
      maxFill: 1,
      instances: [
        {instance: 'a:1', usedMemory: 0, maxMemory: 0, keys: 3000, freeDbs: [0]},
        {instance: 'b:1', usedMemory: 0, maxMemory: 0, keys: 0, freeDbs: [0, 1, 2]},
      ],
      shards: [1, 2, 3].map((db) => ({id: `s${db}`, instance: 'a:1', db, memory: 0, keys: 1000})),
    }
    const unbounded = planRebalance({...input, maxMoves: Number.POSITIVE_INFINITY})
    expect(unbounded.moves).to.have.length(1)
    expect(unbounded.stopped).to.equal('no-move-helps')
    const bounded = planRebalance(input)
    expect(bounded.moves).to.deep.equal(unbounded.moves)
    expect(bounded.stopped).to.equal('no-move-helps')
  })

  it('refuses to balance by memory an instance without maxmemory', () => {
    expect(() =>
      planRebalance({
        by: 'memory',
        maxMoves: 1,
        tolerance: 0,
        maxFill: 1,
        instances: [{instance: 'a:1', usedMemory: 1, maxMemory: 0, keys: 0, freeDbs: []}],
        shards: [],
      }),
    ).to.throw(/needs every instance to have a maxmemory/)
  })
})

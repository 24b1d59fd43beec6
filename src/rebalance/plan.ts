/**
 * The rebalance plan: which shards to move where so that the instances are evenly
 * filled, with as few moves as it takes. Pure: the fleet comes measured (measure.ts).
 *
 * Fill: --by memory, an instance's used memory over its maxmemory; --by keys, its
 * keys over the mean keys of the instances balanced (so 1.0 is "average").
 * Spread: the fullest instance's fill minus the emptiest's. The objective is a spread
 * within the tolerance; among plans that reach it, fewer moves are better.
 *
 * Greedy, one move at a time: take a shard off an instance at the highest fill and put
 * it on another instance, choosing the move that leaves the smallest spread (then the
 * smallest sum of squared fills: the evenest fleet; then the heavier shard, so fewer
 * moves do the work). A move is taken only if the spread does not grow and the sum of
 * squares falls, so:
 *   - the spread never gets worse, move after move;
 *   - the plan ends (the sum of squares falls at every move, and a shard moves once);
 *   - a fleet already within the tolerance gets no move;
 *   - a shard goes only onto an instance with room: a free database, and — where it
 *     has maxmemory — used memory plus the shard's within maxFill of it;
 *   - never more than maxMoves moves.
 * A shard moves at most once (a second move would have been better as one).
 */

export type BalanceBy = 'memory' | 'keys'

export interface PlanInstance {
  /** host:port */
  instance: string
  /** Bytes, INFO used_memory. */
  usedMemory: number
  /** Bytes; 0: no maxmemory (only --by keys balances such an instance, and takes its room as unbounded). */
  maxMemory: number
  /** Keys over all its databases. */
  keys: number
  /** Database numbers no shard uses and that hold no key, ascending. */
  freeDbs: number[]
}

export interface PlanShard {
  id: string
  /** host:port of its master. */
  instance: string
  db: number
  /** Estimated bytes (measure.ts says how). */
  memory: number
  keys: number
}

export interface RebalanceInput {
  by: BalanceBy
  /** The instances balanced: every one is a possible source and target. */
  instances: PlanInstance[]
  /** The shards that may move (on those instances). */
  shards: PlanShard[]
  /** Stop after this many moves (Infinity: as many as help). */
  maxMoves: number
  /** Spread (in fill) at or below which the fleet counts as balanced, e.g. 0.05. */
  tolerance: number
  /** A target must stay at or below this fraction of its maxmemory after the move, e.g. 0.8. */
  maxFill: number
}

export interface PlannedMove {
  shard: string
  from: {instance: string; db: number}
  to: {instance: string; db: number}
  memory: number
  keys: number
  /** The fleet's spread once this move (and the ones before it) is done. */
  spreadAfter: number
}

export interface InstanceBalance {
  instance: string
  maxMemory: number
  before: {fill: number; usedMemory: number; keys: number; shards: number}
  after: {fill: number; usedMemory: number; keys: number; shards: number}
}

export type StopReason = 'balanced' | 'max-moves' | 'no-move-helps'

export interface RebalancePlan {
  by: BalanceBy
  tolerance: number
  maxFill: number
  moves: PlannedMove[]
  instances: InstanceBalance[]
  spreadBefore: number
  spreadAfter: number
  /** balanced: within the tolerance; max-moves: --max-moves reached; no-move-helps: no move would even it out more. */
  stopped: StopReason
}

/** Fills this close count as equal (floating point). */
const EPSILON = 1e-9

interface State {
  instance: PlanInstance
  usedMemory: number
  keys: number
  free: Set<number>
  shards: number
}

export function planRebalance(input: RebalanceInput): RebalancePlan {
  if (input.by === 'memory' && input.instances.some((i) => !(i.maxMemory > 0)))
    throw new RangeError('balancing by memory needs every instance to have a maxmemory')
  const states = new Map<string, State>(
    input.instances.map((i) => [
      i.instance,
      {
        instance: i,
        usedMemory: i.usedMemory,
        keys: i.keys,
        free: new Set(i.freeDbs),
        shards: input.shards.filter((s) => s.instance === i.instance).length,
      },
    ]),
  )
  const meanKeys = input.instances.length === 0 ? 0 : input.instances.reduce((n, i) => n + i.keys, 0) / input.instances.length
  const fillOf = (s: {instance: PlanInstance; usedMemory: number; keys: number}) =>
    input.by === 'memory' ? s.usedMemory / s.instance.maxMemory : meanKeys === 0 ? 0 : s.keys / meanKeys
  const weightOf = (shard: PlanShard, on: State) =>
    input.by === 'memory' ? shard.memory / on.instance.maxMemory : meanKeys === 0 ? 0 : shard.keys / meanKeys
  const where = new Map(input.shards.map((s) => [s.id, s.instance]))
  const moved = new Set<string>()
  const moves: PlannedMove[] = []
  const before = [...states.values()].map((s) => ({fill: fillOf(s), usedMemory: s.usedMemory, keys: s.keys, shards: s.shards}))
  const spreadBefore = spread([...states.values()].map(fillOf))
  let stopped: StopReason = 'balanced'

  for (;;) {
    const fills = new Map([...states].map(([key, s]) => [key, fillOf(s)]))
    const current = spread([...fills.values()])
    if (current <= input.tolerance + EPSILON) {
      stopped = 'balanced'
      break
    }
    const sumSq = [...fills.values()].reduce((n, f) => n + f * f, 0)
    const highest = Math.max(...fills.values())
    // The fullest and emptiest three: a move changes two instances, so the third is the extreme of the rest.
    const ranked = [...fills].sort((x, y) => y[1] - x[1])
    const [top, bottom] = [ranked.slice(0, 3), ranked.slice(-3).reverse()]
    let best: {shard: PlanShard; from: State; to: State; db: number; spread: number; sumSq: number; weight: number} | undefined
    for (const [sourceKey, sourceFill] of fills) {
      if (sourceFill < highest - EPSILON) continue
      const source = states.get(sourceKey)!
      for (const shard of input.shards) {
        if (where.get(shard.id) !== sourceKey || moved.has(shard.id)) continue
        const newSource = sourceFill - weightOf(shard, source)
        for (const [targetKey, target] of states) {
          if (targetKey === sourceKey || !hasRoom(target, shard, input)) continue
          const newTarget = fills.get(targetKey)! + weightOf(shard, target)
          const untouched = ([key]: [string, number]) => key !== sourceKey && key !== targetKey
          const others = [top.find(untouched), bottom.find(untouched)].filter((e) => e !== undefined).map(([, f]) => f)
          const after = spread([...others, newSource, newTarget])
          const afterSq = sumSq - sourceFill ** 2 - fills.get(targetKey)! ** 2 + newSource ** 2 + newTarget ** 2
          if (after > current + EPSILON || afterSq >= sumSq - EPSILON) continue
          const weight = input.by === 'memory' ? shard.memory : shard.keys
          const candidate = {shard, from: source, to: target, db: pickDb(target.free, shard.db), spread: after, sumSq: afterSq, weight}
          if (!best || better(candidate, best)) best = candidate
        }
      }
    }
    if (!best) {
      stopped = 'no-move-helps'
      break
    }
    // Only a move that would help stops at --max-moves: "more moves would even it out" must be true.
    if (moves.length >= input.maxMoves) {
      stopped = 'max-moves'
      break
    }
    const {shard, from, to, db} = best
    from.usedMemory -= shard.memory
    from.keys -= shard.keys
    from.shards--
    to.usedMemory += shard.memory
    to.keys += shard.keys
    to.shards++
    to.free.delete(db)
    where.set(shard.id, to.instance.instance)
    moved.add(shard.id)
    moves.push({
      shard: shard.id,
      from: {instance: from.instance.instance, db: shard.db},
      to: {instance: to.instance.instance, db},
      memory: shard.memory,
      keys: shard.keys,
      spreadAfter: spread([...states.values()].map(fillOf)),
    })
  }

  const instances = [...states.values()].map((s, i) => ({
    instance: s.instance.instance,
    maxMemory: s.instance.maxMemory,
    before: before[i],
    after: {fill: fillOf(s), usedMemory: s.usedMemory, keys: s.keys, shards: s.shards},
  }))
  return {
    by: input.by,
    tolerance: input.tolerance,
    maxFill: input.maxFill,
    moves,
    instances,
    spreadBefore,
    spreadAfter: spread(instances.map((i) => i.after.fill)),
    stopped,
  }
}

/** A free database, and memory for the shard within maxFill of maxmemory (an instance without maxmemory: no limit known). */
export function hasRoom(
  target: {usedMemory: number; free: Set<number>; instance: PlanInstance},
  shard: PlanShard,
  input: Pick<RebalanceInput, 'maxFill'>,
): boolean {
  if (target.free.size === 0) return false
  const max = target.instance.maxMemory
  return max === 0 || target.usedMemory + shard.memory <= input.maxFill * max
}

/** The shard's own number where it is free on the target (less to remember), else the lowest free one. */
function pickDb(free: Set<number>, wanted: number): number {
  return free.has(wanted) ? wanted : Math.min(...free)
}

export function spread(fills: number[]): number {
  return fills.length === 0 ? 0 : Math.max(...fills) - Math.min(...fills)
}

function better(
  x: {spread: number; sumSq: number; weight: number; shard: PlanShard; to: State},
  y: {spread: number; sumSq: number; weight: number; shard: PlanShard; to: State},
): boolean {
  if (Math.abs(x.spread - y.spread) > EPSILON) return x.spread < y.spread
  if (Math.abs(x.sumSq - y.sumSq) > EPSILON) return x.sumSq < y.sumSq
  if (x.weight !== y.weight) return x.weight > y.weight
  // Same in every way that matters: any fixed order keeps the plan the same from run to run.
  return x.shard.id !== y.shard.id ? x.shard.id < y.shard.id : x.to.instance.instance < y.to.instance.instance
}

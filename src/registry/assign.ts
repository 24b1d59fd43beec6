import {ExitCode, ShardctlError} from '../errors.js'
import type {Registry} from './registry.js'

/**
 * The seeds' rule: a new hash goes to a shard chosen at random with probability
 * weight / sum of weights. Weight 0 is never chosen. Prefix sums and a binary search
 * make a draw O(log n), so a million draws over a thousand shards cost nothing.
 */
export class WeightedPicker {
  private readonly ids: string[] = []
  private readonly cumulative: number[] = []
  readonly total: number

  constructor(weights: Map<string, number>) {
    let total = 0
    for (const [id, weight] of weights) {
      if (!(weight > 0) || !Number.isFinite(weight)) continue
      total += weight
      this.ids.push(id)
      this.cumulative.push(total)
    }
    this.total = total
  }

  get empty(): boolean {
    return this.ids.length === 0
  }

  /** `random` is in [0, 1), like Math.random(). */
  pick(random: number = Math.random()): string {
    if (this.empty) throw noWeightedShard()
    const target = random * this.total
    let lo = 0
    let hi = this.cumulative.length - 1
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (this.cumulative[mid] > target) hi = mid
      else lo = mid + 1
    }
    return this.ids[lo]
  }
}

export function noWeightedShard(): ShardctlError {
  return new ShardctlError('no shard takes new assignments: every weight is 0 or the registry has no shards', {
    code: 'ENOWEIGHT',
    exitCode: ExitCode.unexpected,
    hint: 'give a shard a weight with `shardctl shards:weight <id> <weight>`, or name one with --shard',
  })
}

export interface AssignResult {
  hash: string
  shard: string
  /** True where this run stored the assignment; false where an existing one was kept. */
  assigned: boolean
}

export interface AssignOptions {
  /** Assign every hash to this shard instead of drawing one. */
  shard?: string
  /** With `shard`: overwrite existing assignments. */
  force?: boolean
  /** Hashes per script call. */
  batchSize?: number
  /** Script calls in flight at once. */
  depth?: number
  random?: () => number
}

export const MAX_HASH_LENGTH = 1024

export function checkHash(hash: string): string {
  if (hash.length === 0) throw new ShardctlError('empty shard hash', {code: 'EUSAGE', exitCode: ExitCode.usage, hint: 'give one hash per argument or per line'})
  if (hash.length > MAX_HASH_LENGTH) {
    throw new ShardctlError(`shard hash of ${hash.length} characters is too long`, {
      code: 'EUSAGE',
      exitCode: ExitCode.usage,
      hint: `a hash is at most ${MAX_HASH_LENGTH} characters`,
    })
  }
  return hash
}

/**
 * Group a stream of items into batches, keeping up to `depth` batches in flight and
 * yielding results in input order. Memory is bounded by batchSize * depth.
 */
export async function* pipelined<T, R>(
  items: AsyncIterable<T> | Iterable<T>,
  batchSize: number,
  depth: number,
  send: (batch: T[]) => Promise<R[]>,
): AsyncGenerator<R> {
  const inFlight: Promise<R[]>[] = []
  let batch: T[] = []
  for await (const item of items) {
    batch.push(item)
    if (batch.length === batchSize) {
      inFlight.push(send(batch))
      // Keep the rejection handled until it is awaited in order below.
      inFlight.at(-1)!.catch(() => undefined)
      batch = []
      if (inFlight.length >= depth) yield* await inFlight.shift()!
    }
  }
  if (batch.length > 0) inFlight.push(send(batch))
  while (inFlight.length > 0) yield* await inFlight.shift()!
}

/**
 * Assign hashes with atomic set-if-absent, so concurrent assigners agree on one answer.
 * Streams: results come back in input order as batches complete.
 */
export async function* assignHashes(
  registry: Registry,
  hashes: AsyncIterable<string> | Iterable<string>,
  options: AssignOptions = {},
): AsyncGenerator<AssignResult> {
  const random = options.random ?? Math.random
  let choose: () => string
  if (options.shard === undefined) {
    const picker = new WeightedPicker(await registry.weights())
    if (picker.empty) throw noWeightedShard()
    choose = () => picker.pick(random())
  } else {
    const target = options.shard
    await registry.shard(target) // exists and is well-formed
    choose = () => target
  }
  const template = JSON.stringify(registry.event('hashes.assigned', options.shard ? {shard: options.shard} : {}))
  const force = options.force && options.shard !== undefined ? '1' : '0'
  await registry.guard(registry.keys.map, 'a hash', () => registry.client.hlen(registry.keys.map))

  const send = async (batch: string[]): Promise<AssignResult[]> => {
    const args: string[] = [registry.keys.map, registry.keys.list, registry.keys.events, template, force]
    for (const hash of batch) args.push(hash, choose())
    let reply: string[]
    try {
      reply = await registry.client.assign(...args)
    } catch (error) {
      const message = (error as Error).message
      const missing = /NOSHARD (\S+)/.exec(message)
      if (missing) {
        throw new ShardctlError(`shard ${missing[1]} left the registry while assigning`, {
          code: 'ECONFLICT',
          hint: 'run the command again: the hashes not yet reported were not assigned',
        })
      }
      throw error
    }
    const flags = reply[0]
    return batch.map((hash, i) => ({hash, shard: reply[i + 1], assigned: flags[i] === '1'}))
  }

  yield* pipelined(
    mapIterable(hashes, checkHash),
    options.batchSize ?? 1000,
    options.depth ?? 8,
    send,
  )
}

async function* mapIterable<T, R>(items: AsyncIterable<T> | Iterable<T>, fn: (item: T) => R): AsyncGenerator<R> {
  for await (const item of items) yield fn(item)
}

export interface LookupResult {
  hash: string
  shard: string | null
}

/** Look hashes up in P.map, streamed in pipelined HMGET batches. */
export async function* lookupHashes(
  registry: Registry,
  hashes: AsyncIterable<string> | Iterable<string>,
  options: {batchSize?: number; depth?: number} = {},
): AsyncGenerator<LookupResult> {
  await registry.guard(registry.keys.map, 'a hash', () => registry.client.hlen(registry.keys.map))
  yield* pipelined(mapIterable(hashes, checkHash), options.batchSize ?? 1000, options.depth ?? 8, async (batch) => {
    const ids = await registry.client.hmget(registry.keys.map, ...batch)
    return batch.map((hash, i) => ({hash, shard: ids[i]}))
  })
}

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
  /** Script calls in flight at once. */
  depth?: number
  random?: () => number
}

export const MAX_HASH_LENGTH = 1024

export function checkHash(hash: string): string {
  if (hash.length === 0)
    throw new ShardctlError('empty shard hash', {code: 'EUSAGE', exitCode: ExitCode.usage, hint: 'give one hash per argument or per line'})
  if (hash.length > MAX_HASH_LENGTH) {
    throw new ShardctlError(`shard hash of ${hash.length} characters is too long`, {
      code: 'EUSAGE',
      exitCode: ExitCode.usage,
      hint: `a hash is at most ${MAX_HASH_LENGTH} characters`,
    })
  }
  return hash
}

/** Batches of hashes: what the streaming paths pass around, so no promise is made per hash. */
export type Batches = AsyncIterable<string[]> | Iterable<string[]>

export const BATCH_SIZE = 1000

/** An array as batches of `size`. */
export function* inBatches<T>(items: T[], size = BATCH_SIZE): Generator<T[]> {
  for (let i = 0; i < items.length; i += size) yield items.slice(i, i + size)
}

/**
 * Send batches with up to `depth` of them in flight, yielding each batch's result in
 * input order. Memory is bounded by depth batches, whatever the length of the stream.
 * A result is yielded as soon as it is in, even while the input is slow to bring the
 * next batch (a person typing): the input and the oldest result race.
 */
export async function* pipelined<T, R>(
  batches: AsyncIterable<T[]> | Iterable<T[]>,
  depth: number,
  send: (batch: T[]) => Promise<R>,
): AsyncGenerator<R> {
  const source = Symbol.asyncIterator in batches ? batches[Symbol.asyncIterator]() : batches[Symbol.iterator]()
  const inFlight: Promise<R>[] = []
  let next: Promise<IteratorResult<T[]>> | undefined = Promise.resolve(source.next())
  while (next !== undefined || inFlight.length > 0) {
    if (next !== undefined && inFlight.length < depth) {
      const input: Promise<{item: IteratorResult<T[]>}> = next.then((item) => ({item}))
      const first: {item: IteratorResult<T[]>} | 'result' =
        inFlight.length === 0 ? await input : await Promise.race([input, inFlight[0].then(() => 'result' as const)])
      if (first !== 'result') {
        next = first.item.done ? undefined : Promise.resolve(source.next())
        if (!first.item.done && first.item.value.length > 0) {
          const sent = send(first.item.value)
          // Keep the rejection handled until it is awaited in order below.
          sent.catch(() => undefined)
          inFlight.push(sent)
        }
        continue
      }
    }
    yield await inFlight.shift()!
  }
}

/**
 * Assign hashes with atomic set-if-absent, so concurrent assigners agree on one answer.
 * Streams: each batch's results come back in input order.
 */
export async function* assignHashes(registry: Registry, batches: Batches, options: AssignOptions = {}): AsyncGenerator<AssignResult[]> {
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
    const proposed: string[] = []
    for (const hash of batch) {
      const id = choose()
      proposed.push(id)
      args.push(checkHash(hash), id)
    }
    let reply: string[]
    try {
      reply = await registry.client.assign(...args)
    } catch (error) {
      const missing = /NOSHARD (\S+)/.exec((error as Error).message)
      if (missing) {
        throw new ShardctlError(`shard ${missing[1]} left the registry while assigning`, {
          code: 'ECONFLICT',
          hint: 'run the command again: the hashes not yet reported were not assigned',
        })
      }
      throw error
    }
    // The reply names only the shards of hashes that kept an existing assignment.
    const flags = reply[0]
    let next = 1
    return batch.map((hash, i) => {
      const assigned = flags[i] === '1'
      return {hash, shard: assigned || force === '1' ? proposed[i] : reply[next++], assigned}
    })
  }
  yield* pipelined(batches, options.depth ?? 8, send)
}

export interface LookupResult {
  hash: string
  shard: string | null
}

/** Look hashes up in P.map, streamed in pipelined HMGET batches. */
export async function* lookupHashes(registry: Registry, batches: Batches, options: {depth?: number} = {}): AsyncGenerator<LookupResult[]> {
  await registry.guard(registry.keys.map, 'a hash', () => registry.client.hlen(registry.keys.map))
  yield* pipelined(batches, options.depth ?? 8, async (batch) => {
    for (const hash of batch) checkHash(hash)
    const ids = await registry.client.hmget(registry.keys.map, ...batch)
    return batch.map((hash, i) => ({hash, shard: ids[i]}))
  })
}

import {randomBytes} from 'node:crypto'

import type {Redis} from 'ioredis'

import {ExitCode, ShardctlError, corruptRegistryError} from '../errors.js'
import {close} from '../fleet/connect.js'
import {HISTORY_LIMIT, type Registry, isEventOf} from './registry.js'
import {plural} from '../ui/terminal.js'

/**
 * Each weight's share of new assignments, weight / sum of weights, computed without
 * overflow: weights are divided by the largest first, so three shards of 1e308 each
 * get a third (their sum is no longer a finite number). 0 for weight 0, and for all
 * when no weight is above 0.
 */
export function shares(weights: Map<string, number>): Map<string, number> {
  const largest = Math.max(0, ...[...weights.values()].filter((w) => w > 0 && Number.isFinite(w)))
  const scaled = new Map([...weights].map(([id, w]) => [id, largest > 0 && w > 0 && Number.isFinite(w) ? w / largest : 0]))
  const total = [...scaled.values()].reduce((a, b) => a + b, 0)
  return new Map([...scaled].map(([id, w]) => [id, total > 0 ? w / total : 0]))
}

/**
 * The seeds' rule: a new hash goes to a shard chosen at random with probability
 * weight / sum of weights. Weight 0 is never chosen. Prefix sums and a binary search
 * make a draw O(log n), so a million draws over a thousand shards cost nothing. The
 * sums are of the weights divided by the largest: any finite weights, up to 1e308
 * each, add up without overflow (at most the number of shards).
 */
export class WeightedPicker {
  private readonly ids: string[] = []
  private readonly cumulative: number[] = []
  /** The sum of the weights divided by the largest one. */
  private readonly total: number

  constructor(weights: Map<string, number>) {
    const usable = [...weights].filter(([, w]) => w > 0 && Number.isFinite(w))
    const largest = Math.max(0, ...usable.map(([, w]) => w))
    let total = 0
    for (const [id, weight] of usable) {
      total += weight / largest
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
  /** --force: the shard the hash was on before this run moved it (its keys are still there). */
  from?: string
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
    throw new ShardctlError(`shard hash of ${plural(hash.length, 'character')} is too long`, {
      code: 'EUSAGE',
      exitCode: ExitCode.usage,
      hint: `a hash is at most ${plural(MAX_HASH_LENGTH, 'character')}`,
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
 *
 * Nothing sent goes unreported: when the input fails (a bad line), no more is read,
 * the batches in flight are yielded, then the input's error is thrown; when a send
 * fails, no more is read or sent, every other batch in flight that went through is
 * still yielded, then that send's error is thrown.
 */
export async function* pipelined<T, R>(
  batches: AsyncIterable<T[]> | Iterable<T[]>,
  depth: number,
  send: (batch: T[]) => Promise<R>,
): AsyncGenerator<R> {
  const source = Symbol.asyncIterator in batches ? batches[Symbol.asyncIterator]() : batches[Symbol.iterator]()
  const pull = async (): Promise<IteratorResult<T[]>> => source.next()
  const inFlight: Promise<R>[] = []
  let next: Promise<IteratorResult<T[]>> | undefined = pull()
  let inputFailed: {error: unknown} | undefined
  while (next !== undefined || inFlight.length > 0) {
    if (next !== undefined && inFlight.length < depth) {
      const input: Promise<{item: IteratorResult<T[]>} | {error: unknown}> = next.then(
        (item) => ({item}),
        (error: unknown) => ({error}),
      )
      const oldest = inFlight[0]?.then(
        () => 'result' as const,
        () => 'result' as const,
      )
      const first = oldest === undefined ? await input : await Promise.race([input, oldest])
      if (first !== 'result') {
        if ('error' in first) {
          inputFailed = first
          next = undefined
          continue
        }
        next = first.item.done ? undefined : pull()
        if (!first.item.done && first.item.value.length > 0) {
          const sent = send(first.item.value)
          // Keep the rejection handled until it is awaited in order below.
          sent.catch(() => undefined)
          inFlight.push(sent)
        }
        continue
      }
    }
    let result: R
    try {
      result = await inFlight.shift()!
    } catch (error) {
      next = undefined
      for (const outcome of await Promise.allSettled(inFlight.splice(0))) if (outcome.status === 'fulfilled') yield outcome.value
      throw error
    }
    yield result
  }
  if (inputFailed) throw inputFailed.error
}

/** How many times one batch is drawn again after the registry refused a drawn shard, before giving up. */
const MAX_REDRAWS = 100

/**
 * The weights an assigner draws from, kept current while it runs: re-read when the
 * registry announces a change on its event channel, and whenever the registry refuses
 * a drawn shard (drained or gone: the change the event may not have brought yet).
 * The subscription is a convenience (an ACL may refuse it); the refusal is the proof.
 */
export class LiveWeights {
  private picker: WeightedPicker
  private loading?: Promise<void>
  private next?: Promise<void>
  private subscriber?: Redis

  private constructor(
    private readonly registry: Registry,
    picker: WeightedPicker,
  ) {
    this.picker = picker
  }

  static async open(registry: Registry): Promise<LiveWeights> {
    const live = new LiveWeights(registry, new WeightedPicker(await registry.weights()))
    if (live.picker.empty) throw noWeightedShard()
    await live.listen()
    return live
  }

  pick(random: number): string {
    return this.picker.pick(random)
  }

  /**
   * Read the weights again. A read already under way may have started before the change
   * that asks for this one, so another read follows it (one, for every caller meanwhile).
   */
  refresh(): Promise<void> {
    if (!this.loading) {
      this.loading = this.registry.weights().then(
        (weights) => {
          this.picker = new WeightedPicker(weights)
          this.loading = undefined
        },
        (error: unknown) => {
          this.loading = undefined
          throw error
        },
      )
      return this.loading
    }
    const again = () => {
      this.next = undefined
      return this.refresh()
    }
    this.next ??= this.loading.then(again, again)
    return this.next
  }

  private async listen(): Promise<void> {
    const subscriber = this.registry.client.duplicate()
    subscriber.on('error', () => undefined) // a lost subscription only loses the early warning
    subscriber.on('message', (_channel: string, message: string) => {
      if (isWeightEvent(message, this.registry)) this.refresh().catch(() => undefined)
    })
    try {
      await subscriber.connect()
      await subscriber.subscribe(this.registry.keys.events)
      this.subscriber = subscriber
    } catch {
      subscriber.disconnect()
    }
  }

  async close(): Promise<void> {
    await close(this.subscriber)
  }
}

/** Whether an event of this registry (not of one in another database) may have changed the weights: everything but the assignments themselves. */
function isWeightEvent(message: string, registry: Registry): boolean {
  try {
    const event = JSON.parse(message) as {type?: unknown; db?: unknown; prefix?: unknown}
    return event.type !== 'hashes.assigned' && isEventOf(event, registry.db, registry.keys.prefix)
  } catch {
    return false
  }
}

/**
 * Assign hashes with atomic set-if-absent, so concurrent assigners agree on one answer.
 * Streams: each batch's results come back in input order. Drawn shards follow the
 * registry's weights as they change during the run: a shard drained meanwhile gets no
 * hash from the first batch after its drain on (the script refuses it, the batch is drawn again).
 */
export async function* assignHashes(registry: Registry, batches: Batches, options: AssignOptions = {}): AsyncGenerator<AssignResult[]> {
  const random = options.random ?? Math.random
  let live: LiveWeights | undefined
  let choose: () => string
  if (options.shard === undefined) {
    live = await LiveWeights.open(registry)
    choose = () => live!.pick(random())
  } else {
    const target = options.shard
    await registry.shard(target) // exists and is well-formed
    choose = () => target
  }
  try {
    const mode = options.shard === undefined ? 'draw' : options.force ? 'force' : 'shard'
    // One history entry for the whole run (the script adds each batch to it): named by `run`.
    const details = {
      run: randomBytes(6).toString('hex'),
      ...(options.shard ? {shard: options.shard} : {}),
      ...(options.force ? {force: true} : {}),
    }
    const template = JSON.stringify(registry.event('hashes.assigned', details))
    await registry.guard(registry.keys.map, 'a hash', () => registry.client.hlen(registry.keys.map))

    const send = async (batch: string[]): Promise<AssignResult[]> => {
      for (const hash of batch) checkHash(hash)
      for (let redraws = 0; ; redraws++) {
        const args: string[] = [
          registry.keys.map,
          registry.keys.list,
          registry.keys.history,
          registry.keys.events,
          template,
          mode,
          String(HISTORY_LIMIT),
        ]
        const proposed: string[] = []
        for (const hash of batch) {
          const id = choose()
          proposed.push(id)
          args.push(hash, id)
        }
        let reply: string[]
        try {
          reply = await registry.client.assign(...args)
        } catch (error) {
          const message = (error as Error).message
          if (/STALE \S+/.test(message) && live && redraws < MAX_REDRAWS) {
            await live.refresh()
            continue
          }
          throw describeAssignError(message, error as Error)
        }
        // The reply names only the shards of hashes that kept an existing assignment.
        const flags = reply[0]
        let next = 1
        return batch.map((hash, i): AssignResult => {
          if (flags[i] === '2') return {hash, shard: proposed[i], assigned: true, from: reply[next++]}
          const assigned = flags[i] === '1'
          return {hash, shard: assigned || mode === 'force' ? proposed[i] : reply[next++], assigned}
        })
      }
    }
    yield* pipelined(batches, options.depth ?? 8, send)
  } finally {
    await live?.close()
  }
}

function describeAssignError(message: string, error: Error): Error {
  const wrongType = /WRONGTYPE (.*?)(?: script: .*)?$/s.exec(message)
  if (wrongType) return corruptRegistryError(`registry key ${wrongType[1]}`)
  const missing = /(?:NOSHARD|STALE) (\S+)/.exec(message)
  if (!missing) return error
  if (message.startsWith('STALE'))
    return new ShardctlError(`the weights kept changing while assigning (shard ${missing[1]} was drained or removed again and again)`, {
      code: 'ECONFLICT',
      hint: 'run the command again: the hashes not yet reported were not assigned',
    })
  return new ShardctlError(`shard ${missing[1]} left the registry while assigning`, {
    code: 'ECONFLICT',
    hint: 'run the command again: the hashes not yet reported were not assigned',
  })
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

import {setTimeout as sleep} from 'node:timers/promises'

import {type CompareSettings, type DifferenceKind, type KeyDifference, compareKeys} from './compare.js'
import {displayKey, keyId} from './keys.js'
import {RateLimiter} from './rate.js'
import {type DatabaseRef, Side, valueOf} from './side.js'

/**
 * Compare two copies of a database while writes go on, as redis-full-check does: a
 * first round compares every key (a full pass over `a`, then a pass over `b` for
 * the keys only it has); each later round, after a pause, compares again only the
 * keys that differed. A write in flight makes a key differ for a moment; a real
 * difference stays. What still differs after the last round is the report.
 *
 *   const report = await verifyDatabases({client: src, db: 3}, {client: dst, db: 7}, {
 *     rounds: 3,
 *     beforeRecheck: () => waitUntilApplied(offsetNow), // a proof instead of a pause
 *     onProgress: (p) => log(`${p.phase} ${p.done}/${p.total}`),
 *   })
 *   if (!report.equal) ...report.differences.value.keys
 *
 * Neither database is changed. Each connection may be shared (see DatabaseRef). Keys
 * are bytes (never decoded); values are compared by content, not encoding (compare.ts).
 * Large keys are read in slices; `rate` bounds the keys per second on both sides.
 */

export interface VerifyOptions {
  /** Rounds in all, the first (full) one included; at least 1. Default 3. */
  rounds?: number
  /** Pause before each re-check round, in ms (default 1000), unless beforeRecheck is given. */
  intervalMs?: number
  /**
   * Called before each re-check round instead of the pause: resolve once what was in
   * flight has had time to land (e.g. a copy engine's applied offset has reached the
   * source's offset of this moment). `round` is the round about to start.
   */
  beforeRecheck?: (round: number, differing: number) => Promise<void>
  /** Keys compared per second, at most (a large key counts once per 100 elements). Default: no limit. */
  ratePerSecond?: number
  /**
   * Compare the values too (default true). false: each key's presence on both sides, type,
   * expiry and length only; no value is read or hashed (what that saves, and what it does
   * not: docs/move-engine.md).
   */
  values?: boolean
  /** Absolute expiry times this far apart (ms) still count as equal. Default 1000. */
  ttlToleranceMs?: number
  /** Keys named per kind of difference. Default 10. */
  sampleSize?: number
  /** Differing keys remembered for re-checking; past it they are only counted. Default 100,000. */
  maxTracked?: number
  /** Keys per SCAN page and per compared batch. Default 256. */
  batchSize?: number
  /** Elements per slice of a large key. Default 1,000. */
  sliceElements?: number
  /** Bytes per slice of a large string, and the aim for a slice of any large key. Default 1 MB. */
  sliceBytes?: number
  /** Keys with more elements (or bytes, for strings) are compared in slices. Default 512 elements, 256 kB. */
  smallElements?: number
  smallBytes?: number
  onProgress?: (progress: VerifyProgress) => void
  /** Stops the verify between two batches; it then rejects with the signal's reason. */
  signal?: AbortSignal
  /** Re-check rounds stop once at most this many keys differ (default 0: until none does). */
  fewEnough?: number
  /** Give the keys still differing at the end in the report (differingKeys), to re-check them later (recheckKeys). */
  keepKeys?: boolean
}

export interface VerifyProgress {
  round: number
  rounds: number
  /** compare: the full pass over a; only-in-b: b's keys looked up in a; recheck: a later round; wait: before one. */
  phase: 'compare' | 'only-in-b' | 'recheck' | 'wait'
  /** Keys looked at so far in this phase. */
  done: number
  /** Keys the phase will look at (in the first round: the database's size when it started). */
  total: number
  /** Keys found differing so far (in the first round) or still differing (later). */
  differing: number
}

export interface KeySample {
  /** The key as text (redis-cli quoting when it is not UTF-8). */
  key: string
  detail: string
}

export interface DifferenceCount {
  count: number
  /** Up to sampleSize keys, in key order. */
  keys: KeySample[]
}

export interface RoundReport {
  round: number
  /** Keys compared in the round. */
  checked: number
  /** Keys that differed at its end. */
  differing: number
  durationMs: number
}

export interface VerifyReport {
  /** Nothing differs at the end. */
  equal: boolean
  a: string
  b: string
  /** Keys in each database when the verify started. */
  keys: {a: number; b: number}
  rounds: RoundReport[]
  /** Keys that differ at the end, each counted once. */
  differing: number
  /**
   * By kind: missing on one side, another type, another value, another expiry. A key
   * may count as both value and ttl; the others stand alone.
   */
  differences: Record<DifferenceKind, DifferenceCount>
  /** Differing keys past maxTracked: found in the first round, counted, never re-checked. */
  unrechecked: number
  ttlToleranceMs: number
  durationMs: number
  /** With keepKeys: the keys that differ at the end (those re-checked; not the ones past maxTracked). */
  differingKeys?: Buffer[]
}

const DEFAULTS = {
  rounds: 3,
  values: true,
  intervalMs: 1000,
  ttlToleranceMs: 1000,
  sampleSize: 10,
  maxTracked: 100_000,
  batchSize: 256,
  sliceElements: 1000,
  sliceBytes: 1024 * 1024,
  smallElements: 512,
  smallBytes: 256 * 1024,
  fewEnough: 0,
}

/** A key of b only looked up in a (its type) costs a fraction of a compared one. */
const EXISTENCE_COST = 0.25

export const DIFFERENCE_KINDS: DifferenceKind[] = ['missingInA', 'missingInB', 'type', 'value', 'ttl']

export async function verifyDatabases(a: DatabaseRef, b: DatabaseRef, options: VerifyOptions = {}): Promise<VerifyReport> {
  const started = performance.now()
  const o = {...DEFAULTS, ...withoutUndefined(options)}
  if (!Number.isInteger(o.rounds) || o.rounds < 1) throw new RangeError('rounds must be a whole number of at least 1')
  const {sideA, sideB, settings} = await sides(a, b, o)
  const [sizeA, sizeB] = await Promise.all([sideA.size(), sideB.size()])
  const progress = (p: Omit<VerifyProgress, 'rounds'>) => o.onProgress?.({...p, rounds: o.rounds})

  // Keys that differ, by their bytes; past maxTracked only counted.
  let tracked = new Map<string, KeyDifference>()
  const untracked = new Tally(o.sampleSize)
  let untrackedCount = 0
  const record = (difference: KeyDifference) => {
    const id = keyId(difference.key)
    if (tracked.has(id) || tracked.size < o.maxTracked) tracked.set(id, difference)
    else {
      untrackedCount++
      untracked.add(difference)
    }
  }
  const rounds: RoundReport[] = []

  // Round 1: every key of a, then the keys of b that a lacks.
  let roundStart = performance.now()
  let done = 0
  await eachPage(scanPages(sideA, o.batchSize, o.signal), async (keys) => {
    for (const difference of await compareKeys(sideA, sideB, keys, settings)) record(difference)
    done += keys.length
    progress({round: 1, phase: 'compare', done, total: sizeA, differing: tracked.size + untrackedCount})
  })
  let checked = done
  done = 0
  await eachPage(scanPages(sideB, o.batchSize, o.signal), async (keys) => {
    await settings.rate.take(keys.length * EXISTENCE_COST, o.signal)
    const exist = await sideA.exist(keys)
    keys.forEach((key, i) => {
      if (!exist[i] && !tracked.has(keyId(key))) record({key, kinds: ['missingInA'], detail: `only on ${sideB.where}`})
    })
    done += keys.length
    progress({round: 1, phase: 'only-in-b', done, total: sizeB, differing: tracked.size + untrackedCount})
  })
  checked += done
  rounds.push({round: 1, checked, differing: tracked.size + untrackedCount, durationMs: elapsed(roundStart)})

  // Later rounds: only what differed, once what was in flight has landed.
  for (let round = 2; round <= o.rounds && tracked.size > o.fewEnough; round++) {
    progress({round, phase: 'wait', done: 0, total: tracked.size, differing: tracked.size})
    if (options.beforeRecheck) await options.beforeRecheck(round, tracked.size)
    else await sleep(o.intervalMs, undefined, {signal: o.signal})
    o.signal?.throwIfAborted()
    roundStart = performance.now()
    const keys = [...tracked.values()].map((d) => d.key)
    const still = new Map<string, KeyDifference>()
    for (let i = 0; i < keys.length; i += o.batchSize) {
      o.signal?.throwIfAborted()
      for (const difference of await compareKeys(sideA, sideB, keys.slice(i, i + o.batchSize), settings)) {
        still.set(keyId(difference.key), difference)
      }
      progress({round, phase: 'recheck', done: Math.min(keys.length, i + o.batchSize), total: keys.length, differing: still.size})
    }
    tracked = still
    rounds.push({round, checked: keys.length, differing: tracked.size + untrackedCount, durationMs: elapsed(roundStart)})
  }

  const differences = new Tally(o.sampleSize)
  for (const difference of tracked.values()) differences.add(difference)
  return {
    equal: tracked.size === 0 && untrackedCount === 0,
    a: sideA.where,
    b: sideB.where,
    keys: {a: sizeA, b: sizeB},
    rounds,
    differing: tracked.size + untrackedCount,
    differences: differences.result(untracked),
    unrechecked: untrackedCount,
    ttlToleranceMs: o.ttlToleranceMs,
    durationMs: elapsed(started),
    ...(o.keepKeys ? {differingKeys: [...tracked.values()].map((d) => d.key)} : {}),
  }
}

/**
 * Compare these keys once more (those a verify kept, keepKeys), as a re-check round
 * does: the ones that still differ.
 */
export async function recheckKeys(
  a: DatabaseRef,
  b: DatabaseRef,
  keys: Buffer[],
  options: Pick<VerifyOptions, 'ttlToleranceMs' | 'batchSize' | 'signal'> = {},
): Promise<KeyDifference[]> {
  const o = {...DEFAULTS, ...withoutUndefined(options)}
  const {sideA, sideB, settings} = await sides(a, b, o)
  const still: KeyDifference[] = []
  for (let i = 0; i < keys.length; i += o.batchSize)
    still.push(...(await compareKeys(sideA, sideB, keys.slice(i, i + o.batchSize), settings)))
  return still
}

async function sides(
  a: DatabaseRef,
  b: DatabaseRef,
  o: typeof DEFAULTS & Partial<Pick<VerifyOptions, 'ratePerSecond' | 'signal'>>,
): Promise<{sideA: Side; sideB: Side; settings: CompareSettings}> {
  const sideA = new Side(a.client, a.db)
  const sideB = new Side(b.client, b.db)
  await Promise.all([sideA.init(), sideB.init()])
  const settings: CompareSettings = {
    ttlToleranceMs: o.ttlToleranceMs,
    values: o.values,
    rate: new RateLimiter(o.ratePerSecond),
    signal: o.signal,
    smallElements: o.smallElements,
    smallBytes: o.smallBytes,
    sliceElements: o.sliceElements,
    sliceBytes: o.sliceBytes,
  }
  return {sideA, sideB, settings}
}

/**
 * Pages of the first round compared at once. One page waits on a handful of round trips
 * (SCAN, the outlines, the values); with several in flight the servers and this process
 * work instead of waiting (measured on a 1 GB database of 1 KB strings: see docs/move-engine.md).
 */
const PAGES_IN_FLIGHT = 4

/**
 * `work` on each page as it is scanned, at most PAGES_IN_FLIGHT at once. The first failure
 * stops the scan and is thrown once the pages in flight have ended (none is left running).
 */
async function eachPage(pages: AsyncIterable<Buffer[]>, work: (keys: Buffer[]) => Promise<void>): Promise<void> {
  const running = new Set<Promise<void>>()
  let failure: {error: unknown} | undefined
  try {
    for await (const keys of pages) {
      if (failure) break
      const done: Promise<void> = work(keys).then(
        () => void running.delete(done),
        (error: unknown) => {
          running.delete(done)
          failure ??= {error}
        },
      )
      running.add(done)
      if (running.size >= PAGES_IN_FLIGHT) await Promise.race(running)
    }
  } finally {
    // A failed scan too waits for the pages in flight: nothing of the verify runs on after it.
    await Promise.all(running)
  }
  if (failure) throw failure.error
}

/** The keys of a database, one SCAN page at a time. */
async function* scanPages(side: Side, count: number, signal?: AbortSignal): AsyncGenerator<Buffer[]> {
  let cursor = '0'
  do {
    signal?.throwIfAborted()
    const [reply] = await side.run((p) => p.callBuffer('SCAN', cursor, 'COUNT', String(count)))
    const [next, keys] = valueOf<[Buffer, Buffer[]]>(reply)
    cursor = next.toString()
    if (keys.length > 0) yield keys
  } while (cursor !== '0')
}

/** Counts per kind, and the first keys in key order as a sample (bounded memory however many differ). */
class Tally {
  private readonly counts = new Map<DifferenceKind, number>(DIFFERENCE_KINDS.map((k) => [k, 0]))
  private readonly samples = new Map<DifferenceKind, KeyDifference[]>(DIFFERENCE_KINDS.map((k) => [k, []]))

  constructor(private readonly sampleSize: number) {}

  add(difference: KeyDifference): void {
    for (const kind of new Set(difference.kinds)) {
      this.counts.set(kind, this.counts.get(kind)! + 1)
      const sample = this.samples.get(kind)!
      sample.push(difference)
      // Keep the smallest keys: sort and cut now and then, not at every key.
      if (sample.length >= 4 * this.sampleSize) this.cut(sample)
    }
  }

  /** This tally with another's counts added (its samples only where this one has room). */
  result(other: Tally): Record<DifferenceKind, DifferenceCount> {
    const out = {} as Record<DifferenceKind, DifferenceCount>
    for (const kind of DIFFERENCE_KINDS) {
      const sample = this.samples.get(kind)!
      this.cut(sample)
      const extra = other.samples.get(kind)!
      other.cut(extra)
      out[kind] = {
        count: this.counts.get(kind)! + other.counts.get(kind)!,
        keys: [...sample, ...extra].slice(0, this.sampleSize).map((d) => ({key: displayKey(d.key), detail: d.detail})),
      }
    }
    return out
  }

  private cut(sample: KeyDifference[]): void {
    sample.sort((x, y) => Buffer.compare(x.key, y.key))
    sample.length = Math.min(sample.length, this.sampleSize)
  }
}

function elapsed(since: number): number {
  return Math.round(performance.now() - since)
}

function withoutUndefined<T extends object>(options: T): Partial<T> {
  return Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as Partial<T>
}

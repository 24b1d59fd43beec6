import type {RateLimiter} from './rate.js'
import {type Reply, type Side, isWrongType, valueOf} from './side.js'
import {plural} from '../ui/terminal.js'
import {displayKey} from './keys.js'

/**
 * Comparing keys of two databases by content, never by encoding: a listpack and a
 * hashtable hash, or two hashtables filled in another order, give different DUMP
 * payloads for the same content. In stages, each one round trip per side for a batch:
 *
 *   1. outline (lua/verify-outline.lua, one script call for the batch, one line a key):
 *      TYPE, the absolute expiry (PEXPIRETIME; PTTL before Redis 7), the length by type,
 *      MEMORY USAGE (an estimate from a few elements: cheap whatever the key's size; a
 *      string's length instead) and the SHA-1 of a short string;
 *   2. small keys (at most `smallElements` elements and `smallBytes`): the whole value
 *      — a string of at most DIGEST_BYTES by the SHA-1 the outline gave (computed by the
 *      server, so a batch of short strings costs no transfer of their values), longer
 *      strings with one MGET per batch, others in a canonical order (sets and hashes
 *      sorted; zsets come sorted by score); streams and module types by DUMP, equal
 *      payloads proving equal content;
 *   3. large keys, one at a time, in slices of at most `sliceElements` elements or
 *      `sliceBytes` bytes: HSCAN / SSCAN / ZSCAN on one side and HMGET / SMISMEMBER /
 *      ZMSCORE of the same fields on the other, LRANGE / GETRANGE / XRANGE on both.
 *      A million-field hash is never read in one reply.
 *
 * A scanned side holding only elements the other has with the same values, with
 * equal lengths, holds the same content: that is why one side is scanned and the
 * other only asked. A key that changes between stages shows as a difference: the
 * rounds (verify.ts) look at it again.
 */

export type DifferenceKind = 'missingInA' | 'missingInB' | 'type' | 'value' | 'ttl'

export interface KeyDifference {
  key: Buffer
  /** missingInA, missingInB and type stand alone; value and ttl may come together. */
  kinds: DifferenceKind[]
  /** What differs, in one line, naming the sides by host:port/db. */
  detail: string
}

export interface CompareSettings {
  ttlToleranceMs: number
  /** Compare the values too (false: only each key's presence, type, expiry and length). */
  values: boolean
  rate: RateLimiter
  signal?: AbortSignal
  smallElements: number
  smallBytes: number
  sliceElements: number
  sliceBytes: number
}

/** What the rate counts a key for: one, and one more per this many elements (or kB of a string) of a large key. */
export const ELEMENTS_PER_KEY = 100

const LENGTH: Record<string, string> = {string: 'STRLEN', list: 'LLEN', set: 'SCARD', zset: 'ZCARD', hash: 'HLEN', stream: 'XLEN'}

/** Largest pipeline of whole small values, by their estimated memory. */
const BATCH_BYTES = 4 * 1024 * 1024

export interface Outline {
  type: string
  /** Absolute expiry in ms, -1 when none. */
  expireAt: number
  /** -1 for a type without a length (a module's). */
  length: number
  memory: number
  /** SHA-1 of a string of at most DIGEST_BYTES. */
  digest?: string
}

/**
 * Strings up to this size are compared by the SHA-1 of their values, computed by each
 * server in the outline's script (a batch of 256 such values hashes in well under a
 * millisecond); longer ones are read.
 */
export const DIGEST_BYTES = 4096

/** Compare `keys` on both sides; returns only the keys that differ. */
export async function compareKeys(a: Side, b: Side, keys: Buffer[], settings: CompareSettings): Promise<KeyDifference[]> {
  if (keys.length === 0) return []
  await settings.rate.take(keys.length, settings.signal)
  const found = new Map<Buffer, KeyDifference>()
  const differ = (key: Buffer, kind: DifferenceKind, detail: string) => {
    const existing = found.get(key)
    if (existing) {
      existing.kinds.push(kind)
      existing.detail = `${existing.detail}; ${detail}`
    } else found.set(key, {key, kinds: [kind], detail})
  }

  // 1. outline
  // Only strings the comparison would read whole are digested (smallBytes may be lower); none without the values.
  const digestBytes = settings.values ? Math.min(DIGEST_BYTES, settings.smallBytes) : -1
  const [outA, outB] = await Promise.all([a.outlines(keys, digestBytes), b.outlines(keys, digestBytes)])
  const strings: Small[] = []
  const others: Small[] = []
  const large: {key: Buffer; outline: Outline}[] = []
  keys.forEach((key, i) => {
    const [x, y] = [outA[i], outB[i]]
    if (x.type === 'none' && y.type === 'none') return // gone from both meanwhile: nothing to compare
    if (x.type === 'none') return differ(key, 'missingInA', `a ${y.type}, only on ${b.where}`)
    if (y.type === 'none') return differ(key, 'missingInB', `a ${x.type}, only on ${a.where}`)
    if (x.type !== y.type) return differ(key, 'type', `a ${x.type} on ${a.where}, a ${y.type} on ${b.where}`)
    const ttl = ttlDifference(x.expireAt, y.expireAt, settings.ttlToleranceMs, a, b)
    if (ttl) differ(key, 'ttl', ttl)
    if (x.length !== y.length)
      return differ(key, 'value', `${describeLength(x.type, x.length)} on ${a.where}, ${describeLength(x.type, y.length)} on ${b.where}`)
    if (!settings.values) return
    const memory = Math.max(x.memory, y.memory)
    const small =
      x.type === 'string' ? x.length <= settings.smallBytes : x.length <= settings.smallElements && memory <= settings.smallBytes
    // Module types have no length to slice by: compared whole, by DUMP.
    if (x.digest !== undefined && y.digest !== undefined) {
      if (x.digest !== y.digest) differ(key, 'value', 'the values differ')
    } else if (x.type === 'string' && small) strings.push({key, type: x.type, memory})
    else if (small || LENGTH[x.type] === undefined) others.push({key, type: x.type, memory})
    else large.push({key, outline: {...x, memory}})
  })

  // 2. small keys, whole, in pipelines of bounded size
  for (const batch of byBudget(strings, BATCH_BYTES)) {
    const names = batch.map((s) => s.key)
    const [x, y] = await Promise.all(
      [a, b].map(async (side) => valueOf<(Buffer | null)[]>((await side.run((p) => p.mgetBuffer(...names)))[0])),
    )
    batch.forEach(({key}, i) => {
      if (x[i] === null || y[i] === null) differ(key, 'value', 'changed during the comparison')
      else if (!x[i].equals(y[i])) differ(key, 'value', 'the values differ')
    })
  }
  for (const batch of byBudget(others, BATCH_BYTES)) {
    const [wholeA, wholeB] = await Promise.all([wholeValues(a, batch), wholeValues(b, batch)])
    batch.forEach(({key, type, memory}, i) => {
      if (isWrongType(wholeA[i]) || isWrongType(wholeB[i])) return differ(key, 'value', 'changed during the comparison')
      const detail = compareWhole(type, valueOf(wholeA[i]), valueOf(wholeB[i]), a, b)
      if (detail === undefined) return
      // A stream's DUMP depends on its encoding too: look at its content before saying it differs.
      if (type === 'stream') large.push({key, outline: {...outA[keys.indexOf(key)], memory}})
      else differ(key, 'value', detail)
    })
  }

  // 3. large keys, one at a time, in slices
  for (const {key, outline} of large) {
    settings.signal?.throwIfAborted()
    const detail = await compareLarge(a, b, key, outline, settings)
    if (detail !== undefined) differ(key, 'value', detail)
  }
  return [...found.values()]
}

interface Small {
  key: Buffer
  type: string
  memory: number
}

function describeLength(type: string, length: number): string {
  return type === 'string' ? plural(length, 'byte') : plural(length, 'element')
}

/** A TTL difference in words, or undefined within the tolerance. */
export function ttlDifference(x: number, y: number, toleranceMs: number, a: Side, b: Side): string | undefined {
  if (x === -1 && y === -1) return undefined
  if (x !== -1 && y !== -1 && Math.abs(x - y) <= toleranceMs) return undefined
  const show = (t: number) => (t === -1 ? 'none' : new Date(t).toISOString())
  const apart = x !== -1 && y !== -1 ? ` (${Math.abs(x - y)} ms apart)` : ''
  return `expiry ${show(x)} on ${a.where}, ${show(y)} on ${b.where}${apart}`
}

function* byBudget<T extends {memory: number}>(items: T[], budget: number): Generator<T[]> {
  let batch: T[] = []
  let used = 0
  for (const item of items) {
    if (batch.length > 0 && used + item.memory > budget) {
      yield batch
      batch = []
      used = 0
    }
    batch.push(item)
    used += item.memory
  }
  if (batch.length > 0) yield batch
}

const WHOLE: Record<string, string[]> = {
  string: ['GET'],
  list: ['LRANGE', '0', '-1'],
  set: ['SMEMBERS'],
  hash: ['HGETALL'],
  zset: ['ZRANGE', '0', '-1', 'WITHSCORES'],
}

async function wholeValues(side: Side, batch: Small[]): Promise<Reply[]> {
  return side.run((p) => {
    for (const {key, type} of batch) {
      const [command, ...args] = WHOLE[type] ?? ['DUMP']
      p.callBuffer(command, key, ...args)
    }
  })
}

/** Whether two whole values hold the same content; undefined when they do, else what differs. */
function compareWhole(type: string, x: unknown, y: unknown, a: Side, b: Side): string | undefined {
  switch (type) {
    case 'string': {
      return (x as Buffer).equals(y as Buffer) ? undefined : 'the values differ'
    }
    case 'list': {
      return firstListDifference(x as Buffer[], y as Buffer[], 0)
    }
    case 'set': {
      const [sx, sy] = [sorted(x as Buffer[]), sorted(y as Buffer[])]
      const i = sx.findIndex((m, j) => !m.equals(sy[j]))
      return i === -1 ? undefined : `member ${displayKey(sx[i])} is not on both`
    }
    case 'hash': {
      return firstPairDifference(pairs(x as Buffer[]), pairs(y as Buffer[]), 'field')
    }
    case 'zset': {
      return firstScoreDifference(x as Buffer[], y as Buffer[])
    }
    default: {
      // stream, module types: DUMP payloads
      if (x === null || y === null) return x === y ? undefined : `missing on ${x === null ? a.where : b.where}`
      return (x as Buffer).equals(y as Buffer)
        ? undefined
        : type === 'stream'
          ? 'DUMP payloads differ'
          : `DUMP payloads differ (a ${type}: compared by DUMP only)`
    }
  }
}

function sorted(members: Buffer[]): Buffer[] {
  return [...members].sort(Buffer.compare)
}

function pairs(flat: Buffer[]): [Buffer, Buffer][] {
  const out: [Buffer, Buffer][] = []
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([flat[i], flat[i + 1]])
  return out.sort((p, q) => Buffer.compare(p[0], q[0]))
}

function firstPairDifference(x: [Buffer, Buffer][], y: [Buffer, Buffer][], noun: string): string | undefined {
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const [p, q] = [x[i], y[i]]
    if (!p || !q || !p[0].equals(q[0])) return `${noun} ${displayKey((p ?? q)[0])} is not on both`
    if (!p[1].equals(q[1])) return `${noun} ${displayKey(p[0])} differs`
  }
  return undefined
}

function firstListDifference(x: Buffer[], y: Buffer[], offset: number): string | undefined {
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    if (!x[i] || !y[i] || !x[i].equals(y[i])) return `element ${offset + i} differs`
  }
  return undefined
}

/** Scores as Redis prints them ("inf", "-inf", "0.1", "1e-300") compared as the doubles they stand for. */
export function parseScore(text: string): number {
  const t = text.toLowerCase()
  if (t === 'inf' || t === '+inf') return Number.POSITIVE_INFINITY
  if (t === '-inf') return Number.NEGATIVE_INFINITY
  return Number(t)
}

/** Two zsets (ZRANGE … WITHSCORES) compared member by member: two scores swapped show as scores, not as members. */
function firstScoreDifference(x: Buffer[], y: Buffer[]): string | undefined {
  const [px, py] = [pairs(x), pairs(y)]
  for (let i = 0; i < Math.max(px.length, py.length); i++) {
    const [p, q] = [px[i], py[i]]
    if (!p || !q || !p[0].equals(q[0])) {
      // In member order, the smaller of the two is the first that only one side has.
      const only = !p ? q : !q ? p : Buffer.compare(p[0], q[0]) < 0 ? p : q
      return `member ${displayKey(only[0])} is not on both`
    }
    if (parseScore(p[1].toString()) !== parseScore(q[1].toString())) return `member ${displayKey(p[0])} has another score`
  }
  return undefined
}

/** Elements per slice for a key: fewer when its elements are big, so a slice stays near sliceBytes. */
function sliceSize(outline: Outline, settings: CompareSettings): number {
  const average = outline.length && outline.memory ? outline.memory / outline.length : 0
  const bySize = average > 0 ? Math.floor(settings.sliceBytes / average) : settings.sliceElements
  return Math.max(Math.min(10, settings.sliceElements), Math.min(settings.sliceElements, bySize))
}

async function compareLarge(a: Side, b: Side, key: Buffer, outline: Outline, settings: CompareSettings): Promise<string | undefined> {
  const {type} = outline
  const n = sliceSize(outline, settings)
  const pay = (elements: number) => settings.rate.take(Math.ceil(elements / ELEMENTS_PER_KEY), settings.signal)
  switch (type) {
    case 'string': {
      return compareStringSlices(a, b, key, outline.length, settings.sliceBytes, pay)
    }
    case 'list': {
      return compareListSlices(a, b, key, outline.length, n, pay)
    }
    case 'hash':
    case 'set':
    case 'zset': {
      const detail = await compareScanned(a, b, key, type, n, pay)
      return detail ?? (await lengthsStillEqual(a, b, key, type))
    }
    case 'stream': {
      return compareStream(a, b, key, n, pay)
    }
    default: {
      const [x, y] = await Promise.all([one(a, (p) => p.callBuffer('DUMP', key)), one(b, (p) => p.callBuffer('DUMP', key))])
      return compareWhole(type, x, y, a, b)
    }
  }
}

/** One command on one side: its value, a WRONGTYPE as 'changed'. */
async function one<T>(side: Side, build: Parameters<Side['run']>[0]): Promise<T> {
  const [reply] = await side.run(build)
  if (isWrongType(reply)) throw new ChangedDuringComparison()
  return valueOf<T>(reply)
}

class ChangedDuringComparison extends Error {}

async function compareStringSlices(a: Side, b: Side, key: Buffer, length: number, sliceBytes: number, pay: (n: number) => Promise<void>) {
  return changedAsDifference(async () => {
    for (let start = 0; start < length; start += sliceBytes) {
      await pay(Math.ceil(sliceBytes / 1024))
      const end = String(Math.min(length, start + sliceBytes) - 1)
      const [x, y] = await Promise.all([a, b].map((side) => one<Buffer>(side, (p) => p.callBuffer('GETRANGE', key, String(start), end))))
      if (!x.equals(y)) return `bytes ${start} to ${end} differ`
    }
    return undefined
  })
}

async function compareListSlices(a: Side, b: Side, key: Buffer, length: number, n: number, pay: (n: number) => Promise<void>) {
  return changedAsDifference(async () => {
    for (let start = 0; start < length; start += n) {
      await pay(n)
      const end = String(start + n - 1)
      const [x, y] = await Promise.all([a, b].map((side) => one<Buffer[]>(side, (p) => p.callBuffer('LRANGE', key, String(start), end))))
      const detail = firstListDifference(x, y, start)
      if (detail) return detail
    }
    return undefined
  })
}

const SCAN: Record<string, {scan: string; ask: string; noun: string; pairs: boolean}> = {
  hash: {scan: 'HSCAN', ask: 'HMGET', noun: 'field', pairs: true},
  set: {scan: 'SSCAN', ask: 'SMISMEMBER', noun: 'member', pairs: false},
  zset: {scan: 'ZSCAN', ask: 'ZMSCORE', noun: 'member', pairs: true},
}

/** Every element of a's key, in scan slices, asked of b's key. */
async function compareScanned(a: Side, b: Side, key: Buffer, type: string, n: number, pay: (n: number) => Promise<void>) {
  const {scan, ask, noun, pairs: withValues} = SCAN[type]
  return changedAsDifference(async () => {
    let cursor = '0'
    do {
      await pay(n)
      const [next, flat] = await one<[Buffer, Buffer[]]>(a, (p) => p.callBuffer(scan, key, cursor, 'COUNT', String(n)))
      cursor = next.toString()
      const step = withValues ? 2 : 1
      const names = flat.filter((_, i) => i % step === 0)
      if (names.length === 0) continue
      const answers =
        type === 'zset'
          ? await one<(string | null)[]>(b, (p) => p.call(ask, key, ...names))
          : await one<(Buffer | number | null)[]>(b, (p) => p.callBuffer(ask, key, ...names))
      for (let i = 0; i < names.length; i++) {
        const answer = answers[i]
        if (answer === null || answer === 0) return `${noun} ${displayKey(names[i])} is missing on ${b.where}`
        if (type === 'hash' && !(answer as Buffer).equals(flat[2 * i + 1])) return `${noun} ${displayKey(names[i])} differs`
        if (type === 'zset' && parseScore(String(answer)) !== parseScore(flat[2 * i + 1].toString()))
          return `${noun} ${displayKey(names[i])} has another score`
      }
    } while (cursor !== '0')
    return undefined
  })
}

/** After a scan: the lengths are still equal (else a side changed meanwhile, or b holds more). */
async function lengthsStillEqual(a: Side, b: Side, key: Buffer, type: string): Promise<string | undefined> {
  return changedAsDifference(async () => {
    const [x, y] = await Promise.all([a, b].map((side) => one<number>(side, (p) => p.call(LENGTH[type], key))))
    return x === y ? undefined : `${describeLength(type, x)} on ${a.where}, ${describeLength(type, y)} on ${b.where}`
  })
}

/**
 * Streams: the entries in ID order, in XRANGE slices on both sides, and what the
 * entries do not show: the last ID, entries added, the deleted-entry mark, each
 * consumer group (last delivered ID, entries read, consumers) and its pending summary.
 */
async function compareStream(a: Side, b: Side, key: Buffer, n: number, pay: (n: number) => Promise<void>) {
  return changedAsDifference(async () => {
    const [infoA, infoB] = await Promise.all([a, b].map((side) => one<unknown[]>(side, (p) => p.call('XINFO', 'STREAM', key))))
    const fields = ['length', 'last-generated-id', 'max-deleted-entry-id', 'entries-added', 'groups']
    const [ix, iy] = [toRecord(infoA), toRecord(infoB)]
    for (const field of fields) {
      if (JSON.stringify(ix[field]) !== JSON.stringify(iy[field])) return `stream ${field} differs`
    }
    const [groupsA, groupsB] = await Promise.all([a, b].map((side) => one<unknown[][]>(side, (p) => p.call('XINFO', 'GROUPS', key))))
    const describe = (groups: unknown[][]) =>
      groups
        .map(toRecord)
        .map((g) => JSON.stringify([g.name, g.consumers, g.pending, g['last-delivered-id'], g['entries-read']]))
        .sort()
    const [gx, gy] = [describe(groupsA), describe(groupsB)]
    if (JSON.stringify(gx) !== JSON.stringify(gy)) return 'consumer groups differ'
    for (const group of groupsA.map((g) => String(toRecord(g).name))) {
      const [px, py] = await Promise.all([a, b].map((side) => one<unknown>(side, (p) => p.call('XPENDING', key, group))))
      if (JSON.stringify(px) !== JSON.stringify(py)) return `pending entries of group ${group} differ`
    }
    let start = '-'
    for (;;) {
      await pay(n)
      const [x, y] = await Promise.all(
        [a, b].map((side) => one<[Buffer, Buffer[]][]>(side, (p) => p.callBuffer('XRANGE', key, start, '+', 'COUNT', String(n)))),
      )
      for (let i = 0; i < Math.max(x.length, y.length); i++) {
        const [ex, ey] = [x[i], y[i]]
        if (!ex || !ey || !ex[0].equals(ey[0])) return `entry ${(ex ?? ey)[0].toString()} is not on both`
        if (firstListDifference(ex[1], ey[1], 0)) return `entry ${ex[0].toString()} differs`
      }
      if (x.length < n) return undefined
      start = `(${x.at(-1)![0].toString()}`
    }
  })
}

function toRecord(flat: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  const list = flat as unknown[]
  for (let i = 0; i + 1 < list.length; i += 2) out[String(list[i])] = list[i + 1]
  return out
}

async function changedAsDifference(compare: () => Promise<string | undefined>): Promise<string | undefined> {
  try {
    return await compare()
  } catch (error) {
    if (error instanceof ChangedDuringComparison) return 'changed during the comparison'
    throw error
  }
}

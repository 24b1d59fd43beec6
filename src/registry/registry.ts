import {hostname, userInfo} from 'node:os'

import {ExitCode, ShardctlError, corruptRegistryError} from '../errors.js'
import type {ScriptedRedis} from '../fleet/connect.js'
import {lockLost} from '../ops/lock.js'
import {type RegistryKeys, type Shard, type ShardProblem, formatWeight, isShardProblem, parseShardFields, shardFields} from './schema.js'

/** Map entries one counting script looks at: a few milliseconds of the registry's time. */
const COUNT_SLICE = 10_000

/** How many history entries the registry keeps. */
export const HISTORY_LIMIT = 10_000

/** Who makes a change, as recorded in events and history: never a credential. */
export interface Actor {
  user: string
  command: string
}

export function currentActor(command: string): Actor {
  let user = 'unknown'
  try {
    user = userInfo().username
  } catch {
    // no passwd entry (containers): keep "unknown"
  }
  return {user: `${user}@${hostname()}`, command}
}

export interface RegistryEvent {
  v: 1
  type: string
  at: string
  by: string
  command: string
  /** The registry it comes from: its database and prefix (absent from events of older versions). */
  db?: number
  prefix?: string
  [detail: string]: unknown
}

export interface RegistrySnapshot {
  shards: Shard[]
  /** Shards whose entries do not match the schema; reported, never fatal for reads. */
  broken: ShardProblem[]
}

type Check =
  | {t: 'get'; k: number; v: string}
  | {t: 'type'; k: number; is: string[]}
  | {t: 'hget'; k: number; f: string; v?: string}
  | {t: 'zmember'; k: number; m: string; in: boolean}
  | {t: 'nodes'; k: number; v: Record<string, string>}
  | {t: 'instance'; k: number; p: string; at: string; ids: string[]}
  | {t: 'absent'; k: number}
type Op =
  | {op: 'hset'; k: number; fields: Record<string, string>}
  | {op: 'hdel'; k: number; fields: string[]}
  | {op: 'del'; k: number}
  | {op: 'zadd'; k: number; m: string; score: string}
  | {op: 'zrem'; k: number; m: string}
  | {op: 'rename'; k: number; to: number}
  | {op: 'merge'; k: number; to: number; limit?: number; nx?: boolean; cas?: number}
  | {op: 'hsetargv'; k: number; from: number; n: number}

/**
 * A change under construction: preconditions and operations over registry keys,
 * applied by one Lua script that also records and publishes the event (SPEC §2).
 */
export class Change {
  readonly keys: string[] = []
  readonly checks: Check[] = []
  readonly ops: Op[] = []
  /** Field names and values passed as script arguments: bytes that JSON cannot carry. */
  readonly argv: (string | Buffer)[] = []

  private index(key: string): number {
    let i = this.keys.indexOf(key)
    if (i === -1) i = this.keys.push(key) - 1
    return i + 2 // KEYS[1] is the history; Lua counts from 1
  }

  /** Checked before anything else: the change applies only while `key` holds `value` (the operator lock). */
  fencedBy(key: string, value: string): this {
    this.checks.unshift({t: 'get', k: this.index(key), v: value})
    return this
  }

  expectType(key: string, ...types: string[]): this {
    this.checks.push({t: 'type', k: this.index(key), is: types})
    return this
  }

  expectField(key: string, field: string, value: string | undefined): this {
    this.checks.push({t: 'hget', k: this.index(key), f: field, v: value})
    return this
  }

  /** The shard hash's node fields (master, slaveN, persistN) are exactly these: none added, changed or gone. */
  expectNodes(key: string, fields: Record<string, string>): this {
    this.checks.push({t: 'nodes', k: this.index(key), v: fields})
    return this
  }

  /** The shards (of zset `list`, hashes under `prefix`) whose master is on `instance` are exactly `ids`. */
  expectShardsOn(list: string, prefix: string, instance: string, ids: string[]): this {
    this.checks.push({t: 'instance', k: this.index(list), p: `${prefix}.`, at: `${instance}/`, ids})
    return this
  }

  expectMember(key: string, member: string, present: boolean): this {
    this.checks.push({t: 'zmember', k: this.index(key), m: member, in: present})
    return this
  }

  hset(key: string, fields: Record<string, string>): this {
    this.ops.push({op: 'hset', k: this.index(key), fields})
    return this
  }

  /** HSET of any bytes: [field, value, field, value, ...], passed beside the JSON. */
  hsetBytes(key: string, pairs: (string | Buffer)[]): this {
    this.ops.push({op: 'hsetargv', k: this.index(key), from: this.argv.length, n: pairs.length / 2})
    this.argv.push(...pairs)
    return this
  }

  hdel(key: string, fields: string[]): this {
    this.ops.push({op: 'hdel', k: this.index(key), fields})
    return this
  }

  del(key: string): this {
    this.ops.push({op: 'del', k: this.index(key)})
    return this
  }

  zadd(key: string, member: string, score: number): this {
    this.ops.push({op: 'zadd', k: this.index(key), m: member, score: formatWeight(score)})
    return this
  }

  /** The key must not exist when the change applies (something appeared meanwhile: conflict). */
  expectAbsent(key: string): this {
    this.checks.push({t: 'absent', k: this.index(key)})
    return this
  }

  /** RENAME a staged key into place: O(1) whatever its size. */
  rename(from: string, to: string): this {
    this.ops.push({op: 'rename', k: this.index(from), to: this.index(to)})
    return this
  }

  /**
   * Move hash `from`'s fields into hash `to`, at most `limit` of them; with `nx`, a field
   * `to` has keeps its value; with `cas` (a hash of the values `to` held when planned), a
   * field is set only while `to` still holds that value. Fields left as they were because
   * they hold another value are counted in what apply returns.
   */
  mergeHash(from: string, to: string, options: {limit?: number; nx?: boolean; cas?: string} = {}): this {
    const {cas, ...rest} = options
    this.ops.push({op: 'merge', k: this.index(from), to: this.index(to), ...rest, ...(cas ? {cas: this.index(cas)} : {})})
    return this
  }

  zrem(key: string, member: string): this {
    this.ops.push({op: 'zrem', k: this.index(key), m: member})
    return this
  }
}

/** A shard's nodes, as the registry holds them: `host:port/db` addresses. */
export interface ShardNodes {
  master: string
  replicas: string[]
  persist: string[]
}

/** A shard's new nodes, applied only while it still has exactly the nodes planned from. */
export interface ShardRepoint {
  id: string
  before: ShardNodes
  after: ShardNodes
}

/** The node fields of a shard hash: master, slave0.., persist0.. */
export function nodeFields(nodes: ShardNodes): Record<string, string> {
  const fields: Record<string, string> = {master: nodes.master}
  nodes.replicas.forEach((r, i) => {
    fields[`slave${i}`] = r
  })
  nodes.persist.forEach((r, i) => {
    fields[`persist${i}`] = r
  })
  return fields
}

const collator = new Intl.Collator('en', {numeric: true})

/** Natural order of shard ids: s2 before s10. One collator: localeCompare with options builds one per call. */
export function compareIds(a: string, b: string): number {
  return collator.compare(a, b)
}

/**
 * Reads and atomic changes of the registry. Knows the schema, not the terminal.
 */
export class Registry {
  /** While set, every change applies only if the operator lock still holds this value. */
  fence?: {key: string; value: string}

  /**
   * The "confirmed on two servers" pattern applied to the registry itself (SPEC §4.12):
   * while set, each change and each journal write must be acknowledged by a replica of
   * the registry (WAIT) before shardctl acts on it, so that a registry failover cannot
   * lose a step shardctl has taken. `auto`: when the registry master has replicas, as
   * found at the first write (a registry behind Sentinel always asks for one).
   */
  confirmation?: {replicas: number | 'auto'; timeoutMs: number}

  constructor(
    readonly client: ScriptedRedis,
    readonly keys: RegistryKeys,
    readonly actor: Actor,
  ) {}

  /** The weights, in id order. A wrong key type is reported, not thrown as a stack. */
  async weights(): Promise<Map<string, number>> {
    const flat = await this.guard(this.keys.list, 'a sorted set', () => this.client.zrange(this.keys.list, '0', '-1', 'WITHSCORES'))
    const weights = new Map<string, number>()
    for (let i = 0; i < flat.length; i += 2) weights.set(flat[i], Number(flat[i + 1]))
    return new Map([...weights].sort(([a], [b]) => compareIds(a, b)))
  }

  /** Every shard, read in one pipeline. */
  async snapshot(): Promise<RegistrySnapshot> {
    const weights = await this.weights()
    const ids = [...weights.keys()]
    const pipeline = this.client.pipeline()
    for (const id of ids) pipeline.hgetall(this.keys.shard(id))
    const replies = ids.length === 0 ? [] : ((await pipeline.exec()) ?? [])
    const shards: Shard[] = []
    const broken: ShardProblem[] = []
    ids.forEach((id, i) => {
      const [error, fields] = replies[i] ?? [new Error('no reply'), null]
      const entry = error
        ? {id, weight: weights.get(id) ?? null, problems: [describeReadError(this.keys.shard(id), error)], raw: {}}
        : parseShardFields(id, weights.get(id)!, fields as Record<string, string>)
      if (isShardProblem(entry)) broken.push(entry)
      else shards.push(entry)
    })
    return {shards, broken}
  }

  /**
   * Every shard, for an operation that must know every database the registry names (a
   * target database is free only when no shard names it): a broken record, whose
   * databases are unknown, refuses it. `action` says what, e.g. "a move".
   */
  async wholeSnapshot(action: string): Promise<Shard[]> {
    const {shards, broken} = await this.snapshot()
    if (broken.length > 0) {
      const [first] = broken
      const others =
        broken.length > 1
          ? ` (and ${broken.length - 1} more: ${broken
              .slice(1, 4)
              .map((b) => b.id)
              .join(', ')}${broken.length > 4 ? ', ...' : ''})`
          : ''
      throw corruptRegistryError(
        `shard ${first.id} in ${this.keys.shard(first.id)} is corrupt: ${first.problems.join('; ')}${others}; ${action} cannot tell which databases it uses`,
        'repair or remove the record first (shards:check names every broken one)',
      )
    }
    return shards
  }

  /** One shard, which must exist and be well-formed. */
  async shard(id: string): Promise<Shard> {
    const [score, fields] = await Promise.all([
      this.guard(this.keys.list, 'a sorted set', () => this.client.zscore(this.keys.list, id)),
      this.guard(this.keys.shard(id), 'a hash', () => this.client.hgetall(this.keys.shard(id))),
    ])
    if (score === null) throw unknownShard(id)
    const entry = parseShardFields(id, Number(score), fields)
    if (isShardProblem(entry)) {
      throw corruptRegistryError(`shard ${id} in ${this.keys.shard(id)} is corrupt: ${entry.problems.join('; ')}`)
    }
    return entry
  }

  /**
   * Hashes assigned per shard, counted on the server one HSCAN slice at a time
   * (count-map-1.lua): only the counts cross the network, and no single script runs
   * for longer than its slice.
   */
  async countAssignments(onProgress?: (scanned: number) => void): Promise<Map<string, number>> {
    await this.guard(this.keys.map, 'a hash', () => this.client.type(this.keys.map).then(expectType(this.keys.map, 'hash')))
    const counts = new Map<string, number>()
    let scanned = 0
    let cursor = '0'
    do {
      const [next, slice, ...pairs] = await this.client.countMap(this.keys.map, cursor, String(COUNT_SLICE))
      cursor = next
      for (let i = 0; i < pairs.length; i += 2) counts.set(pairs[i], (counts.get(pairs[i]) ?? 0) + Number(pairs[i + 1]))
      scanned += Number(slice)
      onProgress?.(scanned)
    } while (cursor !== '0')
    return counts
  }

  /** How many hashes point at one shard: a full scan of the map. */
  async assignmentsOf(id: string): Promise<number> {
    return (await this.countAssignments()).get(id) ?? 0
  }

  /** Apply a change atomically, with its event. Returns the event as published. */
  async apply(change: Change, type: string, details: Record<string, unknown>): Promise<RegistryEvent> {
    return (await this.applyCounting(change, type, details)).event
  }

  /** apply(), and how many fields its merges left as they were because they held another value. */
  async applyCounting(change: Change, type: string, details: Record<string, unknown>): Promise<{event: RegistryEvent; kept: number}> {
    const event = this.event(type, details)
    if (this.fence) change.fencedBy(this.fence.key, this.fence.value)
    let kept: number
    try {
      kept = await this.client.apply(
        change.keys.length + 1,
        this.keys.history,
        ...change.keys,
        JSON.stringify({checks: change.checks, ops: change.ops}),
        this.keys.events,
        JSON.stringify(event),
        HISTORY_LIMIT,
        ...change.argv,
      )
    } catch (error) {
      throw describeChangeError(error as Error)
    }
    await this.confirm(`the change ${type}`)
    return {event, kept: Number(kept)}
  }

  /** Wait until a replica of the registry holds every write made so far on this connection (see `confirmation`). */
  async confirm(what: string): Promise<void> {
    const confirmation = this.confirmation
    if (!confirmation) return
    if (confirmation.replicas === 'auto') {
      const role = (await this.client.call('ROLE')) as [string, number, unknown[]]
      confirmation.replicas = role[0] === 'master' && Array.isArray(role[2]) && role[2].length > 0 ? 1 : 0
    }
    if (confirmation.replicas === 0) return
    // Under the command timeout, so that the answer (how many confirmed) always arrives.
    const waitMs = Math.max(1, confirmation.timeoutMs - Math.min(500, Math.floor(confirmation.timeoutMs / 4)))
    const acked = Number(await this.client.call('WAIT', String(confirmation.replicas), String(waitMs)))
    if (acked >= confirmation.replicas) return
    throw new ShardctlError(`no replica of the registry confirmed ${what} within ${waitMs} ms: a registry failover now could lose it`, {
      code: 'EUNCONFIRMED',
      exitCode: ExitCode.unexpected,
      hint: "the operation stopped before acting on it; check the registry's replicas (INFO replication), then run the same command again to finish or roll it back",
    })
  }

  /**
   * An event: what changed, when, by whom, and in which registry (database and prefix):
   * Redis pub/sub ignores databases, so a listener on another database of the same
   * server hears it too and must be able to tell it is not its registry's.
   */
  event(type: string, details: Record<string, unknown>): RegistryEvent {
    return {
      v: 1,
      type,
      at: new Date().toISOString(),
      by: this.actor.user,
      command: this.actor.command,
      ...details,
      db: this.db,
      prefix: this.keys.prefix,
    }
  }

  /** The registry's database. */
  get db(): number {
    return Number(this.client.options.db ?? 0)
  }

  /** Run a read, turning WRONGTYPE into a clear message that names the key. */
  async guard<T>(key: string, expected: string, read: () => Promise<T>): Promise<T> {
    try {
      return await read()
    } catch (error) {
      if (/WRONGTYPE/.test((error as Error).message)) {
        throw corruptRegistryError(`registry key ${key} has the wrong type: expected ${expected}`)
      }
      throw error
    }
  }

  // ---- the changes ----

  addShards(shards: Shard[], details: Record<string, unknown> = {}): Promise<RegistryEvent> {
    const change = this.additions(new Change().expectType(this.keys.list, 'zset', 'none'), shards)
    return this.apply(change, 'shards.added', {ids: shards.map((s) => s.id), ...details})
  }

  /** New shards into a change: each must not exist yet. */
  private additions(change: Change, shards: Shard[]): Change {
    for (const shard of shards) {
      change
        .expectType(this.keys.shard(shard.id), 'none')
        .expectMember(this.keys.list, shard.id, false)
        .hset(this.keys.shard(shard.id), shardFields(shard))
        .zadd(this.keys.list, shard.id, shard.weight)
    }
    return change
  }

  removeShard(id: string, details: Record<string, unknown> = {}): Promise<RegistryEvent> {
    const change = new Change()
      .expectType(this.keys.list, 'zset')
      .expectMember(this.keys.list, id, true)
      .del(this.keys.shard(id))
      .zrem(this.keys.list, id)
    return this.apply(change, 'shard.removed', {id, ...details})
  }

  /**
   * Move shards to new nodes in one step (promote and split both end here), as a
   * compare-and-set over everything the move rests on: each moved shard still has
   * exactly the nodes planned from (a replica added meanwhile aborts it, rather than
   * being dropped), and each instance involved still holds exactly the shards planned
   * (a shard registered on it meanwhile aborts it, rather than being left behind).
   */
  async repointShards(
    moves: ShardRepoint[],
    instances: {instance: string; ids: string[]}[],
    type: string,
    details: Record<string, unknown>,
    /** More of the same step: checks and operations on other keys (the Sentinel record of the group moved). */
    also?: (change: Change) => void,
  ): Promise<RegistryEvent> {
    return this.apply(this.repointing(moves, instances, also), type, details)
  }

  private repointing(moves: ShardRepoint[], instances: {instance: string; ids: string[]}[], also?: (change: Change) => void): Change {
    const change = new Change().expectType(this.keys.list, 'zset')
    also?.(change)
    for (const {instance, ids} of instances) change.expectShardsOn(this.keys.list, this.keys.prefix, instance, ids)
    for (const move of moves) {
      const key = this.keys.shard(move.id)
      const before = nodeFields(move.before)
      const after = nodeFields(move.after)
      change.expectNodes(key, before)
      const gone = Object.keys(before).filter((f) => !(f in after))
      if (gone.length > 0) change.hdel(key, gone)
      change.hset(key, after)
    }
    return change
  }

  /**
   * Route restored shards to their new copy in one step (shards:restore --route): those
   * the registry still has are repointed as repointShards does (only if they still have
   * exactly the nodes planned from, and the target instance still holds exactly the shards
   * planned); those it lost are added back, with their weight and fields of the backup.
   */
  routeRestored(
    moves: ShardRepoint[],
    added: Shard[],
    instances: {instance: string; ids: string[]}[],
    details: Record<string, unknown>,
  ): Promise<RegistryEvent> {
    return this.apply(this.additions(this.repointing(moves, instances), added), 'shards.restored', details)
  }

  setWeights(weights: Map<string, number>, details: Record<string, unknown> = {}): Promise<RegistryEvent> {
    const change = new Change().expectType(this.keys.list, 'zset')
    for (const [id, weight] of weights) change.expectMember(this.keys.list, id, true).zadd(this.keys.list, id, weight)
    return this.apply(change, 'weights.changed', {weights: Object.fromEntries(weights), ...details})
  }
}

export function unknownShard(id: string): ShardctlError {
  return new ShardctlError(`unknown shard "${id}"`, {
    code: 'ENOSHARD',
    exitCode: ExitCode.usage,
    hint: 'see `shardctl shards:list` for the shards in the registry',
  })
}

function expectType(key: string, ...types: string[]) {
  return (actual: string) => {
    if (actual !== 'none' && !types.includes(actual)) {
      throw corruptRegistryError(`registry key ${key} has the wrong type: a ${actual}, expected a ${types.join(' or ')}`)
    }
  }
}

function describeReadError(key: string, error: Error): string {
  return /WRONGTYPE/.test(error.message) ? `${key} is not a hash` : `${key} could not be read: ${error.message}`
}

function describeChangeError(error: Error): Error {
  const message = error.message.replace(/^(ReplyError: )?/, '')
  if (message.startsWith('LOCKLOST')) return lockLost()
  const script = /^(CONFLICT|WRONGTYPE) (.*?)(?: script: .*)?$/s.exec(message)
  if (script?.[1] === 'WRONGTYPE') return corruptRegistryError(`registry key ${script[2]}`)
  if (script?.[1] === 'CONFLICT') {
    return new ShardctlError(`the registry changed underneath: ${script[2]}`, {
      code: 'ECONFLICT',
      exitCode: ExitCode.unexpected,
      hint: 'nothing was changed; look at `shardctl shards:list` and run the command again',
    })
  }
  if (/NOPERM/.test(message)) {
    return new ShardctlError(`the registry user may not change the registry: ${message.split('\n')[0]}`, {
      code: 'ENOPERM',
      hint: 'use a registry user with write permissions (see README, Security)',
    })
  }
  return error
}

/** Whether an event comes from the registry at `db` and `prefix`; one that does not say (older versions) is taken as it. */
export function isEventOf(event: {db?: unknown; prefix?: unknown}, db: number, prefix: string): boolean {
  return (event.db === undefined || event.db === db) && (event.prefix === undefined || event.prefix === prefix)
}

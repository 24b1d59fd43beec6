import {usageError} from '../errors.js'
import {canonicalDatabase, formatAddress, parseAddress, type ShardAddress} from './address.js'

/**
 * The wire contract of SPEC §2, in one place.
 *
 *   P.map    hash  shard hash -> shard id
 *   P.<id>   hash  master, slave0.., persist0.. -> host:port/db (other fields kept untouched)
 *   P.list   zset  shard id -> weight
 *
 * Keys shardctl adds for itself start with "_" after the prefix: a shard id must start
 * with a letter or digit, so no id can ever take them.
 */
export const DEFAULT_PREFIX = 'shards'

const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/
const RESERVED_IDS = new Set(['map', 'list'])

export interface RegistryKeys {
  prefix: string
  map: string
  list: string
  /** PUBLISH channel for change events. */
  events: string
  lock: string
  journal: string
  history: string
  /** hash: host:port/db of a database holding writes that landed after its shard moved -> JSON of where they belong. */
  strays: string
  /** hash: the Sentinels the fleet is handed to ("sentinels"), their settings, and each replication group ("group:<name>"). */
  sentinel: string
  shard(id: string): string
}

export function registryKeys(prefix: string = DEFAULT_PREFIX): RegistryKeys {
  validatePrefix(prefix)
  return {
    prefix,
    map: `${prefix}.map`,
    list: `${prefix}.list`,
    events: `${prefix}._events`,
    lock: `${prefix}._lock`,
    journal: `${prefix}._journal`,
    history: `${prefix}._history`,
    strays: `${prefix}._strays`,
    sentinel: `${prefix}._sentinel`,
    shard: (id: string) => `${prefix}.${id}`,
  }
}

export function validatePrefix(prefix: string): string {
  if (!/^[A-Za-z0-9_:{}-][A-Za-z0-9_.:{}-]{0,127}$/.test(prefix)) {
    throw usageError(`invalid prefix "${prefix}"`, 'a prefix is 1-128 characters of letters, digits and _ - . : { }')
  }
  return prefix
}

export function isValidShardId(id: string): boolean {
  return ID_PATTERN.test(id) && !RESERVED_IDS.has(id)
}

export function validateShardId(id: string): string {
  if (RESERVED_IDS.has(id)) throw usageError(`shard id "${id}" is reserved by the registry`, 'choose another id')
  if (!ID_PATTERN.test(id)) {
    throw usageError(`invalid shard id "${id}"`, 'an id is 1-64 characters of letters, digits, _ and -, starting with a letter or digit')
  }
  return id
}

/** The smallest weight above 0 that is stored exactly: the smallest normal double. */
export const MIN_WEIGHT = 2.2250738585072014e-308

/** A weight as given on the command line or in a document: a finite number >= 0, stored as given. */
export function parseWeight(input: string | number): number {
  const text = String(input).trim()
  if (/^-\s*(\d|\.\d)/.test(text))
    throw usageError(`invalid weight "${text}": negative`, 'a weight is a finite number >= 0; 0 takes a shard out of new assignments')
  // Number('') is 0 and Number('0x10') is 16: accept only plain decimal notation.
  if (!/^[+]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(text)) {
    throw usageError(`invalid weight "${text}"`, 'a weight is a finite number >= 0, e.g. 1 or 0.5')
  }
  const weight = Number(text)
  if (!Number.isFinite(weight)) throw usageError(`invalid weight "${text}": not finite`, 'a weight is a finite number >= 0')
  // Below the smallest normal double a weight loses its digits, down to 0: a drain nobody asked for.
  if (weight < MIN_WEIGHT && /[1-9]/.test(text.replace(/[eE].*$/, ''))) {
    throw usageError(
      `invalid weight "${text}": too small to be stored${weight === 0 ? ' (it would be 0, a drain)' : ' exactly'}`,
      `a weight is 0 or at least ${MIN_WEIGHT}; only the ratios between weights matter: raise the others instead`,
    )
  }
  return weight
}

/** How a weight is written into the zset: shortest exact decimal form. */
export function formatWeight(weight: number): string {
  return String(weight)
}

export type ReplicaKind = 'slave' | 'persist'

/** One shard, as the registry describes it. */
export interface Shard {
  id: string
  weight: number
  master: ShardAddress
  /** Read replicas, in slave0, slave1, ... order. */
  replicas: ShardAddress[]
  /** Persistence-only replicas, persist0, ... */
  persist: ShardAddress[]
  /** Any field shardctl does not own, kept untouched on every change. */
  extra: Record<string, string>
}

/** A shard whose registry entry could not be read as the schema says. */
export interface ShardProblem {
  id: string
  weight: number | null
  problems: string[]
  /** The raw fields, so a listing can still show what is there. */
  raw: Record<string, string>
}

const INDEXED_FIELD = /^(slave|persist)(\d+)$/

/** A field of the schema in a shard hash: master, slaveN, persistN (every other field is kept untouched). */
export function isNodeField(field: string): boolean {
  return field === 'master' || INDEXED_FIELD.test(field)
}

/**
 * Read a shard hash. Returns the problems instead of throwing, so one corrupt
 * shard never hides the others from `shards:list`.
 */
export function parseShardFields(id: string, weight: number, fields: Record<string, string>): Shard | ShardProblem {
  const problems: string[] = []
  const parsed = (field: string): ShardAddress | undefined => {
    try {
      const address = parseAddress(fields[field])
      if (address.username !== undefined || address.password !== undefined) problems.push(`${field} holds credentials`)
      return {host: address.host, port: address.port, db: address.db}
    } catch {
      problems.push(`${field} is not an address: "${fields[field]}"`)
      return undefined
    }
  }

  if (Object.keys(fields).length === 0) problems.push(`no hash at the shard's key`)
  else if (fields.master === undefined) problems.push('no master field')
  const master = fields.master === undefined ? undefined : parsed('master')

  const indexed: Record<ReplicaKind, ShardAddress[]> = {slave: [], persist: []}
  const extra: Record<string, string> = {}
  for (const kind of ['slave', 'persist'] as const) {
    const numbers = Object.keys(fields)
      .map((f) => INDEXED_FIELD.exec(f))
      .filter((m): m is RegExpExecArray => m !== null && m[1] === kind)
      .map((m) => Number(m[2]))
      .sort((a, b) => a - b)
    numbers.forEach((n, i) => {
      if (n !== i) problems.push(`${kind} fields are not numbered from 0 without gaps (found ${kind}${n})`)
    })
    for (const n of numbers) {
      const address = parsed(`${kind}${n}`)
      if (address) indexed[kind].push(address)
    }
  }
  for (const [field, value] of Object.entries(fields)) {
    if (!isNodeField(field)) extra[field] = value
  }
  if (!Number.isFinite(weight) || weight < 0) problems.push(`weight ${weight} is not a finite number >= 0`)

  const unique = [...new Set(problems)]
  if (unique.length > 0 || master === undefined) {
    return {id, weight: Number.isFinite(weight) ? weight : null, problems: unique, raw: fields}
  }
  return {id, weight, master, replicas: indexed.slave, persist: indexed.persist, extra}
}

export function isShardProblem(entry: Shard | ShardProblem): entry is ShardProblem {
  return 'problems' in entry
}

/** The hash fields shardctl writes for a shard: master, then slaveN and persistN without gaps, then the rest. */
export function shardFields(shard: Pick<Shard, 'master' | 'replicas' | 'persist' | 'extra'>): Record<string, string> {
  const fields: Record<string, string> = {...shard.extra, master: formatAddress(shard.master)}
  shard.replicas.forEach((r, i) => {
    fields[`slave${i}`] = formatAddress(r)
  })
  shard.persist.forEach((r, i) => {
    fields[`persist${i}`] = formatAddress(r)
  })
  return fields
}

/**
 * Databases that are the master of more than one shard (SPEC §4.9: a database holds
 * one shard). Two shards on one database share their keys: moving or dropping one
 * takes the other's data with it. Databases are compared by what they are: the
 * canonical address, or `identify` (the server's run_id and db, where it answers).
 */
export function sharedDatabases(
  shards: {id: string; master: ShardAddress}[],
  identify: (address: ShardAddress) => string = canonicalDatabase,
): {database: string; ids: string[]}[] {
  const byDb = new Map<string, {database: string; ids: string[]}>()
  for (const shard of shards) {
    const key = identify(shard.master)
    const entry = byDb.get(key) ?? {database: formatAddress(shard.master), ids: []}
    entry.ids.push(shard.id)
    byDb.set(key, entry)
  }
  return [...byDb.values()].filter((e) => e.ids.length > 1)
}

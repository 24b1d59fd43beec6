import {once} from 'node:events'
import type {Writable} from 'node:stream'

import {ExitCode, ShardctlError, usageError} from '../errors.js'
import {formatAddress, parseAddress} from './address.js'
import {Change, type Registry, type RegistryEvent} from './registry.js'
import {pipelined} from './assign.js'
import {DocumentSyntaxError, readMap, readMembers} from './document-reader.js'
import {type Shard, isValidShardId, shardFields, sharedDatabases} from './schema.js'

/**
 * The registry as a versioned JSON document: `shards:export` writes it, `shards:import`
 * checks it whole before anything changes, shows the difference and applies it in
 * one atomic step. Export then import into an empty registry reproduces it exactly.
 */
export const DOCUMENT_FORMAT = 'shardctl-registry'
export const DOCUMENT_VERSION = 1

export interface DocumentShard {
  id: string
  weight: number
  master: string
  replicas: string[]
  persist: string[]
  /** Fields shardctl does not own, kept as they are. */
  extra: Record<string, string>
}

export interface RegistryDocument {
  format: typeof DOCUMENT_FORMAT
  version: typeof DOCUMENT_VERSION
  prefix: string
  exportedAt: string
  shards: DocumentShard[]
  /** Shard hash -> shard id, with --with-map. */
  map?: Record<string, string>
}

export function toDocumentShard(shard: Shard): DocumentShard {
  return {
    id: shard.id,
    weight: shard.weight,
    master: formatAddress(shard.master),
    replicas: shard.replicas.map(formatAddress),
    persist: shard.persist.map(formatAddress),
    extra: shard.extra,
  }
}

async function write(out: Writable, chunk: string): Promise<void> {
  if (!out.write(chunk)) await once(out, 'drain')
}

/** Write the document; the map is streamed with HSCAN, so millions of entries take constant memory. */
export async function writeDocument(
  registry: Registry,
  out: Writable,
  options: {withMap: boolean},
): Promise<{shards: number; mapEntries: number}> {
  const {shards, broken} = await registry.snapshot()
  if (broken.length > 0) {
    throw new ShardctlError(`shards ${broken.map((b) => b.id).join(', ')} are corrupt and cannot be exported`, {
      code: 'ECORRUPT',
      hint: 'see shards:list for what is wrong with them, and repair them first',
    })
  }
  const head = {format: DOCUMENT_FORMAT, version: DOCUMENT_VERSION, prefix: registry.keys.prefix, exportedAt: new Date().toISOString()}
  const body = JSON.stringify({...head, shards: shards.map(toDocumentShard)}, null, 2)
  let mapEntries = 0
  if (!options.withMap) {
    await write(out, `${body}\n`)
    return {shards: shards.length, mapEntries}
  }
  await write(out, `${body.slice(0, -2)},\n  "map": {`)
  await registry.guard(registry.keys.map, 'a hash', () => registry.client.hlen(registry.keys.map))
  let cursor = '0'
  do {
    const [next, flat] = await registry.client.hscan(registry.keys.map, cursor, 'COUNT', '2000')
    cursor = next
    let chunk = ''
    for (let i = 0; i < flat.length; i += 2) {
      chunk += `${mapEntries === 0 ? '' : ','}\n    ${JSON.stringify(flat[i])}: ${JSON.stringify(flat[i + 1])}`
      mapEntries++
    }
    if (chunk) await write(out, chunk)
  } while (cursor !== '0')
  await write(out, `${mapEntries === 0 ? '' : '\n  '}}\n}\n`)
  return {shards: shards.length, mapEntries}
}

function invalid(message: string): ShardctlError {
  return new ShardctlError(`not a valid registry document: ${message}`, {
    code: 'EDOCUMENT',
    exitCode: ExitCode.usage,
    hint: 'import takes what shards:export writes; nothing was changed',
  })
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

/** Check a whole document before anything changes: version, shape and content. */
export function parseDocument(text: string): RegistryDocument {
  let data: unknown
  try {
    data = JSON.parse(text)
  } catch (error) {
    throw invalid(`not JSON (${(error as Error).message})`)
  }
  return validateDocument(data)
}

/**
 * A document from a file, checked whole before anything changes, in constant memory:
 * its members are read and checked in a first pass, and the map (any size) is checked
 * entry by entry by mapOf as it streams, a batch at a time.
 */
export async function readDocumentFile(file: string): Promise<{doc: RegistryDocument; hasMap: boolean}> {
  let pass
  try {
    pass = await readMembers(file)
  } catch (error) {
    if (error instanceof DocumentSyntaxError) throw invalid(`not JSON (${error.message})`)
    throw error
  }
  const doc = validateDocument({...pass.members, map: undefined})
  return {doc, hasMap: pass.hasMap}
}

/** The map of a document file, a flat batch at a time (hash, id, ...), each entry checked against the document's shards. */
export async function* mapOf(file: string, doc: RegistryDocument): AsyncGenerator<string[]> {
  const ids = new Set(doc.shards.map((s) => s.id))
  try {
    for await (const batch of readMap(file, MAP_BATCH)) {
      for (let i = 0; i < batch.length; i += 2) {
        if (!ids.has(batch[i + 1]))
          throw invalid(`map entry ${JSON.stringify(batch[i])} points at ${JSON.stringify(batch[i + 1])}, not a shard of the document`)
      }
      yield batch
    }
  } catch (error) {
    if (error instanceof DocumentSyntaxError) throw invalid(`not JSON (${error.message})`)
    throw error
  }
}

/**
 * Map entries per command (HMGET, HSET of the staging hash), and commands in flight. Redis
 * runs every command a connection has sent back to back when they arrive together, so
 * the registry's longest pause for other clients is about their product: 4 × 2,000
 * entries, ~15 ms (8 × 5,000 measured 78–85 ms). Four in flight still keep it busy.
 */
const MAP_BATCH = 2000
const MAP_IN_FLIGHT = 4

function validateDocument(data: unknown): RegistryDocument {
  if (!isObject(data)) throw invalid('not an object')
  if (data.format !== DOCUMENT_FORMAT) throw invalid(`format is ${JSON.stringify(data.format)}, expected "${DOCUMENT_FORMAT}"`)
  if (data.version !== DOCUMENT_VERSION)
    throw invalid(`version ${JSON.stringify(data.version)} is not supported (this shardctl reads version ${DOCUMENT_VERSION})`)
  if (!Array.isArray(data.shards)) throw invalid('"shards" is not a list')
  const ids = new Set<string>()
  const shards = data.shards.map((raw, i): DocumentShard => {
    const where = `shards[${i}]`
    if (!isObject(raw)) throw invalid(`${where} is not an object`)
    const id = raw.id
    if (typeof id !== 'string' || !isValidShardId(id)) throw invalid(`${where}.id ${JSON.stringify(id)} is not a valid shard id`)
    if (ids.has(id)) throw invalid(`shard ${id} appears twice`)
    ids.add(id)
    if (typeof raw.weight !== 'number' || !Number.isFinite(raw.weight) || raw.weight < 0)
      throw invalid(`shard ${id}: weight ${JSON.stringify(raw.weight)} is not a finite number >= 0`)
    const address = (value: unknown, field: string): string => {
      if (typeof value !== 'string') throw invalid(`shard ${id}: ${field} is not a string`)
      try {
        const parsed = parseAddress(value)
        if (parsed.password !== undefined || parsed.username !== undefined) throw invalid(`shard ${id}: ${field} holds credentials`)
        return formatAddress(parsed)
      } catch (error) {
        if (error instanceof ShardctlError && error.code === 'EDOCUMENT') throw error
        throw invalid(`shard ${id}: ${field} ${JSON.stringify(value)} is not an address`)
      }
    }
    const list = (value: unknown, field: string): string[] => {
      if (value === undefined) return []
      if (!Array.isArray(value)) throw invalid(`shard ${id}: ${field} is not a list`)
      return value.map((v, j) => address(v, `${field}[${j}]`))
    }
    const extra = raw.extra ?? {}
    if (!isObject(extra) || Object.values(extra).some((v) => typeof v !== 'string'))
      throw invalid(`shard ${id}: extra is not an object of strings`)
    if (Object.keys(extra).some((f) => f === 'master' || /^(slave|persist)\d+$/.test(f)))
      throw invalid(`shard ${id}: extra holds a field of the schema`)
    return {
      id,
      weight: raw.weight,
      master: address(raw.master, 'master'),
      replicas: list(raw.replicas, 'replicas'),
      persist: list(raw.persist, 'persist'),
      extra: extra as Record<string, string>,
    }
  })
  const [shared] = sharedDatabases(shards.map((s) => ({id: s.id, master: parseAddress(s.master)})))
  if (shared)
    throw invalid(`shards ${shared.ids.join(' and ')} have the same master database ${shared.database}: a database holds one shard`)
  let map: Record<string, string> | undefined
  if (data.map !== undefined) {
    if (!isObject(data.map)) throw invalid('"map" is not an object')
    for (const [hash, id] of Object.entries(data.map)) {
      if (typeof id !== 'string' || !ids.has(id))
        throw invalid(`map entry ${JSON.stringify(hash)} points at ${JSON.stringify(id)}, not a shard of the document`)
    }
    map = data.map as Record<string, string>
  }
  return {
    format: DOCUMENT_FORMAT,
    version: DOCUMENT_VERSION,
    prefix: String(data.prefix ?? ''),
    exportedAt: String(data.exportedAt ?? ''),
    shards,
    map,
  }
}

export interface ImportDiff {
  added: DocumentShard[]
  changed: {id: string; before: DocumentShard; after: DocumentShard}[]
  removed: string[]
  unchanged: number
  /** Map entries the document sets that are absent or different now. */
  mapSet: number
  mapChanged: number
}

/** Where an import's map changes wait until they are applied: a hash of this run's own, not part of the wire contract. */
export function stagingKey(registry: Registry, token: string): string {
  return `${registry.keys.prefix}._staging:${token}`
}

const same = (a: DocumentShard, b: DocumentShard) => JSON.stringify(a) === JSON.stringify(b)

/**
 * The difference between the document and the registry. The map is compared a batch
 * at a time (HMGET), never loaded; with `stage`, the entries that differ are written
 * to a staging hash as they are found, ready for applyDocument.
 */
export async function diffDocument(
  registry: Registry,
  doc: RegistryDocument,
  options: {prune: boolean; map?: AsyncIterable<string[]>; stage?: string},
): Promise<{diff: ImportDiff; staged: number; mapWasEmpty: boolean}> {
  const {shards, broken} = await registry.snapshot()
  if (broken.length > 0)
    throw new ShardctlError(`shards ${broken.map((b) => b.id).join(', ')} are corrupt`, {
      code: 'ECORRUPT',
      hint: 'repair them first (see shards:list)',
    })
  const current = new Map(shards.map((s) => [s.id, toDocumentShard(s)]))
  const wanted = new Set(doc.shards.map((s) => s.id))
  const diff: ImportDiff = {added: [], changed: [], removed: [], unchanged: 0, mapSet: 0, mapChanged: 0}
  for (const shard of doc.shards) {
    const now = current.get(shard.id)
    if (!now) diff.added.push(shard)
    else if (same(now, shard)) diff.unchanged++
    else diff.changed.push({id: shard.id, before: now, after: shard})
  }
  if (options.prune) diff.removed = [...current.keys()].filter((id) => !wanted.has(id))
  // What the registry holds once imported: the document's shards, and the ones it keeps.
  const kept = shards.filter((s) => !wanted.has(s.id) && !diff.removed.includes(s.id))
  const [shared] = sharedDatabases([...kept, ...doc.shards.map((s) => ({id: s.id, master: parseAddress(s.master)}))])
  if (shared) {
    throw usageError(
      `importing would leave shards ${shared.ids.join(' and ')} on the same master database ${shared.database}`,
      "a database holds one shard: fix the document, or import with --prune if the registry's shard is to go",
    )
  }

  const mapSize = await registry.guard(registry.keys.map, 'a hash', () => registry.client.hlen(registry.keys.map))
  let staged = 0
  let repointed = 0
  // Entries new to the map and re-pointed ones are staged apart: the new ones are
  // applied set-if-absent, so that an application assigning the same hash meanwhile
  // keeps its assignment (one is never changed silently).
  const [stageSet, stageRepoint] = options.stage ? stagedParts(options.stage) : []
  if (options.stage) await registry.client.unlink(stageSet!, stageRepoint!)
  // Batches compared and staged with several in flight: the round trips overlap.
  const compare = async (batch: string[]) => {
    // An empty map has nothing to compare with: every entry is new, the batch as it is.
    if (mapSize === 0) {
      diff.mapSet += batch.length / 2
      if (options.stage) await registry.client.hset(stageSet!, ...batch)
      staged += batch.length / 2
      return
    }
    const hashes: string[] = []
    for (let i = 0; i < batch.length; i += 2) hashes.push(batch[i])
    const now = await registry.client.hmget(registry.keys.map, ...hashes)
    const fresh: string[] = []
    const moved: string[] = []
    for (let j = 0; j < now.length; j++) {
      const hash = batch[2 * j]
      const id = batch[2 * j + 1]
      const before = now[j]
      if (before === id) continue
      if (before === null) {
        diff.mapSet++
        fresh.push(hash, id)
      } else {
        diff.mapChanged++
        repointed++
        moved.push(hash, id)
      }
    }
    await Promise.all([
      options.stage && fresh.length > 0 ? registry.client.hset(stageSet!, ...fresh) : undefined,
      options.stage && moved.length > 0 ? registry.client.hset(stageRepoint!, ...moved) : undefined,
    ])
    staged += (fresh.length + moved.length) / 2
  }
  for await (const done of pipelined(options.map ?? [], MAP_IN_FLIGHT, compare)) void done
  if (diff.removed.length > 0) {
    const counts = await registry.countAssignments()
    const used = diff.removed.filter((id) => (counts.get(id) ?? 0) > 0)
    if (used.length > 0 && repointed === 0) {
      throw usageError(
        `--prune would remove shards ${used.join(', ')} while hashes point at them`,
        'drain and empty them first, or import without --prune',
      )
    }
  }
  return {diff, staged, mapWasEmpty: mapSize === 0}
}

/** The two staging hashes of an import: entries new to the map, and re-pointed ones. */
export function stagedParts(stage: string): [string, string] {
  return [`${stage}:set`, `${stage}:repoint`]
}

/** A merge of staged map entries up to this size runs as one atomic step (a few ms); beyond, in slices of it. */
export const ATOMIC_MAP_ENTRIES = 20_000

/**
 * Apply the difference. Shards are added and changed in one atomic step with the map
 * when it can be: onto an empty map, the staged map is renamed into place (O(1),
 * whatever its size); a change of up to ATOMIC_MAP_ENTRIES entries is merged in the
 * same step. A larger change is merged in slices of that size after the shards are in
 * place, each slice atomic and every step routing each hash to an existing shard, the
 * removals last: applications see each slice as it lands (the result says how many).
 */
export async function applyDocument(
  registry: Registry,
  diff: ImportDiff,
  stage: {key: string; entries: number; mapWasEmpty: boolean},
): Promise<{event: RegistryEvent; steps: number}> {
  const change = new Change().expectType(registry.keys.list, 'zset', 'none').expectType(registry.keys.map, 'hash', 'none')
  const put = (s: DocumentShard) => {
    const fields = shardFields({
      master: parseAddress(s.master),
      replicas: s.replicas.map(parseAddress),
      persist: s.persist.map(parseAddress),
      extra: s.extra,
    })
    change.del(registry.keys.shard(s.id)).hset(registry.keys.shard(s.id), fields).zadd(registry.keys.list, s.id, s.weight)
  }
  for (const s of diff.added) change.expectMember(registry.keys.list, s.id, false)
  for (const s of diff.added) put(s)
  for (const c of diff.changed) put(c.after)
  const details = {
    added: diff.added.map((s) => s.id),
    changed: diff.changed.map((c) => c.id),
    removed: diff.removed,
    mapEntries: stage.entries,
  }
  const removeAll = (target: Change) => {
    for (const id of diff.removed) target.del(registry.keys.shard(id)).zrem(registry.keys.list, id)
  }
  const [fresh, moved] = stagedParts(stage.key)
  const merge = (target: Change, limit?: number) =>
    target.mergeHash(fresh, registry.keys.map, {limit, nx: true}).mergeHash(moved, registry.keys.map, {limit})
  // Onto a map that is still empty the staged one is renamed into place, whatever its
  // size. If an application assigned a hash meanwhile, the staged entries are merged
  // instead, set-if-absent: in one step when small, else in slices like any large change.
  const renamed = stage.entries > 0 && stage.mapWasEmpty && (await registry.client.exists(registry.keys.map)) === 0
  if (stage.entries === 0 || renamed || stage.entries <= ATOMIC_MAP_ENTRIES) {
    if (renamed) change.expectAbsent(registry.keys.map).rename(fresh, registry.keys.map)
    else if (stage.entries > 0) merge(change)
    removeAll(change)
    const event = await registry.apply(change, 'registry.imported', details)
    await registry.client.unlink(fresh, moved)
    return {event, steps: 1}
  }
  // Large: shards first, the map in atomic slices, removals with the last step.
  await registry.apply(change, 'registry.import-started', {...details, steps: 'sliced'})
  let steps = 1
  for (;;) {
    const left = (await registry.client.hlen(fresh)) + (await registry.client.hlen(moved))
    if (left === 0) break
    await registry.apply(merge(new Change(), ATOMIC_MAP_ENTRIES / 2), 'registry.import-slice', {left})
    steps++
  }
  const last = new Change()
  removeAll(last)
  const event = await registry.apply(last, 'registry.imported', details)
  await registry.client.unlink(fresh, moved)
  return {event, steps: steps + 1}
}

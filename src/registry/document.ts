import type {Writable} from 'node:stream'

import {ExitCode, ShardctlError, usageError} from '../errors.js'
import {failpoint} from '../ops/failpoint.js'
import {canonicalInstance, formatAddress, parseAddress} from './address.js'
import {pipelined} from './assign.js'
import {canonicalForm, encodeBytes, wire} from './bytes.js'
import {DocumentSyntaxError, readMap, readMembers} from './document-reader.js'
import {Change, type Registry, type RegistryEvent, nodeFields} from './registry.js'
import {MIN_WEIGHT, isNodeField, isShardProblem, isValidShardId, parseShardFields, sharedDatabases} from './schema.js'

/**
 * The registry as a versioned JSON document: `shards:export` writes it, `shards:import`
 * checks it whole before anything changes, shows the difference and applies it.
 * Export then import into an empty registry reproduces it exactly, bytes included.
 *
 * Version 2 (written now; version 1 is still read):
 *
 *   {"format": "shardctl-registry", "version": 2, "prefix": "...", "exportedAt": "...",
 *    "map": {"<hash>": "<shard id>", ...},            with --with-map, written first
 *    "shards": [{id, weight, master, replicas, persist, extra}, ...],
 *    "orphans": {"<id>": <entries>, ...}}              ids the map points at that are no shard
 *
 * Map keys and values and extra fields are byte strings (see bytes.ts): text as it is,
 * other bytes as "b64:<base64>". The shards are read after the map, so every map entry
 * points at a shard of the document or at a declared orphan.
 */
export const DOCUMENT_FORMAT = 'shardctl-registry'
/** The version written; every version from 1 to it is read. */
export const DOCUMENT_VERSION = 2

export interface DocumentShard {
  id: string
  weight: number
  master: string
  replicas: string[]
  persist: string[]
  /** Fields shardctl does not own, kept as they are: byte strings in their written form, in field order. */
  extra: Record<string, string>
}

export interface RegistryDocument {
  format: typeof DOCUMENT_FORMAT
  version: number
  prefix: string
  exportedAt: string
  shards: DocumentShard[]
  /** What the map points at besides the shards (a shard removed with --force): written form -> entries. */
  orphans: Record<string, number>
  /** Shard hash -> shard id, written forms, when parsed whole (parseDocument). */
  map?: Record<string, string>
}

/** A chunk out, waiting while the stream is full; a stream that failed (a missing directory, a full disk) rejects, never waits. */
async function write(out: Writable, chunk: string): Promise<void> {
  if (out.errored) throw out.errored
  if (out.write(chunk)) return
  await new Promise<void>((resolve, reject) => {
    const settle = (error?: Error) => {
      out.off('drain', onDrain)
      out.off('close', onClose)
      if (error) reject(error)
      else resolve()
    }
    const onDrain = () => settle()
    const onClose = () => settle(out.errored ?? new Error('the output closed before the document was written'))
    out.on('drain', onDrain)
    out.on('close', onClose)
    if (out.destroyed) onClose()
  })
}

/** An object with its keys in code-unit order: two objects of the same entries compare equal as JSON. */
function sortedObject(entries: [string, string][]): Record<string, string> {
  return Object.fromEntries(entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
}

/**
 * Every shard as a document holds it, read in one round trip; the extra fields as bytes
 * (a field or value need not be text). Shards that do not match the schema are named
 * apart (broken), not held.
 */
export async function readDocumentShards(registry: Registry): Promise<{shards: DocumentShard[]; broken: string[]}> {
  const weights = await registry.weights()
  const ids = [...weights.keys()]
  const pipeline = registry.client.pipeline()
  for (const id of ids) pipeline.callBuffer('HGETALL', registry.keys.shard(id))
  const replies = ids.length === 0 ? [] : ((await pipeline.exec()) ?? [])
  const broken: string[] = []
  const shards: DocumentShard[] = []
  ids.forEach((id, i) => {
    const [error, reply] = replies[i] ?? [new Error('no reply'), null]
    if (error) {
      broken.push(id)
      return
    }
    const flat = reply as Buffer[]
    const fields: Record<string, string> = {}
    const extra: [string, string][] = []
    for (let j = 0; j < flat.length; j += 2) {
      const field = flat[j].toString('utf8')
      if (isNodeField(field)) fields[field] = flat[j + 1].toString('utf8')
      else extra.push([encodeBytes(flat[j]), encodeBytes(flat[j + 1])])
    }
    const shard = parseShardFields(id, weights.get(id)!, fields)
    if (isShardProblem(shard)) {
      broken.push(id)
      return
    }
    shards.push({
      id,
      weight: shard.weight,
      master: formatAddress(shard.master),
      replicas: shard.replicas.map(formatAddress),
      persist: shard.persist.map(formatAddress),
      extra: sortedObject(extra),
    })
  })
  return {shards, broken}
}

/** Every shard as a document holds it (see readDocumentShards); a shard that does not match the schema fails it. */
export async function documentShards(registry: Registry): Promise<DocumentShard[]> {
  const {shards, broken} = await readDocumentShards(registry)
  if (broken.length > 0) {
    throw new ShardctlError(`shards ${broken.join(', ')} are corrupt`, {
      code: 'ECORRUPT',
      hint: 'see shards:list for what is wrong with them, and repair them first',
    })
  }
  return shards
}

/** The document of these shards as of now, without the map (a backup's registry.json). */
export function shardsDocument(prefix: string, shards: DocumentShard[]): RegistryDocument {
  return {format: DOCUMENT_FORMAT, version: DOCUMENT_VERSION, prefix, exportedAt: new Date().toISOString(), shards, orphans: {}}
}

export interface ExportResult {
  shards: number
  mapEntries: number
  /** Ids the map points at that are not shards: written form -> entries. */
  orphans: Record<string, number>
  /** Shards that changed while the map was read: the document holds them as they were at the end. */
  changedMeanwhile?: {added: string[]; removed: string[]; changed: string[]}
}

/**
 * Write the document. The map is streamed with HSCAN, so millions of entries take
 * constant memory, and written before the shards, which are read once the map is: every
 * entry then points at a shard of the document or at an orphan it declares. A shard
 * added, removed or changed meanwhile is reported (read before and after).
 */
export async function writeDocument(registry: Registry, out: Writable, options: {withMap: boolean}): Promise<ExportResult> {
  const head = {format: DOCUMENT_FORMAT, version: DOCUMENT_VERSION, prefix: registry.keys.prefix, exportedAt: new Date().toISOString()}
  const before = await documentShards(registry)
  if (!options.withMap) {
    await write(out, `${JSON.stringify(shardsDocument(registry.keys.prefix, before), null, 2)}\n`)
    return {shards: before.length, mapEntries: 0, orphans: {}}
  }
  // Checked before the first byte: a map of the wrong type stops the export with nothing written (stdout cannot be taken back).
  await registry.guard(registry.keys.map, 'a hash', () => registry.client.hlen(registry.keys.map))
  await write(out, `${JSON.stringify(head, null, 2).slice(0, -2)},\n  "map": {`)
  const pointedAt = new Map<string, number>()
  let mapEntries = 0
  let cursor = '0'
  let pages = 0
  do {
    const [next, flat] = await registry.client.hscanBuffer(registry.keys.map, cursor, 'COUNT', '2000')
    cursor = next.toString()
    // Tests stop here, part-way through the map (SHARDCTL_FAILPOINT=export-map:after:stop).
    if (pages++ === 1) await failpoint('export-map', 'after')
    let chunk = ''
    for (let i = 0; i < flat.length; i += 2) {
      const id = encodeBytes(flat[i + 1])
      pointedAt.set(id, (pointedAt.get(id) ?? 0) + 1)
      chunk += `${mapEntries === 0 ? '' : ','}\n    ${JSON.stringify(encodeBytes(flat[i]))}: ${JSON.stringify(id)}`
      mapEntries++
    }
    if (chunk) await write(out, chunk)
  } while (cursor !== '0')
  const after = await documentShards(registry)
  const ids = new Set(after.map((s) => s.id))
  const orphans = Object.fromEntries([...pointedAt].filter(([id]) => !ids.has(id)))
  const tail = JSON.stringify({shards: after, orphans}, null, 2)
  await write(out, `${mapEntries === 0 ? '' : '\n  '}},\n${tail.slice(2)}\n`)
  return {shards: after.length, mapEntries, orphans, changedMeanwhile: shardChanges(before, after)}
}

function shardChanges(before: DocumentShard[], after: DocumentShard[]): ExportResult['changedMeanwhile'] {
  const then = new Map(before.map((s) => [s.id, JSON.stringify(s)]))
  const now = new Map(after.map((s) => [s.id, JSON.stringify(s)]))
  const added = [...now.keys()].filter((id) => !then.has(id))
  const removed = [...then.keys()].filter((id) => !now.has(id))
  const changed = [...now].filter(([id, s]) => then.has(id) && then.get(id) !== s).map(([id]) => id)
  return added.length + removed.length + changed.length === 0 ? undefined : {added, removed, changed}
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

/** What a map entry may point at: a shard of the document, or an orphan it declares. */
function targetsOf(doc: RegistryDocument): Set<string> {
  return new Set([...doc.shards.map((s) => s.id), ...Object.keys(doc.orphans)])
}

/** One map entry of the document, as written forms; refused when it is not a byte string or points nowhere. */
function mapEntry(hash: string, id: unknown, version: number, targets: Set<string>): [string, string] {
  const key = canonicalForm(hash, version)
  if (key === undefined) throw invalid(`map key ${JSON.stringify(hash)} is not a byte string of this version's form`)
  const value = typeof id === 'string' ? canonicalForm(id, version) : undefined
  if (value === undefined || !targets.has(value))
    throw invalid(
      `map entry ${JSON.stringify(hash)} points at ${JSON.stringify(id)}, not a shard of the document nor an orphan it declares`,
    )
  return [key, value]
}

/**
 * The map of a document file, a flat batch at a time (hash, id, ...) in the form a Redis
 * command takes (text, or a Buffer for other bytes), each entry checked against the
 * document's shards and orphans.
 */
export async function* mapOf(file: string, doc: RegistryDocument): AsyncGenerator<(string | Buffer)[]> {
  const targets = targetsOf(doc)
  try {
    for await (const batch of readMap(file, MAP_BATCH)) {
      const out: (string | Buffer)[] = new Array(batch.length)
      for (let i = 0; i < batch.length; i += 2) {
        const [key, value] = mapEntry(batch[i], batch[i + 1], doc.version, targets)
        out[i] = wire(key)
        out[i + 1] = wire(value)
      }
      yield out
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
  if (data.version !== 1 && data.version !== 2)
    throw invalid(`version ${JSON.stringify(data.version)} is not supported (this shardctl reads versions 1 to ${DOCUMENT_VERSION})`)
  const version = data.version
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
    // As shards:weight refuses it: below the smallest normal double a weight is not stored as written.
    if (raw.weight > 0 && raw.weight < MIN_WEIGHT)
      throw invalid(`shard ${id}: weight ${JSON.stringify(raw.weight)} is too small to be stored exactly (0, or at least ${MIN_WEIGHT})`)
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
    if (!isObject(extra)) throw invalid(`shard ${id}: extra is not an object of strings`)
    const fields = Object.entries(extra).map(([field, value]): [string, string] => {
      const name = canonicalForm(field, version)
      const text = typeof value === 'string' ? canonicalForm(value, version) : undefined
      if (name === undefined || text === undefined)
        throw invalid(`shard ${id}: extra is not an object of strings (field ${JSON.stringify(field)})`)
      if (isNodeField(name)) throw invalid(`shard ${id}: extra holds a field of the schema`)
      return [name, text]
    })
    const shard = {
      id,
      weight: raw.weight,
      master: address(raw.master, 'master'),
      replicas: list(raw.replicas, 'replicas'),
      persist: list(raw.persist, 'persist'),
      extra: sortedObject(fields),
    }
    // As shards:add refuses it: master and replicas are different instances, however spelled.
    const nodes = [shard.master, ...shard.replicas, ...shard.persist]
    const instances = nodes.map((node) => canonicalInstance(parseAddress(node)))
    const twice = instances.findIndex((instance, i) => instances.indexOf(instance) !== i)
    if (twice !== -1)
      throw invalid(`shard ${id}: ${nodes[instances.indexOf(instances[twice])]} and ${nodes[twice]} are one instance, named twice`)
    return shard
  })
  const [shared] = sharedDatabases(shards.map((s) => ({id: s.id, master: parseAddress(s.master)})))
  if (shared)
    throw invalid(`shards ${shared.ids.join(' and ')} have the same master database ${shared.database}: a database holds one shard`)
  const orphans: Record<string, number> = {}
  if (data.orphans !== undefined) {
    if (!isObject(data.orphans)) throw invalid('"orphans" is not an object')
    for (const [name, count] of Object.entries(data.orphans)) {
      const form = canonicalForm(name, version)
      if (form === undefined || ids.has(form) || typeof count !== 'number' || !Number.isInteger(count) || count < 0)
        throw invalid(`orphan ${JSON.stringify(name)} is not an id outside the shards with a count of entries`)
      orphans[form] = count
    }
  }
  const doc: RegistryDocument = {
    format: DOCUMENT_FORMAT,
    version,
    prefix: String(data.prefix ?? ''),
    exportedAt: String(data.exportedAt ?? ''),
    shards,
    orphans,
  }
  if (data.map !== undefined) {
    if (!isObject(data.map)) throw invalid('"map" is not an object')
    const targets = targetsOf(doc)
    doc.map = Object.fromEntries(Object.entries(data.map).map(([hash, id]) => mapEntry(hash, id, version, targets)))
  }
  return doc
}

export interface ImportDiff {
  added: DocumentShard[]
  changed: {id: string; before: DocumentShard; after: DocumentShard}[]
  removed: string[]
  unchanged: number
  /** Map entries of the document that are absent now: added, set-if-absent. */
  mapSet: number
  /** Map entries that point elsewhere now and are re-pointed (--repoint). */
  mapChanged: number
  /** Map entries that point elsewhere now and stay so: an existing assignment is changed only with --repoint. */
  mapKept: number
  /** Map entries of the document that point at an orphan it declares, imported as they are. */
  mapOrphans: number
}

/** Where an import's map changes wait until they are applied: a hash of this run's own, not part of the wire contract. */
export function stagingKey(registry: Registry, token: string): string {
  return `${registry.keys.prefix}._staging:${token}`
}

/** The staging hashes of an import: entries new to the map, re-pointed ones, and the values those held when compared. */
export function stagedParts(stage: string): [string, string, string] {
  return [`${stage}:set`, `${stage}:repoint`, `${stage}:was`]
}

const same = (a: DocumentShard, b: DocumentShard) => JSON.stringify(a) === JSON.stringify(b)

/** Whether bytes read from Redis are the bytes a document entry stands for. */
const sameBytes = (now: Buffer, wanted: string | Buffer) => now.equals(typeof wanted === 'string' ? Buffer.from(wanted) : wanted)

export interface ImportPlan {
  diff: ImportDiff
  staged: number
  mapWasEmpty: boolean
}

/**
 * The difference between the document and the registry. The map is compared a batch
 * at a time (HMGET), never loaded; with `stage`, the entries that differ are written
 * to staging hashes as they are found, ready for applyDocument. An entry the map has
 * with another shard is re-pointed only with `repoint`, and then only while it still
 * holds the shard it was compared with.
 */
export async function diffDocument(
  registry: Registry,
  doc: RegistryDocument,
  options: {prune: boolean; repoint?: boolean; map?: AsyncIterable<(string | Buffer)[]>; stage?: string},
): Promise<ImportPlan> {
  const shards = await documentShards(registry)
  const current = new Map(shards.map((s) => [s.id, s]))
  const wanted = new Set(doc.shards.map((s) => s.id))
  const diff: ImportDiff = {added: [], changed: [], removed: [], unchanged: 0, mapSet: 0, mapChanged: 0, mapKept: 0, mapOrphans: 0}
  for (const shard of doc.shards) {
    const now = current.get(shard.id)
    if (!now) diff.added.push(shard)
    else if (same(now, shard)) diff.unchanged++
    else diff.changed.push({id: shard.id, before: now, after: shard})
  }
  if (options.prune) diff.removed = [...current.keys()].filter((id) => !wanted.has(id))
  // What the registry holds once imported: the document's shards, and the ones it keeps.
  const kept = shards.filter((s) => !wanted.has(s.id) && !diff.removed.includes(s.id))
  const [shared] = sharedDatabases([...kept, ...doc.shards].map((s) => ({id: s.id, master: parseAddress(s.master)})))
  if (shared) {
    throw usageError(
      `importing would leave shards ${shared.ids.join(' and ')} on the same master database ${shared.database}`,
      "a database holds one shard: fix the document, or import with --prune if the registry's shard is to go",
    )
  }

  const mapSize = await registry.guard(registry.keys.map, 'a hash', () => registry.client.hlen(registry.keys.map))
  const orphans = new Set(Object.keys(doc.orphans))
  const removed = new Set(diff.removed)
  // Per shard to be removed: entries re-pointed away from it, and entries of the document pointing at it.
  const leaving = new Map<string, number>()
  const arriving = new Map<string, number>()
  const tally = (counts: Map<string, number>, id: string) => counts.set(id, (counts.get(id) ?? 0) + 1)
  let staged = 0
  // Entries new to the map and re-pointed ones are staged apart: the new ones are
  // applied set-if-absent, so that an application assigning the same hash meanwhile
  // keeps its assignment (one is never changed silently); the re-pointed ones only
  // while they still hold the value compared (kept in `was`).
  const [stageSet, stageRepoint, stageWas] = options.stage ? stagedParts(options.stage) : []
  if (options.stage) await registry.client.unlink(stageSet!, stageRepoint!, stageWas!)
  // A hash the document names twice is refused, not the last of the two kept.
  const stageOnce = async (stage: string, pairs: (string | Buffer)[]) => {
    const twice = await registry.client.stageOnceBuffer(stage, ...pairs)
    if (twice !== null) throw invalid(`map key ${JSON.stringify(encodeBytes(twice))} appears twice`)
  }
  const compare = async (batch: (string | Buffer)[]) => {
    if (orphans.size + removed.size > 0) {
      for (let i = 1; i < batch.length; i += 2) {
        const id = encodeBytes(Buffer.from(batch[i]))
        if (orphans.has(id)) diff.mapOrphans++
        if (removed.has(id)) tally(arriving, id)
      }
    }
    // An empty map has nothing to compare with: every entry is new, the batch as it is.
    if (mapSize === 0) {
      diff.mapSet += batch.length / 2
      if (options.stage) await stageOnce(stageSet!, batch)
      staged += batch.length / 2
      return
    }
    const hashes: (string | Buffer)[] = []
    for (let i = 0; i < batch.length; i += 2) hashes.push(batch[i])
    const now = await registry.client.hmgetBuffer(registry.keys.map, ...hashes)
    const fresh: (string | Buffer)[] = []
    const moved: (string | Buffer)[] = []
    const was: (string | Buffer)[] = []
    for (let j = 0; j < now.length; j++) {
      const hash = batch[2 * j]
      const id = batch[2 * j + 1]
      const before = now[j]
      if (before === null) {
        diff.mapSet++
        fresh.push(hash, id)
      } else if (!sameBytes(before, id)) {
        if (!options.repoint) {
          diff.mapKept++
          continue
        }
        diff.mapChanged++
        moved.push(hash, id)
        was.push(hash, before)
        const from = encodeBytes(before)
        if (removed.has(from)) tally(leaving, from)
      }
    }
    await Promise.all([
      options.stage && fresh.length > 0 ? stageOnce(stageSet!, fresh) : undefined,
      options.stage && moved.length > 0 ? stageOnce(stageRepoint!, moved) : undefined,
      options.stage && was.length > 0 ? registry.client.hset(stageWas!, ...was) : undefined,
    ])
    staged += (fresh.length + moved.length) / 2
  }
  for await (const done of pipelined(options.map ?? [], MAP_IN_FLIGHT, compare)) void done
  if (diff.removed.length > 0) {
    const counts = await registry.countAssignments()
    const left = (id: string) => (counts.get(id) ?? 0) - (leaving.get(id) ?? 0) + (arriving.get(id) ?? 0)
    const used = diff.removed.filter((id) => left(id) > 0)
    if (used.length > 0) {
      throw usageError(
        `--prune would remove shards ${used.join(', ')} while hashes point at them (${used.map((id) => `${id}: ${left(id).toLocaleString('en-US')}`).join(', ')}, once imported)`,
        options.repoint
          ? 'drain and empty them first, or import without --prune'
          : 'drain and empty them first, re-point their hashes (--repoint), or import without --prune',
      )
    }
  }
  return {diff, staged, mapWasEmpty: mapSize === 0}
}

/** A merge of staged map entries up to this size runs as one atomic step (a few ms); beyond, in slices of it. */
export const ATOMIC_MAP_ENTRIES = 20_000

export interface ImportResult {
  event: RegistryEvent
  steps: number
  /** Staged entries left as they were: assigned or moved meanwhile to another shard. */
  kept: number
  /** Shards --prune did not remove after all: hashes were assigned to them while the import ran (drained instead). */
  notRemoved: {id: string; hashes: number}[]
}

/**
 * Apply the difference. Shards are added and changed in one atomic step with the map
 * when it can be: onto an empty map, the staged map is renamed into place (O(1),
 * whatever its size); a change of up to ATOMIC_MAP_ENTRIES entries is merged in the
 * same step. A larger change is merged in slices of that size after the shards are in
 * place, each slice atomic and every step routing each hash to an existing shard.
 *
 * Shards to remove (--prune) are drained in the first step, so that no draw gives them a
 * hash any more; once the map is in, the hashes pointing at them are counted again, and
 * they are removed in a last step only if none does (else they stay, drained).
 */
export async function applyDocument(
  registry: Registry,
  diff: ImportDiff,
  stage: {key: string; entries: number; mapWasEmpty: boolean},
): Promise<ImportResult> {
  const change = new Change().expectType(registry.keys.list, 'zset', 'none').expectType(registry.keys.map, 'hash', 'none')
  const put = (s: DocumentShard) => {
    const key = registry.keys.shard(s.id)
    const nodes = nodeFields({master: s.master, replicas: s.replicas, persist: s.persist})
    const pairs = [...Object.entries(nodes).flat(), ...Object.entries(s.extra).flatMap(([f, v]) => [wire(f), wire(v)])]
    change.del(key).hsetBytes(key, pairs).zadd(registry.keys.list, s.id, s.weight)
  }
  for (const s of diff.added) change.expectMember(registry.keys.list, s.id, false)
  for (const s of diff.added) put(s)
  for (const c of diff.changed) put(c.after)
  for (const id of diff.removed) change.expectMember(registry.keys.list, id, true).zadd(registry.keys.list, id, 0)
  const details = {
    added: diff.added.map((s) => s.id),
    changed: diff.changed.map((c) => c.id),
    removed: diff.removed,
    mapEntries: stage.entries,
  }
  const [fresh, moved, was] = stagedParts(stage.key)
  const merge = (target: Change, limit?: number) =>
    target.mergeHash(fresh, registry.keys.map, {limit, nx: true}).mergeHash(moved, registry.keys.map, {limit, cas: was})
  const cleanUp = () => registry.client.unlink(fresh, moved, was)
  // Onto a map that is still empty the staged one is renamed into place, whatever its
  // size. If an application assigned a hash meanwhile, the staged entries are merged
  // instead, set-if-absent: in one step when small, else in slices like any large change.
  const renamed = stage.entries > 0 && stage.mapWasEmpty && (await registry.client.exists(registry.keys.map)) === 0
  const oneStep = stage.entries === 0 || renamed || stage.entries <= ATOMIC_MAP_ENTRIES
  if (renamed) change.expectAbsent(registry.keys.map).rename(fresh, registry.keys.map)
  else if (oneStep && stage.entries > 0) merge(change)
  if (oneStep && diff.removed.length === 0) {
    const {event, kept} = await registry.applyCounting(change, 'registry.imported', details)
    await cleanUp()
    return {event, steps: 1, kept, notRemoved: []}
  }
  // Several steps: shards first (and the map, when it fits), the rest of the map in
  // atomic slices, the removals last.
  let {kept} = await registry.applyCounting(change, 'registry.import-started', {...details, steps: 'sliced'})
  let steps = 1
  if (!oneStep) {
    for (;;) {
      const left = (await registry.client.hlen(fresh)) + (await registry.client.hlen(moved))
      if (left === 0) break
      kept += (await registry.applyCounting(merge(new Change(), ATOMIC_MAP_ENTRIES / 2), 'registry.import-slice', {left})).kept
      steps++
    }
  }
  const last = new Change()
  const notRemoved: ImportResult['notRemoved'] = []
  if (diff.removed.length > 0) {
    const counts = await registry.countAssignments()
    for (const id of diff.removed) {
      const hashes = counts.get(id) ?? 0
      if (hashes > 0) notRemoved.push({id, hashes})
      else last.expectMember(registry.keys.list, id, true).del(registry.keys.shard(id)).zrem(registry.keys.list, id)
    }
  }
  const event = await registry.apply(last, 'registry.imported', {
    ...details,
    removed: diff.removed.filter((id) => !notRemoved.some((n) => n.id === id)),
    ...(notRemoved.length > 0 ? {notRemoved: notRemoved.map((n) => n.id)} : {}),
    ...(kept > 0 ? {kept} : {}),
  })
  await cleanUp()
  return {event, steps: steps + 1, kept, notRemoved}
}

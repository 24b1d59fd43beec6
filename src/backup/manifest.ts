import {ExitCode, ShardctlError} from '../errors.js'
import {canonicalInstance, endpointOf} from '../registry/address.js'

/**
 * manifest.json: what one backup holds, written last, as the mark that the backup is
 * complete. Everything a restore or a verification needs to trust the files is here:
 * per instance the node it came from, the RDB's version, replication id and offset,
 * the stored file's size and sha256, Redis's own CRC64 of the snapshot, keys per
 * database, and the shards (id, db) the instance held.
 */
export const MANIFEST_FORMAT = 'shardctl-backup'
export const MANIFEST_VERSION = 1

export type NodeRole = 'persist' | 'replica' | 'master'

export interface ManifestInstance {
  /** The instance backed up, host:port: the master the registry routes to, or the registry's own. */
  instance: string
  /** Whether this instance holds the registry itself. */
  registry: boolean
  /** The node the snapshot was taken from, host:port, and its role. */
  node: string
  nodeRole: NodeRole
  /** The stored file, relative to the backup's folder. */
  file: string
  compression: 'gzip' | 'none'
  /** Size and sha256 of the stored file (after compression). */
  bytes: number
  sha256: string
  /** Size of the snapshot itself and its CRC64, as Redis wrote it in the trailer (16 hex digits). */
  rdbBytes: number
  crc64: string
  rdbVersion: number
  redisVersion: string
  replId: string
  replOffset: number
  /** When Redis made the snapshot (its ctime aux field), ISO 8601. */
  createdAt: string
  /** Keys per database, as the snapshot holds them: {"0": 120, "3": 5}. */
  keys: Record<string, number>
  /** The shards whose master database was on this instance, then. */
  shards: {id: string; db: number}[]
  startedAt: string
  endedAt: string
}

export interface ManifestFailure {
  instance: string
  node?: string
  error: string
}

export interface Manifest {
  format: typeof MANIFEST_FORMAT
  version: typeof MANIFEST_VERSION
  /** run/part: see layout.ts. */
  id: string
  run: string
  part: string
  startedAt: string
  endedAt: string
  shardctl: string
  /** The registry's key prefix. */
  prefix: string
  /**
   * The registry the backup was taken of, as one name (canonicalRegistry: host:port/db in
   * its canonical spelling, or its Sentinels and master name). Older manifests lack it.
   */
  registryAddress?: string
  /** registry.json: the shards:export document at the start of the backup. */
  registry: {file: string; bytes: number; sha256: string; shards: number}
  instances: ManifestInstance[]
  /** Instances of the plan that could not be backed up: the backup is partial. */
  failed: ManifestFailure[]
  warnings: string[]
}

export function badManifest(location: string, id: string, problem: string): ShardctlError {
  return new ShardctlError(`${location}: the manifest of backup ${id} is not valid: ${problem}`, {
    code: 'EMANIFEST',
    exitCode: ExitCode.unhealthy,
    hint: 'it was not written by shardctl, or was changed since: do not trust this backup',
  })
}

/** A time as shardctl writes them (toISOString), or with an offset. */
const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

/** A manifest as read from a destination: checked field by field before anything relies on it. */
export function parseManifest(text: string, location: string, id: string): Manifest {
  const fail = (problem: string) => badManifest(location, id, problem)
  let data: unknown
  try {
    data = JSON.parse(text)
  } catch {
    throw fail('not JSON')
  }
  if (!isObject(data)) throw fail('not an object')
  if (data.format !== MANIFEST_FORMAT) throw fail(`format is ${JSON.stringify(data.format)}`)
  if (data.version !== MANIFEST_VERSION)
    throw fail(`version ${JSON.stringify(data.version)} is not supported (this shardctl reads ${MANIFEST_VERSION})`)
  const text_ = (o: Record<string, unknown>, field: string, where: string) => {
    if (typeof o[field] !== 'string') throw fail(`${where}${field} is not a string`)
    return o[field]
  }
  const count = (o: Record<string, unknown>, field: string, where: string) => {
    const v = o[field]
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw fail(`${where}${field} is not a count`)
    return v
  }
  for (const field of ['id', 'run', 'part', 'startedAt', 'endedAt', 'shardctl', 'prefix']) text_(data, field, '')
  // Times are sorted on and printed: one that is no time would stop every listing of the destination.
  for (const field of ['startedAt', 'endedAt'])
    if (!ISO_TIME.test(data[field] as string) || Number.isNaN(Date.parse(data[field] as string)))
      throw fail(`${field} is not an ISO 8601 time`)
  if (data.id !== id) throw fail(`it names backup ${JSON.stringify(data.id)}`)
  if (data.registryAddress !== undefined && typeof data.registryAddress !== 'string') throw fail('registryAddress is not a string')
  if (!isObject(data.registry)) throw fail('registry is not an object')
  text_(data.registry, 'file', 'registry.')
  count(data.registry, 'bytes', 'registry.')
  if (!/^[0-9a-f]{64}$/.test(text_(data.registry, 'sha256', 'registry.'))) throw fail('registry.sha256 is not a sha256')
  if (!Array.isArray(data.instances)) throw fail('instances is not a list')
  const files = new Set<string>()
  data.instances.forEach((raw, i) => {
    const where = `instances[${i}].`
    if (!isObject(raw)) throw fail(`instances[${i}] is not an object`)
    for (const field of ['instance', 'node', 'nodeRole', 'file', 'compression', 'sha256', 'crc64', 'redisVersion', 'replId', 'createdAt'])
      text_(raw, field, where)
    for (const field of ['bytes', 'rdbBytes', 'rdbVersion', 'replOffset']) count(raw, field, where)
    if (!/^[0-9a-f]{64}$/.test(raw.sha256 as string)) throw fail(`${where}sha256 is not a sha256`)
    if (!/^[0-9a-f]{16}$/.test(raw.crc64 as string)) throw fail(`${where}crc64 is not 16 hex digits`)
    if (!['gzip', 'none'].includes(raw.compression as string)) throw fail(`${where}compression is unknown`)
    const file = raw.file as string
    if (file.includes('/') || file.startsWith('.') || files.has(file))
      throw fail(`${where}file ${JSON.stringify(file)} is not a file of its own`)
    files.add(file)
    if (!isObject(raw.keys) || Object.entries(raw.keys).some(([db, n]) => !/^\d+$/.test(db) || typeof n !== 'number'))
      throw fail(`${where}keys is not a count per database`)
    if (!Array.isArray(raw.shards) || raw.shards.some((s) => !isObject(s) || typeof s.id !== 'string' || typeof s.db !== 'number'))
      throw fail(`${where}shards is not a list of {id, db}`)
  })
  if (!Array.isArray(data.failed)) throw fail('failed is not a list')
  if (!Array.isArray(data.warnings)) throw fail('warnings is not a list')
  return data as unknown as Manifest
}

/**
 * The entry of an instance in a manifest, whatever the spelling: a backup records the
 * first spelling the registry had for an instance (localhost:6379 where other shards
 * say 127.0.0.1:6379), and a restore may be given any.
 */
export function manifestInstance(manifest: Manifest, instance: {host: string; port: number}): ManifestInstance | undefined {
  const wanted = canonicalInstance(instance)
  return manifest.instances.find((i) => canonicalOrText(i.instance) === wanted)
}

/** An instance recorded in a manifest, canonically; its text when it is not host:port (it then matches nothing). */
export function canonicalOrText(instance: string): string {
  try {
    return canonicalInstance(endpointOf(instance))
  } catch {
    return instance
  }
}

/**
 * The registry a backup was taken of, as far as its manifest tells: the address it
 * records, or (older manifests) the instance it marks as the registry's, canonically;
 * undefined when it tells neither (an older backup of some instances only).
 */
export function backupRegistry(manifest: Manifest): string | undefined {
  if (manifest.registryAddress !== undefined) return manifest.registryAddress
  const own = manifest.instances.find((i) => i.registry)
  return own && canonicalOrText(own.instance)
}

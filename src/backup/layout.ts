import {createHash} from 'node:crypto'
import type {Readable} from 'node:stream'

import {ExitCode, ShardctlError, usageError} from '../errors.js'
import {type Destination, PARTIAL_MARK, type StoredObject} from './destination.js'
import {type Manifest, parseManifest} from './manifest.js'

/**
 * How backups are laid out at a destination, one folder per backup:
 *
 *   <run>/<part>/registry.json             the shards:export document at the start
 *   <run>/<part>/<host>-<port>.rdb[.gz]    the snapshot of each instance
 *   <run>/<part>/manifest.json             written last: the backup is complete
 *
 * A run groups the backups taken together: by default the start time (one process),
 * or a name every host's cron gives alike (`--run $(date -u +%Y%m%dT%H00Z)`), so the
 * per-instance backups of one hour are listed together without any coordinator. A
 * part is what one process backed up: `fleet` (every instance and the registry), or
 * the instances it was given. The backup's id is `<run>/<part>`; the part is also the
 * series that retention keeps a history of.
 */
export const MANIFEST_FILE = 'manifest.json'
export const REGISTRY_FILE = 'registry.json'
export const FLEET_PART = 'fleet'

const NAME = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$/

export function validateRunName(name: string): string {
  if (!NAME.test(name) || name.includes('..'))
    throw usageError(`invalid run name "${name}"`, 'a run name is up to 100 letters, digits, . _ + and -, e.g. 20261202T1400Z')
  return name
}

/** The default run: the start time, UTC, to the second (ISO 8601 basic: sorts as it reads). */
export function defaultRunName(at: Date): string {
  return at
    .toISOString()
    .replace(/\.\d+Z$/, 'Z')
    .replaceAll(/[-:]/g, '')
}

/** An instance in a file or folder name: 10.0.0.5:6379 → 10.0.0.5-6379, [::1]:6379 → __1-6379. */
export function instanceSlug(instance: string): string {
  return instance
    .replace(/^\[(.*)\]:(\d+)$/, '$1-$2')
    .replace(/:(\d+)$/, '-$1')
    .replaceAll(/[^A-Za-z0-9._-]/g, '_')
}

/**
 * An instance back from its file name, as a manifest names it (host:port), for a backup
 * that has no manifest. A slug that was not host-port (an IPv6 host's colons became "_")
 * cannot be told back exactly: it stays as it is.
 */
export function instanceOfSlug(slug: string): string {
  return /^[A-Za-z0-9.-]+-\d+$/.test(slug) ? slug.replace(/-(\d+)$/, ':$1') : slug
}

/** The part a process backs up: the fleet, or its instances (a digest of them beyond three). */
export function partName(instances: string[] | undefined): string {
  if (instances === undefined) return FLEET_PART
  const sorted = [...instances].sort()
  if (sorted.length <= 3) return sorted.map(instanceSlug).join('+')
  const digest = createHash('sha256').update(sorted.join(',')).digest('hex').slice(0, 10)
  return `${sorted.length}-instances-${digest}`
}

export function snapshotFile(instance: string, gzip: boolean): string {
  return `${instanceSlug(instance)}.rdb${gzip ? '.gz' : ''}`
}

export type BackupStatus = 'complete' | 'partial' | 'incomplete'

/** A backup found at a destination. */
export interface BackupEntry {
  id: string
  run: string
  part: string
  /** complete: manifest, every instance; partial: manifest, some failed; incomplete: no manifest. */
  status: BackupStatus
  /** When it started (the manifest's), or its first file's time when it never finished. */
  time: Date
  /** Its newest file's time: an incomplete backup written to a moment ago may still be running. */
  lastWrite: Date
  /** Instances it holds (from its manifest; for an incomplete one, from the snapshot files present). */
  instances: string[]
  bytes: number
  /** Every stored object of it, keys relative to the destination. */
  objects: string[]
  manifest?: Manifest
  /** Why its manifest could not be read (then it counts as incomplete). */
  problem?: string
}

/** Manifests read at once while listing: a destination may hold thousands of backups. */
const MANIFESTS_IN_FLIGHT = 8

/** Every backup at a destination (below `prefix`: a run, or run/part/), newest first. Objects outside the layout are left out. */
export async function listBackups(destination: Destination, prefix = ''): Promise<BackupEntry[]> {
  const objects = await destination.list(prefix)
  const groups = new Map<string, StoredObject[]>()
  for (const object of objects) {
    const parts = object.key.split('/')
    if (parts.length !== 3 || !NAME.test(parts[0]) || !NAME.test(parts[1])) continue
    const id = `${parts[0]}/${parts[1]}`
    groups.set(id, [...(groups.get(id) ?? []), object])
  }
  const entries = [...groups].map(([id, files]) => summarize(id, files))
  const queue = entries.filter((e) => e.objects.includes(`${e.id}/${MANIFEST_FILE}`))
  await Promise.all(
    Array.from({length: MANIFESTS_IN_FLIGHT}, async () => {
      for (let entry = queue.shift(); entry; entry = queue.shift()) await readInto(destination, entry)
    }),
  )
  return entries.sort((a, b) => b.time.getTime() - a.time.getTime() || (a.id < b.id ? 1 : -1))
}

function summarize(id: string, files: StoredObject[]): BackupEntry {
  const [run, part] = id.split('/')
  const times = files.map((f) => f.modified.getTime())
  const instances = files
    .map((f) => f.key.split('/')[2])
    .filter((name) => /\.rdb(\.gz)?$/.test(name) && !name.includes(PARTIAL_MARK))
    .map((name) => instanceOfSlug(name.replace(/\.rdb(\.gz)?$/, '')))
  return {
    id,
    run,
    part,
    status: 'incomplete',
    time: new Date(Math.min(...times)),
    lastWrite: new Date(Math.max(...times)),
    instances,
    bytes: files.reduce((sum, f) => sum + f.bytes, 0),
    objects: files.map((f) => f.key),
  }
}

async function readInto(destination: Destination, entry: BackupEntry): Promise<void> {
  try {
    const manifest = await readManifest(destination, entry.id)
    entry.manifest = manifest
    entry.status = manifest.failed.length > 0 ? 'partial' : 'complete'
    entry.time = new Date(manifest.startedAt)
    entry.instances = manifest.instances.map((i) => i.instance)
  } catch (error) {
    if (!(error instanceof ShardctlError) || error.code !== 'EMANIFEST') throw error
    entry.problem = error.message
  }
}

export async function readManifest(destination: Destination, id: string): Promise<Manifest> {
  const text = (await readAll(await destination.read(`${id}/${MANIFEST_FILE}`))).toString('utf8')
  return parseManifest(text, destination.location, id)
}

/** A small object whole (a manifest, a registry document). */
export async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of stream) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

/**
 * The backups an id names: `run/part` exactly, or every part of a run. None is a
 * usage error naming what the destination holds.
 */
export function selectBackups(entries: BackupEntry[], id: string, location: string): BackupEntry[] {
  const chosen = entries.filter((e) => e.id === id || e.run === id)
  if (chosen.length === 0) {
    const newest = entries
      .slice(0, 3)
      .map((e) => e.id)
      .join(', ')
    throw new ShardctlError(`no backup ${id} at ${location}`, {
      code: 'ENOBACKUP',
      exitCode: ExitCode.usage,
      hint: entries.length === 0 ? 'it holds no backup at all' : `see backups:list (the newest: ${newest})`,
    })
  }
  return chosen
}

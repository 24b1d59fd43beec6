import {createWriteStream, rmSync} from 'node:fs'
import {join} from 'node:path'

import {checkStoredSnapshot} from './check.js'
import {checkRegistryDocument} from './fetch.js'
import type {Destination} from './destination.js'
import {type BackupStatus, listBackups, selectBackups} from './layout.js'
import {SNAPSHOT_FILE, loadSnapshot, localServer, scratchDirectory} from './loader.js'
import type {ManifestFailure, ManifestInstance} from './manifest.js'

/**
 * backups:verify: every file of a backup against its manifest (size, sha256, and the
 * snapshot read through: structure, CRC64, version, keys per database). Deep: each
 * snapshot also loaded into a temporary local redis-server, whose keys per database
 * must be the manifest's.
 */
export interface VerifiedInstance {
  instance: string
  file: string
  ok: boolean
  problems: string[]
  /** Deep: keys per database as the loaded server has them. */
  loaded?: Record<string, number>
}

export interface VerifiedBackup {
  id: string
  status: BackupStatus
  ok: boolean
  problems: string[]
  instances: VerifiedInstance[]
  /** A partial backup: the instances its manifest says could not be backed up, and why. */
  failed?: ManifestFailure[]
}

export async function verifyBackups(
  destination: Destination,
  id: string,
  options: {deep: boolean; timeoutMs: number; onInstance?: (backup: string, result: VerifiedInstance) => void},
): Promise<{ok: boolean; backups: VerifiedBackup[]}> {
  const listed = await listBackups(destination, `${id}/`)
  // None under that name: the whole listing, for a message that says what the destination does hold.
  const chosen = selectBackups(listed.length > 0 ? listed : await listBackups(destination), id, destination.location)
  const local = options.deep ? await localServer() : undefined
  const backups: VerifiedBackup[] = []
  for (const entry of chosen) {
    const manifest = entry.manifest
    if (!manifest) {
      backups.push({
        id: entry.id,
        status: entry.status,
        ok: false,
        problems: [entry.problem ?? 'no manifest: the backup never completed, there is nothing to check its files against'],
        instances: [],
      })
      continue
    }
    const registry = await checkRegistryDocument(destination, manifest)
    const instances: VerifiedInstance[] = []
    for (const instance of manifest.instances) {
      const result = await verifyInstance(destination, manifest.id, instance, {...options, localReads: local?.reads})
      options.onInstance?.(entry.id, result)
      instances.push(result)
    }
    const problems = [...registry.problems]
    backups.push({
      id: entry.id,
      status: entry.status,
      ok: problems.length === 0 && instances.every((i) => i.ok),
      problems,
      instances,
      ...(manifest.failed.length > 0 ? {failed: manifest.failed} : {}),
    })
  }
  return {ok: backups.every((b) => b.ok), backups}
}

async function verifyInstance(
  destination: Destination,
  backupId: string,
  entry: ManifestInstance,
  options: {deep: boolean; timeoutMs: number; localReads?: number},
): Promise<VerifiedInstance> {
  const result = (problems: string[], loaded?: Record<string, number>): VerifiedInstance => ({
    instance: entry.instance,
    file: entry.file,
    ok: problems.length === 0,
    problems,
    ...(loaded ? {loaded} : {}),
  })
  if (!options.deep) return result((await checkStoredSnapshot(destination, backupId, entry)).problems)
  if (options.localReads !== undefined && entry.rdbVersion > options.localReads)
    return result([
      `${entry.file} is RDB version ${entry.rdbVersion}, which the local redis-server cannot load (it reads up to ${options.localReads})`,
    ])
  const dir = scratchDirectory()
  const checked = await checkStoredSnapshot(destination, backupId, entry, createWriteStream(join(dir, SNAPSHOT_FILE), {mode: 0o600})).catch(
    (error: Error) => {
      rmSync(dir, {recursive: true, force: true})
      throw error
    },
  )
  if (checked.problems.length > 0) {
    rmSync(dir, {recursive: true, force: true})
    return result(checked.problems)
  }
  const databases = Math.max(0, ...Object.keys(entry.keys).map(Number)) + 1
  let server
  try {
    server = await loadSnapshot(dir, {databases, timeoutMs: options.timeoutMs})
  } catch (error) {
    return result([(error as Error).message])
  }
  try {
    const loaded = Object.fromEntries([...(await server.keysPerDb())].map(([db, n]) => [String(db), n]))
    const problems: string[] = []
    for (const db of new Set([...Object.keys(loaded), ...Object.keys(entry.keys)])) {
      if ((loaded[db] ?? 0) !== (entry.keys[db] ?? 0))
        problems.push(`db ${db}: ${loaded[db] ?? 0} keys loaded, the manifest says ${entry.keys[db] ?? 0}`)
    }
    return result(problems, loaded)
  } finally {
    await server.stop()
  }
}

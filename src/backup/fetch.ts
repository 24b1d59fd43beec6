import {createHash} from 'node:crypto'
import {createReadStream, createWriteStream, symlinkSync} from 'node:fs'
import {join} from 'node:path'
import {Writable} from 'node:stream'
import {pipeline} from 'node:stream/promises'
import {createGunzip} from 'node:zlib'

import type {Destination} from './destination.js'
import {REGISTRY_FILE, readAll} from './layout.js'
import {SNAPSHOT_FILE} from './loader.js'
import type {Manifest, ManifestInstance} from './manifest.js'
import {Digest, Meter, readStored, unreadable} from './streams.js'

/**
 * A restore's fetch: the snapshot into `dir` (where the loader reads it), its stored bytes'
 * size and sha256 checked against the manifest on the way. An uncompressed snapshot in a
 * local directory is read in place (hashed, then linked), not copied. Redis's own CRC64 is
 * checked by the local redis-server as it loads the snapshot (rdbchecksum), before
 * anything is copied anywhere; backups:verify reads each snapshot through as well.
 */
export async function fetchSnapshot(
  destination: Destination,
  backupId: string,
  entry: ManifestInstance,
  dir: string,
  onBytes?: (bytes: number) => void,
): Promise<string[]> {
  const key = `${backupId}/${entry.file}`
  const inPlace = entry.compression === 'none' ? destination.localFile?.(key) : undefined
  const digest = new Digest()
  const meter = new Meter((bytes) => onBytes?.(bytes))
  try {
    if (inPlace) {
      await pipeline(createReadStream(inPlace), meter, digest, discard())
      symlinkSync(inPlace, join(dir, SNAPSHOT_FILE))
    } else {
      const stored = await readStored(destination, key)
      const gunzip = entry.compression === 'gzip' ? [createGunzip()] : []
      await pipeline([stored, meter, digest, ...gunzip, createWriteStream(join(dir, SNAPSHOT_FILE), {mode: 0o600})])
    }
  } catch (error) {
    const failed = unreadable(error, destination.location, key)
    if (failed) throw failed
    return [(error as Error).message]
  }
  if (digest.bytes !== entry.bytes)
    return [`${entry.file} is ${digest.bytes.toLocaleString('en-US')} bytes, the manifest says ${entry.bytes.toLocaleString('en-US')}`]
  if (digest.sha256 !== entry.sha256) return [`${entry.file}: sha256 does not match the manifest`]
  return []
}

/** registry.json against its size and sha256 in the manifest; its text when it matches. */
export async function checkRegistryDocument(destination: Destination, manifest: Manifest): Promise<{problems: string[]; text?: string}> {
  try {
    const data = await readAll(await destination.read(`${manifest.id}/${manifest.registry.file}`))
    if (data.length !== manifest.registry.bytes || createHash('sha256').update(data).digest('hex') !== manifest.registry.sha256)
      return {problems: [`${REGISTRY_FILE}: its size or sha256 does not match the manifest`]}
    return {problems: [], text: data.toString('utf8')}
  } catch (error) {
    return {problems: [(error as Error).message]}
  }
}

/** Bytes read to the end and dropped: a verification keeps nothing. */
export function discard(): Writable {
  return new Writable({
    write(_chunk, _encoding, done) {
      done()
    },
  })
}

import type {Writable} from 'node:stream'
import {pipeline} from 'node:stream/promises'
import {createGunzip} from 'node:zlib'

import type {Destination} from './destination.js'
import {discard} from './fetch.js'
import type {ManifestInstance} from './manifest.js'
import {type SnapshotFacts, SnapshotCheck} from './snapshot-check.js'
import {Digest, readStored, unreadable} from './streams.js'

/**
 * Whether a stored backup file is what its manifest says: the stored bytes' size and
 * sha256, then the snapshot itself read through (gunzipped when stored so): its RDB
 * structure, Redis's CRC64 in its trailer, its version, replication id and offset, and
 * its keys per database. What does not match is said, one line each; the snapshot's
 * bytes go on to `sink` (a file to load), or nowhere.
 */
export interface StoredSnapshotCheck {
  problems: string[]
  facts?: SnapshotFacts
}

export async function checkStoredSnapshot(
  destination: Destination,
  backupId: string,
  entry: ManifestInstance,
  sink: Writable = discard(),
): Promise<StoredSnapshotCheck> {
  const problems: string[] = []
  const digest = new Digest()
  const check = new SnapshotCheck(`${entry.file}`)
  const key = `${backupId}/${entry.file}`
  try {
    const stored = await readStored(destination, key)
    await pipeline([stored, digest, ...(entry.compression === 'gzip' ? [createGunzip()] : []), check, sink])
  } catch (error) {
    sink.destroy()
    const failed = unreadable(error, destination.location, key)
    if (failed) throw failed
    problems.push((error as Error).message)
  }
  const facts = problems.length === 0 ? check.facts() : undefined
  if (digest.bytes !== entry.bytes && problems.length === 0)
    problems.push(
      `${entry.file} is ${digest.bytes.toLocaleString('en-US')} bytes, the manifest says ${entry.bytes.toLocaleString('en-US')}`,
    )
  if (problems.length === 0 && digest.sha256 !== entry.sha256) problems.push(`${entry.file}: sha256 does not match the manifest`)
  if (facts) problems.push(...compareFacts(entry, facts))
  return {problems, facts}
}

function compareFacts(entry: ManifestInstance, facts: SnapshotFacts): string[] {
  const problems: string[] = []
  const differ = (what: string, stored: unknown, manifest: unknown) => {
    if (stored !== manifest) problems.push(`${entry.file}: ${what} is ${String(stored)}, the manifest says ${String(manifest)}`)
  }
  differ('its CRC64', facts.crc64, entry.crc64)
  differ('its RDB version', facts.rdbVersion, entry.rdbVersion)
  differ('its replication id', facts.replId, entry.replId)
  differ('its replication offset', facts.replOffset, entry.replOffset)
  const dbs = new Set([...Object.keys(facts.keys), ...Object.keys(entry.keys)])
  for (const db of [...dbs].sort((a, b) => Number(a) - Number(b))) differ(`db ${db}'s key count`, facts.keys[db] ?? 0, entry.keys[db] ?? 0)
  return problems
}

import type {Destination} from './destination.js'
import {type BackupEntry, MANIFEST_FILE, listBackups} from './layout.js'
import {backupRegistry, canonicalOrText} from './manifest.js'
import {type RetentionDecision, type RetentionRules, planRetention} from './retention.js'

export interface PruneResult {
  location: string
  /** Whether the backups in `removed` were removed (false: a dry run, or not confirmed). */
  applied: boolean
  kept: (RetentionDecision & {status: string; time: string})[]
  removed: (RetentionDecision & {status: string; time: string; bytes: number})[]
  bytesRemoved: number
}

/**
 * A series: the backups of one registry and prefix with the same part, so that one fleet's
 * newer backups never push out another's in a shared destination. A backup without a
 * manifest tells only its part (it is kept or not by its age alone); one whose manifest
 * records no registry (an older one) is in a series of its own kind.
 */
function seriesOf(backup: BackupEntry): string {
  if (!backup.manifest) return backup.part
  return JSON.stringify([backupRegistry(backup.manifest) ?? null, backup.manifest.prefix, backup.part])
}

/** Decide with the rules (retention.ts), then remove what goes: its manifest first, so it is never listed complete while half gone. */
export async function pruneBackups(
  destination: Destination,
  rules: RetentionRules,
  options: {dryRun: boolean; now?: Date; confirm?: (plan: PruneResult) => Promise<boolean>},
): Promise<PruneResult> {
  const backups = await listBackups(destination)
  const decisions = planRetention(
    backups.map((b) => ({
      id: b.id,
      series: seriesOf(b),
      status: b.status,
      time: b.time,
      lastWrite: b.lastWrite,
      instances: b.manifest?.instances.map((i) => canonicalOrText(i.instance)) ?? [],
    })),
    rules,
    options.now ?? new Date(),
  )
  const byId = new Map(backups.map((b) => [b.id, b]))
  const view = (d: RetentionDecision) => ({...d, status: byId.get(d.id)!.status, time: byId.get(d.id)!.time.toISOString()})
  const going = decisions.filter((d) => !d.keep)
  const result: PruneResult = {
    location: destination.location,
    applied: false,
    kept: decisions.filter((d) => d.keep).map(view),
    removed: going.map((d) => ({...view(d), bytes: byId.get(d.id)!.bytes})),
    bytesRemoved: going.reduce((sum, d) => sum + byId.get(d.id)!.bytes, 0),
  }
  if (options.dryRun || going.length === 0) return result
  if (options.confirm && !(await options.confirm(result))) return result
  for (const d of going) {
    const backup = byId.get(d.id)!
    const manifest = backup.objects.filter((key) => key === `${backup.id}/${MANIFEST_FILE}`)
    await destination.remove(manifest)
    await destination.remove(backup.objects.filter((key) => !manifest.includes(key)))
  }
  return {...result, applied: true}
}

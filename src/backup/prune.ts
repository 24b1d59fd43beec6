import type {Destination} from './destination.js'
import {MANIFEST_FILE, listBackups} from './layout.js'
import {type RetentionDecision, type RetentionRules, planRetention} from './retention.js'

export interface PruneResult {
  location: string
  /** Whether the backups in `removed` were removed (false: a dry run, or not confirmed). */
  applied: boolean
  kept: (RetentionDecision & {status: string; time: string})[]
  removed: (RetentionDecision & {status: string; time: string; bytes: number})[]
  bytesRemoved: number
}

/** Decide with the rules (retention.ts), then remove what goes: its manifest first, so it is never listed complete while half gone. */
export async function pruneBackups(
  destination: Destination,
  rules: RetentionRules,
  options: {dryRun: boolean; now?: Date; confirm?: (plan: PruneResult) => Promise<boolean>},
): Promise<PruneResult> {
  const backups = await listBackups(destination)
  const decisions = planRetention(
    backups.map((b) => ({id: b.id, series: b.part, status: b.status, time: b.time, lastWrite: b.lastWrite})),
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

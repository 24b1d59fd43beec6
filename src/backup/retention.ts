import type {BackupStatus} from './layout.js'

/**
 * Which backups to keep: the usual grandfather-father-son rules, applied to each series
 * (a part: `fleet`, or the instances one host's cron backs up) on its own, so that one
 * host's history never pushes out another's. Buckets are UTC hours, days and months;
 * in each of the N most recent buckets that hold a backup, the newest one is kept.
 *
 * Whatever the rules, the newest complete backup of every series is kept; so is, for each
 * instance, the newest backup holding a usable copy of it (a partial backup holds the only
 * copies of the instances that succeeded when no later one has them); and so is a backup
 * without a manifest that was written to less than a day ago (it may still be running).
 * Older ones without a manifest never finished: they go.
 */
export interface RetentionRules {
  keepLast?: number
  keepHourly?: number
  keepDaily?: number
  keepMonthly?: number
}

export interface RetentionCandidate {
  id: string
  series: string
  status: BackupStatus
  time: Date
  lastWrite: Date
  /** The instances it holds a usable copy of (its manifest's, in one spelling each): none when incomplete. */
  instances: string[]
}

export interface RetentionDecision {
  id: string
  keep: boolean
  /** Why it is kept ("last 3", "hourly", "newest complete", "newest copy of …", "may still be running"), or why it goes. */
  reasons: string[]
}

export const INCOMPLETE_GRACE_MS = 24 * 3600 * 1000

const BUCKETS = {
  keepHourly: (d: Date) => d.toISOString().slice(0, 13),
  keepDaily: (d: Date) => d.toISOString().slice(0, 10),
  keepMonthly: (d: Date) => d.toISOString().slice(0, 7),
} as const

const REASON = {keepHourly: 'hourly', keepDaily: 'daily', keepMonthly: 'monthly'} as const

export function hasRules(rules: RetentionRules): boolean {
  return Object.values(rules).some((n) => n !== undefined)
}

export function planRetention(backups: RetentionCandidate[], rules: RetentionRules, now: Date): RetentionDecision[] {
  const decisions = new Map<string, RetentionDecision>(backups.map((b) => [b.id, {id: b.id, keep: false, reasons: []}]))
  const keep = (id: string, reason: string) => {
    const d = decisions.get(id)!
    d.keep = true
    d.reasons.push(reason)
  }
  const series = new Map<string, RetentionCandidate[]>()
  for (const b of backups) series.set(b.series, [...(series.get(b.series) ?? []), b])
  for (const members of series.values()) {
    const newestFirst = [...members].sort((a, b) => b.time.getTime() - a.time.getTime() || (a.id < b.id ? 1 : -1))
    const usable = newestFirst.filter((b) => b.status !== 'incomplete')
    if (rules.keepLast !== undefined) for (const b of usable.slice(0, rules.keepLast)) keep(b.id, `last ${rules.keepLast}`)
    for (const rule of ['keepHourly', 'keepDaily', 'keepMonthly'] as const) {
      const limit = rules[rule]
      if (limit === undefined) continue
      const seen = new Set<string>()
      for (const b of usable) {
        const bucket = BUCKETS[rule](b.time)
        if (seen.has(bucket)) continue
        if (seen.size >= limit) break
        seen.add(bucket)
        keep(b.id, REASON[rule])
      }
    }
    const newestComplete = usable.find((b) => b.status === 'complete')
    if (newestComplete) keep(newestComplete.id, 'newest complete')
    for (const [id, instances] of newestCopies(usable)) if (id !== newestComplete?.id) keep(id, `newest copy of ${listed(instances)}`)
    for (const b of newestFirst.filter((m) => m.status === 'incomplete')) {
      if (now.getTime() - b.lastWrite.getTime() < INCOMPLETE_GRACE_MS) keep(b.id, 'incomplete, may still be running')
      else decisions.get(b.id)!.reasons.push('incomplete for over a day')
    }
  }
  for (const d of decisions.values()) if (!d.keep && d.reasons.length === 0) d.reasons.push('beyond every rule')
  return [...decisions.values()]
}

/** For each backup (newest first), the instances it holds the newest copy of in its series. */
function newestCopies(newestFirst: RetentionCandidate[]): Map<string, string[]> {
  const seen = new Set<string>()
  const newest = new Map<string, string[]>()
  for (const b of newestFirst)
    for (const instance of b.instances) {
      if (seen.has(instance)) continue
      seen.add(instance)
      newest.set(b.id, [...(newest.get(b.id) ?? []), instance])
    }
  return newest
}

function listed(instances: string[]): string {
  const sorted = [...instances].sort()
  return sorted.length <= 3 ? sorted.join(', ') : `${sorted.slice(0, 3).join(', ')} and ${sorted.length - 3} more`
}

import type {ConnectionPool} from '../fleet/connect.js'
import type {Registry} from '../registry/registry.js'
import {cutOffPreviousOwner} from './cutover.js'
import {readJournal} from './journal.js'
import type {MovePlan} from './move.js'
import type {PromotePlan} from './promote.js'
import type {SplitPlan} from './split.js'

/**
 * Taking the lock while an operation's journal is open: the run that wrote it lost its
 * lease (stopped, or cut off from the registry) and may still hold connections to the
 * operation's instances, ready to act once it resumes. Whatever this command is (a
 * weight change as much as a recovery), those connections are cut before it changes
 * anything, so that the stale run can change nothing more anywhere (SPEC §4.4).
 */
export async function cutOffJournalOwner(registry: Registry, pool: () => Promise<ConnectionPool>, ownToken: string): Promise<void> {
  const entry = await readJournal(registry)
  if (!entry?.owner || entry.owner === ownToken) return
  // Loaded only here: most commands never find a journal open.
  const instances =
    entry.type === 'split'
      ? (await import('./split.js')).splitInstances(entry.plan as SplitPlan)
      : entry.type === 'move'
        ? (await import('./move.js')).moveInstances(entry.plan as MovePlan)
        : (await import('./promote.js')).promoteInstances(entry.plan as PromotePlan)
  await cutOffPreviousOwner(await pool(), entry, instances, ownToken)
}

import {ShardctlError} from '../errors.js'
import type {RegistryState} from './cutover.js'
import {type JournalEntry, stepDone, stepStarted} from './journal.js'

/**
 * What a recovery does with a journal a run left behind and the facts read live from
 * the registry and the instances: pure functions, one table each, so every case can
 * be tested alone. The facts win over the journal (a step may have acted and been
 * killed before recording it), and nothing another operator changed is ever undone.
 */

export interface NodeFacts {
  reachable: boolean
  role?: string
  /** For a replica: whether it follows the other side of the operation. */
  followsPeer?: boolean
  /** min-replicas-to-write holds shardctl's write fence. */
  fenced?: boolean
}

/**
 * No recovery now. `transient`: only because a host does not answer, which may pass
 * (a run that heals tries again); otherwise a person must look first.
 */
export type Refusal = {kind: 'refuse'; reason: string; hint: string; transient?: true}

/** A refusal as the error a recovery stops on (one that only waits for a host is retried by a run that heals). */
export function refusalError(refusal: Refusal): ShardctlError {
  return new ShardctlError(refusal.reason, {code: refusal.transient ? 'EUNREACHABLE' : 'ECONFLICT', hint: refusal.hint})
}

// ---- promote --------------------------------------------------------------------

export type PromoteAction =
  | 'fence' // fence the old master (again: it lost the fence, as a restart does)
  | 'catch-up' // wait until the new master holds every byte of the (fenced) old one
  | 'promote' // the new master: REPLICAOF NO ONE
  | 'demote' // the old master follows the new one
  | 'registry' // the registry switch (an emergency that died before it)
  | 'lift' // the old master's fencing comes back, paused writes go on
  | 'repoint' // the other replicas follow the new master
  | 'carry-fencing' // the new master gets the old one's fencing
  | 'undo-registry' // roll back: the registry names the old master again
  | 'restore-old' // roll back: the old master is a master again
  | 'detach-new' // roll back: the new master follows the old one again

export type PromoteRecovery =
  | {kind: 'close'; reason: string}
  | {kind: 'roll-forward'; actions: PromoteAction[]}
  | {kind: 'roll-back'; actions: PromoteAction[]}
  | {kind: 'emergency-only'; reason: string}
  | Refusal

export interface PromoteFacts {
  registry: RegistryState
  old: NodeFacts
  new: NodeFacts
}

export function decidePromoteRecovery(
  entry: Pick<JournalEntry, 'steps'> & {plan: {mode: 'graceful' | 'emergency'}},
  facts: PromoteFacts,
): PromoteRecovery {
  const {registry, old, new: next} = facts
  const graceful = entry.plan.mode === 'graceful'
  if (registry === 'changed') {
    return {
      kind: 'refuse',
      reason: 'the registry changed since the interrupted promote: its shards name neither the old nor the new nodes as planned',
      hint: 'someone else changed them: inspect with shards:list; once the fleet is consistent, delete the journal by hand',
    }
  }
  const touched = stepStarted(entry, 'fence') || stepStarted(entry, 'promote')
  if (registry === 'before' && !touched && next.role !== 'master' && !old.fenced)
    return {kind: 'close', reason: 'nothing had been changed yet'}

  const forward = registry === 'after' || (!graceful && !old.reachable && stepStarted(entry, 'promote'))
  if (forward) {
    if (!next.reachable) {
      // Gone before it was ever promoted: it never took a write, the fenced old master has them all.
      if (registry === 'after' && graceful && old.reachable && !stepStarted(entry, 'promote')) {
        return {
          kind: 'roll-back',
          actions: ['undo-registry', ...(old.role === 'master' ? [] : (['restore-old'] as PromoteAction[])), 'lift'],
        }
      }
      return {
        kind: 'refuse',
        reason: 'cannot finish the promote: the new master does not answer',
        hint: 'bring it back, then run the command again',
        transient: true,
      }
    }
    // The old master was fenced by this operation and is not any more (it restarted, or
    // someone lifted the fence): clients with stale routing can write to it again.
    const lostFence =
      graceful && old.reachable && old.role === 'master' && !old.fenced && stepStarted(entry, 'fence') && !stepDone(entry, 'lift')
    const actions: PromoteAction[] = []
    if (next.role !== 'master') {
      // Fenced again before the catch-up, so that the proof covers its last write.
      if (lostFence) actions.push('fence')
      if (old.reachable && next.followsPeer) actions.push('catch-up')
      actions.push('promote')
    } else if (lostFence) {
      // Both have been masters since: demoting the old one would drop what it took.
      return {
        kind: 'refuse',
        reason:
          'the old master lost its fence after the new one was promoted: both may have taken writes, and demoting it would drop those it took',
        hint: "fence it (CONFIG SET min-replicas-to-write 1000000), compare its data with the new master's, then make it a replica by hand and delete the journal",
      }
    }
    if (registry !== 'after') actions.push('registry')
    if (old.reachable && !(old.role === 'slave' && old.followsPeer)) actions.push('demote')
    if (old.reachable && stepStarted(entry, 'fence')) actions.push('lift')
    actions.push('repoint')
    if (graceful) actions.push('carry-fencing')
    return {kind: 'roll-forward', actions}
  }

  // The registry still names the old master: no client has written to the new one.
  if (!old.reachable) {
    return next.reachable
      ? {kind: 'emergency-only', reason: 'the old master does not answer, so the promote cannot be rolled back'}
      : {
          kind: 'refuse',
          reason: 'neither the old nor the new master answers',
          hint: 'bring one of them back, then run the command again',
          transient: true,
        }
  }
  const actions: PromoteAction[] = []
  if (old.role !== 'master') actions.push('restore-old')
  if (next.reachable && !(next.role === 'slave' && next.followsPeer)) actions.push('detach-new')
  if (stepStarted(entry, 'fence') || old.fenced) actions.push('lift')
  return {kind: 'roll-back', actions}
}

// ---- split and move -------------------------------------------------------------

/**
 * A split and a move cut over alike: fence the source, prove the new side whole, switch
 * the registry, release (lift the fence and drop the moved databases in one step), watch
 * during the grace. What their recoveries decide alike is here; `sides` names the other
 * side in messages ("the targets", "the target").
 */
type CutOver = {name: 'split' | 'move'; sides: string}

/** The registry names neither the source nor the other side as planned: someone else changed it. */
function registryChanged(op: CutOver): Refusal {
  return {
    kind: 'refuse',
    reason: `the registry changed since the interrupted ${op.name}: the moved shards name neither the source nor ${op.sides} as planned`,
    hint: 'someone else changed them: inspect with shards:list; once the fleet is consistent, delete the journal by hand',
  }
}

/** The registry names the source again after its moved databases were dropped. */
function switchedBackAfterRelease(op: CutOver): Refusal {
  return {
    kind: 'refuse',
    reason: 'the registry names the source again, but the source already dropped the moved databases',
    hint: `someone changed the registry back: point the moved shards at ${op.sides} by hand`,
  }
}

/** After the switch, before the release: only the source can finish it. */
function sourceSilentAfterSwitch(op: CutOver): Refusal {
  return {
    kind: 'refuse',
    reason: `the source does not answer: the ${op.name} cannot be finished`,
    hint: 'bring it back, then run the command again',
    transient: true,
  }
}

/** The run's fence on the source may still be on: set, and neither released nor lifted since. */
function fenceMayBeOn(entry: Pick<JournalEntry, 'steps'>): boolean {
  return stepStarted(entry, 'fence') && !stepStarted(entry, 'release') && !stepDone(entry, 'lift')
}

// ---- split ----------------------------------------------------------------------

const SPLIT: CutOver = {name: 'split', sides: 'the targets'}

export type SplitAction =
  | 'lift' // the source's fencing comes back, paused writes go on
  | 'hold' // keep clients off the moved databases until none comes back
  | 'fence' // fence the source for the cut-over
  | 'catch-up' // every target holds every byte of the fenced source
  | 'promote' // the targets stop following the source
  | 'release' // the fence is lifted and the moved databases dropped in one step, before any other client runs
  | 'keep-source' // the source keeps them: writes may have landed there unwatched
  | 'grace' // wait, then report any key on a moved database of the source
  | 'clean-target' // each target drops the databases it does not own
  | 'detach-targets' // roll back: the targets drop their copy and stand alone

export type SplitRecovery = {kind: 'roll-forward'; actions: SplitAction[]} | {kind: 'roll-back'; actions: SplitAction[]} | Refusal

export interface SplitFacts {
  registry: RegistryState
  source: NodeFacts
  /** Each target: reachable, and whether it still follows the source. */
  targets: NodeFacts[]
}

/** What is left after the registry switch, from the hold on: the normal flow's tail. */
const FROM_HOLD: SplitAction[] = ['hold', 'fence', 'catch-up', 'promote', 'release', 'grace', 'clean-target']

export function decideSplitRecovery(entry: Pick<JournalEntry, 'steps'>, facts: SplitFacts): SplitRecovery {
  const {registry, source, targets} = facts
  const journal = entry
  if (registry === 'changed') return registryChanged(SPLIT)
  const unreachable = targets.some((t) => !t.reachable)
  const fenceStarted = fenceMayBeOn(journal)

  if (registry === 'before') {
    // Routing never left the source, or was brought back by the hold: the targets only hold copies.
    if (stepStarted(journal, 'release')) return switchedBackAfterRelease(SPLIT)
    if (!source.reachable)
      return {
        kind: 'refuse',
        reason: 'the source does not answer',
        hint: 'bring it back, then run the command again to roll the split back',
        transient: true,
      }
    if (unreachable)
      return {
        kind: 'refuse',
        reason: 'a target does not answer, so its copy cannot be dropped',
        hint: 'bring it back, then run the command again',
        transient: true,
      }
    return {kind: 'roll-back', actions: [...(fenceStarted || source.fenced ? (['lift'] as SplitAction[]) : []), 'detach-targets']}
  }

  // The registry routes the moved shards to the targets: the only way is forward.
  if (unreachable)
    return {
      kind: 'refuse',
      reason: 'a target does not answer: the split cannot be finished',
      hint: 'bring it back, then run the command again',
      transient: true,
    }
  // Released (the fence lifted and the moved databases dropped together): what is left
  // is to look for writes that landed since, and to clean the targets.
  if (stepDone(journal, 'release') || (stepStarted(journal, 'release') && !source.fenced)) {
    return {kind: 'roll-forward', actions: [...(stepDone(journal, 'grace') ? [] : (['grace'] as SplitAction[])), 'clean-target']}
  }
  if (!source.reachable) return sourceSilentAfterSwitch(SPLIT)

  const promoted = targets.filter((t) => t.role === 'master').length
  if (promoted === 0) {
    // The targets still follow the source: every write is still replicated. Start over from the hold.
    return {kind: 'roll-forward', actions: [...(fenceStarted || source.fenced ? (['lift'] as SplitAction[]) : []), ...FROM_HOLD]}
  }
  if (source.fenced) {
    // Cut over half-way, and the fence still holds: no write can have landed on the source since.
    return {
      kind: 'roll-forward',
      actions: [...(promoted < targets.length ? (['catch-up', 'promote'] as SplitAction[]) : []), 'release', 'grace', 'clean-target'],
    }
  }
  // Cut over half-way without the fence (the source restarted, or someone lifted it):
  // writes may have reached its copies unwatched, so they are kept, and said so.
  return {
    kind: 'roll-forward',
    actions: [...(promoted < targets.length ? (['promote'] as SplitAction[]) : []), 'keep-source', 'clean-target'],
  }
}

// ---- move -----------------------------------------------------------------------

export type MoveAction =
  | 'lift' // the source's fencing comes back, paused writes go on
  | 'drop-target' // roll back: the target databases are emptied (the source was never touched)
  | 'restore-fencing' // roll back: the source's min-replicas-to-write, which a copy raises by one, comes back
  | 'hold' // keep clients off the moved databases of the (fenced) source
  | 'release' // the fence is lifted and the moved databases dropped in one step
  | 'keep-source' // the source keeps them: writes may have landed there unwatched
  | 'grace' // watch the moved databases of the source, report and keep any write there

export type MoveRecovery = {kind: 'roll-forward'; actions: MoveAction[]} | {kind: 'roll-back'; actions: MoveAction[]} | Refusal

export interface MoveFacts {
  registry: RegistryState
  source: NodeFacts
  target: NodeFacts
}

const MOVE: CutOver = {name: 'move', sides: 'the target'}

/**
 * A move's copy runs in the process that started it: once that process is gone, so is
 * the stream. Before the registry switch the target databases only hold a copy, so a
 * recovery rolls back (they are emptied, the source never changed). After it (the stream
 * was stopped before it, with the source fenced and the copy proven whole), the target
 * databases are the shards: the recovery finishes on the source only.
 */
export function decideMoveRecovery(entry: Pick<JournalEntry, 'steps'>, facts: MoveFacts): MoveRecovery {
  const {registry, source, target} = facts
  if (registry === 'changed') return registryChanged(MOVE)
  const fenceOn = fenceMayBeOn(entry)
  if (registry === 'before') {
    if (stepStarted(entry, 'release')) return switchedBackAfterRelease(MOVE)
    if (!source.reachable && stepStarted(entry, 'fence'))
      return {
        kind: 'refuse',
        reason: 'the source does not answer, so its fence cannot be lifted',
        hint: 'bring it back, then run the command again to roll the move back',
        transient: true,
      }
    const lift = fenceOn || source.fenced
    if (!target.reachable) {
      // Writes go on first: the registry routes to the source, and its copy needs no fence to be dropped later.
      if (lift && source.reachable) return {kind: 'roll-back', actions: ['lift', 'drop-target']}
      return {
        kind: 'refuse',
        reason: 'the target does not answer, so its copy cannot be dropped',
        hint: 'bring it back, then run the command again',
        transient: true,
      }
    }
    const onSource: MoveAction[] = lift ? ['lift'] : source.reachable ? ['restore-fencing'] : []
    return {kind: 'roll-back', actions: [...onSource, 'drop-target']}
  }
  // The registry routes the moved shards to the target: the only way is forward, on the source.
  if (stepDone(entry, 'release') || (stepStarted(entry, 'release') && source.reachable && !source.fenced)) {
    return {kind: 'roll-forward', actions: stepDone(entry, 'grace') ? [] : ['grace']}
  }
  if (!source.reachable) return sourceSilentAfterSwitch(MOVE)
  // Still fenced since the proof: no write can have landed on the source's copy.
  if (source.fenced) return {kind: 'roll-forward', actions: ['hold', 'release', 'grace']}
  // The source lost its fence (it restarted, or someone lifted it): writes may have reached
  // its copies unwatched, so they are kept, and said so.
  return {kind: 'roll-forward', actions: ['keep-source']}
}

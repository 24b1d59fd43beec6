import {type Endpoint, instanceKey} from '../registry/address.js'
import type {SentinelView} from './sentinel.js'

/**
 * Evidence, never one message: a master name's master is what a majority of the
 * Sentinels agree on, address and config epoch both. One Sentinel can be stale (it was
 * stopped or cut off during a failover), late (it publishes +switch-master after the
 * others) or mid-failover (the leader gives the promoted replica before the others
 * know); a majority of them cannot all be wrong in the same way.
 */

export function majorityOf(total: number): number {
  return Math.floor(total / 2) + 1
}

export interface Agreement {
  master: Endpoint
  epoch: number
  /** Sentinels that said exactly this. */
  votes: number
  /** Sentinels asked. */
  of: number
}

/** The (address, epoch) that a majority of `total` Sentinels give, if any. */
export function agreement(views: SentinelView[], total: number): Agreement | undefined {
  const tally = new Map<string, {master: Endpoint; epoch: number; votes: number}>()
  for (const view of views) {
    if (!view.master || view.epoch === undefined) continue
    const key = `${instanceKey(view.master)}#${view.epoch}`
    const entry = tally.get(key) ?? {master: view.master, epoch: view.epoch, votes: 0}
    entry.votes++
    tally.set(key, entry)
  }
  const best = [...tally.values()].sort((a, b) => b.votes - a.votes)[0]
  return best && best.votes >= majorityOf(total) ? {...best, of: total} : undefined
}

/** Why there is no agreement, in one line: what each Sentinel said. */
export function disagreement(views: SentinelView[], total: number): string {
  const said = views.map((v) => {
    if (!v.reachable) return `${v.sentinel} did not answer (${v.error?.replace(/^cannot reach \S+: /, '') ?? 'no reply'})`
    if (!v.monitors) return `${v.sentinel} does not monitor it`
    return `${v.sentinel} says ${instanceKey(v.master!)} (epoch ${v.epoch}${v.flags?.includes('failover_in_progress') ? ', failover in progress' : ''})`
  })
  const answered = views.filter((v) => v.reachable).length
  const need = majorityOf(total)
  const head =
    answered < need ? `only ${answered} of ${total} Sentinels answer (a majority is ${need})` : `no ${need} of ${total} Sentinels agree`
  return `${head}: ${said.join('; ')}`
}

/**
 * Ask every Sentinel at once and settle as soon as a majority agrees (a Sentinel that
 * hangs must not delay a decision the others already make), or once all have answered.
 */
export function gatherViews(asks: Promise<SentinelView>[], total: number): Promise<{views: SentinelView[]; agreed?: Agreement}> {
  return new Promise((resolve) => {
    const views: SentinelView[] = []
    let settled = false
    if (asks.length === 0) resolve({views})
    for (const ask of asks) {
      void ask.then((view) => {
        if (settled) return
        views.push(view)
        const agreed = agreement(views, total)
        if (agreed || views.length === asks.length) {
          settled = true
          resolve({views: [...views], agreed})
        }
      })
    }
  })
}

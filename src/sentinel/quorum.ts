import {type Endpoint, instanceKey} from '../registry/address.js'
import type {SentinelView} from './sentinel.js'

/**
 * Evidence, never one message: a master name's master is what a majority of the
 * Sentinels agree on, address and config epoch both. One Sentinel can be stale (it was
 * stopped or cut off during a failover), late (it publishes +switch-master after the
 * others) or mid-failover (the leader gives the promoted replica before the others
 * know); a majority of them cannot all be wrong in the same way. A majority of
 * Sentinels, not of addresses: each one votes once, however often it is listed.
 */

export function majorityOf(total: number): number {
  return Math.floor(total / 2) + 1
}

export interface Agreement {
  master: Endpoint
  epoch: number
  /** Distinct Sentinels that said exactly this. */
  votes: number
  /** Distinct Sentinels asked. */
  of: number
}

/** Who a view is from: the Sentinel's own id when it gave one, else its address. */
const identity = (view: SentinelView) => (view.id === undefined ? `address ${view.sentinel}` : `id ${view.id}`)

/**
 * One view per Sentinel, and how many Sentinels there are. `listed` addresses may name
 * one Sentinel more than once (two spellings, or a list recorded by an older version):
 * two addresses that answer with one id are one Sentinel, one vote, and one of the total;
 * an address that does not answer counts as a Sentinel of its own, which only raises
 * the majority needed.
 */
export function distinctSentinels(views: SentinelView[], listed: number): {views: SentinelView[]; total: number; answered: number} {
  const seen = new Map<string, SentinelView>()
  for (const view of views) if (!seen.has(identity(view))) seen.set(identity(view), view)
  const distinct = [...seen.values()]
  return {views: distinct, total: listed - (views.length - distinct.length), answered: distinct.filter((v) => v.reachable).length}
}

/** The (address, epoch) that a majority of `listed` Sentinels give, if any: each Sentinel votes once. */
export function agreement(views: SentinelView[], listed: number): Agreement | undefined {
  const {views: distinct, total} = distinctSentinels(views, listed)
  const tally = new Map<string, {master: Endpoint; epoch: number; votes: number}>()
  for (const view of distinct) {
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
export function disagreement(views: SentinelView[], listed: number): string {
  const {views: distinct, total, answered} = distinctSentinels(views, listed)
  const said = distinct.map((v) => {
    if (!v.reachable) return `${v.sentinel} did not answer (${v.error?.replace(/^cannot reach \S+: /, '') ?? 'no reply'})`
    if (!v.monitors) return `${v.sentinel} does not monitor it`
    return `${v.sentinel} says ${instanceKey(v.master!)} (epoch ${v.epoch}${v.flags?.includes('failover_in_progress') ? ', failover in progress' : ''})`
  })
  const need = majorityOf(total)
  const head =
    answered < need ? `only ${answered} of ${total} Sentinels answer (a majority is ${need})` : `no ${need} of ${total} Sentinels agree`
  return `${head}: ${said.join('; ')}`
}

/**
 * Ask every Sentinel at once and settle as soon as a majority agrees (a Sentinel that
 * hangs must not delay a decision the others already make), or once all have answered.
 */
export function gatherViews(asks: Promise<SentinelView>[], listed: number): Promise<{views: SentinelView[]; agreed?: Agreement}> {
  return new Promise((resolve) => {
    const views: SentinelView[] = []
    let settled = false
    if (asks.length === 0) resolve({views})
    for (const ask of asks) {
      void ask.then((view) => {
        if (settled) return
        views.push(view)
        const agreed = agreement(views, listed)
        if (agreed || views.length === asks.length) {
          settled = true
          resolve({views: [...views], agreed})
        }
      })
    }
  })
}

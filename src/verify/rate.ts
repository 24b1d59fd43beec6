import {setTimeout as sleep} from 'node:timers/promises'

/**
 * A token bucket that keeps a long scan under a rate (keys per second, or any unit
 * the caller charges): each `take(cost)` is paid at once and, when the bucket runs
 * into debt, waits until the debt is repaid. The average rate over any second is
 * at most `perSecond` plus one burst; the burst is a tenth of a second's worth, so an
 * instance never sees more than that at once after an idle spell.
 */
export class RateLimiter {
  private tokens: number
  private last = performance.now()
  private readonly burst: number

  /** `perSecond` undefined or 0: no limit. */
  constructor(private readonly perSecond: number | undefined) {
    this.burst = perSecond ? Math.max(1, perSecond / 10) : 0
    this.tokens = this.burst
  }

  get limited(): boolean {
    return Boolean(this.perSecond)
  }

  async take(cost: number, signal?: AbortSignal): Promise<void> {
    if (!this.perSecond || cost <= 0) return
    const now = performance.now()
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) * this.perSecond) / 1000)
    this.last = now
    this.tokens -= cost
    if (this.tokens < 0) await sleep((-this.tokens / this.perSecond) * 1000, undefined, {signal})
  }
}

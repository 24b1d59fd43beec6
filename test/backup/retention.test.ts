import {expect} from 'chai'
import fc from 'fast-check'

import {INCOMPLETE_GRACE_MS, type RetentionCandidate, type RetentionRules, planRetention} from '../../src/backup/retention.js'

const HOUR = 3600 * 1000
const NOW = new Date('2026-12-02T12:00:00Z')

const at = (hoursAgo: number) => new Date(NOW.getTime() - hoursAgo * HOUR)

function backup(
  id: string,
  hoursAgo: number,
  status: RetentionCandidate['status'] = 'complete',
  series = 'fleet',
  instances: string[] = [],
): RetentionCandidate {
  return {id, series, status, time: at(hoursAgo), lastWrite: at(hoursAgo), instances}
}

const kept = (backups: RetentionCandidate[], rules: RetentionRules) =>
  planRetention(backups, rules, NOW)
    .filter((d) => d.keep)
    .map((d) => d.id)
    .sort()

describe('retention rules', () => {
  it('--keep-last keeps the N newest usable backups of each series', () => {
    const backups = [
      backup('a', 1),
      backup('b', 2),
      backup('c', 3),
      backup('x', 1, 'complete', 'host1'),
      backup('y', 5, 'complete', 'host1'),
    ]
    expect(kept(backups, {keepLast: 2})).to.deep.equal(['a', 'b', 'x', 'y'])
  })

  it('--keep-hourly keeps the newest backup of each of the last N hours that have one', () => {
    // Two in the same UTC hour: only the newer one counts for it.
    const backups = [backup('h0a', 0.1), backup('h0b', 0.6), backup('h2', 2.2), backup('h5', 5.5), backup('h9', 9.5)]
    expect(kept(backups, {keepHourly: 3})).to.deep.equal(['h0a', 'h2', 'h5'])
  })

  it('--keep-daily and --keep-monthly bucket by UTC day and month', () => {
    const backups = [backup('d0', 1), backup('d0-old', 11), backup('d1', 25), backup('d40', 40 * 24)]
    expect(kept(backups, {keepDaily: 2})).to.deep.equal(['d0', 'd1'])
    expect(kept(backups, {keepMonthly: 2})).to.deep.equal(['d0', 'd40'])
  })

  it('keeps the newest complete backup even when no rule would, and when newer ones are partial', () => {
    const backups = [backup('p1', 1, 'partial'), backup('c2', 2), backup('c3', 3)]
    expect(kept(backups, {keepLast: 1})).to.deep.equal(['c2', 'p1'])
    expect(kept(backups, {keepLast: 0})).to.deep.equal(['c2'])
  })

  it('keeps, for each instance, the newest backup holding a usable copy of it, saying so: a series of partial backups too', () => {
    // a failed in p1, b in p2: each one's newest copy is in the other; p3 holds only older copies.
    const backups = [
      backup('p1', 1, 'partial', 'fleet', ['b:1', 'reg:1']),
      backup('p2', 2, 'partial', 'fleet', ['a:1', 'reg:1']),
      backup('p3', 3, 'partial', 'fleet', ['a:1', 'b:1']),
      backup('run', 0.5, 'incomplete', 'fleet'),
    ]
    const decisions = planRetention(backups, {keepLast: 0}, NOW)
    expect(decisions.filter((d) => d.keep).map((d) => `${d.id}: ${d.reasons.join(', ')}`)).to.deep.equal([
      'p1: newest copy of b:1, reg:1',
      'p2: newest copy of a:1',
      'run: incomplete, may still be running',
    ])
    expect(decisions.find((d) => d.id === 'p3')!.keep).to.equal(false)
  })

  it('removes a backup without a manifest once nothing was written to it for a day, and keeps a younger one', () => {
    const backups = [backup('ok', 30), backup('stale', 25, 'incomplete'), backup('running', 1, 'incomplete')]
    const decisions = planRetention(backups, {keepLast: 5}, NOW)
    expect(decisions.find((d) => d.id === 'stale')).to.include({keep: false})
    expect(decisions.find((d) => d.id === 'stale')!.reasons).to.deep.equal(['incomplete for over a day'])
    expect(decisions.find((d) => d.id === 'running')!.keep).to.equal(true)
  })
})

describe('property: prune never removes the newest complete backup, nor the newest copy of an instance', () => {
  const candidate = fc.record({
    series: fc.constantFrom('fleet', 'host1', 'host2'),
    status: fc.constantFrom<RetentionCandidate['status']>('complete', 'complete', 'partial', 'incomplete'),
    hoursAgo: fc.double({min: 0, max: 24 * 400, noNaN: true}),
    instances: fc.subarray(['a:1', 'b:1', 'c:1']),
    writtenHoursAfter: fc.double({min: 0, max: 48, noNaN: true}),
  })
  const rules = fc.record(
    {
      keepLast: fc.nat(6),
      keepHourly: fc.nat(30),
      keepDaily: fc.nat(10),
      keepMonthly: fc.nat(14),
    },
    {requiredKeys: []},
  )

  it('in every series, whatever the backups and the rules', () => {
    fc.assert(
      fc.property(fc.array(candidate, {maxLength: 60}), rules, (raw, chosen) => {
        const backups = raw.map((r, i): RetentionCandidate => {
          const time = at(r.hoursAgo)
          const lastWrite = new Date(Math.min(NOW.getTime(), time.getTime() + r.writtenHoursAfter * HOUR))
          return {id: `b${i}`, series: r.series, status: r.status, time, lastWrite, instances: r.status === 'incomplete' ? [] : r.instances}
        })
        const decisions = new Map(planRetention(backups, chosen, NOW).map((d) => [d.id, d]))
        expect(decisions.size).to.equal(backups.length)
        for (const series of new Set(backups.map((b) => b.series))) {
          const complete = backups.filter((b) => b.series === series && b.status === 'complete')
          const newest = Math.max(...complete.map((b) => b.time.getTime()))
          // (Two taken the same millisecond are both the newest: one of them is kept.)
          if (complete.length > 0)
            expect(
              complete.some((b) => b.time.getTime() === newest && decisions.get(b.id)!.keep),
              `newest complete of ${series}`,
            ).to.equal(true)
          // Each instance keeps its newest usable copy.
          for (const instance of ['a:1', 'b:1', 'c:1']) {
            const holding = backups.filter((b) => b.series === series && b.instances.includes(instance))
            const newestCopy = Math.max(...holding.map((b) => b.time.getTime()))
            if (holding.length > 0)
              expect(
                holding.some((b) => b.time.getTime() === newestCopy && decisions.get(b.id)!.keep),
                `newest copy of ${instance} in ${series}`,
              ).to.equal(true)
          }
          // And --keep-last N keeps N usable ones whenever there are that many.
          const usable = backups.filter((b) => b.series === series && b.status !== 'incomplete')
          const keptUsable = usable.filter((b) => decisions.get(b.id)!.keep).length
          expect(keptUsable).to.be.at.least(Math.min(chosen.keepLast ?? 0, usable.length))
        }
        for (const b of backups.filter((b) => b.status === 'incomplete')) {
          const young = NOW.getTime() - b.lastWrite.getTime() < INCOMPLETE_GRACE_MS
          expect(decisions.get(b.id)!.keep).to.equal(young)
        }
      }),
      {numRuns: 500},
    )
  })
})

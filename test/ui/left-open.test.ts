import {expect} from 'chai'

import {healWithinMs} from '../../src/flags.js'
import type {LeftOpen} from '../../src/ops/cutover.js'
import {leftOpenError} from '../../src/ui/left-open.js'

/** How a cut-over that stopped half-way is said: one line, the same facts under --json, exit 5 while writes are refused. */
describe('ui/left-open: what a cut-over that stopped half-way left', () => {
  const now = Date.parse('2026-12-01T10:00:10.000Z')
  const left = (over: Partial<LeftOpen> = {}): LeftOpen => ({
    operation: {type: 'split', target: '10.0.0.5:6379', id: 'abc', startedAt: '2026-12-01T09:59:00.000Z'},
    cause: {
      code: 'EUNREACHABLE',
      message: 'the source does not answer: the split cannot be finished',
      hint: 'bring it back, then run the command again',
    },
    healWithinMs: 6000,
    retried: true,
    refusing: [
      {instance: '10.0.0.5:6379', why: 'silent', shards: ['s000', 's002', 's004', 's006'], fencedSince: '2026-12-01T10:00:00.000Z'},
      {instance: '10.0.0.9:6379', why: 'replica', shards: ['s001']},
      {instance: '10.0.0.7:6379', why: 'fence', shards: [], fencedSince: '2026-12-01T10:00:05.500Z'},
    ],
    lossless: true,
    ...over,
  })
  const command = 'shardctl shards:split --recover -r redis://10.0.0.2:6379/0'

  it('names each instance, why it refuses writes, since when, its shards; that nothing was lost; the command; exit 5', () => {
    const error = leftOpenError(left(), command, now)
    expect(error.exitCode).to.equal(5)
    expect(error.code).to.equal('EDEGRADED')
    expect(error.message).to.equal(
      'the split of 10.0.0.5:6379 stopped half-way and did not heal within --heal-within 6.0 s (the source does not answer: the split cannot be finished): ' +
        "writes are refused by 10.0.0.5:6379 (it does not answer; shardctl's write fence is on since 2026-12-01T10:00:00.000Z (10.0 s ago); 4 shards s000…s006 (4)), " +
        'and by 10.0.0.9:6379 (still a replica, yet the registry routes 1 shard s001 to it), ' +
        "and by 10.0.0.7:6379 (shardctl's write fence since 2026-12-01T10:00:05.500Z (4.5 s ago); no shard routed to it now); " +
        'no acknowledged write was lost',
    )
    expect(error.hint).to.equal(`to finish or roll it back, run: ${command} (bring it back, then run the command again)`)
    expect(error.details).to.include({recover: command, lossless: true, healWithinMs: 6000})
    expect(error.details?.refusing).to.have.length(3)
  })

  it('a failure no retry could fix, with nothing refusing writes: said without the bound, exit 1', () => {
    const error = leftOpenError(
      left({retried: false, refusing: [], lossless: false, cause: {code: 'ECONFLICT', message: 'x'}}),
      command,
      now,
    )
    expect(error.exitCode).to.equal(1)
    expect(error.code).to.equal('EOPEN')
    expect(error.message).to.equal(
      'the split of 10.0.0.5:6379 stopped half-way (x): no instance refuses writes, but the split stays open in the journal and no other operation can start',
    )
    expect(error.hint).to.equal(`to finish or roll it back, run: ${command}`)
  })

  it('--heal-within: --max-pause plus 5 s by default, 0 turns healing off, at most 10 minutes', () => {
    expect(healWithinMs(undefined, 1000)).to.equal(6000)
    expect(healWithinMs(undefined, 250)).to.equal(5250)
    expect(healWithinMs('0', 1000)).to.equal(0)
    expect(healWithinMs('0s', 1000)).to.equal(0)
    expect(healWithinMs('30s', 1000)).to.equal(30_000)
    expect(() => healWithinMs('11m', 1000)).to.throw(/at most 10m/)
    expect(() => healWithinMs('soon', 1000)).to.throw(/invalid duration/)
  })
})

import {expect} from 'chai'

import {registryStateOf} from '../../src/ops/cutover.js'
import {type NodeFacts, decideMoveRecovery, decidePromoteRecovery, decideSplitRecovery} from '../../src/ops/recovery.js'
import type {Shard} from '../../src/registry/schema.js'

/** A journal that got as far as these steps (each started, all but the last `open` ones done). */
function journal(steps: string[], open: string[] = []) {
  return steps.flatMap((name) => [
    {name, state: 'started' as const, at: ''},
    ...(open.includes(name) ? [] : [{name, state: 'done' as const, at: ''}]),
  ])
}

const up = (role: string, followsPeer = false, fenced = false): NodeFacts => ({reachable: true, role, followsPeer, fenced})
const down: NodeFacts = {reachable: false}

describe('ops/recovery: what a recovery does with a journal and the facts', () => {
  describe('decidePromoteRecovery (graceful)', () => {
    const graceful = (steps: string[], open: string[] = []) => ({steps: journal(steps, open), plan: {mode: 'graceful' as const}})
    const cases: [string, ReturnType<typeof graceful>, Parameters<typeof decidePromoteRecovery>[1], unknown][] = [
      ['nothing touched yet: close', graceful([]), {registry: 'before', old: up('master'), new: up('slave', true)}, {kind: 'close'}],
      [
        'fenced, not switched: lift the fence',
        graceful(['fence', 'catch-up']),
        {registry: 'before', old: up('master', false, true), new: up('slave', true)},
        {kind: 'roll-back', actions: ['lift']},
      ],
      [
        'killed while fencing (the fence may or may not be on): lift',
        graceful(['fence'], ['fence']),
        {registry: 'before', old: up('master'), new: up('slave', true)},
        {kind: 'roll-back', actions: ['lift']},
      ],
      [
        'a fence on the old master that the journal does not show (killed before the record): lift',
        graceful([]),
        {registry: 'before', old: up('master', false, true), new: up('slave', true)},
        {kind: 'roll-back', actions: ['lift']},
      ],
      [
        'switched, nothing else: catch up, promote, demote, lift, repoint, fencing',
        graceful(['fence', 'catch-up', 'registry']),
        {registry: 'after', old: up('master', false, true), new: up('slave', true)},
        {kind: 'roll-forward', actions: ['catch-up', 'promote', 'demote', 'lift', 'repoint', 'carry-fencing']},
      ],
      [
        'switched, and the old master lost its fence meanwhile (a restart): fence it again before the catch-up',
        graceful(['fence', 'catch-up', 'registry']),
        {registry: 'after', old: up('master', false, false), new: up('slave', true)},
        {kind: 'roll-forward', actions: ['fence', 'catch-up', 'promote', 'demote', 'lift', 'repoint', 'carry-fencing']},
      ],
      [
        'promoted, and the old master lost its fence meanwhile: refuse (demoting it would drop what it took)',
        graceful(['fence', 'catch-up', 'registry', 'promote']),
        {registry: 'after', old: up('master', false, false), new: up('master')},
        {kind: 'refuse'},
      ],
      [
        'promoted: demote, lift, repoint, fencing',
        graceful(['fence', 'catch-up', 'registry', 'promote']),
        {registry: 'after', old: up('master', false, true), new: up('master')},
        {kind: 'roll-forward', actions: ['demote', 'lift', 'repoint', 'carry-fencing']},
      ],
      [
        'demoted: lift, repoint, fencing',
        graceful(['fence', 'catch-up', 'registry', 'promote', 'demote']),
        {registry: 'after', old: up('slave', true), new: up('master')},
        {kind: 'roll-forward', actions: ['lift', 'repoint', 'carry-fencing']},
      ],
      [
        'switched, the old master gone: promote without it',
        graceful(['fence', 'catch-up', 'registry']),
        {registry: 'after', old: down, new: up('slave', true)},
        {kind: 'roll-forward', actions: ['promote', 'repoint', 'carry-fencing']},
      ],
      [
        'switched, the new master gone before its promotion: switch back, lift',
        graceful(['fence', 'catch-up', 'registry']),
        {registry: 'after', old: up('master', false, true), new: down},
        {kind: 'roll-back', actions: ['undo-registry', 'lift']},
      ],
      [
        'the new master gone after its promotion: refuse (it may hold writes)',
        graceful(['fence', 'catch-up', 'registry', 'promote']),
        {registry: 'after', old: up('master', false, true), new: down},
        {kind: 'refuse'},
      ],
      [
        'not switched, the old master gone: only an emergency finish is left',
        graceful(['fence', 'catch-up']),
        {registry: 'before', old: down, new: up('slave', true)},
        {kind: 'emergency-only'},
      ],
      ['not switched, both gone: refuse', graceful(['fence']), {registry: 'before', old: down, new: down}, {kind: 'refuse'}],
      [
        'someone else changed the registry: refuse, undo nothing',
        graceful(['fence', 'catch-up', 'registry']),
        {registry: 'changed', old: up('master', false, true), new: up('slave', true)},
        {kind: 'refuse'},
      ],
      [
        'an old journal that demoted before the switch: restore the old master, detach the new one, lift',
        graceful(['fence', 'catch-up', 'promote', 'demote']),
        {registry: 'before', old: up('slave', true), new: up('master')},
        {kind: 'roll-back', actions: ['restore-old', 'detach-new', 'lift']},
      ],
    ]
    for (const [name, entry, facts, expected] of cases) {
      it(name, () => {
        expect(decidePromoteRecovery(entry, facts)).to.deep.include(expected)
      })
    }
  })

  describe('decidePromoteRecovery (emergency)', () => {
    const emergency = (steps: string[]) => ({steps: journal(steps), plan: {mode: 'emergency' as const}})
    it('promoted while the old master is gone, registry not switched: switch and repoint', () => {
      expect(decidePromoteRecovery(emergency(['promote']), {registry: 'before', old: down, new: up('master')})).to.deep.equal({
        kind: 'roll-forward',
        actions: ['registry', 'repoint'],
      })
    })
    it('promoted, but the old master is back and the registry still names it: roll back to it', () => {
      expect(decidePromoteRecovery(emergency(['promote']), {registry: 'before', old: up('master'), new: up('master')})).to.deep.equal({
        kind: 'roll-back',
        actions: ['detach-new'],
      })
    })
  })

  describe('decideSplitRecovery', () => {
    const split = (steps: string[], open: string[] = []) => ({steps: journal(steps, open)})
    const source = (fenced = false): NodeFacts => ({reachable: true, fenced})
    const following = up('slave', true)
    const promoted = up('master')
    const FROM_HOLD = ['hold', 'fence', 'catch-up', 'promote', 'release', 'grace', 'clean-target']
    const cut = ['copy', 'registry', 'hold', 'fence', 'catch-up']
    const cases: [string, ReturnType<typeof split>, Parameters<typeof decideSplitRecovery>[1], unknown][] = [
      [
        'killed while copying: detach the targets',
        split(['copy'], ['copy']),
        {registry: 'before', source: source(), targets: [following]},
        {kind: 'roll-back', actions: ['detach-targets']},
      ],
      [
        'routing switched back by the hold: detach',
        split(['copy', 'registry', 'hold', 'undo-registry']),
        {registry: 'before', source: source(), targets: [following]},
        {kind: 'roll-back', actions: ['detach-targets']},
      ],
      [
        'routing switched back after a failed catch-up, the fence still on: lift, detach',
        split([...cut, 'undo-registry'], ['catch-up']),
        {registry: 'before', source: source(true), targets: [following]},
        {kind: 'roll-back', actions: ['lift', 'detach-targets']},
      ],
      [
        'switched, targets still follow: start over from the hold',
        split(['copy', 'registry']),
        {registry: 'after', source: source(), targets: [following]},
        {kind: 'roll-forward', actions: FROM_HOLD},
      ],
      [
        'fenced, targets still follow: lift, then start over from the hold',
        split(cut),
        {registry: 'after', source: source(true), targets: [following]},
        {kind: 'roll-forward', actions: ['lift', ...FROM_HOLD]},
      ],
      [
        'half promoted under the fence: catch up, promote, release, grace, clean',
        split([...cut, 'promote'], ['promote']),
        {registry: 'after', source: source(true), targets: [promoted, following]},
        {kind: 'roll-forward', actions: ['catch-up', 'promote', 'release', 'grace', 'clean-target']},
      ],
      [
        'promoted under the fence: release, grace, clean',
        split([...cut, 'promote']),
        {registry: 'after', source: source(true), targets: [promoted]},
        {kind: 'roll-forward', actions: ['release', 'grace', 'clean-target']},
      ],
      [
        'killed in the release before it ran (still fenced): release, grace, clean',
        split([...cut, 'promote', 'release'], ['release']),
        {registry: 'after', source: source(true), targets: [promoted]},
        {kind: 'roll-forward', actions: ['release', 'grace', 'clean-target']},
      ],
      [
        'killed in the release after it ran (fence gone): grace, clean',
        split([...cut, 'promote', 'release'], ['release']),
        {registry: 'after', source: source(false), targets: [promoted]},
        {kind: 'roll-forward', actions: ['grace', 'clean-target']},
      ],
      [
        'promoted, the fence gone before any release (the source restarted): keep the source copies, never drop them',
        split([...cut, 'promote']),
        {registry: 'after', source: source(false), targets: [promoted]},
        {kind: 'roll-forward', actions: ['keep-source', 'clean-target']},
      ],
      [
        'released: grace, clean',
        split([...cut, 'promote', 'release']),
        {registry: 'after', source: source(), targets: [promoted]},
        {kind: 'roll-forward', actions: ['grace', 'clean-target']},
      ],
      [
        'graced: clean',
        split([...cut, 'promote', 'release', 'grace']),
        {registry: 'after', source: source(), targets: [promoted]},
        {kind: 'roll-forward', actions: ['clean-target']},
      ],
      [
        'released, the source gone: the targets are finished without it',
        split([...cut, 'promote', 'release']),
        {registry: 'after', source: down, targets: [promoted]},
        {kind: 'roll-forward', actions: ['grace', 'clean-target']},
      ],
      [
        'someone else changed the registry: refuse',
        split(['copy', 'registry']),
        {registry: 'changed', source: source(), targets: [following]},
        {kind: 'refuse'},
      ],
      [
        'a target gone after the switch: refuse',
        split(['copy', 'registry']),
        {registry: 'after', source: source(), targets: [down]},
        {kind: 'refuse'},
      ],
      [
        'routing back at the source although it dropped the moved databases: refuse',
        split([...cut, 'promote', 'release']),
        {registry: 'before', source: source(), targets: [promoted]},
        {kind: 'refuse'},
      ],
      [
        'the source gone before the switch: refuse',
        split(['copy']),
        {registry: 'before', source: down, targets: [following]},
        {kind: 'refuse'},
      ],
      [
        'the source gone after the switch, before the release: refuse',
        split(['copy', 'registry']),
        {registry: 'after', source: down, targets: [following]},
        {kind: 'refuse'},
      ],
    ]
    for (const [name, entry, facts, expected] of cases) {
      it(name, () => {
        expect(decideSplitRecovery(entry, facts)).to.deep.include(expected)
      })
    }
  })

  describe('decideMoveRecovery', () => {
    const move = (steps: string[], open: string[] = []) => ({steps: journal(steps, open)})
    const source = (fenced = false): NodeFacts => ({reachable: true, fenced})
    const target = up('master')
    const proven = ['copy', 'fence', 'catch-up', 'stop-stream']
    const cases: [string, ReturnType<typeof move>, Parameters<typeof decideMoveRecovery>[1], unknown][] = [
      [
        "killed while copying: the source's fencing as it was, the target databases emptied",
        move(['copy'], ['copy']),
        {registry: 'before', source: source(), target},
        {kind: 'roll-back', actions: ['restore-fencing', 'drop-target']},
      ],
      [
        'killed while copying, the source silent: the target is emptied all the same (the source was never touched)',
        move(['copy'], ['copy']),
        {registry: 'before', source: down, target},
        {kind: 'roll-back', actions: ['drop-target']},
      ],
      [
        'killed while fencing: lift, then empty the target',
        move(['copy', 'fence'], ['fence']),
        {registry: 'before', source: source(), target},
        {kind: 'roll-back', actions: ['lift', 'drop-target']},
      ],
      [
        'proven and the stream stopped, not switched: lift, empty the target',
        move(proven),
        {registry: 'before', source: source(true), target},
        {kind: 'roll-back', actions: ['lift', 'drop-target']},
      ],
      [
        'killed while switching, the switch not taken: roll back',
        move([...proven, 'registry'], ['registry']),
        {registry: 'before', source: source(true), target},
        {kind: 'roll-back', actions: ['lift', 'drop-target']},
      ],
      [
        'fenced, the source silent: wait for it',
        move(['copy', 'fence']),
        {registry: 'before', source: down, target},
        {kind: 'refuse', transient: true},
      ],
      [
        'not switched, the target silent: wait for it',
        move(['copy']),
        {registry: 'before', source: source(), target: down},
        {kind: 'refuse', transient: true},
      ],
      [
        'fenced, not switched, the target silent: lift first, so that writes go on while it is waited for',
        move(proven),
        {registry: 'before', source: source(true), target: down},
        {kind: 'roll-back', actions: ['lift', 'drop-target']},
      ],
      [
        'switched, the source still fenced: hold, release, grace',
        move([...proven, 'registry']),
        {registry: 'after', source: source(true), target},
        {kind: 'roll-forward', actions: ['hold', 'release', 'grace']},
      ],
      [
        'switched, the target silent: finished on the source all the same',
        move([...proven, 'registry', 'hold']),
        {registry: 'after', source: source(true), target: down},
        {kind: 'roll-forward', actions: ['hold', 'release', 'grace']},
      ],
      [
        'killed while releasing, the release taken (fence off): grace',
        move([...proven, 'registry', 'hold', 'release'], ['release']),
        {registry: 'after', source: source(), target},
        {kind: 'roll-forward', actions: ['grace']},
      ],
      [
        'killed while releasing, the release not taken (still fenced): release again',
        move([...proven, 'registry', 'hold', 'release'], ['release']),
        {registry: 'after', source: source(true), target},
        {kind: 'roll-forward', actions: ['hold', 'release', 'grace']},
      ],
      [
        'killed after the grace: nothing left',
        move([...proven, 'registry', 'hold', 'release', 'grace']),
        {registry: 'after', source: source(), target},
        {kind: 'roll-forward', actions: []},
      ],
      [
        'switched, and the source lost its fence before the release: its copies are kept',
        move([...proven, 'registry']),
        {registry: 'after', source: source(false), target},
        {kind: 'roll-forward', actions: ['keep-source']},
      ],
      [
        'switched, the source silent: wait for it',
        move([...proven, 'registry']),
        {registry: 'after', source: down, target},
        {kind: 'refuse', transient: true},
      ],
      ['the registry changed by someone else: refuse', move(proven), {registry: 'changed', source: source(true), target}, {kind: 'refuse'}],
      [
        'switched back by hand after the release: refuse',
        move([...proven, 'registry', 'hold', 'release']),
        {registry: 'before', source: source(), target},
        {kind: 'refuse'},
      ],
    ]
    for (const [name, entry, facts, expected] of cases) {
      it(name, () => {
        expect(decideMoveRecovery(entry, facts)).to.deep.include(expected)
      })
    }
  })

  describe('registryStateOf: the registry against a plan', () => {
    const shard = (id: string, master: string, replicas: string[] = []): Shard => {
      const parse = (a: string) => ({host: a.split(':')[0], port: Number(a.split(':')[1].split('/')[0]), db: Number(a.split('/')[1])})
      return {id, weight: 1, master: parse(master), replicas: replicas.map(parse), persist: [], extra: {}}
    }
    const move = {
      id: 's1',
      before: {master: 'a:1/0', replicas: ['b:1/0'], persist: []},
      after: {master: 'b:1/0', replicas: ['a:1/0'], persist: []},
    }
    it('before, after, or changed by someone else (a replica added counts)', () => {
      expect(registryStateOf([shard('s1', 'a:1/0', ['b:1/0'])], [move])).to.equal('before')
      expect(registryStateOf([shard('s1', 'b:1/0', ['a:1/0'])], [move])).to.equal('after')
      expect(registryStateOf([shard('s1', 'b:1/0', ['a:1/0', 'c:1/0'])], [move])).to.equal('changed')
      expect(registryStateOf([], [move])).to.equal('changed')
    })
  })
})

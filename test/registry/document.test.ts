import {expect} from 'chai'
import fc from 'fast-check'

import {type ScriptedRedis, close, connect} from '../../src/fleet/connect.js'
import {type RegistryDocument, applyDocument, diffDocument, stagingKey} from '../../src/registry/document.js'
import {Registry, currentActor} from '../../src/registry/registry.js'
import {registryKeys} from '../../src/registry/schema.js'
import {useFleet} from '../helpers/fleet.js'

/**
 * The import's core against a real registry, with an application assigning hashes while
 * it runs: between the batches it compares (so before the comparison of some hashes and
 * after that of others), and between its comparison and its apply.
 */
describe('registry/document: an import racing assigners', () => {
  const fleet = useFleet()
  let client: ScriptedRedis
  let registry: Registry
  before(async () => {
    client = await connect({host: '127.0.0.1', port: fleet.registry.port, db: 0}, {timeoutMs: 5000})
    registry = new Registry(client, registryKeys(), currentActor('test'))
  })
  after(() => close(client))

  const ids = ['a', 'b', 'c']
  const document = (): RegistryDocument => ({
    format: 'shardctl-registry',
    version: 2,
    prefix: 'shards',
    exportedAt: '',
    orphans: {},
    shards: ids.map((id, i) => ({id, weight: 1, master: `10.0.0.1:6379/${i}`, replicas: [], persist: [], extra: {}})),
  })
  async function seed(existing: [string, string][]): Promise<void> {
    for (const [i, id] of ids.entries()) {
      await fleet.reg.hset(`shards.${id}`, 'master', `10.0.0.1:6379/${i}`)
      await fleet.reg.zadd('shards.list', 1, id)
    }
    if (existing.length > 0) await fleet.reg.hset('shards.map', ...existing.flat())
  }

  const hash = fc.constantFrom(...Array.from({length: 12}, (_, i) => `h${i}`))
  const shard = fc.constantFrom(...ids)
  const scenario = fc.record({
    existing: fc.array(fc.tuple(hash, shard), {maxLength: 6}),
    wanted: fc.array(fc.tuple(hash, shard), {minLength: 1, maxLength: 12}),
    // An application's set-if-absent, after batch n of the comparison (n past the last: between comparison and apply).
    racing: fc.array(fc.tuple(hash, shard, fc.nat(12)), {maxLength: 8}),
    repoint: fc.boolean(),
  })

  it('property: never changes an assignment an application made while it ran (with --repoint: once it compared the hash)', async () => {
    await fc.assert(
      fc.asyncProperty(scenario, async ({existing, wanted, racing, repoint}) => {
        await fleet.reg.flushall()
        await seed(existing)
        const initial = await fleet.reg.hgetall('shards.map')
        const want = Object.fromEntries(wanted)
        // hash -> [shard, whether the import had compared every hash by then]
        const made = new Map<string, [string, boolean]>()
        const assign = async (after: number) => {
          for (const [h, id, n] of racing)
            if (n === after && (await fleet.reg.hsetnx('shards.map', h, id)) === 1) made.set(h, [id, after >= entries.length])
        }
        const entries = Object.entries(want)
        async function* batches(): AsyncGenerator<string[]> {
          for (let i = 0; i < entries.length; i++) {
            await assign(i)
            yield entries[i]
          }
        }
        const stage = stagingKey(registry, `t${Math.random()}`)
        const plan = await diffDocument(registry, document(), {prune: false, repoint, map: batches(), stage})
        for (let n = entries.length; n <= 12; n++) await assign(n)
        await applyDocument(registry, plan.diff, {key: stage, entries: plan.staged, mapWasEmpty: plan.mapWasEmpty})
        const final = await fleet.reg.hgetall('shards.map')
        for (const [h, [id, compared]] of made) {
          // --repoint cannot tell an assignment made before it compared the hash from one made before it began.
          if (repoint && !compared) expect(final[h], h).to.be.oneOf([id, want[h]])
          else expect(final[h], `${h}: assigned to ${id} while the import ran`).to.equal(id)
        }
        for (const [h, id] of Object.entries(initial)) {
          // Present before the import began: re-pointed only with --repoint.
          expect(final[h], h).to.equal(repoint && want[h] !== undefined ? want[h] : id)
        }
        for (const [h, id] of entries) if (initial[h] === undefined && !made.has(h)) expect(final[h], h).to.equal(id)
        if (!repoint) for (const [h, id] of entries) if (final[h] !== id) expect(initial[h] ?? made.get(h)?.[0], h).to.equal(final[h])
        expect(await fleet.reg.keys('shards._staging*')).to.deep.equal([])
      }),
      {numRuns: 200},
    )
  })

  it('--prune drains first and removes a shard only if no hash points at it once the map is in', async () => {
    await seed([['h1', 'a']])
    const doc = document()
    doc.shards = doc.shards.filter((s) => s.id !== 'c')
    const stage = stagingKey(registry, 'prune')
    const plan = await diffDocument(registry, doc, {prune: true, stage})
    expect(plan.diff.removed).to.deep.equal(['c'])
    // An application assigns a hash to c between the plan and its apply.
    await fleet.reg.hset('shards.map', 'late', 'c')
    const result = await applyDocument(registry, plan.diff, {key: stage, entries: plan.staged, mapWasEmpty: plan.mapWasEmpty})
    expect(result.notRemoved).to.deep.equal([{id: 'c', hashes: 1}])
    expect(await fleet.reg.zscore('shards.list', 'c')).to.equal('0')
    expect(await fleet.reg.hget('shards.c', 'master')).to.equal('10.0.0.1:6379/2')
  })
})

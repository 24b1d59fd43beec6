import {expect} from 'chai'
import fc from 'fast-check'

import {instanceOfSlug, instanceSlug} from '../../src/backup/layout.js'
import {runPerHost, selectInstances} from '../../src/backup/plan.js'
import {parseAddress} from '../../src/registry/address.js'
import type {Shard} from '../../src/registry/schema.js'

const shard = (id: string, master: string, nodes: {replicas?: string[]; persist?: string[]} = {}): Shard => ({
  id,
  weight: 1,
  master: parseAddress(master),
  replicas: (nodes.replicas ?? []).map(parseAddress),
  persist: (nodes.persist ?? []).map(parseAddress),
  extra: {},
})

const registrySide = {endpoint: {host: '10.0.0.1', port: 6379}, replicas: [{host: '10.0.0.2', port: 6379}]}

describe('which node serves each snapshot', () => {
  const shards = [
    shard('s1', '10.0.1.1:6379/0', {replicas: ['10.0.1.2:6379/0'], persist: ['10.0.1.3:6379/0']}),
    shard('s2', '10.0.1.1:6379/1', {replicas: ['10.0.1.2:6379/1'], persist: ['10.0.1.3:6379/1']}),
    shard('s3', '10.0.2.1:6379/0', {replicas: ['10.0.2.2:6379/0']}),
    shard('s4', '10.0.3.1:6379/0'),
  ]

  it('the persistence replica first, then read replicas; the master only when it has neither; the registry from its replica', () => {
    const {instances, whole} = selectInstances(shards, registrySide, {instances: [], shards: []}, 'auto')
    expect(whole).to.equal(true)
    const byInstance = Object.fromEntries(instances.map((i) => [i.instance, i.candidates.map((c) => `${c.node} ${c.role}`)]))
    expect(byInstance).to.deep.equal({
      '10.0.0.1:6379': ['10.0.0.2:6379 replica'],
      '10.0.1.1:6379': ['10.0.1.3:6379 persist', '10.0.1.2:6379 replica'],
      '10.0.2.1:6379': ['10.0.2.2:6379 replica'],
      '10.0.3.1:6379': ['10.0.3.1:6379 master'],
    })
    expect(instances.find((i) => i.instance === '10.0.1.1:6379')!.shards).to.deep.equal([
      {id: 's1', db: 0},
      {id: 's2', db: 1},
    ])
  })

  it('--from master takes every snapshot from the master; --instance and --shard pick instances', () => {
    const {instances, whole} = selectInstances(shards, registrySide, {instances: [parseAddress('10.0.2.1:6379')], shards: ['s1']}, 'master')
    expect(whole).to.equal(false)
    expect(instances.map((i) => [i.instance, i.candidates.map((c) => c.role)])).to.deep.equal([
      ['10.0.1.1:6379', ['master']],
      ['10.0.2.1:6379', ['master']],
    ])
  })

  it('refuses an instance no shard has its master on, and an unknown shard', () => {
    expect(() => selectInstances(shards, registrySide, {instances: [parseAddress('10.0.1.2:6379')], shards: []}, 'auto')).to.throw(
      /no shard has its master on 10\.0\.1\.2:6379, and it is not the registry/,
    )
    expect(() => selectInstances(shards, registrySide, {instances: [], shards: ['nope']}, 'auto')).to.throw(/unknown shard "nope"/)
  })
})

describe('property: snapshots run at most N at once, never two from one host', () => {
  it('whatever the jobs, their hosts and their durations', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({host: fc.constantFrom('a', 'b', 'c', 'd'), ticks: fc.nat(3), fails: fc.boolean()}), {maxLength: 25}),
        fc.integer({min: 1, max: 4}),
        async (jobs, limit) => {
          const running = new Map<string, number>()
          let most = 0
          const results = await runPerHost(
            jobs.map((job, i) => ({
              host: job.host,
              run: async () => {
                expect(running.has(job.host), `two at once on ${job.host}`).to.equal(false)
                running.set(job.host, i)
                most = Math.max(most, running.size)
                for (let t = 0; t < job.ticks; t++) await new Promise((resolve) => setImmediate(resolve))
                running.delete(job.host)
                if (job.fails) throw new Error(`job ${i} failed`)
                return i
              },
            })),
            limit,
          )
          expect(most).to.be.at.most(limit)
          // Every job ran, failures included, each result in its place.
          results.forEach((result, i) => {
            if (jobs[i].fails) expect(result).to.deep.include({status: 'rejected'})
            else expect(result).to.deep.equal({status: 'fulfilled', value: i})
          })
        },
      ),
      {numRuns: 200},
    )
  })
})

describe('backup/layout: an instance in a file name, and back', () => {
  it('host:port comes back from its file name as a manifest names it; an IPv6 host, which cannot, stays as it is', () => {
    for (const instance of ['10.0.0.5:6379', 'redis-a.example.com:7000', 'localhost:1'])
      expect(instanceOfSlug(instanceSlug(instance))).to.equal(instance)
    expect(instanceOfSlug(instanceSlug('[::1]:6379'))).to.equal('__1-6379')
  })
})

import {mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {expect} from 'chai'

import {cli, spawnCli} from '../helpers/cli.js'
import {useFleet} from '../helpers/fleet.js'

describe('shards:export and shards:import', () => {
  const fleet = useFleet()
  let dir: string
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'shardctl-doc-'))
  })
  after(() => rmSync(dir, {recursive: true, force: true}))

  async function seed(): Promise<void> {
    await cli(['shards:add', 's1', '--master', '10.0.0.1:6379/1', '--replica', '10.0.0.2:6379/1', '--weight', '2.5', ...fleet.r()])
    await cli(['shards:add', 's2', '--master', '[fd00::1]:6379/2', '--persist', '10.0.0.3:6379/2', ...fleet.r()])
    await fleet.reg.hset('shards.s2', 'owner', 'team-a')
    await fleet.reg.hset('shards.map', ...Array.from({length: 3000}, (_, i) => [`h${i}`, i % 2 ? 's1' : 's2']).flat())
  }

  it('export then import into an empty registry reproduces it exactly', async () => {
    await seed()
    const file = join(dir, 'full.json')
    const out = await cli(['shards:export', '--with-map', '--out', file, '--json', ...fleet.r()])
    expect(JSON.parse(out.stdout)).to.include({shards: 2, mapEntries: 3000})
    const before = await fleet.dump()
    delete before['shards._history']
    await fleet.reg.flushall()
    const run = await cli(['shards:import', file, '--json', ...fleet.r()])
    expect(run.exitCode, run.stderr).to.equal(0)
    expect(JSON.parse(run.stdout).applied).to.equal(true)
    const after = await fleet.dump()
    delete after['shards._history']
    expect(after).to.deep.equal(before)
    // stdout export is the document itself, also under --json
    const doc = JSON.parse((await spawnCli(['shards:export', '--json', ...fleet.r()])).stdout)
    expect(doc).to.include({format: 'shardctl-registry', version: 1})
    expect(doc.shards[1]).to.deep.equal({
      id: 's2',
      weight: 1,
      master: '[fd00::1]:6379/2',
      replicas: [],
      persist: ['10.0.0.3:6379/2'],
      extra: {owner: 'team-a'},
    })
  })

  it('a map larger than every batch: exported, imported into an empty registry, and onto one that differs in many entries — exactly', async () => {
    const ids = ['s1', 's2', 's3']
    for (const [i, id] of ids.entries()) await cli(['shards:add', id, '--master', `10.0.0.1:6379/${i}`, ...fleet.r()])
    // 50,000 entries: ten read batches, and (below) a change of 30,000, past one atomic step.
    const entries = Array.from({length: 50_000}, (_, i) => [`user:${i}`, ids[i % 3]])
    for (let i = 0; i < entries.length; i += 10_000) await fleet.reg.hset('shards.map', ...entries.slice(i, i + 10_000).flat())
    const file = join(dir, 'big.json')
    expect((await cli(['shards:export', '--with-map', '--out', file, ...fleet.r()])).exitCode).to.equal(0)
    const mapOf = async () => fleet.reg.hgetall('shards.map')
    const exported = await mapOf()

    await fleet.reg.flushall()
    const empty = await spawnCli(['shards:import', file, '--json', ...fleet.r()])
    expect(empty.exitCode, empty.stderr + empty.stdout).to.equal(0)
    expect(JSON.parse(empty.stdout)).to.include({applied: true, steps: 1})
    expect(await mapOf()).to.deep.equal(exported)

    // 30,000 entries re-pointed and 5,000 gone from the registry's map: sliced, still exact.
    const changed = entries.slice(0, 30_000).map(([h]) => [h, 's1'])
    for (let i = 0; i < changed.length; i += 10_000) await fleet.reg.hset('shards.map', ...changed.slice(i, i + 10_000).flat())
    await fleet.reg.hdel('shards.map', ...entries.slice(45_000).map(([h]) => h))
    const onto = await spawnCli(['shards:import', file, '--yes', '--json', ...fleet.r()])
    expect(onto.exitCode, onto.stderr + onto.stdout).to.equal(0)
    const result = JSON.parse(onto.stdout)
    expect(result.diff).to.include({mapSet: 5000, mapChanged: 20_000})
    expect(result.steps).to.be.greaterThan(2)
    expect(await mapOf()).to.deep.equal(exported)
    expect(await fleet.reg.keys('shards._staging*')).to.deep.equal([])
  })

  it('shows the difference, applies it on --yes, prunes on --prune; a dry run changes nothing', async () => {
    await seed()
    const doc = JSON.parse((await spawnCli(['shards:export', ...fleet.r()])).stdout)
    doc.shards[0].weight = 7
    doc.shards.push({id: 's3', weight: 1, master: '10.0.0.9:6379/3', replicas: [], persist: [], extra: {}})
    doc.shards.splice(1, 1) // s2 is not in the document
    const file = join(dir, 'desired.json')
    writeFileSync(file, JSON.stringify(doc))
    const before = await fleet.dump()
    const dry = await cli(['shards:import', file, '--dry-run', ...fleet.r()])
    expect(dry.stdout).to.match(/~\s+s1\s+weight: 2\.5 → 7/)
    expect(dry.stdout).to.match(/\+\s+s3/)
    expect(await fleet.dump()).to.deep.equal(before)
    const noTty = await spawnCli(['shards:import', file, ...fleet.r()])
    expect(noTty.exitCode).to.equal(2)
    const run = await cli(['shards:import', file, '--yes', ...fleet.r()])
    expect(run.exitCode).to.equal(0)
    expect(await fleet.reg.zscore('shards.list', 's1')).to.equal('7')
    expect(await fleet.reg.hgetall('shards.s3')).to.deep.equal({master: '10.0.0.9:6379/3'})
    expect(await fleet.reg.exists('shards.s2')).to.equal(1) // no --prune: kept
    const prune = await spawnCli(['shards:import', file, '--prune', '--yes', ...fleet.r()])
    expect(prune.exitCode).to.equal(2) // hashes still point at s2
    expect(prune.stderr).to.match(/while hashes point at them/)
    await fleet.reg.del('shards.map')
    expect((await spawnCli(['shards:import', file, '--prune', '--yes', ...fleet.r()])).exitCode).to.equal(0)
    expect(await fleet.reg.exists('shards.s2')).to.equal(0)
  })

  it('an import that is not applied (no answer without a terminal) leaves no staged entries behind', async () => {
    await seed()
    const file = join(dir, 'repointed.json')
    await cli(['shards:export', '--with-map', '--out', file, ...fleet.r()])
    const doc = JSON.parse(readFileSync(file, 'utf8'))
    for (let i = 0; i < 100; i++) doc.map[`h${i}`] = 's1' // re-pointed: a change that asks first
    doc.map.fresh = 's2'
    writeFileSync(file, JSON.stringify(doc))
    const before = await fleet.dump()
    const run = await spawnCli(['shards:import', file, ...fleet.r()])
    expect(run.exitCode, run.stderr).to.equal(2)
    expect(await fleet.reg.keys('shards._staging*')).to.deep.equal([])
    expect(await fleet.dump()).to.deep.equal(before)
  })

  const bad: [string, unknown, RegExp][] = [
    ['not JSON', '{nope', /not JSON/],
    ['another format', {format: 'x', version: 1, shards: []}, /format is "x"/],
    ['a newer version', {format: 'shardctl-registry', version: 2, shards: []}, /version 2 is not supported/],
    ['no shard list', {format: 'shardctl-registry', version: 1}, /"shards" is not a list/],
    ['a bad id', {format: 'shardctl-registry', version: 1, shards: [{id: '_x', weight: 1, master: 'h:1/0'}]}, /is not a valid shard id/],
    ['a negative weight', {format: 'shardctl-registry', version: 1, shards: [{id: 'a', weight: -1, master: 'h:1/0'}]}, /weight -1/],
    [
      'a garbage master',
      {format: 'shardctl-registry', version: 1, shards: [{id: 'a', weight: 1, master: 'nope'}]},
      /master "nope" is not an address/,
    ],
    [
      'a password',
      {format: 'shardctl-registry', version: 1, shards: [{id: 'a', weight: 1, master: 'redis://u:p@h:1/0'}]},
      /holds credentials/,
    ],
    [
      'a duplicate id',
      {
        format: 'shardctl-registry',
        version: 1,
        shards: [
          {id: 'a', weight: 1, master: 'h:1/0'},
          {id: 'a', weight: 1, master: 'h:1/1'},
        ],
      },
      /appears twice/,
    ],
    ['a map to nowhere', {format: 'shardctl-registry', version: 1, shards: [], map: {h: 'zz'}}, /not a shard of the document/],
    [
      'two shards on one database',
      {
        format: 'shardctl-registry',
        version: 1,
        shards: [
          {id: 'a', weight: 1, master: 'h:1/0'},
          {id: 'b', weight: 1, master: 'h:1/0'},
        ],
      },
      /shards a and b have the same master database h:1\/0/,
    ],
    [
      'a shard on the database a kept shard of the registry uses',
      {format: 'shardctl-registry', version: 1, shards: [{id: 'x', weight: 1, master: '10.0.0.1:6379/1'}]},
      /importing would leave shards s1 and x on the same master database 10\.0\.0\.1:6379\/1/,
    ],
  ]
  for (const [name, content, message] of bad) {
    it(`refuses ${name} before anything changes (exit 2)`, async () => {
      await seed()
      const file = join(dir, 'bad.json')
      writeFileSync(file, typeof content === 'string' ? content : JSON.stringify(content))
      const before = await fleet.dump()
      const run = await spawnCli(['shards:import', file, '--yes', ...fleet.r()])
      expect(run.exitCode).to.equal(2)
      expect(run.stderr.trim().split('\n')).to.have.length(1)
      expect(run.stderr).to.match(message)
      expect(await fleet.dump()).to.deep.equal(before)
    })
  }

  it('reads the document from stdin with -', async () => {
    const doc = {
      format: 'shardctl-registry',
      version: 1,
      shards: [{id: 'a', weight: 1, master: 'h:1/0', replicas: [], persist: [], extra: {}}],
    }
    const run = await spawnCli(['shards:import', '-', ...fleet.r()], {input: JSON.stringify(doc)})
    expect(run.exitCode, run.stderr).to.equal(0)
    expect(await fleet.reg.hgetall('shards.a')).to.deep.equal({master: 'h:1/0'})
  })
})

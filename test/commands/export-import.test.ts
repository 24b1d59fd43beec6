import {mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {expect} from 'chai'

import fc from 'fast-check'
import type {Redis} from 'ioredis'

import {cli, spawnCli, startCli} from '../helpers/cli.js'
import {useFleet} from '../helpers/fleet.js'
import {resume, stoppedAt} from '../helpers/ops.js'

/** Every key of the registry but its history, as bytes (hex), hash fields sorted: "the same registry", exactly. */
async function bytesOf(client: Redis): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {}
  for (const key of await client.keysBuffer('*')) {
    if (key.toString() === 'shards._history') continue
    const type = await client.type(key)
    let value: unknown
    if (type === 'hash') {
      const flat = (await client.callBuffer('HGETALL', key)) as Buffer[]
      const pairs: string[] = []
      for (let i = 0; i < flat.length; i += 2) pairs.push(`${flat[i].toString('hex')}=${flat[i + 1].toString('hex')}`)
      value = pairs.sort()
    } else if (type === 'zset') value = await client.zrange(key, '0', '-1', 'WITHSCORES')
    else value = type
    out[`${type}:${key.toString('hex')}`] = value
  }
  return out
}

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
    expect(doc).to.include({format: 'shardctl-registry', version: 2})
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
    const onto = await spawnCli(['shards:import', file, '--repoint', '--yes', '--json', ...fleet.r()])
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
    const run = await spawnCli(['shards:import', file, '--repoint', ...fleet.r()])
    expect(run.exitCode, run.stderr).to.equal(2)
    expect(await fleet.reg.keys('shards._staging*')).to.deep.equal([])
    expect(await fleet.dump()).to.deep.equal(before)
  })

  it('property: export then import is the identity for any registry, byte strings included', async () => {
    const bytes = fc.oneof(
      fc.uint8Array({maxLength: 10}).map((a) => Buffer.from(a)),
      fc.fullUnicodeString({maxLength: 6}).map((t) => Buffer.from(t)),
      fc.constantFrom('b64:', 'b64:AAAA', 'bin\xff', 'h1').map((t) => Buffer.from(t, 'latin1')),
    )
    const registry = fc.record({
      shards: fc.uniqueArray(
        fc.record({
          id: fc.stringMatching(/^[a-z][a-z0-9_-]{0,5}$/),
          weight: fc.oneof(fc.constant(0), fc.integer({min: 1, max: 100}), fc.double({min: 1e-300, max: 1e300, noNaN: true})),
          extra: fc.array(fc.tuple(bytes, bytes), {maxLength: 3}),
        }),
        {selector: (s) => s.id, minLength: 1, maxLength: 4},
      ),
      map: fc.array(fc.tuple(bytes, fc.nat()), {maxLength: 40}),
      orphans: fc.array(bytes, {maxLength: 2}),
    })
    const file = join(dir, 'identity.json')
    await fc.assert(
      fc.asyncProperty(registry, async (r) => {
        await fleet.reg.flushall()
        const ids = r.shards.map((s) => s.id)
        const orphans = r.orphans.filter((o) => !ids.includes(o.toString('latin1')))
        const targets = [...ids.map((id) => Buffer.from(id)), ...orphans]
        for (const [i, shard] of r.shards.entries()) {
          const extra = shard.extra.filter(([f]) => !/^(master|slave\d+|persist\d+)$/.test(f.toString('latin1'))).flat()
          await fleet.reg.hset(`shards.${shard.id}`, 'master', `10.0.0.1:6379/${i}`, ...extra)
          await fleet.reg.zadd('shards.list', shard.weight, shard.id)
        }
        for (const [hash, n] of r.map) await fleet.reg.hset('shards.map', hash, targets[n % targets.length])
        const before = await bytesOf(fleet.reg)
        const exported = await cli(['shards:export', '--with-map', '--out', file, ...fleet.r()])
        expect(exported.exitCode, exported.stderr).to.equal(0)
        await fleet.reg.flushall()
        const imported = await cli(['shards:import', file, ...fleet.r()])
        expect(imported.exitCode, imported.stderr).to.equal(0)
        expect(await bytesOf(fleet.reg)).to.deep.equal(before)
      }),
      {numRuns: 40},
    )
  })

  it('a version 1 document still imports: its strings are taken as they are, "b64:" included', async () => {
    const file = join(dir, 'v1.json')
    const doc = {
      format: 'shardctl-registry',
      version: 1,
      shards: [{id: 'a', weight: 1, master: 'h:1/0', replicas: [], persist: [], extra: {'b64:note': 'b64:AAAA'}}],
      map: {'b64:AAAA': 'a', 'user:ü': 'a'},
    }
    writeFileSync(file, JSON.stringify(doc))
    const run = await cli(['shards:import', file, ...fleet.r()])
    expect(run.exitCode, run.stderr).to.equal(0)
    expect(await fleet.reg.hgetall('shards.map')).to.deep.equal({'b64:AAAA': 'a', 'user:ü': 'a'})
    expect(await fleet.reg.hgetall('shards.a')).to.deep.equal({master: 'h:1/0', 'b64:note': 'b64:AAAA'})
  })

  it('a map key that is not UTF-8 survives export and import; two such keys stay two', async () => {
    await cli(['shards:add', 'a', '--master', '10.0.0.1:6379/1', ...fleet.r()])
    await fleet.reg.hset('shards.map', Buffer.from('bin\xff', 'latin1'), 'a', Buffer.from('bin\xfe', 'latin1'), 'a')
    const file = join(dir, 'binary.json')
    expect((await cli(['shards:export', '--with-map', '--out', file, ...fleet.r()])).exitCode).to.equal(0)
    const b64 = (text: string) => `b64:${Buffer.from(text, 'latin1').toString('base64')}`
    expect(JSON.parse(readFileSync(file, 'utf8')).map).to.deep.equal({[b64('bin\xff')]: 'a', [b64('bin\xfe')]: 'a'})
    await fleet.reg.flushall()
    expect((await cli(['shards:import', file, ...fleet.r()])).exitCode).to.equal(0)
    const keys = (await fleet.reg.hkeysBuffer('shards.map')).map((k) => k.toString('latin1')).sort()
    expect(keys).to.deep.equal(['bin\xfe', 'bin\xff'])
  })

  it('--prune never removes a shard hashes still point at, whatever else the document re-points', async () => {
    for (const [i, id] of ['a', 'b', 'c'].entries()) await cli(['shards:add', id, '--master', `10.0.0.1:6379/${i + 1}`, ...fleet.r()])
    await fleet.reg.hset('shards.map', 'h1', 'a', 'h2', 'c', 'h3', 'c')
    const exported = JSON.parse((await spawnCli(['shards:export', ...fleet.r()])).stdout)
    const doc = {...exported, shards: exported.shards.filter((s: {id: string}) => s.id !== 'c'), map: {h1: 'b'}}
    const file = join(dir, 'prune.json')
    writeFileSync(file, JSON.stringify(doc))
    const before = await fleet.dump()
    for (const flags of [[], ['--repoint']]) {
      const run = await cli(['shards:import', file, '--prune', '--yes', ...flags, ...fleet.r()])
      expect(run.exitCode, run.stderr).to.equal(2)
      expect(run.stderr).to.match(/--prune would remove shards c while hashes point at them \(c: 2, once imported\)/)
      expect(await fleet.dump()).to.deep.equal(before)
    }
    // Re-pointing every hash away from c lets it go.
    writeFileSync(file, JSON.stringify({...doc, map: {h1: 'b', h2: 'b', h3: 'a'}}))
    const run = await cli(['shards:import', file, '--prune', '--repoint', '--yes', ...fleet.r()])
    expect(run.exitCode, run.stderr).to.equal(0)
    expect(await fleet.reg.exists('shards.c')).to.equal(0)
    expect(await fleet.reg.hgetall('shards.map')).to.deep.equal({h1: 'b', h2: 'b', h3: 'a'})
  })

  it('an existing assignment is never changed without --repoint: kept and said (exit 3); --repoint re-points it', async () => {
    for (const [i, id] of ['a', 'b'].entries()) await cli(['shards:add', id, '--master', `10.0.0.1:6379/${i + 1}`, ...fleet.r()])
    await fleet.reg.hset('shards.map', 'old', 'a')
    const exported = JSON.parse((await spawnCli(['shards:export', ...fleet.r()])).stdout)
    const file = join(dir, 'repoint.json')
    writeFileSync(file, JSON.stringify({...exported, map: {old: 'b', new: 'b'}}))
    const run = await cli(['shards:import', file, '--yes', '--json', ...fleet.r()])
    expect(run.exitCode, run.stderr).to.equal(3)
    expect(JSON.parse(run.stdout).diff).to.include({mapSet: 1, mapChanged: 0, mapKept: 1})
    expect(await fleet.reg.hgetall('shards.map')).to.deep.equal({old: 'a', new: 'b'})
    const text = await cli(['shards:import', file, '--yes', ...fleet.r()])
    expect(text.exitCode).to.equal(3)
    expect(text.stderr, text.stderr).to.match(
      /1 hash is assigned to another shard than the document says, and stays there \(--repoint moves them\)/,
    )
    const moved = await cli(['shards:import', file, '--yes', '--repoint', ...fleet.r()])
    expect(moved.exitCode, moved.stderr).to.equal(0)
    expect(await fleet.reg.hgetall('shards.map')).to.deep.equal({old: 'b', new: 'b'})
  })

  it('an import racing an assign of the same hashes changes none of the assignments the assign reported', async () => {
    for (const [i, id] of ['a', 'b', 'c', 'd'].entries()) await cli(['shards:add', id, '--master', `10.0.0.1:6379/${i + 1}`, ...fleet.r()])
    await fleet.reg.hset('shards.map', 'unrelated', 'a')
    const hashes = Array.from({length: 60_000}, (_, i) => `race:${i}`)
    const exported = JSON.parse((await spawnCli(['shards:export', ...fleet.r()])).stdout)
    const file = join(dir, 'race.json')
    writeFileSync(file, JSON.stringify({...exported, map: Object.fromEntries(hashes.map((h, i) => [h, ['a', 'b', 'c'][i % 3]]))}))
    const shuffled = [...hashes].sort(() => Math.random() - 0.5)
    const [assign, imported] = await Promise.all([
      spawnCli(['shards:assign', '--stdin', '--json', ...fleet.r()], {input: shuffled.join('\n')}),
      spawnCli(['shards:import', file, '--yes', '--json', ...fleet.r()]),
    ])
    expect(assign.exitCode, assign.stderr).to.equal(0)
    expect([0, 3], imported.stderr + imported.stdout).to.include(imported.exitCode)
    const reported = assign.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as {hash?: string; shard?: string; assigned?: boolean})
      .filter((r) => r.assigned)
    const map = await fleet.reg.hgetall('shards.map')
    const changed = reported.filter((r) => map[r.hash!] !== r.shard)
    expect(changed, `${changed.length} of ${reported.length} reported assignments changed`).to.deep.equal([])
  })

  it('export --out replaces the file only once complete: a failed or interrupted export leaves the previous one', async () => {
    await seed()
    const file = join(dir, 'kept.json')
    expect((await cli(['shards:export', '--with-map', '--out', file, ...fleet.r()])).exitCode).to.equal(0)
    const good = readFileSync(file, 'utf8')
    const leftovers = () => readdirSync(dir).filter((f) => f.startsWith('.kept.json.'))
    // Into a directory that is not there: fails at once (it used to wait forever for the file to drain).
    for (const flags of [[], ['--with-map']]) {
      const nowhere = await cli(['shards:export', ...flags, '--out', join(dir, 'missing', 'x.json'), ...fleet.r()])
      expect(nowhere.exitCode, nowhere.stderr).to.equal(1)
      expect(nowhere.stderr).to.match(/cannot write .*x\.json: ENOENT/)
    }
    // Fails (a corrupt shard): the previous export is untouched.
    await fleet.reg.hset('shards.s1', 'slave3', 'nope')
    const failed = await cli(['shards:export', '--with-map', '--out', file, ...fleet.r()])
    expect(failed.exitCode).to.equal(1)
    expect(readFileSync(file, 'utf8')).to.equal(good)
    expect(leftovers()).to.deep.equal([])
    await fleet.reg.hdel('shards.s1', 'slave3')
    // Stopped half-way through the map, then terminated (as `timeout` does): the same.
    const stopped = await stoppedAt(['shards:export', '--with-map', '--out', file, ...fleet.r()], 'export-map:after:stop')
    expect(leftovers()).to.have.length(1)
    process.kill(stopped.pid, 'SIGTERM')
    resume(stopped)
    expect((await stopped.done).exitCode).to.equal(143)
    expect(readFileSync(file, 'utf8')).to.equal(good)
    expect(leftovers()).to.deep.equal([])
    // Killed outright: nothing can clean up, yet the previous export is whole.
    const killed = await startCli(['shards:export', '--with-map', '--out', file, ...fleet.r()], {
      env: {SHARDCTL_FAILPOINT: 'export-map:after:kill'},
    })
    expect((await killed.done).exitCode).to.not.equal(0)
    expect(readFileSync(file, 'utf8')).to.equal(good)
    for (const f of leftovers()) rmSync(join(dir, f))
    // To stdout, which cannot be taken back: a map of the wrong type stops it before the first byte.
    await fleet.reg.del('shards.map')
    await fleet.reg.set('shards.map', 'not a hash')
    const wrong = await cli(['shards:export', '--with-map', ...fleet.r()])
    expect(wrong.exitCode).to.equal(1)
    expect(wrong.stderr).to.match(/shards\.map/)
    expect(wrong.stdout).to.equal('')
    await fleet.reg.del('shards.map')
  })

  it('a registry with hashes on a removed shard exports with a word, and its export imports (the orphans as they were)', async () => {
    await cli(['shards:add', 'a', '--master', '10.0.0.1:6379/1', ...fleet.r()])
    await cli(['shards:add', 'b', '--master', '10.0.0.1:6379/2', ...fleet.r()])
    await fleet.reg.hset('shards.map', 'h1', 'a', 'h2', 'b')
    expect((await cli(['shards:remove', 'b', '--force', '--yes', ...fleet.r()])).exitCode).to.equal(0)
    const file = join(dir, 'orphans.json')
    const exported = await cli(['shards:export', '--with-map', '--out', file, ...fleet.r()])
    expect(exported.exitCode).to.equal(0)
    expect(exported.stderr).to.match(/1 map entry points at a shard the registry does not have \(b: 1\)/)
    expect(JSON.parse(readFileSync(file, 'utf8')).orphans).to.deep.equal({b: 1})
    await fleet.reg.flushall()
    const imported = await cli(['shards:import', file, ...fleet.r()])
    expect(imported.exitCode, imported.stderr).to.equal(0)
    expect(imported.stderr).to.match(/1 map entry points at a shard the document declares an orphan/)
    expect(await fleet.reg.hgetall('shards.map')).to.deep.equal({h1: 'a', h2: 'b'})
  })

  it('an export is one moment: a shard added while the map is read is in the document, and said', async () => {
    await cli(['shards:add', 'a', '--master', '10.0.0.1:6379/1', ...fleet.r()])
    await fleet.reg.hset('shards.map', ...Array.from({length: 20_000}, (_, i) => [`h${i}`, 'a']).flat())
    const file = join(dir, 'moment.json')
    const stopped = await stoppedAt(['shards:export', '--with-map', '--out', file, ...fleet.r()], 'export-map:after:stop')
    await cli(['shards:add', 'x', '--master', '10.0.0.1:6379/9', ...fleet.r()])
    await fleet.reg.hset('shards.map', ...Array.from({length: 3000}, (_, i) => [`x${i}`, 'x']).flat())
    resume(stopped)
    const run = await stopped.done
    expect(run.exitCode, run.stderr).to.equal(0)
    expect(run.stderr).to.match(/the registry changed while it was read \(shards added x\)/)
    const doc = JSON.parse(readFileSync(file, 'utf8'))
    expect(doc.shards.map((s: {id: string}) => s.id)).to.deep.equal(['a', 'x'])
    await fleet.reg.flushall()
    const imported = await cli(['shards:import', file, ...fleet.r()])
    expect(imported.exitCode, imported.stderr).to.equal(0)
  })

  const bad: [string, unknown, RegExp][] = [
    ['not JSON', '{nope', /not JSON/],
    ['another format', {format: 'x', version: 1, shards: []}, /format is "x"/],
    ['a newer version', {format: 'shardctl-registry', version: 3, shards: []}, /version 3 is not supported/],
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
      'a hash routed twice (JSON would keep the last silently)',
      `{"format":"shardctl-registry","version":1,"shards":[{"id":"a","weight":1,"master":"h:1/0"},{"id":"b","weight":1,"master":"h:1/1"}],"map":{"x":"a","y":"a","x":"b"}}`,
      /map key "x" appears twice/,
    ],
    [
      'a hash routed twice, thousands of entries apart',
      `{"format":"shardctl-registry","version":1,"shards":[{"id":"a","weight":1,"master":"h:1/0"}],"map":{${Array.from({length: 4500}, (_, i) => `"k${i === 4400 ? 7 : i}":"a"`).join(',')}}}`,
      /map key "k7" appears twice/,
    ],
    [
      'a replica that is its master under another name',
      {format: 'shardctl-registry', version: 1, shards: [{id: 'a', weight: 1, master: 'localhost:7/0', replicas: ['127.0.0.1:7/0']}]},
      /shard a: localhost:7\/0 and 127\.0\.0\.1:7\/0 are one instance, named twice/,
    ],
    [
      'a weight below the smallest stored exactly',
      {format: 'shardctl-registry', version: 1, shards: [{id: 'a', weight: 1e-320, master: 'h:1/0'}]},
      /shard a: weight 1e-320 is too small to be stored exactly/,
    ],
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

import {
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {expect} from 'chai'

import {BUNDLED} from '../../bin/fast.js'
import {ids} from '../../src/fast/commands.js'
import {mapLimited} from '../../src/fleet/probe.js'
import {freePort} from '../../src/sandbox/redis-process.js'
import {type CliResult, root, spawnCli, ttyCli} from '../helpers/cli.js'
import {useFleet} from '../helpers/fleet.js'

const OCLIF = {SHARDCTL_NO_BUNDLE: '1'}

const manifest = (): {commands: Record<string, unknown>} => JSON.parse(readFileSync(join(root, 'oclif.manifest.json'), 'utf8'))

type Case = {args: string[]; env?: Record<string, string>; input?: string; differs?: RegExp}

/**
 * Replica lag moves between two runs (the master's pings), and an age in seconds may tick
 * between them: the only figures that may differ, with timings.
 */
const steady = (r: CliResult, differs?: RegExp) => ({
  exitCode: r.exitCode,
  stdout: r.stdout
    .replaceAll(/("(lag\w*|lastSaveAgeSeconds)": )\d+/g, '$1N')
    .replaceAll(/\d+ s ago/g, 'N s ago')
    .replaceAll(/lag \d+(\.\d+)?( ?[KMG]?i?B)( \d+s)?/g, 'lag N$2 Ns')
    .replaceAll(differs ?? /$^/g, 'N'),
  stderr: r.stderr,
})

/**
 * A copy of the install in `dir` that shares only what is never written (the rest of dist/, the
 * dependencies, by link): its bundle's code cache is its own.
 */
function privateInstall(dir: string): {binary: string; cache: string} {
  const install = join(dir, 'install')
  mkdirSync(join(install, 'dist', 'fast'), {recursive: true})
  cpSync(join(root, 'bin'), join(install, 'bin'), {recursive: true})
  for (const file of ['package.json', 'oclif.manifest.json']) copyFileSync(join(root, file), join(install, file))
  symlinkSync(join(root, 'node_modules'), join(install, 'node_modules'))
  for (const entry of readdirSync(join(root, 'dist')))
    if (entry !== 'fast') symlinkSync(join(root, 'dist', entry), join(install, 'dist', entry))
  copyFileSync(join(root, 'dist', 'fast', 'commands.cjs'), join(install, 'dist', 'fast', 'commands.cjs'))
  return {binary: join(install, 'bin', 'run.js'), cache: join(install, 'dist', 'fast', 'commands.cjs.cache')}
}

/** Both ways of a case at once (two cases at a time: none of them changes anything): the same exit code and bytes. */
async function compare({args, env, input, differs}: Case): Promise<void> {
  const [bundled, oclif] = await Promise.all([spawnCli(args, {env, input}), spawnCli(args, {env: {...env, ...OCLIF}, input})])
  expect(steady(bundled, differs), args.join(' ')).to.deep.equal(steady(oclif, differs))
}

describe('start-up fast path: every command as oclif runs it', () => {
  let dir: string
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'shardctl-fast-'))
  })
  after(() => rmSync(dir, {recursive: true, force: true}))

  it('--version, help and unknown commands: the same bytes and exit code', async () => {
    const cases: Case[] = [
      {args: ['--version']},
      {args: ['shards:nope']},
      {args: ['shards', 'lst']},
      {args: ['help', 'shards:split']},
      {args: ['shards:split', '-r', 'x', '-h']},
    ]
    await mapLimited(cases, 2, compare)
  })

  // Each command's arguments that get past the parser, to an error (or an empty answer) of its own.
  const json = (id: string, nowhere: string, r: string[]): string[] =>
    ({
      'backups:list': ['--from', nowhere],
      'backups:prune': ['--from', nowhere, '--keep-last', '1'],
      'backups:verify': ['x', '--from', nowhere],
      'sandbox:down': ['--dir', nowhere],
      'sandbox:status': ['--dir', nowhere],
      'sandbox:up': ['--dir', nowhere, '--instances', '0'],
      'shards:add': ['s1', '--master', '127.0.0.1:1/1', ...r],
      'shards:backup': ['--to', nowhere, ...r],
      'shards:import': [join(nowhere, 'registry.json'), ...r],
      'shards:init': ['--instance', '127.0.0.1:1', '--count', '1', ...r],
      'shards:rebalance': ['--by', 'keys', ...r],
      'shards:remove': ['s1', ...r],
      'shards:restore': ['x', '--from', nowhere, '--to', '127.0.0.1:1', ...r],
      'shards:verify': ['s1', '--against', '127.0.0.1:1/1', ...r],
    })[id] ?? r

  for (const id of ids) {
    // Help is oclif's on both paths (bin/fast.js hands it over, the first test proves it), so
    // comparing each command's help would compare oclif with itself.
    it(`${id}: a flag it does not know, and an error under --json: the same bytes and exit code`, async () => {
      const r = ['-r', `127.0.0.1:${await freePort()}`]
      const cases: Case[] = [{args: [id, '--nope']}, {args: [id, ...json(id, join(dir, 'nothing'), r), '--json']}]
      await mapLimited(cases, 2, compare)
    })
  }
})

describe('start-up fast path (bin/fast.js, dist/fast/commands.cjs)', () => {
  const fleet = useFleet({instances: 2, replicas: 1})
  let dir: string
  let config: string

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'shardctl-fast-'))
    config = join(dir, 'config.json')
  })
  after(() => rmSync(dir, {recursive: true, force: true}))

  beforeEach(async () => {
    const at = (i: number, db: number) => fleet.instances[i].master.address(db)
    const replica = (i: number, db: number) => fleet.instances[i].replicas[0].address(db)
    const add = async (id: string, i: number, db: number, weight: number) =>
      expect(
        (await spawnCli(['shards:add', id, '--master', at(i, db), '--replica', replica(i, db), '--weight', String(weight), ...fleet.r()]))
          .exitCode,
      ).to.equal(0)
    await add('s1', 0, 1, 1)
    await add('s2', 0, 2, 3)
    await add('s3', 1, 1, 2)
    const shard = fleet.instances[0].master.client(2)
    await shard.mset('a', '1', 'b', '2')
    shard.disconnect()
    writeFileSync(config, JSON.stringify({contexts: {staging: {registry: fleet.registry.url}}}))
  })

  it('lists exactly the commands the bundle holds: every command of the tool', () => {
    expect([...BUNDLED].sort()).to.deep.equal([...ids].sort())
    expect([...ids].sort()).to.deep.equal(Object.keys(manifest().commands).sort())
  })

  it('prints, fails and exits exactly as the same command run through oclif', async () => {
    const unused = await freePort()
    const cases: Case[] = [
      {args: ['shards:list', '--json', ...fleet.r()]},
      {args: ['shards:list', ...fleet.r()]},
      {args: ['shards', 'list', '--wide', ...fleet.r()]},
      {args: ['shards:list', '--no-probe', '--sort', 'weight', '--columns', 'id,weight,share', ...fleet.r()]},
      {args: ['shards:list', '--filter', 'id=s*', '--filter', 'health=ok', '--sort=keys', ...fleet.r()]},
      // Used memory moves from one run to the next: the bars show keys, the sizes are masked.
      {args: ['shards:list', '--instances', '--chart', 'keys', ...fleet.r()], differs: /\d+(\.\d+)? [KMG]?B/g},
      {args: ['shards:list', '--counts', '--json', `--registry=${fleet.registry.url}`]},
      {args: ['shards:list', '--json'], env: {SHARDCTL_REGISTRY: fleet.registry.url}},
      {args: ['shards:list', '--context', 'staging', '--json'], env: {SHARDCTL_CONFIG: config}},
      {args: ['shards:list', '--context', 'nope'], env: {SHARDCTL_CONFIG: config}},
      {args: ['shards:list', '--exit-status', '--json', ...fleet.r()], env: {}},
      // Bad input of every kind: oclif's parser and the command's own checks, under --json too.
      {args: ['shards:list', '--sort', 'colour', ...fleet.r()]},
      {args: ['shards:list', '--colums', 'id', ...fleet.r()]},
      {args: ['shards:list', '--columns', 'id,nope', '--json', ...fleet.r()]},
      {args: ['shards:list', '--filter', 'colour=blue', ...fleet.r()]},
      {args: ['shards:list', 'extra', ...fleet.r()]},
      {args: ['shards:list', '--registry']},
      {args: ['shards:list', '-r', 'redis://user:pw@127.0.0.1:notaport/0']},
      {args: ['shards:list', '--json', '-r', `127.0.0.1:${unused}`]},
      {args: ['shards:list', '--timeout', '0', ...fleet.r()]},
      {args: ['shards:list', '--help']},
      {args: ['shards:lookup', 'h1', 'h2', '--json', ...fleet.r()]},
      {args: ['shards:lookup', '--stdin', ...fleet.r()], input: 'h1\nh2\nbad hash\n'},
      {args: ['shards:lookup', ...fleet.r()]},
      {args: ['shards:check', '--json', ...fleet.r()]},
      {args: ['shards:check', '--allow-no-replica', ...fleet.r()]},
      {args: ['shards:check', 's1', '--persistence', ...fleet.r()]},
      // Refused without --yes before the lock is taken: its twin never finds the lock held.
      {args: ['shards:check', '--fence', ...fleet.r()]},
    ]
    await mapLimited(cases, 2, compare)
    // Alone: the canary, whose keys the listings above would count.
    await compare({args: ['shards:check', '--canary', '--json', ...fleet.r()], differs: /"(p50Ms|maxMs|pubsubMs)": [\d.]+/g})
    // What cron runs: --fence --yes takes the operator lock (and cuts off any run it takes
    // over from) and changes the masters, from the bundle; check then finds them fenced.
    const fenced = await spawnCli(['shards:check', '--fence', '--yes', '--json', ...fleet.r()])
    expect(fenced.exitCode, fenced.stdout + fenced.stderr).to.equal(0)
    expect((await spawnCli(['shards:check', '--json', ...fleet.r()])).exitCode).to.equal(0)
    for (const {master} of fleet.instances) {
      const client = master.client()
      await client.config('SET', 'min-replicas-to-write', '0')
      client.disconnect()
    }
    // A problem shard: exit 3 under --exit-status, the same on both paths.
    await fleet.reg.hset('shards.s3', 'master', 'not an address')
    const args = ['shards:list', '--exit-status', ...fleet.r()]
    const bundled = await spawnCli(args)
    expect(bundled.exitCode).to.equal(3)
    expect(steady(bundled)).to.deep.equal(steady(await spawnCli(args, {env: OCLIF})))
  })

  it('colours a terminal the same way', async () => {
    const args = ['shards:list', ...fleet.r()]
    const [bundled, oclif] = [await ttyCli(args, ''), await ttyCli(args, '', OCLIF)]
    expect(bundled.screen).to.match(/\u001B\[/)
    expect(steady(bundled)).to.deep.equal(steady(oclif))
  })

  it('runs from the bundle, keeps its code cache, and survives a cache that does not match', async () => {
    // An install of its own: every other test's run of the bundle writes this checkout's cache,
    // and the other test files run beside this one.
    const {binary, cache: CACHE} = privateInstall(dir)
    const args = ['shards:list', '--json', ...fleet.r()]
    rmSync(CACHE, {force: true})
    const expected = steady(await spawnCli(args, {env: OCLIF, binary}))
    expect(existsSync(CACHE), 'oclif path leaves no cache').to.equal(false)
    // Only the bundle writes the cache: proof that it ran, and only after a run that went through.
    expect((await spawnCli(['shards:list', '-r', `127.0.0.1:${await freePort()}`], {binary})).exitCode).to.equal(1)
    expect(existsSync(CACHE), 'no cache after a failed run').to.equal(false)
    expect(steady(await spawnCli(args, {binary}))).to.deep.equal(expected)
    expect(existsSync(CACHE), 'cache written after a successful run').to.equal(true)
    expect(steady(await spawnCli(args, {binary}))).to.deep.equal(expected)
    // A cache from another build or Node.js: rejected by V8, compiled afresh and replaced.
    writeFileSync(CACHE, 'not a code cache')
    expect(steady(await spawnCli(args, {binary}))).to.deep.equal(expected)
    expect(readFileSync(CACHE, 'utf8')).not.to.equal('not a code cache')
    // A check that finds problems (exit 3: these masters are not fenced) ran through: it writes the cache too.
    rmSync(CACHE, {force: true})
    expect((await spawnCli(['shards:check', ...fleet.r()], {binary})).exitCode).to.equal(3)
    expect(existsSync(CACHE), 'cache written after exit 3').to.equal(true)
    // V8 checks only the source's length: a cache made from another source of the same length is not used.
    const cache = readFileSync(CACHE)
    writeFileSync(CACHE, Buffer.concat([Buffer.from('0'.repeat(40)), cache.subarray(40)]))
    expect(steady(await spawnCli(args, {binary}))).to.deep.equal(expected)
    expect(readFileSync(CACHE).subarray(0, 40).toString()).not.to.equal('0'.repeat(40))
  })
})

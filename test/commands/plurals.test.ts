import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {expect} from 'chai'

import {plural} from '../../src/ui/terminal.js'
import {cli, spawnCli} from '../helpers/cli.js'
import {useFleet} from '../helpers/fleet.js'
import {type TestServer, freeRange, startServer, stopServersIn} from '../helpers/redis.js'

/** Nouns the commands count: after "1" only the singular may follow, after "2" only the plural. */
const NOUNS = ['hash', 'shard', 'instance', 'replica', 'key', 'process', 'entry', 'weight', 'database', 'master', 'problem', 'byte']
const PLURALS = [
  'hashes',
  'shards',
  'instances',
  'replicas',
  'keys',
  'processes',
  'entries',
  'weights',
  'databases',
  'masters',
  'problems',
  'bytes',
]

/** Whatever a run printed (stdout, stderr) says a count of 1 or 2 the way English does, and never "(s)". */
function expectAgreement(text: string): void {
  expect(text, 'no "(s)"').not.to.match(/\(s\)|\(es\)/)
  expect(text, 'a singular count with a plural noun').not.to.match(new RegExp(`(?<![\\d.,:/])\\b1 (${PLURALS.join('|')})\\b`))
  expect(text, 'a plural count with a singular noun').not.to.match(new RegExp(`(?<![\\d.,:/])\\b2 (${NOUNS.join('|')})\\b(?![-\\w])`))
}

describe('counts in what commands print: one plural() everywhere', () => {
  it('plural() spells the nouns the commands count', () => {
    expect(plural(1, 'hash')).to.equal('1 hash')
    expect(plural(2, 'hash')).to.equal('2 hashes')
    expect(plural(0, 'shard')).to.equal('0 shards')
    expect(plural(1, 'map entry')).to.equal('1 map entry')
    expect(plural(2, 'map entry')).to.equal('2 map entries')
    expect(plural(3, 'redis-server process')).to.equal('3 redis-server processes')
    expect(plural(2, 'replica')).to.equal('2 replicas')
    expect(plural(2, 'key')).to.equal('2 keys')
    expect(plural(1500, 'hash points', 'hashes point')).to.equal('1,500 hashes point')
  })

  describe('shards:* against a real fleet', () => {
    const fleet = useFleet({instances: 1, replicas: 1})
    let target: TestServer
    before(async () => {
      target = await startServer()
    })
    after(async () => {
      await target?.stop()
    })
    const master = () => `127.0.0.1:${fleet.instances[0].master.port}`
    const replica = () => `127.0.0.1:${fleet.instances[0].replicas[0].port}`

    for (const n of [1, 2]) {
      const many = n === 1 ? '' : 's'
      const hashes = Array.from({length: n}, (_, i) => `h${i}`)
      const ids = Array.from({length: n}, (_, i) => `s00${i}`)

      it(`with a count of ${n}: every summary line agrees with it`, async () => {
        const seen: string[] = []
        const run = async (args: string[], options: {input?: string; exit?: number | 'any'} = {}) => {
          const result = options.input === undefined ? await cli([...args, ...fleet.r()]) : await spawnCli([...args, ...fleet.r()], options)
          if (options.exit !== 'any') expect(result.exitCode, `${args.join(' ')}: ${result.stderr}`).to.equal(options.exit ?? 0)
          seen.push(result.stdout, result.stderr)
          return result
        }
        // n shards on the master, then n more (so that a split moves n and leaves n), each with the one replica.
        const init = ['shards:init', '--instance', master(), '--replica', replica(), '--count', String(n)]
        const asked = await run(init, {exit: 2})
        expect(asked.stderr).to.include(`Add ${n} shard${many} on ${master()}`).and.include('with 1 replica each')
        expect((await run([...init, '--yes'])).stderr).to.include(`Added ${n} shard${many}.`)
        expect((await run([...init, '--yes', '--first-db', String(n)])).stderr).to.include(`Added ${n} shard${many}.`)

        const assign = await run(['shards:assign', ...hashes, '--shard', 's000'])
        expect(assign.stderr).to.include(`${n} hash${n === 1 ? '' : 'es'}: ${n} assigned, 0 already assigned.`)
        const again = await run(['shards:assign', ...hashes, '--shard', 's001'], {exit: 3})
        expect(again.stderr).to.include(`${n} hash${n === 1 ? ' is' : 'es are'} already on another shard`)

        const lookup = await run(['shards:lookup', '--stdin'], {input: hashes.join('\n')})
        expect(lookup.stderr).to.include(`${n} hash${n === 1 ? '' : 'es'}: ${n} found, 0 unassigned.`)
        const unassigned = await run(['shards:lookup', ...hashes.map((h) => `new-${h}`)], {exit: 3})
        expect(unassigned.stderr).to.include(`${n} of ${n} hash${n === 1 ? ' is' : 'es are'} not assigned to any shard`)

        const refused = await run(['shards:remove', 's000'], {exit: 3})
        expect(refused.stderr).to.include(`${n} hash${n === 1 ? ' still points' : 'es still point'} at shard s000`)
        const removal = await run(['shards:remove', 's000', '--force', '--dry-run'])
        expect(removal.stdout).to.include(`leaving ${n} hash${n === 1 ? '' : 'es'} pointing at nothing`)

        expect((await run(['shards:weight', 's000', '5'])).stderr).to.include('Changed 1 weight.')
        expect((await run(['shards:weight', '--even', '--by', 'hashes', '--dry-run'])).stderr).to.match(
          /Would change \d+ weights? \(dry run\)/,
        )

        const list = await run(['shards:list'])
        expect(list.stderr).to.include(`${2 * n} shards on 2 instances,`)
        expect((await run(['shards:list', '--instances'])).stderr).to.include(`2 instances, ${2 * n} shards`)
        const check = await run(['shards:check'], {exit: 'any'})
        expect(check.stderr).to.include(`${2 * n} shards on 2 instances: `)
        // n shards on one instance without replicas, under a prefix of their own.
        for (let db = 0; db < n; db++)
          await run(['shards:add', `solo${db}`, '--master', `127.0.0.1:${target.port}/${db}`, '--prefix', 'solo'])
        expect((await run(['shards:list', '--prefix', 'solo'])).stderr).to.include(`${n} shard${many} on 1 instance,`)
        expect((await run(['shards:list', '--prefix', 'solo', '--instances'])).stderr).to.include(`1 instance, ${n} shard${many}`)
        expect((await run(['shards:check', '--prefix', 'solo', '--allow-no-replica'])).stderr).to.include(
          `${n} shard${many} on 1 instance: `,
        )

        // Split plan: n shards move to an empty target, n stay; each loses its one replica.
        const split = await run(['shards:split', master(), '--to', `127.0.0.1:${target.port}`, '--shards', ids.join(','), '--dry-run'])
        expect(split.stderr).to.include(`: ${n} shard${n === 1 ? ' moves' : 's move'}, ${n} stay${n === 1 ? 's' : ''}.`)
        expect(split.stderr).to.include('s000 goes from 1 replica to 0')
        expect(split.stderr).to.match(new RegExp(`127\\.0\\.0\\.1:${target.port} ${n} shard${many}, `))

        const promote = await run(['shards:promote', master()], {exit: 2})
        expect(promote.stderr).to.include(`to master of the ${2 * n} shards above`)

        // A document of the registry, then imported onto it: nothing changes.
        const dir = mkdtempSync(join(tmpdir(), 'shardctl-plurals-'))
        try {
          const file = join(dir, 'doc.json')
          const exported = await run(['shards:export', '--with-map', '-o', file])
          expect(exported.stderr).to.include(`Wrote ${2 * n} shards and ${n} map entr${n === 1 ? 'y' : 'ies'} to ${file}.`)
          expect((await run(['shards:import', file, '--dry-run'])).stderr).to.include(`${2 * n} shards unchanged.`)
        } finally {
          rmSync(dir, {recursive: true, force: true})
        }

        // n hashes pointing at a shard the registry does not have.
        await fleet.reg.hset('shards.map', Object.fromEntries(hashes.map((h) => [`lost-${h}`, 'gone'])))
        expect((await run(['shards:list', '--no-probe', '--counts'])).stderr).to.include(
          `${n} hash${n === 1 ? ' points' : 'es point'} at unknown shards`,
        )

        // n stray keys recorded on a database of the target; the shard lives on the master.
        const strayDb = 9
        await target.client(strayDb).mset(Object.fromEntries(hashes.map((h) => [`stray-${h}`, 'x'])))
        await fleet.reg.hset('shards._strays', `127.0.0.1:${target.port}/${strayDb}`, JSON.stringify({shard: 's001', keys: n}))
        const reconcile = await run(['shards:reconcile'], {exit: 2})
        expect(reconcile.stderr).to.include(`Move ${n} stray key${many} to where`)
        const moved = await run(['shards:reconcile', '--yes'])
        expect(moved.stdout).to.include(`Moved ${n} key${many}; no stray writes are left.`)
        await fleet.instances[0].master.client(1).flushdb()

        expectAgreement(seen.join('\n'))
      })
    }
  })

  describe('sandbox:*', () => {
    let dir: string
    afterEach(async () => {
      await stopServersIn(dir)
      rmSync(dir, {recursive: true, force: true})
    })
    for (const n of [1, 2]) {
      it(
        `sandbox:up and sandbox:down with ${n} instance(s), replica(s) per instance and shard(s)`.replaceAll('(s)', n === 1 ? '' : 's'),
        async () => {
          dir = mkdtempSync(join(tmpdir(), 'shardctl-plurals-sandbox-'))
          const processes = 1 + n + n * n
          const args = [
            '--dir',
            dir,
            '--port',
            String(await freeRange(processes)),
            '--instances',
            String(n),
            '--replicas',
            String(n),
            '--shards',
            String(n),
          ]
          const many = n === 1 ? '' : 's'
          const dry = await spawnCli(['sandbox:up', ...args, '--dry-run'])
          expect(dry.exitCode, dry.stderr).to.equal(0)
          expect(dry.stderr).to.include(`Would start ${processes} redis-server processes with ${n} shard${many};`)
          const up = await spawnCli(['sandbox:up', ...args])
          expect(up.exitCode, up.stderr).to.equal(0)
          expect(up.stderr).to.include(`Starting ${processes} redis-server processes on ports`)
          expect(up.stderr).to.include(`Sandbox up: registry, ${n} instance${many}, ${n * n} replica${many}, ${n} shard${many}.`)
          const down = await spawnCli(['sandbox:down', '--dir', dir])
          expect(down.exitCode, down.stderr).to.equal(0)
          expect(down.stderr).to.include(`Stopped ${processes} redis-server processes.`)
          expectAgreement([dry, up, down].map((r) => r.stdout + r.stderr).join('\n'))
        },
      )
    }
  })
})

import {createHash} from 'node:crypto'
import {existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, utimesSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {Readable, Transform} from 'node:stream'
import {gunzipSync} from 'node:zlib'

import {expect} from 'chai'
import type {Redis} from 'ioredis'

import {crc64} from '../../src/rdb/crc64.js'
import {type Manifest} from '../../src/backup/manifest.js'
import {parseDocument} from '../../src/registry/document.js'
import {BIG_VALUE_BYTES, backupFiles, differences, fillDatabase} from '../helpers/backups.js'
import {cli, secret, spawnCli, startCli, until} from '../helpers/cli.js'
import {type ReplyDelayProxy, startReplyDelayProxy, startSilentServer} from '../helpers/proxy.js'
import {type TestServer, startReplicated, startServer, waitForCatchUp} from '../helpers/redis.js'
import {S3_CREDENTIALS, type TestS3, startS3, useS3Credentials} from '../helpers/s3.js'

/**
 * shards:backup, backups:list/verify/prune and shards:restore against real redis-server
 * processes and a real S3 server on loopback: a registry with a replica, an instance with
 * a replica holding five shards (every data type, keys with expiry times, a value larger
 * than one multipart part), and an empty instance to restore into.
 */
describe('backups: shards:backup, backups:*, shards:restore', () => {
  let registry: {master: TestServer; replicas: TestServer[]}
  let source: {master: TestServer; replicas: TestServer[]}
  let target: TestServer
  let dir: string
  let s3: TestS3
  let src: Redis
  let dst: Redis
  const r = () => ['-r', registry.master.url]
  const manifestOf = (id: string): Manifest => JSON.parse(readFileSync(join(dir, ...id.split('/'), 'manifest.json'), 'utf8')) as Manifest

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'shardctl-backups-'))
    ;[registry, source, target, s3] = await Promise.all([
      startReplicated(1),
      startReplicated(1, ['--databases', '16']),
      startServer(['--databases', '16']),
      startS3(),
    ])
    useS3Credentials()
    const init = await cli([
      'shards:init',
      '--instance',
      `127.0.0.1:${source.master.port}`,
      '--replica',
      `127.0.0.1:${source.replicas[0].port}`,
      '--count',
      '5',
      '--yes',
      ...r(),
    ])
    expect(init.exitCode, init.stderr).to.equal(0)
    src = source.master.client()
    dst = target.client()
    for (let db = 0; db < 5; db++) await fillDatabase(src, db, {big: db === 3})
    await waitForCatchUp(source.replicas[0], source.master)
    await waitForCatchUp(registry.replicas[0], registry.master)
  })
  after(async () => {
    rmSync(dir, {recursive: true, force: true})
    await s3.stop()
  })

  describe('to a directory', () => {
    it('backs up every instance and the registry, each from its replica; the plan says which node serves each', async () => {
      const dry = await spawnCli(['shards:backup', '--to', dir, '--run', 'never', '--dry-run', ...r()])
      expect(dry.exitCode, dry.stderr).to.equal(0)
      expect(dry.stdout).to.match(
        new RegExp(`127\\.0\\.0\\.1:${source.master.port}\\s+127\\.0\\.0\\.1:${source.replicas[0].port}\\s+replica\\s+5`),
      )
      expect(readdirSync(dir)).to.deep.equal([])

      const run = await spawnCli(['shards:backup', '--to', dir, '--run', 't1', ...r()])
      expect(run.exitCode, run.stderr).to.equal(0)
      // In a pipe: one line per instance, then the summary.
      const lines = run.stderr.trim().split('\n')
      expect(lines.filter((l) => l.startsWith('✔'))).to.have.length(2)
      expect(lines.at(-1)).to.match(/^Backup t1\/fleet at .*: 2 instances, .*, complete\.$/)

      const manifest = manifestOf('t1/fleet')
      expect(manifest).to.include({id: 't1/fleet', run: 't1', part: 'fleet', prefix: 'shards'})
      expect(manifest.failed).to.deep.equal([])
      const [ofRegistry, ofSource] = [registry.master, source.master].map((m) =>
        manifest.instances.find((i) => i.instance === `127.0.0.1:${m.port}`)!,
      )
      expect(ofRegistry).to.include({registry: true, node: `127.0.0.1:${registry.replicas[0].port}`, nodeRole: 'replica'})
      expect(ofSource).to.include({registry: false, node: `127.0.0.1:${source.replicas[0].port}`, nodeRole: 'replica', rdbVersion: 10})
      expect(ofSource.shards).to.deep.equal([0, 1, 2, 3, 4].map((db) => ({id: `s00${db}`, db})))
      // Keys per database as the instance has them.
      const keyspace = await src.info('keyspace')
      for (let db = 0; db < 5; db++)
        expect(ofSource.keys[String(db)]).to.equal(Number(new RegExp(`db${db}:keys=(\\d+)`).exec(keyspace)![1]))
      expect(ofSource.bytes).to.be.greaterThan(BIG_VALUE_BYTES)
      // The stored file is what the manifest says, byte for byte.
      const stored = readFileSync(join(dir, 't1', 'fleet', ofSource.file))
      expect(createHash('sha256').update(stored).digest('hex')).to.equal(ofSource.sha256)
      expect(crc64(stored.subarray(0, -8)).toString(16).padStart(16, '0')).to.equal(ofSource.crc64)
      // registry.json: the shards:export document of that moment.
      const document = parseDocument(readFileSync(join(dir, 't1', 'fleet', 'registry.json'), 'utf8'))
      expect(document.shards.map((s) => s.master)).to.deep.equal([0, 1, 2, 3, 4].map((db) => `127.0.0.1:${source.master.port}/${db}`))
      // Readable by their owner only.
      for (const name of readdirSync(join(dir, 't1', 'fleet')))
        expect(statSync(join(dir, 't1', 'fleet', name)).mode & 0o777, name).to.equal(0o600)
      expect(statSync(join(dir, 't1', 'fleet')).mode & 0o777).to.equal(0o700)
    })

    it('backups:list shows it complete; backups:verify --deep loads each snapshot and finds the manifest right', async () => {
      const list = await cli(['backups:list', '--from', dir, '--json'])
      expect(list.exitCode, list.stderr).to.equal(0)
      const [listed] = JSON.parse(list.stdout).backups as {id: string; status: string; instances: string[]}[]
      expect(listed).to.include({id: 't1/fleet', status: 'complete'})
      expect(listed.instances).to.have.length(2)
      const verify = await cli(['backups:verify', 't1', '--from', dir, '--deep', '--json'])
      expect(verify.exitCode, verify.stderr).to.equal(0)
      const result = JSON.parse(verify.stdout) as {ok: boolean; backups: {instances: {ok: boolean; loaded: Record<string, number>}[]}[]}
      expect(result.ok).to.equal(true)
      expect(result.backups[0].instances.every((i) => i.ok)).to.equal(true)
      expect(result.backups[0].instances.find((i) => i.loaded['3'] !== undefined)!.loaded['3']).to.equal(
        manifestOf('t1/fleet').instances.find((i) => !i.registry)!.keys['3'],
      )
    })

    it('restores db 3 of one instance into another as db 7: every value and expiry time as they were', async () => {
      const run = await cli(['shards:restore', 's003', '--from', dir, '--to', `127.0.0.1:${target.port}/7`, '--json', ...r()])
      expect(run.exitCode, run.stderr).to.equal(0)
      const result = JSON.parse(run.stdout) as {applied: boolean; copies: {copied: number; sampled: number; toDb: number}[]}
      expect(result.applied).to.equal(true)
      expect(result.copies[0]).to.include({toDb: 7})
      expect(result.copies[0].sampled).to.equal(100)
      expect(await differences(src, 3, dst, 7)).to.deep.equal([])
      await dst.select(7)
      expect(await dst.pttl('ttl:3:hour')).to.be.within(1, 3_600_000)
      await dst.select(0)
      // Nothing else was touched.
      expect(await target.client(3).dbsize()).to.equal(0)
    })

    it('refuses a database that holds keys or serves a shard (exit 3, nothing changed); --replace empties it first', async () => {
      const again = await cli(['shards:restore', 's003', '--from', dir, '--to', `127.0.0.1:${target.port}/7`, ...r()])
      expect(again.exitCode).to.equal(3)
      expect(again.stderr).to.match(/the target is not free: .*\/7 holds \d+ keys/)
      const serving = await cli(['shards:restore', 's003', '--from', dir, '--to', `127.0.0.1:${source.master.port}/0`, ...r()])
      expect(serving.exitCode).to.equal(3)
      expect(serving.stderr).to.match(/serves s000/)

      await target.client(7).set('left-over', 'x')
      const replaced = await cli([
        'shards:restore',
        's003',
        '--from',
        dir,
        '--to',
        `127.0.0.1:${target.port}/7`,
        '--replace',
        '--yes',
        ...r(),
      ])
      expect(replaced.exitCode, replaced.stderr).to.equal(0)
      expect(await differences(src, 3, dst, 7)).to.deep.equal([])
      // Without --yes and without a terminal, nothing is emptied.
      const unasked = await spawnCli(['shards:restore', 's003', '--from', dir, '--to', `127.0.0.1:${target.port}/7`, '--replace', ...r()])
      expect(unasked.exitCode).to.equal(2)
    })

    it('--route points the shard at its copy in one compare-and-set step, with its event', async () => {
      const events: string[] = []
      const subscriber = registry.master.client()
      await subscriber.subscribe('shards._events')
      subscriber.on('message', (_channel, message: string) => events.push(message))
      const run = await cli(['shards:restore', 's002', '--from', dir, '--to', `127.0.0.1:${target.port}/9`, '--route', '--yes', ...r()])
      expect(run.exitCode, run.stderr).to.equal(0)
      const reg = registry.master.client()
      expect(await reg.hgetall('shards.s002')).to.deep.equal({master: `127.0.0.1:${target.port}/9`})
      await until('the event arrives', () => events.length > 0)
      expect(JSON.parse(events[0])).to.include({type: 'shards.restored', backup: 't1/fleet'})
      subscriber.disconnect()
      expect(await differences(src, 2, dst, 9)).to.deep.equal([])
      // Put it back for the other tests.
      await reg.hset('shards.s002', 'master', `127.0.0.1:${source.master.port}/2`, 'slave0', `127.0.0.1:${source.replicas[0].port}/2`)
    })

    it('a stored snapshot flipped or cut short: backups:verify fails naming it, shards:restore refuses and copies nothing', async () => {
      const backup = await cli(['shards:backup', '--to', dir, '--run', 't2', '--instance', `127.0.0.1:${source.master.port}`, ...r()])
      expect(backup.exitCode, backup.stderr).to.equal(0)
      const id = `t2/127.0.0.1-${source.master.port}`
      const entry = manifestOf(id).instances[0]
      const file = join(dir, ...id.split('/'), entry.file)
      const bytes = readFileSync(file)
      bytes[Math.floor(bytes.length / 2)] ^= 0x01
      writeFileSync(file, bytes)

      const verify = await cli(['backups:verify', id, '--from', dir])
      expect(verify.exitCode).to.equal(3)
      expect(verify.stderr).to.include(entry.file)
      const restore = await cli(['shards:restore', 's003', '--backup', 't2', '--from', dir, '--to', `127.0.0.1:${target.port}/11`, ...r()])
      expect(restore.exitCode).to.equal(3)
      expect(restore.stderr).to.match(/does not match its manifest/)
      expect(await target.client(11).dbsize()).to.equal(0)

      // The manifest's sha256 made to match the damaged file: Redis's own CRC64 still refuses it, before anything is copied.
      const manifest = manifestOf(id)
      manifest.instances[0].sha256 = createHash('sha256').update(bytes).digest('hex')
      writeFileSync(join(dir, ...id.split('/'), 'manifest.json'), JSON.stringify(manifest))
      const restoreArgs = ['shards:restore', 's003', '--backup', 't2', '--from', dir, '--to', `127.0.0.1:${target.port}/11`, ...r()]
      const unchecked = await cli(restoreArgs)
      expect(unchecked.exitCode).to.equal(3)
      expect(unchecked.stderr).to.match(/CRC64 does not match its content/)
      expect(await target.client(11).dbsize()).to.equal(0)

      // Cut short: refused by its size.
      writeFileSync(file, bytes.subarray(0, bytes.length - 1000))
      const truncated = await cli(restoreArgs)
      expect(truncated.exitCode).to.equal(3)
      expect(truncated.stderr).to.match(/is [\d,]+ bytes, the manifest says [\d,]+/)
      expect(await target.client(11).dbsize()).to.equal(0)

      // A time in the manifest that is no time: that backup is not valid, the listing of the others goes on.
      const startedAt = manifest.startedAt
      manifest.startedAt = 'yesterday'
      writeFileSync(join(dir, ...id.split('/'), 'manifest.json'), JSON.stringify(manifest))
      const list = await cli(['backups:list', '--from', dir, '--json'])
      expect(list.exitCode, list.stderr).to.equal(0)
      const listed = (JSON.parse(list.stdout) as {backups: {id: string; status: string; problem?: string}[]}).backups
      expect(listed.find((b) => b.id === id)?.problem).to.match(/startedAt is not an ISO 8601 time/)
      expect(listed.filter((b) => b.status === 'complete')).not.to.deep.equal([])
      const dated = await cli(['backups:verify', id, '--from', dir])
      expect(dated.exitCode).to.equal(3)
      expect(dated.stderr).to.match(/startedAt is not an ISO 8601 time/)
      writeFileSync(join(dir, ...id.split('/'), 'manifest.json'), JSON.stringify({...manifest, startedAt}))
    })

    it('a --from that is not there, or not a directory, is a mistyped path (exit 2), never an empty destination', async () => {
      const missing = join(dir, 'no-such-directory')
      for (const args of [
        ['backups:list', '--from', missing],
        ['backups:verify', 't1', '--from', missing],
        ['backups:prune', '--from', missing, '--keep-last', '1', '--dry-run'],
        ['shards:restore', 's003', '--from', missing, '--to', `127.0.0.1:${target.port}/11`, ...r()],
      ]) {
        const run = await cli(args)
        expect(run.exitCode, `${args[0]}: ${run.stderr}`).to.equal(2)
        expect(run.stderr).to.include(`${missing} does not exist`)
      }
      const file = await cli(['backups:list', '--from', join(dir, 't2', `127.0.0.1-${source.master.port}`, 'manifest.json')])
      expect(file.exitCode).to.equal(2)
      expect(file.stderr).to.match(/manifest\.json is not a directory/)
      // A scratch directory that is not there: one line naming the setting, no stack trace.
      const scratch = await spawnCli(['backups:verify', 't1', '--from', dir, '--deep'], {env: {SHARDCTL_SCRATCH_DIR: missing}})
      expect(scratch.exitCode).to.equal(1)
      expect(scratch.stderr.trim().split('\n')).to.have.length(1)
      expect(scratch.stderr).to.include(`cannot make a scratch directory in ${missing} (SHARDCTL_SCRATCH_DIR): ENOENT`)
    })

    it('an RDB version the target cannot read is refused before anything is copied', async () => {
      const backup = await cli(['shards:backup', '--to', dir, '--run', 't3', '--instance', `127.0.0.1:${source.master.port}`, ...r()])
      expect(backup.exitCode, backup.stderr).to.equal(0)
      // What a Redis 7.2 replica would have sent: RDB version 11 in the header, its checksums right.
      const id = `t3/127.0.0.1-${source.master.port}`
      const manifest = manifestOf(id)
      const entry = manifest.instances[0]
      const file = join(dir, ...id.split('/'), entry.file)
      const bytes = readFileSync(file)
      bytes.write('REDIS0011', 0, 'latin1')
      bytes.writeBigUInt64LE(crc64(bytes.subarray(0, -8)), bytes.length - 8)
      writeFileSync(file, bytes)
      Object.assign(entry, {
        rdbVersion: 11,
        redisVersion: '7.2.4',
        sha256: createHash('sha256').update(bytes).digest('hex'),
        crc64: crc64(bytes.subarray(0, -8)).toString(16).padStart(16, '0'),
      })
      writeFileSync(join(dir, ...id.split('/'), 'manifest.json'), JSON.stringify(manifest))

      const restore = await cli(['shards:restore', 's003', '--backup', 't3', '--from', dir, '--to', `127.0.0.1:${target.port}/12`, ...r()])
      expect(restore.exitCode).to.equal(3)
      expect(restore.stderr).to.match(
        /the snapshot is RDB version 11 \(Redis 7\.2\.4\), and the target 127\.0\.0\.1:\d+ runs Redis 7\.0\.\d+, which reads up to RDB 10/,
      )
      expect(await target.client(12).dbsize()).to.equal(0)
    })

    it('a key whose expiry time passed since the backup is not brought back; the rest is, counted exactly', async () => {
      await src.pipeline().select(4).set('ttl:4:short', 'gone soon', 'PX', 1500).select(0).exec()
      const backup = await cli(['shards:backup', '--to', dir, '--run', 't4', '--instance', `127.0.0.1:${source.master.port}`, ...r()])
      expect(backup.exitCode, backup.stderr).to.equal(0)
      await until(
        'the key expires on the source',
        async () => (await src.pipeline().select(4).exists('ttl:4:short').select(0).exec())![1][1] === 0,
      )
      const run = await cli([
        'shards:restore',
        's004',
        '--backup',
        't4',
        '--from',
        dir,
        '--to',
        `127.0.0.1:${target.port}/14`,
        '--json',
        ...r(),
      ])
      expect(run.exitCode, run.stderr + run.stdout).to.equal(0)
      const [copy] = (JSON.parse(run.stdout) as {copies: {keys: number; copied: number; expired: number; onTarget: number}[]}).copies
      expect(copy.expired).to.equal(1)
      expect(copy.copied + copy.expired).to.equal(copy.keys)
      expect(copy.onTarget).to.equal(copy.copied)
      expect(await differences(src, 4, dst, 14)).to.deep.equal([])
    })

    it('an instance given instead of a shard: every shard it held, each into its own database number', async () => {
      const run = await cli([
        'shards:restore',
        `127.0.0.1:${source.master.port}`,
        '--backup',
        't1',
        '--from',
        dir,
        '--to',
        `127.0.0.1:${target.port}`,
        '--json',
        ...r(),
      ])
      expect(run.exitCode, run.stderr).to.equal(0)
      const copies = (JSON.parse(run.stdout) as {copies: {shard: string; toDb: number}[]}).copies
      expect(copies.map((c) => `${c.shard}@${c.toDb}`)).to.deep.equal(['s000@0', 's001@1', 's002@2', 's003@3', 's004@4'])
      for (let db = 0; db < 5; db++) expect(await differences(src, db, dst, db), `db ${db}`).to.deep.equal([])
      await dst.flushall()
    })

    it('a registry spelling one instance two ways: every shard of it, and the instance in either spelling, are found in its backup', async () => {
      const reg = registry.master.client()
      await reg.hset('shards.s000', 'master', `localhost:${source.master.port}/0`)
      try {
        const backup = await cli(['shards:backup', '--to', dir, '--run', 'sp1', '--instance', `127.0.0.1:${source.master.port}`, ...r()])
        expect(backup.exitCode, backup.stderr).to.equal(0)
        const [part] = readdirSync(join(dir, 'sp1'))
        // Recorded under the first spelling; the other shards of it say 127.0.0.1.
        expect(manifestOf(`sp1/${part}`).instances.map((i) => i.instance)).to.deep.equal([`localhost:${source.master.port}`])
        const planned = async (subject: string, to: string) => {
          const run = await cli(['shards:restore', subject, '--backup', 'sp1', '--from', dir, '--to', to, '--dry-run', '--json', ...r()])
          expect(run.exitCode, run.stderr).to.equal(0)
          return (JSON.parse(run.stdout) as {plan: {copies: {shard: string}[]}}).plan.copies.map((c) => c.shard)
        }
        expect(await planned('s002', `127.0.0.1:${target.port}/5`)).to.deep.equal(['s002'])
        const all = ['s000', 's001', 's002', 's003', 's004']
        expect(await planned(`127.0.0.1:${source.master.port}`, `127.0.0.1:${target.port}`)).to.deep.equal(all)
        expect(await planned(`localhost:${source.master.port}`, `127.0.0.1:${target.port}`)).to.deep.equal(all)
      } finally {
        await reg.hset('shards.s000', 'master', `127.0.0.1:${source.master.port}/0`)
      }
    })

    it("refuses the registry's own database as a target, in any spelling and even with --replace (exit 3, the registry untouched)", async () => {
      // Another port onto the registry's server: a name no spelling rule can tell, its run_id can.
      const proxy = await startReplyDelayProxy(registry.master.port)
      try {
        for (const to of [`localhost:${registry.master.port}/0`, `127.0.0.1:${proxy.port}/0`]) {
          const run = await cli(['shards:restore', 's001', '--from', dir, '--to', to, '--replace', '--yes', ...r()])
          expect(run.exitCode, `${to}: ${run.stderr}`).to.equal(3)
          expect(run.stderr).to.include(`the target ${to} is the registry's own database`)
        }
      } finally {
        await proxy.close()
      }
      const reg = registry.master.client()
      expect(await reg.zcard('shards.list')).to.equal(5)
      expect(await reg.exists('shards.s001')).to.equal(1)
      // Another database of the registry's instance is an instance's database like any other.
      const other = await cli(['shards:restore', 's001', '--from', dir, '--to', `127.0.0.1:${registry.master.port}/3`, '--dry-run', ...r()])
      expect(other.exitCode, other.stderr).to.equal(0)
    })

    it('a backup whose registry.json does not match its manifest: refused by name (exit 3), passed over out loud otherwise', async () => {
      const backup = await cli(['shards:backup', '--to', dir, '--run', 'rj1', '--instance', `127.0.0.1:${source.master.port}`, ...r()])
      expect(backup.exitCode, backup.stderr).to.equal(0)
      const [part] = readdirSync(join(dir, 'rj1'))
      const file = join(dir, 'rj1', part, 'registry.json')
      const original = readFileSync(file, 'utf8')
      // The same size, another weight: only its sha256 can tell.
      writeFileSync(file, original.replace('"weight": 1', '"weight": 9'))
      expect(readFileSync(file, 'utf8')).not.to.equal(original)
      try {
        const restore = (...flags: string[]) =>
          cli(['shards:restore', 's001', '--from', dir, '--to', `127.0.0.1:${target.port}/6`, '--dry-run', ...flags, ...r()])
        const named = await restore('--backup', 'rj1')
        expect(named.exitCode, named.stderr).to.equal(3)
        expect(named.stderr).to.include(
          `backup rj1/${part} at ${dir} cannot serve a restore of shard s001: registry.json: its size or sha256`,
        )
        const newest = await restore('--json')
        expect(newest.exitCode, newest.stderr).to.equal(0)
        const {plan} = JSON.parse(newest.stdout) as {plan: {backup: {id: string}; skipped: {id: string; reason: string}[]}}
        expect(plan.backup.id).not.to.equal(`rj1/${part}`)
        expect(plan.skipped).to.deep.equal([{id: `rj1/${part}`, reason: 'registry.json: its size or sha256 does not match the manifest'}])
        expect(newest.stderr).to.include(`the newer backup rj1/${part} was passed over: registry.json: its size or sha256`)
      } finally {
        writeFileSync(file, original)
      }
    })

    it('backups of several fleets in one directory: restore chooses only its own, says so when told another; prune keeps each fleet its own', async () => {
      const shared = mkdtempSync(join(tmpdir(), 'shardctl-backups-fleets-'))
      // Three fleets whose s001 lives on the same instance: this one; another prefix in this registry; another registry (db 1).
      const reg = registry.master.client()
      const otherRegistry = registry.master.client(1)
      const otherUrl = `redis://127.0.0.1:${registry.master.port}/1`
      await reg.hset('fleetb.s001', 'master', `127.0.0.1:${source.master.port}/1`)
      await reg.zadd('fleetb.list', 1, 's001')
      await otherRegistry.hset('shards.s001', 'master', `127.0.0.1:${source.master.port}/1`)
      await otherRegistry.zadd('shards.list', 1, 's001')
      try {
        const instance = ['--instance', `127.0.0.1:${source.master.port}`]
        for (const [run, fleet] of [
          ['f1', r()],
          ['f2', [...r(), '--prefix', 'fleetb']],
          ['f3', ['-r', otherUrl]],
        ] as const) {
          const backup = await cli(['shards:backup', '--to', shared, '--run', run, ...instance, ...fleet])
          expect(backup.exitCode, backup.stderr).to.equal(0)
        }
        const [part] = readdirSync(join(shared, 'f1'))
        const restoreArgs = ['shards:restore', 's001', '--from', shared, '--to', `127.0.0.1:${target.port}/6`]
        const restore = async (...flags: string[]) => {
          const run = await cli([...restoreArgs, '--dry-run', '--json', ...flags])
          expect(run.exitCode, run.stderr).to.equal(0)
          const {plan} = JSON.parse(run.stdout) as {plan: {backup: {id: string; otherFleet?: string; of: {registry: string | null}}}}
          return {backup: plan.backup, stderr: run.stderr}
        }
        // The newest backup of each fleet's own, though another fleet's is newer.
        const own = (await restore(...r())).backup
        expect([own.id, own.otherFleet]).to.deep.equal([`f1/${part}`, undefined])
        expect((await restore(...r(), '--prefix', 'fleetb')).backup.id).to.equal(`f2/${part}`)
        expect((await restore('-r', otherUrl)).backup.id).to.equal(`f3/${part}`)
        // Named, another fleet's backup serves, said on stderr and in the plan.
        const told = await restore(...r(), '--backup', 'f3')
        expect(told.backup.otherFleet).to.equal(
          `taken of registry 127.0.0.1:${registry.master.port}/1 (this one is 127.0.0.1:${registry.master.port}/0)`,
        )
        expect(told.stderr).to.include(`backup f3/${part} is of another fleet: taken of registry`)
        // A fleet none of whose backups holds it: the others' are named, and how to use one.
        const none = await cli([...restoreArgs, '--prefix', 'fleetd', ...r()])
        expect(none.exitCode).to.equal(2)
        expect(none.stderr).to.include(`no complete backup of registry 127.0.0.1:${registry.master.port}/0 and prefix fleetd`)
        expect(none.stderr).to.match(/backups of another fleet hold it: f3\/.*, f2\/.*, f1\/.*; to restore from one, name it with --backup/)
        // A manifest of an older shardctl, without the registry: its prefix decides, and a warning says so.
        const manifestFile = join(shared, 'f3', part, 'manifest.json')
        const older = JSON.parse(readFileSync(manifestFile, 'utf8')) as Manifest
        delete older.registryAddress
        writeFileSync(manifestFile, JSON.stringify(older))
        const unknown = await restore(...r())
        expect(unknown.backup).to.deep.include({id: `f3/${part}`, of: {registry: null, prefix: 'shards'}})
        expect(unknown.backup.otherFleet).to.equal(undefined)
        expect(unknown.stderr).to.include('does not record the registry it was taken of')

        // Retention: one series per registry, prefix and part, so each fleet keeps its newest.
        const prune = await cli(['backups:prune', '--from', shared, '--keep-last', '1', '--yes', '--json'])
        expect(prune.exitCode, prune.stderr).to.equal(0)
        expect((JSON.parse(prune.stdout) as {removed: unknown[]}).removed).to.deep.equal([])
      } finally {
        await reg.del('fleetb.s001', 'fleetb.list')
        await otherRegistry.flushdb()
        rmSync(shared, {recursive: true, force: true})
      }
    })
  })

  describe('gzip and encryption at rest', () => {
    /** Backup with --gzip (and `encryption`), verify --deep and restore of db 3 into `db` of the target; `access` reaches the destination. */
    const roundTrip = async (to: string, run: string, db: number, access: string[] = [], encryption: string[] = []) => {
      const backup = await cli(['shards:backup', '--to', to, '--run', run, '--gzip', '--json', ...encryption, ...access, ...r()])
      expect(backup.exitCode, backup.stderr).to.equal(0)
      const verify = await cli(['backups:verify', `${run}/fleet`, '--from', to, '--deep', '--json', ...access])
      expect(verify.exitCode, verify.stderr + verify.stdout).to.equal(0)
      const id = `${run}/fleet`
      const restore = await cli([
        'shards:restore',
        's003',
        '--from',
        to,
        '--backup',
        id,
        '--to',
        `127.0.0.1:${target.port}/${db}`,
        ...access,
        ...r(),
      ])
      expect(restore.exitCode, restore.stderr).to.equal(0)
      expect(await differences(src, 3, dst, db)).to.deep.equal([])
      await dst.select(db)
      expect(await dst.pttl('ttl:3:hour')).to.be.within(1, 3_600_000)
      await dst.select(0)
    }

    it('--gzip to a directory: each snapshot stored compressed, its sha256 of the stored bytes; verify --deep and restore read it back', async () => {
      const to = mkdtempSync(join(tmpdir(), 'shardctl-backups-gz-'))
      try {
        await roundTrip(to, 'g1', 8)
        const manifest = JSON.parse(readFileSync(join(to, 'g1', 'fleet', 'manifest.json'), 'utf8')) as Manifest
        for (const entry of manifest.instances) {
          expect(entry).to.include({compression: 'gzip'})
          expect(entry.file).to.match(/\.rdb\.gz$/)
          const stored = readFileSync(join(to, 'g1', 'fleet', entry.file))
          expect(createHash('sha256').update(stored).digest('hex')).to.equal(entry.sha256)
          // The stored bytes are gzip; inflated, an RDB whose own CRC64 is the manifest's.
          expect([...stored.subarray(0, 2)]).to.deep.equal([0x1f, 0x8b])
          expect(stored.length).to.equal(entry.bytes)
          const rdb = gunzipSync(stored)
          expect(rdb.length).to.equal(entry.rdbBytes)
          expect(rdb.subarray(0, 5).toString()).to.equal('REDIS')
          expect(crc64(rdb.subarray(0, -8)).toString(16).padStart(16, '0')).to.equal(entry.crc64)
        }
        // The registry's snapshot (text) comes out smaller; the source's is mostly random bytes and does not.
        const ofRegistry = manifest.instances.find((i) => i.registry)!
        expect(ofRegistry.bytes).to.be.lessThan(ofRegistry.rdbBytes)
      } finally {
        rmSync(to, {recursive: true, force: true})
      }
    })

    /**
     * Every request that creates an object on the S3 server (PutObject, CreateMultipartUpload), with its encryption
     * headers as the SDK signed and sent them. s3rver keeps only x-amz-meta-* and the standard headers of an object, so
     * what it stores or returns cannot show them: the requests themselves are looked at, the data path untouched.
     */
    const capture = () => {
      const created: {what: string; sse?: string; kms?: string}[] = []
      s3.onRequest = (method, url, headers) => {
        const multipart = method === 'POST' && /[?&]uploads(=|&|$)/.test(url)
        const put = method === 'PUT' && !/[?&]partNumber=/.test(url)
        if (!multipart && !put) return
        created.push({
          what: `${multipart ? 'multipart' : 'put'} ${url.replace(/\?.*$/, '')}`,
          sse: headers['x-amz-server-side-encryption'] as string | undefined,
          kms: headers['x-amz-server-side-encryption-aws-kms-key-id'] as string | undefined,
        })
      }
      return created
    }

    it('--gzip --sse AES256 to S3: every object is created with the encryption header (a snapshot larger than one part too); verify and restore read it back', async () => {
      const created = capture()
      try {
        await roundTrip(s3.url('enc/'), 'e1', 10, s3.flags(), ['--sse', 'AES256'])
      } finally {
        s3.onRequest = undefined
      }
      const files = created.map((c) => c.what)
      expect(
        files.some((f) => f.startsWith('multipart ') && f.endsWith('.rdb.gz')),
        files.join(', '),
      ).to.equal(true)
      for (const name of ['registry.json', 'manifest.json'])
        expect(
          files.some((f) => f.endsWith(`/e1/fleet/${name}`)),
          name,
        ).to.equal(true)
      for (const c of created) expect(c, c.what).to.deep.include({sse: 'AES256', kms: undefined})
    })

    it('--sse aws:kms --sse-kms-key-id to S3: every object is created asking for that key', async () => {
      const key = 'arn:aws:kms:us-east-1:111122223333:key/0a1b2c3d-4e5f-6789-abcd-ef0123456789'
      const created = capture()
      let run
      try {
        run = await cli([
          'shards:backup',
          '--to',
          s3.url('kms/'),
          '--run',
          'k1',
          '--sse',
          'aws:kms',
          '--sse-kms-key-id',
          key,
          '--json',
          ...s3.flags(),
          ...r(),
        ])
      } finally {
        s3.onRequest = undefined
      }
      expect(run.exitCode, run.stderr).to.equal(0)
      expect(created.map((c) => c.what).filter((w) => w.startsWith('multipart '))).to.have.length.greaterThan(0)
      for (const c of created) expect(c, c.what).to.deep.include({sse: 'aws:kms', kms: key})
      const verify = await cli(['backups:verify', 'k1/fleet', '--from', s3.url('kms/'), ...s3.flags()])
      expect(verify.exitCode, verify.stderr).to.equal(0)
    })

    it('refuses --sse to a directory and a KMS key without aws:kms (exit 2, nothing written)', async () => {
      const to = mkdtempSync(join(tmpdir(), 'shardctl-backups-sse-'))
      try {
        const local = await cli(['shards:backup', '--to', to, '--sse', 'AES256', ...r()])
        expect(local.exitCode).to.equal(2)
        expect(local.stderr).to.include('--sse goes with an s3:// destination')
        const keyAlone = await cli([
          'shards:backup',
          '--to',
          s3.url('kms/'),
          '--sse',
          'AES256',
          '--sse-kms-key-id',
          'k',
          ...s3.flags(),
          ...r(),
        ])
        expect(keyAlone.exitCode).to.equal(2)
        expect(keyAlone.stderr).to.include('--sse-kms-key-id goes with --sse aws:kms')
        expect(readdirSync(to)).to.deep.equal([])
      } finally {
        rmSync(to, {recursive: true, force: true})
      }
    })
  })

  describe('to S3', () => {
    it('backs up (a snapshot larger than one multipart part), lists, verifies --deep and restores through a real S3 server', async () => {
      const to = s3.url('prod/eu')
      const run = await cli(['shards:backup', '--to', to, '--run', 's1', '--json', ...s3.flags(), ...r()])
      expect(run.exitCode, run.stderr).to.equal(0)
      const result = JSON.parse(run.stdout) as {status: string; instances: {instance: string; bytes: number}[]}
      expect(result.status).to.equal('complete')
      expect(result.instances.find((i) => i.instance === `127.0.0.1:${source.master.port}`)!.bytes).to.be.greaterThan(5 * 1024 * 1024)

      const list = JSON.parse((await cli(['backups:list', '--from', to, '--json', ...s3.flags()])).stdout) as {
        backups: {id: string; status: string}[]
      }
      expect(list.backups).to.deep.include.members([{...list.backups[0], id: 's1/fleet', status: 'complete'}])
      const verify = await cli(['backups:verify', 's1/fleet', '--from', to, '--deep', ...s3.flags()])
      expect(verify.exitCode, verify.stderr).to.equal(0)
      const restore = await cli(['shards:restore', 's003', '--from', to, '--to', `127.0.0.1:${target.port}/13`, ...s3.flags(), ...r()])
      expect(restore.exitCode, restore.stderr).to.equal(0)
      expect(await differences(src, 3, dst, 13)).to.deep.equal([])
    })

    it('the S3 server cuts a snapshot short or stops as it is read: restore and verify say the store failed (exit 1), never that the backup is corrupt', async () => {
      const to = s3.url('prod/eu')
      const reads = [
        ['shards:restore', 's003', '--from', to, '--to', `127.0.0.1:${target.port}/15`, '--timeout', '2s', ...r()],
        ['backups:verify', 's1/fleet', '--from', to, '--timeout', '2s'],
      ]
      // The connection reset after the first megabyte of a snapshot's body.
      s3.onResponse = (response) => {
        if (response.method !== 'GET' || !response.url.includes('.rdb') || !(response.body instanceof Readable)) return
        const original = response.body
        let sent = 0
        response.body = original.pipe(
          new Transform({
            transform(chunk: Buffer, _encoding, done) {
              sent += chunk.length
              if (sent > 1024 * 1024) {
                original.destroy()
                response.req.socket.destroy()
                return
              }
              done(null, chunk)
            },
          }),
        )
      }
      try {
        for (const args of reads) {
          const run = await cli([...args, ...s3.flags()])
          expect(run.exitCode, run.stderr).to.equal(1)
          expect(run.stderr).to.match(/could not read s1\/fleet\/.*\.rdb/)
          expect(run.stderr).not.to.match(/does not match|cannot be trusted/)
        }
      } finally {
        s3.onResponse = undefined
      }
      // The server gone as the snapshot is asked for.
      let killed: Promise<void> | undefined
      s3.onRequest = (method, url) => {
        if (method === 'GET' && url.includes('.rdb')) killed ??= s3.kill()
      }
      const run = await cli([...reads[0], ...s3.flags()])
      s3.onRequest = undefined
      await killed
      await s3.restart()
      expect(run.exitCode, run.stderr).to.equal(1)
      expect(run.stderr).to.match(/cannot reach the S3 endpoint/)
      expect(run.stderr).not.to.match(/does not match|cannot be trusted/)
      expect(await target.client(15).dbsize()).to.equal(0)
    })

    it('the S3 server stopped in the middle of an upload: exit non-zero, no manifest, listed incomplete, and pruned once a day old', async () => {
      const to = s3.url('prod/eu')
      let killed: Promise<void> | undefined
      s3.onRequest = (method, url) => {
        if (method === 'PUT' && /[?&]partNumber=/.test(url)) killed ??= s3.kill()
      }
      const run = await spawnCli(['shards:backup', '--to', to, '--run', 's2', '--timeout', '2s', ...s3.flags(), ...r()], {
        env: S3_CREDENTIALS,
      })
      s3.onRequest = undefined
      expect(killed, 'the upload reached the S3 server').not.to.equal(undefined)
      expect(run.exitCode).not.to.equal(0)
      expect(run.stderr).to.match(/cannot reach the S3 endpoint/)
      await s3.restart()

      const listed = async () =>
        (
          JSON.parse((await cli(['backups:list', '--from', to, '--json', ...s3.flags()])).stdout) as {
            backups: {id: string; status: string}[]
          }
        ).backups
      expect((await listed()).find((b) => b.id === 's2/fleet')).to.include({status: 'incomplete'})
      // Young, it may still be running: prune keeps it. A day later, it goes; the newest complete one stays.
      const young = await cli(['backups:prune', '--from', to, '--keep-last', '1', '--yes', ...s3.flags()])
      expect(young.exitCode, young.stderr).to.equal(0)
      expect((await listed()).map((b) => b.id)).to.include('s2/fleet')
      const dayAgo = new Date(Date.now() - 25 * 3600 * 1000)
      const age = (path: string) => {
        for (const entry of readdirSync(path, {withFileTypes: true})) {
          const full = join(path, entry.name)
          if (entry.isDirectory()) age(full)
          utimesSync(full, dayAgo, dayAgo)
        }
      }
      age(s3.dir)
      const old = await cli(['backups:prune', '--from', to, '--keep-last', '0', '--yes', '--json', ...s3.flags()])
      expect(old.exitCode, old.stderr).to.equal(0)
      expect((JSON.parse(old.stdout) as {removed: {id: string}[]}).removed.map((b) => b.id)).to.deep.equal(['s2/fleet'])
      expect((await listed()).map((b) => `${b.id} ${b.status}`)).to.deep.equal(['s1/fleet complete'])
    })

    it('a silent S3 endpoint fails within --timeout, in one line naming it', async () => {
      // Accepts connections and never answers: what a stopped (SIGSTOP) S3 server looks like from here.
      const silent = await startSilentServer()
      try {
        const endpoint = `http://127.0.0.1:${silent.port}`
        const started = Date.now()
        const run = await spawnCli(['backups:list', '--from', s3.url('prod'), '--s3-endpoint', endpoint, '--timeout', '1s'], {
          env: S3_CREDENTIALS,
        })
        console.log(`      (backups:list against a silent endpoint ended after ${Date.now() - started} ms)`)
        expect(run.exitCode).to.equal(1)
        expect(run.stderr.trim().split('\n')).to.have.length(1)
        expect(run.stderr).to.include(`cannot reach the S3 endpoint ${endpoint}: no answer within 1s`)
      } finally {
        await silent.close()
      }
    })

    it('no AWS secret is ever printed, whatever fails', async () => {
      const key = secret('aws-secret-key-never-printed-1')
      const run = await spawnCli(['backups:list', '--from', s3.url(), '--s3-endpoint', `http://user:${key}@127.0.0.1:1`], {
        env: {...S3_CREDENTIALS, AWS_SECRET_ACCESS_KEY: key},
      })
      expect(run.exitCode).to.equal(1)
      expect(run.stdout + run.stderr).not.to.include(key)
      const refused = await spawnCli(['backups:list', '--from', s3.url(), ...s3.flags()], {
        env: {...S3_CREDENTIALS, AWS_ACCESS_KEY_ID: 'SOMEONE-ELSE', AWS_SECRET_ACCESS_KEY: key},
      })
      expect(refused.exitCode).to.equal(1)
      expect(refused.stderr).to.match(/the credentials were refused|access denied/)
      expect(refused.stdout + refused.stderr).not.to.include(key)
    })
  })

  describe('under failure and restriction', () => {
    it('one instance unreachable: the others complete, exit 3, the failed one named in the output and the manifest', async () => {
      const dead = await startServer()
      const deadPort = dead.port
      await dead.stop()
      const reg = registry.master.client()
      // Under another prefix: a fleet of its own in the same registry, one instance spelled two ways.
      await reg.hset('other.a', 'master', `127.0.0.1:${source.master.port}/5`)
      await reg.hset('other.c', 'master', `localhost:${source.master.port}/6`)
      await reg.hset('other.b', 'master', `127.0.0.1:${deadPort}/0`)
      await reg.zadd('other.list', 1, 'a', 1, 'b', 1, 'c')
      const run = await spawnCli(['shards:backup', '--to', dir, '--run', 'u1', '--prefix', 'other', '--timeout', '1s', ...r()])
      expect(run.exitCode).to.equal(3)
      expect(run.stderr).to.include(`127.0.0.1:${deadPort}`)
      // Nothing moved: two spellings of one instance are not a change.
      expect(run.stderr).not.to.match(/changed in the registry during the backup/)
      const manifest = manifestOf('u1/fleet')
      expect(manifest.failed.map((f) => f.instance)).to.deep.equal([`127.0.0.1:${deadPort}`])
      expect(manifest.instances.map((i) => i.instance).sort()).to.deep.equal(
        [`127.0.0.1:${registry.master.port}`, `127.0.0.1:${source.master.port}`].sort(),
      )
      const list = JSON.parse((await cli(['backups:list', '--from', dir, '--json'])).stdout) as {backups: {id: string; status: string}[]}
      expect(list.backups.find((b) => b.id === 'u1/fleet')).to.include({status: 'partial'})
      // Its files match its manifest; verify says so, and names what it lacks.
      const verify = await cli(['backups:verify', 'u1/fleet', '--from', dir])
      expect(verify.exitCode, verify.stderr).to.equal(0)
      expect(verify.stderr).to.include(`u1/fleet 127.0.0.1:${deadPort}: not in this backup (partial)`)
      expect(verify.stderr).to.match(/Partial, with instances missing: u1\/fleet/)
      // A name the destination does not hold: what it does hold is said.
      const unknown = await cli(['backups:verify', 'nosuch', '--from', dir])
      expect(unknown.exitCode).to.equal(2)
      expect(unknown.stderr).to.match(/no backup nosuch at .* see backups:list \(the newest: /)
    })

    /** A one-shard fleet under its own prefix, whose instance is `source`'s master behind a proxy: the test's hands on the wire. */
    const proxies: ReplyDelayProxy[] = []
    afterEach(async () => {
      for (const proxy of proxies.splice(0)) await proxy.close()
    })
    const behindProxy = async (prefix: string) => {
      const proxy = await startReplyDelayProxy(source.master.port)
      proxies.push(proxy)
      const instance = `127.0.0.1:${proxy.port}`
      const reg = registry.master.client()
      await reg.hset(`${prefix}.a`, 'master', `${instance}/3`)
      await reg.zadd(`${prefix}.list`, 1, 'a')
      reg.disconnect()
      const args = (to: string, run: string) => [
        'shards:backup',
        '--to',
        to,
        '--run',
        run,
        '--prefix',
        prefix,
        '--instance',
        instance,
        '--from',
        'master',
        ...r(),
      ]
      return {proxy, args, part: `127.0.0.1-${proxy.port}`}
    }
    const listedAt = async (to: string, flags: string[] = []) =>
      (
        JSON.parse((await cli(['backups:list', '--from', to, '--json', ...flags])).stdout) as {
          backups: {id: string; status: string; instances: string[]}[]
        }
      ).backups

    it('a snapshot corrupted on the wire is stored nowhere, in a directory or on S3: its CRC64 refuses it, no manifest is written', async () => {
      const {proxy, args, part} = await behindProxy('wire')
      // One bit flipped a megabyte into the stream: inside the snapshot's 6 MB value, so only its checksum can tell.
      const at = 1 << 20
      let seen = 0
      proxy.transform = (chunk) => {
        const before = seen
        seen += chunk.length
        if (before >= at || seen <= at) return chunk
        const flipped = Buffer.from(chunk)
        flipped[at - before] ^= 0x01
        return flipped
      }
      // A directory of its own: this failed backup stays out of the retention test's way.
      const elsewhere = mkdtempSync(join(tmpdir(), 'shardctl-backups-wire-'))
      // s3rver answers AbortMultipartUpload with 405 and keeps the parts: what proves the upload given up is the request.
      const aborts: string[] = []
      s3.onRequest = (method, url) => {
        if (method === 'DELETE' && /[?&]uploadId=/.test(url)) aborts.push(url)
      }
      for (const [to, flags] of [
        [elsewhere, []],
        [s3.url('wire'), s3.flags()],
      ] as const) {
        seen = 0
        const run = await spawnCli([...args(to, 'w1'), ...flags], {env: S3_CREDENTIALS})
        expect(run.exitCode, run.stderr).to.equal(1)
        expect(run.stderr, run.stderr).to.match(/is not a valid snapshot: .*its checksum does not match/)
        expect(run.stderr).to.match(/no manifest written/)
        // Listed, incomplete, and holding no snapshot: only the registry document, written first.
        expect((await listedAt(to, [...flags])).find((b) => b.id === `w1/${part}`)).to.deep.include({status: 'incomplete', instances: []})
      }
      expect(backupFiles(elsewhere, `w1/${part}`)).to.deep.equal(['registry.json'])
      s3.onRequest = undefined
      expect(aborts, 'the multipart upload was aborted').to.have.length(1)
      rmSync(elsewhere, {recursive: true, force: true})
    })

    /** Held two megabytes into the snapshot, until released. */
    const holdMidSnapshot = (proxy: ReplyDelayProxy) => {
      let seen = 0
      proxy.transform = (chunk) => {
        seen += chunk.length
        if (seen > 2 << 20) proxy.stall()
        return chunk
      }
    }
    /** A part of a snapshot is being written in `folder`. */
    const partOnDisk = (folder: string) =>
      (existsSync(folder) ? readdirSync(folder) : []).some(
        (name) => /\.rdb\.partial-/.test(name) && (statSync(join(folder, name), {throwIfNoEntry: false})?.size ?? 0) > 0,
      )

    it('a second run of the same backup is refused while the first holds it (exit 4, naming it); one frozen past its lease writes nothing over the run that took over', async () => {
      const {proxy, args, part} = await behindProxy('twice')
      const id = `c1/${part}`
      holdMidSnapshot(proxy)
      const first = await startCli(args(dir, 'c1'))
      await until('a part of the snapshot is on disk', () => partOnDisk(join(dir, 'c1', part)))
      // Frozen there (SIGSTOP), its lease made to last as if it still renewed it; the snapshot's
      // connection let go, so that another run can reach the instance.
      process.kill(first.pid, 'SIGSTOP')
      const reg = registry.master.client()
      const leases = await reg.keys('twice._backup:*')
      expect(leases).to.have.length(1)
      await reg.pexpire(leases[0], 120_000)
      proxy.transform = undefined
      proxy.release()
      const second = await spawnCli(args(dir, 'c1'))
      expect(second.exitCode, second.stderr).to.equal(4)
      expect(second.stderr).to.match(
        new RegExp(`backup ${id} to .* is being taken by another run: .*\\(shards:backup, pid ${first.pid}\\) since \\d{4}-`),
      )

      // Its lease runs out (deleted here, as its running out would): another run takes over and completes.
      await reg.del(leases[0])
      reg.disconnect()
      const third = await spawnCli(args(dir, 'c1'))
      expect(third.exitCode, third.stderr).to.equal(0)
      const manifest = join(dir, 'c1', part, 'manifest.json')
      const written = readFileSync(manifest, 'utf8')

      // The first resumes: its lease is gone, it stops without writing over what the third stored.
      process.kill(first.pid, 'SIGCONT')
      const resumed = await first.done
      expect(resumed.exitCode, resumed.stderr).to.equal(4)
      expect(resumed.stderr).to.match(/was taken over by another run/)
      expect(readFileSync(manifest, 'utf8')).to.equal(written)
      const verify = await cli(['backups:verify', id, '--from', dir])
      expect(verify.exitCode, verify.stderr).to.equal(0)
    })

    it("killed in the middle of a snapshot: no manifest, nothing under the snapshot's name; the same run again completes", async () => {
      const {proxy, args, part} = await behindProxy('cut')
      // The backup is part-way through the snapshot.
      holdMidSnapshot(proxy)
      const running = await startCli(args(dir, 'k1'))
      await until('a part of the snapshot is on disk', () => partOnDisk(join(dir, 'k1', part)))
      process.kill(running.pid, 'SIGKILL')
      await running.done
      const left = backupFiles(dir, `k1/${part}`)
      expect(left).not.to.include('manifest.json')
      expect(left.filter((name) => name.endsWith('.rdb'))).to.deep.equal([])
      expect((await listedAt(dir)).find((b) => b.id === `k1/${part}`)).to.deep.include({status: 'incomplete', instances: []})

      // The same run again: what the killed attempt left is cleared, and this one completes.
      proxy.transform = undefined
      proxy.release()
      const again = await spawnCli(args(dir, 'k1'))
      expect(again.exitCode, again.stderr).to.equal(0)
      expect(backupFiles(dir, `k1/${part}`)).to.deep.equal([`${part}.rdb`, 'manifest.json', 'registry.json'])
      expect(manifestOf(`k1/${part}`).instances[0].keys['3']).to.be.greaterThan(0)
    })

    it('a backup user with only the documented ACL succeeds', async () => {
      const password = secret('backup-user-pw-1')
      // ACLs are not replicated: the user is made on every node a snapshot may come from.
      const nodes = [registry.master, registry.replicas[0], source.master, source.replicas[0]]
      for (const node of nodes) {
        const c = node.client()
        const registryRules =
          node === registry.master || node === registry.replicas[0]
            ? ['%R~shards.*', '~shards._backup:*', '+@read', '+evalsha', '+eval', '+set', '+pexpire', '+del']
            : []
        // As docs/backups.md has them, and no more.
        const rules = [...registryRules, '+ping', '+client|setname', '+info', '+sync', '+replconf']
        await c.call('ACL', 'SETUSER', 'backup', 'reset', 'on', `>${password}`, ...rules)
        c.disconnect()
      }
      const run = await spawnCli(['shards:backup', '--to', dir, '--run', 'acl', ...r()], {
        env: {SHARDCTL_REGISTRY_USER: 'backup', SHARDCTL_REGISTRY_PASSWORD: password},
      })
      expect(run.exitCode, run.stderr).to.equal(0)
      expect(run.stderr).not.to.match(/no lease could be taken/)
      expect(manifestOf('acl/fleet').instances).to.have.length(2)
    })
  })

  describe('retention', () => {
    it('backups:prune keeps the newest complete backup of each series, and the newest copy of each instance, whatever the rules', async () => {
      const listed = async () =>
        (
          JSON.parse((await cli(['backups:list', '--from', dir, '--json'])).stdout) as {
            backups: {id: string; status: string; part: string}[]
          }
        ).backups
      const before = await listed()
      // u1/fleet, of the prefix "other", is partial and the only backup of its series: it holds the only copies of what succeeded.
      expect(before.find((b) => b.id === 'u1/fleet')).to.include({status: 'partial'})
      const dry = await cli(['backups:prune', '--from', dir, '--keep-last', '0', '--dry-run', '--json'])
      expect(dry.exitCode, dry.stderr).to.equal(0)
      const kept = (JSON.parse(dry.stdout) as {kept: {id: string; reasons: string[]}[]}).kept
      const copied = [registry.master.port, source.master.port].map((port) => `127.0.0.1:${port}`).sort()
      expect(kept.find((k) => k.id === 'u1/fleet')!.reasons).to.deep.equal([`newest copy of ${copied.join(', ')}`])

      const run = await cli(['backups:prune', '--from', dir, '--keep-last', '0', '--yes', '--json'])
      expect(run.exitCode, run.stderr).to.equal(0)
      // Per part (each of this test's series is one registry and prefix, but for "fleet"): its newest complete backup, and u1/fleet.
      const expected = [...new Set(before.map((b) => b.part))].map(
        (part) => before.find((b) => b.part === part && b.status === 'complete')?.id,
      )
      expect((await listed()).map((b) => b.id).sort()).to.deep.equal([...expected.filter(Boolean), 'u1/fleet'].sort())
    })
  })
})

// shards:backup of an instance holding data in 100 dbs, against `redis-cli --rdb` of the
// same instance (both over the replication protocol, both waiting the same
// repl-diskless-sync-delay); the same to S3 (s3rver, a child process on loopback); and
// shards:restore of one shard out of that backup, against the manual way: redis-server
// started on the snapshot, then MIGRATE ... KEYS of that database in batches of 1,000.
import {spawn} from 'node:child_process'
import {mkdtempSync, rmSync, statSync, symlinkSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {close, connect} from '../dist/fleet/connect.js'
import {freePort, startRedis, stopRedis} from '../dist/sandbox/redis-process.js'
import {ROOT, formatMb, formatMs, median, run as runProcess, shardctl, spread, startServers, stopServers, withRedis} from './lib.js'

const DBS = 100
const THROUGHPUT_TARGET = 0.9
const MEMORY_TARGET_MB = 100
const RESTORE_TARGET = 1.5
const MIGRATE_BATCH = 1000
const S3_CREDENTIALS = {AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1'}

export async function run({splitKeysPerDb: keysPerDb, backupReps: reps}) {
  const [registry] = await startServers(1)
  const [source, target] = await startServers(2, ['--databases', '128', '--enable-debug-command', 'yes'])
  const servers = [registry, source, target]
  const dir = mkdtempSync(join(tmpdir(), 'shardctl-bench-backups-'))
  const s3 = await startS3(join(dir, 's3'))
  try {
    // ~200-byte values, as the split benchmark: DEBUG POPULATE fills each db in place.
    await withRedis(source, async (c) => {
      for (let db = 0; db < DBS; db++)
        await c.multi().select(db).call('DEBUG', 'POPULATE', String(keysPerDb), `db${db}`, '200').select(0).exec()
    })
    const memory = await withRedis(source, async (c) => Number(/used_memory_dataset:(\d+)/.exec(await c.info('memory'))[1]))
    await shardctl(['shards:init', '--yes', '--registry', registry.url, '--instance', source.address, '--count', String(DBS)])

    const samples = []
    for (let rep = 0; rep < reps; rep++) {
      // Baseline: redis-cli --rdb, to a file.
      const file = join(dir, `redis-cli-${rep}.rdb`)
      const cli = await runProcess('redis-cli', ['-p', String(source.port), '--rdb', file])
      if (cli.code !== 0) throw new Error(`redis-cli --rdb failed: ${cli.stderr.trim()}`)
      const rdbBytes = statSync(file).size
      rmSync(file)
      // shardctl: the same instance, to a directory, then to S3 (reported).
      const runName = `b${rep}`
      const backupTo = async (to, ...extra) => {
        const run = await shardctl([
          'shards:backup',
          '--to',
          to,
          ...extra,
          '--instance',
          source.address,
          '--run',
          runName,
          '--json',
          '--registry',
          registry.url,
        ])
        const result = JSON.parse(run.stdout)
        if (result.status !== 'complete') throw new Error(`shards:backup --to ${to}: ${run.stdout}`)
        return {...run, entry: result.instances[0]}
      }
      const backup = await backupTo(join(dir, 'dest'))
      const ours = backup.entry
      Object.assign(process.env, S3_CREDENTIALS)
      const toS3 = await backupTo('s3://backups/bench', '--s3-endpoint', s3.endpoint)
      // Restore of s000 (db 0) into db 7 of the target, both ways.
      const manual = await manualRestore(join(dir, 'dest', runName, `127.0.0.1-${source.port}`, ours.file), target)
      await withRedis(target, (c) => c.multi().select(7).flushdb().select(0).exec())
      const restore = await shardctl([
        'shards:restore',
        's000',
        '--from',
        join(dir, 'dest'),
        '--backup',
        runName,
        '--to',
        `${target.address}/7`,
        '--json',
        '--registry',
        registry.url,
      ])
      const restored = JSON.parse(restore.stdout).copies[0]
      if (restored.copied !== manual.keys) throw new Error(`restored ${restored.copied} keys, the manual way moved ${manual.keys}`)
      await withRedis(target, (c) => c.multi().select(7).flushdb().select(0).exec())
      samples.push({
        rdbBytes,
        storedBytes: ours.rdbBytes,
        cliMs: cli.ms,
        backupMs: backup.ms,
        backupRss: backup.maxRssMb,
        s3Ms: toS3.ms,
        s3Rss: toS3.maxRssMb,
        ratio: ours.rdbBytes / backup.ms / (rdbBytes / cli.ms),
        restoreMs: restore.ms,
        restoreRss: restore.maxRssMb,
        manualMs: manual.ms,
        restoreRatio: restore.ms / manual.ms,
        shardKeys: manual.keys,
      })
    }
    return report(samples, keysPerDb, memory)
  } finally {
    s3.stop()
    await stopServers(servers)
    rmSync(dir, {recursive: true, force: true})
  }
}

/** s3rver in a child process of its own, so that its work does not share this process's CPU time. */
async function startS3(directory) {
  const port = await freePort()
  const child = spawn(
    process.execPath,
    [
      join(ROOT, 'node_modules', 's3rver', 'bin', 's3rver.js'),
      '-d',
      directory,
      '-a',
      '127.0.0.1',
      '-p',
      String(port),
      '--silent',
      '--configure-bucket',
      'backups',
    ],
    {stdio: 'ignore'},
  )
  const endpoint = `http://127.0.0.1:${port}`
  for (let i = 0; i < 500; i++) {
    const up = await fetch(endpoint).then(
      () => true,
      () => false,
    )
    if (up) return {endpoint, stop: () => child.kill('SIGKILL')}
    await new Promise((r) => setTimeout(r, 20))
  }
  child.kill('SIGKILL')
  throw new Error('s3rver did not start')
}

/** The manual way: redis-server started on the snapshot, then MIGRATE of db 0 to db 7 of the target, 1,000 keys at a time. */
async function manualRestore(snapshot, target) {
  const t0 = performance.now()
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'shardctl-bench-manual-'))
  symlinkSync(snapshot, join(dir, 'dump.rdb'))
  const proc = await startRedis({port, dir, args: ['--databases', '128'], readyTimeoutMs: 600_000})
  let keys = 0
  try {
    const client = await connect({host: '127.0.0.1', port, db: 0}, {timeoutMs: 60_000})
    try {
      let cursor = '0'
      do {
        const [next, batch] = await client.scan(cursor, 'COUNT', String(MIGRATE_BATCH))
        cursor = next
        for (let i = 0; i < batch.length; i += MIGRATE_BATCH) {
          const slice = batch.slice(i, i + MIGRATE_BATCH)
          await client.call('MIGRATE', '127.0.0.1', String(target.port), '', '7', '60000', 'KEYS', ...slice)
          keys += slice.length
        }
      } while (cursor !== '0')
    } finally {
      await close(client)
    }
  } finally {
    await stopRedis(proc)
    rmSync(dir, {recursive: true, force: true})
  }
  return {ms: performance.now() - t0, keys}
}

function report(samples, keysPerDb, memory) {
  const m = (key) => median(samples.map((s) => s[key]))
  const mbps = (bytes, ms) => `${(bytes / 1e6 / (ms / 1000)).toFixed(0)} MB/s`
  const peak = Math.max(...samples.map((s) => s.backupRss))
  const workload = `${DBS} dbs × ${keysPerDb.toLocaleString('en-US')} keys (${(memory / 1e6).toFixed(0)} MB in memory, snapshot ${(m('rdbBytes') / 1e6).toFixed(0)} MB)`
  return {
    rows: [
      {
        benchmark: 'shards:backup (to a directory)',
        workload,
        shardctl: `${formatMs(m('backupMs'))} (${mbps(m('storedBytes'), m('backupMs'))}), peak ${formatMb(peak)}`,
        baseline: `redis-cli --rdb ${formatMs(m('cliMs'))} (${mbps(m('rdbBytes'), m('cliMs'))})`,
        ratio: `${spread(samples.map((s) => s.ratio))}× throughput`,
        target: `≥ ${THROUGHPUT_TARGET}×; ≤ ${MEMORY_TARGET_MB} MB`,
        met: m('ratio') >= THROUGHPUT_TARGET && peak <= MEMORY_TARGET_MB,
        cause:
          'The snapshot streams at the pace Redis produces it (profiled on 67 MB: the shardctl process used 1.5 s of CPU in a 6.3 s run, ' +
          'idle while it waited for bytes). What a bare redis-cli --rdb does not pay: ~0.8 s to start Node and oclif, read the registry ' +
          'and plan before the stream begins, and ~0.4 s after it for the fsync, registry.json and manifest.json. Memory: the peak is the same for a 13 MB and a 137 MB ' +
          'snapshot (98–105 MB): it is the process itself (Node, oclif, ioredis); the stream holds 1 MB chunks. See the repetitions below.',
      },
      {
        benchmark: 'shards:backup (to S3, local s3rver)',
        workload,
        shardctl: `${formatMs(m('s3Ms'))} (${mbps(m('storedBytes'), m('s3Ms'))}), peak ${formatMb(Math.max(...samples.map((s) => s.s3Rss)))}`,
        baseline: `redis-cli --rdb ${formatMs(m('cliMs'))}`,
        ratio: `${(m('storedBytes') / m('s3Ms') / (m('rdbBytes') / m('cliMs'))).toFixed(2)}× throughput`,
        target: '—',
        met: null,
      },
      {
        benchmark: 'shards:restore (one shard)',
        workload: `db 0 (${m('shardKeys').toLocaleString('en-US')} keys, ~${(memory / DBS / 1e6).toFixed(0)} MB) out of that backup, into db 7 of another instance`,
        shardctl: `${formatMs(m('restoreMs'))}, peak ${formatMb(Math.max(...samples.map((s) => s.restoreRss)))}`,
        baseline: `redis-server on the snapshot + MIGRATE KEYS ×${MIGRATE_BATCH} ${formatMs(m('manualMs'))}`,
        ratio: `${spread(samples.map((s) => s.restoreRatio))}×`,
        target: `≤ ${RESTORE_TARGET}×`,
        met: m('restoreRatio') <= RESTORE_TARGET,
        cause: 'see the repetitions below',
      },
    ],
    details: samples.map(
      (s, i) =>
        `rep ${i + 1}: redis-cli --rdb ${formatMs(s.cliMs)} (${(s.rdbBytes / 1e6).toFixed(0)} MB); shards:backup ${formatMs(s.backupMs)} (max RSS ${formatMb(s.backupRss)}), throughput ratio ${s.ratio.toFixed(2)}; to S3 ${formatMs(s.s3Ms)} (max RSS ${formatMb(s.s3Rss)}); restore ${formatMs(s.restoreMs)} (max RSS ${formatMb(s.restoreRss)}) vs manual ${formatMs(s.manualMs)}, ratio ${s.restoreRatio.toFixed(2)}`,
    ),
  }
}

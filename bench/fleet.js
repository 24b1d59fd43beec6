// shards:list --json and shards:check, cold, on a large fleet: 10,000 shards on 200
// instances. Proves every instance is probed exactly once (the connections each
// instance received during the run), reports the wall time against `node -e 0` and the
// peak memory of the process.
import {writeFileSync} from 'node:fs'

import {formatMb, formatMs, median, run as runProcess, scratch, shardctl, spread, startServers, stopServers, withRedis} from './lib.js'

const INSTANCES = 200
const SHARDS_PER_INSTANCE = 50
const SHARDS = INSTANCES * SHARDS_PER_INSTANCE
const RSS_TARGET_MB = 200
// Each repetition of each command: a third of a second to a second; five are enough for a median.
const REPS = 5

export async function run() {
  const [registry] = await startServers(1)
  // Persistent, so that shards:check has nothing to say about persistence.
  const instances = await startServers(INSTANCES, ['--databases', String(SHARDS_PER_INSTANCE), '--appendonly', 'yes'])
  try {
    await register(registry, instances)
    const node = () => runProcess(process.execPath, ['-e', '0'])
    const list = () => shardctl(['shards:list', '--json', '--registry', registry.url])
    const check = () => shardctl(['shards:check', '--json', '--allow-no-replica', '--registry', registry.url])
    // One untimed run of each, so that all start from a warm file cache.
    await node()
    verifyList(await list())
    verifyCheck(await check())
    const samples = {list: [], check: []}
    for (let rep = 0; rep < REPS; rep++) {
      for (const [name, command, verify] of [
        ['list', list, verifyList],
        ['check', check, verifyCheck],
      ]) {
        const baseline = await node()
        const before = await connectionsReceived(instances)
        const result = await command()
        const after = await connectionsReceived(instances)
        verify(result)
        // The counting connection itself is one per instance and per reading: subtract it.
        const perInstance = after.map((n, i) => n - before[i] - 1)
        samples[name].push({
          ms: result.ms,
          baselineMs: baseline.ms,
          ratio: result.ms / baseline.ms,
          rssMb: result.maxRssMb,
          cpuMs: result.cpuMs,
          minConnections: Math.min(...perInstance),
          maxConnections: Math.max(...perInstance),
        })
      }
    }
    return report(samples)
  } finally {
    await stopServers([registry, ...instances])
  }
}

/** 50 shards on each instance, one per database, registered by one shards:import. */
async function register(registry, instances) {
  const shards = instances.flatMap((instance, i) =>
    Array.from({length: SHARDS_PER_INSTANCE}, (_, db) => ({
      id: `s${String(i * SHARDS_PER_INSTANCE + db).padStart(5, '0')}`,
      weight: 1,
      master: `${instance.address}/${db}`,
      replicas: [],
      persist: [],
      extra: {},
    })),
  )
  const file = scratch('fleet.json')
  writeFileSync(
    file,
    JSON.stringify({format: 'shardctl-registry', version: 1, prefix: 'shards', exportedAt: new Date().toISOString(), shards}),
  )
  await shardctl(['shards:import', file, '--yes', '--json', '--registry', registry.url], {stdout: 'ignore'})
}

/** INFO stats total_connections_received of every instance, read on one connection each. */
async function connectionsReceived(instances) {
  return Promise.all(
    instances.map((instance) =>
      withRedis(instance, async (client) => Number(/total_connections_received:(\d+)/.exec(await client.info('stats'))?.[1])),
    ),
  )
}

function verifyList(result) {
  const overview = JSON.parse(result.stdout)
  const healthy = overview.shards.filter((s) => s.problems.length === 0).length
  if (!overview.probed || overview.shards.length !== SHARDS || healthy !== SHARDS) {
    throw new Error(`shards:list --json: expected ${SHARDS} healthy probed shards, got ${healthy} of ${overview.shards.length}`)
  }
}

function verifyCheck(result) {
  const report = JSON.parse(result.stdout)
  if (!report.healthy || report.shards !== SHARDS) {
    throw new Error(`shards:check --json: expected ${SHARDS} healthy shards, got ${report.shards} shards, ${report.problems} problems`)
  }
}

function report(samples) {
  const rows = Object.entries(samples).map(([name, list]) => {
    const m = (key) => median(list.map((s) => s[key]))
    const peak = Math.max(...list.map((s) => s.rssMb))
    const probedOnce = list.every((s) => s.minConnections === 1 && s.maxConnections === 1)
    return {
      benchmark: name === 'list' ? 'shards:list --json (cold, probed)' : 'shards:check --allow-no-replica --json (cold)',
      workload: `${SHARDS.toLocaleString('en-US')} shards on ${INSTANCES} instances`,
      shardctl: `${formatMs(m('ms'))}, peak ${formatMb(peak)}; ${probedOnce ? 'every instance probed once' : `connections per instance ${Math.min(...list.map((s) => s.minConnections))}–${Math.max(...list.map((s) => s.maxConnections))}`}`,
      baseline: `node -e 0 ${formatMs(m('baselineMs'))}`,
      ratio: `${spread(
        list.map((s) => s.ratio),
        1,
      )}×`,
      target: `each instance probed once; peak ≤ ${RSS_TARGET_MB} MB; ratio reported`,
      met: probedOnce && peak <= RSS_TARGET_MB,
      cause: probedOnce ? `peak memory ${formatMb(peak)}` : 'an instance received more than one connection per run',
    }
  })
  return {
    rows,
    details: Object.entries(samples).flatMap(([name, list]) =>
      list.map(
        (s, i) =>
          `${name} rep ${i + 1}: ${formatMs(s.ms)} (CPU ${formatMs(s.cpuMs)}, max RSS ${formatMb(s.rssMb)}), ` +
          `node -e 0 ${formatMs(s.baselineMs)}, ratio ${s.ratio.toFixed(1)}×, connections per instance ${s.minConnections}–${s.maxConnections}`,
      ),
    ),
  }
}

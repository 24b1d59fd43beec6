// shards:check --canary, cold (a new process each time), 100 shards on 10 instances
// each with a replica: the wall time an operator or a CI job waits, p50 and p99, with
// `node -e 0` and `shardctl --version` measured alongside for scale (no target).
import {formatMs, median, run as runProcess, shardctl, startServers, stopServers, waitForSync, withRedis} from './lib.js'

const INSTANCES = 10
const SHARDS_PER_INSTANCE = 10
const HEALTHY = ['--appendonly', 'yes', '--appendfsync', 'everysec', '--min-replicas-to-write', '1', '--min-replicas-max-lag', '10']

export async function run({coldReps}) {
  const [registry] = await startServers(1)
  const masters = await startServers(INSTANCES, HEALTHY)
  const replicas = []
  for (const master of masters) replicas.push(...(await startServers(1, [...HEALTHY, '--replicaof', '127.0.0.1', String(master.port)])))
  try {
    for (const [i, replica] of replicas.entries()) await waitForSync(replica, masters[i])
    for (const [i, master] of masters.entries()) {
      await shardctl([
        'shards:init',
        '--yes',
        '--registry',
        registry.url,
        '--instance',
        master.address,
        '--replica',
        replicas[i].address,
        '--count',
        String(SHARDS_PER_INSTANCE),
        '--first-id',
        String(i * SHARDS_PER_INSTANCE),
      ])
    }
    const check = () => shardctl(['shards:check', '--canary', '--json', '--registry', registry.url])
    const node = () => runProcess(process.execPath, ['-e', '0'])
    const version = () => shardctl(['--version'])
    verify(await check())
    const samples = []
    // Twice the repetitions of shards:list: p99 needs more than a handful of runs.
    for (let rep = 0; rep < coldReps * 2; rep++) {
      const baseline = await node()
      const floor = await version()
      const result = await check()
      const roundTrips = verify(result).canary.flatMap((row) => row.replicas.map((r) => r.maxMs))
      samples.push({
        ms: result.ms,
        baselineMs: baseline.ms,
        floorMs: floor.ms,
        canaryMaxMs: Math.max(...roundTrips),
        canaryP50Ms: median(roundTrips),
      })
    }
    // Redis delays writes up to 2 s when an everysec fsync is still pending (a busy
    // disk): counted in INFO persistence, so that a slow run can be told apart.
    let delayedFsyncs = 0
    for (const server of [...masters, ...replicas]) {
      delayedFsyncs += await withRedis(server, async (c) => Number(/aof_delayed_fsync:(\d+)/.exec(await c.info('persistence'))?.[1] ?? 0))
    }
    return report(samples, delayedFsyncs)
  } finally {
    await stopServers([registry, ...masters, ...replicas])
  }
}

function verify(result) {
  const report = JSON.parse(result.stdout)
  const seen = report.canary.flatMap((row) => row.replicas).filter((r) => r.seen === r.expected).length
  if (!report.healthy || report.shards !== INSTANCES * SHARDS_PER_INSTANCE || seen !== INSTANCES) {
    throw new Error(
      `shards:check --canary: expected ${INSTANCES * SHARDS_PER_INSTANCE} healthy shards and ${INSTANCES} replicas seeing every canary, got ${report.shards} shards, ${seen} replicas, ${report.problems} problems`,
    )
  }
  return report
}

/** Nearest-rank percentile. */
function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]
}

function report(samples, delayedFsyncs) {
  const walls = samples.map((s) => s.ms)
  const p50 = percentile(walls, 50)
  const p99 = percentile(walls, 99)
  const baseline = median(samples.map((s) => s.baselineMs))
  return {
    rows: [
      {
        benchmark: 'shards:check --canary (cold)',
        workload: `${INSTANCES * SHARDS_PER_INSTANCE} shards on ${INSTANCES} instances, 1 replica each`,
        shardctl: `p50 ${formatMs(p50)}, p99 ${formatMs(p99)}`,
        baseline: `node -e 0 ${formatMs(baseline)}`,
        ratio: `${(p50 / baseline).toFixed(1)}× (p50)`,
        target: 'report p50/p99',
        met: null,
        cause: '',
      },
    ],
    details: [
      `wall over ${samples.length} runs: p50 ${formatMs(p50)}, p99 ${formatMs(p99)}; shardctl --version (startup alone) ${formatMs(median(samples.map((s) => s.floorMs)))}; ` +
        `canary round trip, write on the master to key read on the replica: median of the replicas ${median(samples.map((s) => s.canaryP50Ms)).toFixed(1)} ms, ` +
        `slowest replica ${median(samples.map((s) => s.canaryMaxMs)).toFixed(1)} ms (median over runs); ` +
        `writes Redis delayed for a pending AOF fsync (aof_delayed_fsync, all instances): ${delayedFsyncs}`,
      ...samples.map(
        (s, i) =>
          `rep ${i + 1}: shards:check ${formatMs(s.ms)}, shardctl --version ${formatMs(s.floorMs)}, node -e 0 ${formatMs(s.baselineMs)}`,
      ),
    ],
  }
}

// A master killed (kill -9) under three Sentinels with a client writing 5,000/s: the time
// until the registry routes to its replacement, split into Sentinel's own part (from the
// kill until a majority of the Sentinels have published +switch-master) and the
// follower's (from there until its change is in the registry), and the writes lost in
// the asynchronous replication window.
import {spawn} from 'node:child_process'
import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {freePort, startSentinel, stopRedis} from '../dist/sandbox/redis-process.js'
import {BIN, PacedWriter, benchEnv, formatMs, median, shardctl, startServers, stopServers, waitForSync, withRedis} from './lib.js'

const RATE = 5000
const FOLLOWER_TARGET_MS = 200
const SENTINELS = 3

export async function run({splitReps}) {
  const samples = []
  for (let rep = 0; rep < Math.max(1, splitReps); rep++) samples.push(await once())
  return report(samples)
}

async function once() {
  const [registry] = await startServers(1)
  const [master] = await startServers(1)
  const replicas = await startServers(2, ['--replicaof', '127.0.0.1', String(master.port)])
  const servers = [registry, master, ...replicas]
  const sentinels = []
  let follower
  try {
    for (const replica of replicas) await waitForSync(replica, master)
    for (let i = 0; i < SENTINELS; i++) {
      const dir = mkdtempSync(join(tmpdir(), 'shardctl-bench-sentinel-'))
      sentinels.push({...(await startSentinel({port: await freePort(), dir})), dir})
    }
    const r = ['--registry', registry.url]
    await shardctl([
      'shards:init',
      '--yes',
      ...r,
      '--instance',
      master.address,
      ...replicas.flatMap((x) => ['--replica', x.address]),
      '--count',
      '4',
    ])
    await shardctl([
      'sentinel:register',
      ...r,
      ...sentinels.flatMap((s) => ['--sentinel', `127.0.0.1:${s.port}`]),
      '--down-after',
      '1s',
      '--failover-timeout',
      '3s',
    ])
    await settled(sentinels, 'shards-s000')
    follower = startFollower(r)
    await follower.until((events) => events.filter((e) => e.type === 'subscribed').length === SENTINELS)
    const writer = new PacedWriter(registry, ['s000', 's001', 's002', 's003'], RATE)
    await writer.start()
    await new Promise((resolve) => setTimeout(resolve, 1000))

    const killedAt = Date.now()
    process.kill(master.pid, 'SIGKILL')
    const events = await follower.until((events) => events.some((e) => e.type === 'failover-followed'))
    const switches = events
      .filter((e) => e.type === 'sentinel-event' && e.event === '+switch-master')
      .map((e) => Date.parse(e.at))
      .sort((a, b) => a - b)
    const majorityAt = switches[Math.floor(SENTINELS / 2)] ?? switches.at(-1)
    const followedAt = Date.parse(events.find((e) => e.type === 'failover-followed').at)
    // The writer goes on at the new master for a second, then every acknowledged write is looked for there.
    await new Promise((resolve) => setTimeout(resolve, 1000))
    await writer.stop()
    const lost = await writer.lost()
    return {
      sentinelMs: majorityAt - killedAt,
      followerMs: Math.max(0, followedAt - majorityAt),
      totalMs: followedAt - killedAt,
      lost,
      acked: writer.acked.length,
    }
  } finally {
    follower?.stop()
    await Promise.all(sentinels.map(async (s) => stopRedis(s).finally(() => rmSync(s.dir, {recursive: true, force: true}))))
    await stopServers(servers)
  }
}

/** Every Sentinel knows the others and both replicas. */
async function settled(sentinels, name) {
  for (;;) {
    let ok = true
    for (const s of sentinels) {
      const fields = await withRedis(s, (c) => c.call('SENTINEL', 'MASTER', name))
      const f = Object.fromEntries(fields.flatMap((v, i) => (i % 2 === 0 ? [[v, fields[i + 1]]] : [])))
      if (Number(f['num-other-sentinels']) < SENTINELS - 1 || Number(f['num-slaves']) < 2) ok = false
    }
    if (ok) return
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

/** sentinel:follow --json as a child process: its events as they come. */
function startFollower(registryFlags) {
  const child = spawn(process.execPath, [BIN, 'sentinel:follow', ...registryFlags, '--json', '--interval', '1s'], {
    env: benchEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const events = []
  let rest = ''
  child.stdout.on('data', (chunk) => {
    const lines = (rest + chunk).split('\n')
    rest = lines.pop()
    for (const line of lines) if (line.startsWith('{')) events.push(JSON.parse(line))
  })
  return {
    async until(condition) {
      const deadline = Date.now() + 60_000
      while (!condition(events)) {
        if (child.exitCode !== null) throw new Error(`sentinel:follow exited ${child.exitCode}`)
        if (Date.now() > deadline) throw new Error('sentinel:follow did not follow the failover within 60 s')
        await new Promise((resolve) => setTimeout(resolve, 5))
      }
      return events
    },
    stop: () => child.kill('SIGTERM'),
  }
}

function report(samples) {
  const follower = samples.map((s) => s.followerMs)
  const worst = Math.max(...follower)
  const lost = samples.reduce((n, s) => n + s.lost, 0)
  const acked = samples.reduce((n, s) => n + s.acked, 0)
  return {
    rows: [
      {
        benchmark: 'sentinel:follow (kill -9 of a master)',
        workload: `1 master, 2 replicas, 4 shards; ${SENTINELS} Sentinels, down-after 1 s; a client writing ${RATE.toLocaleString('en-US')}/s`,
        shardctl: `follower ${formatMs(median(follower))} after a majority's +switch-master (worst ${formatMs(worst)}); death to new routing ${formatMs(median(samples.map((s) => s.totalMs)))}`,
        baseline: `Sentinel: ${formatMs(median(samples.map((s) => s.sentinelMs)))} from the kill to a majority's +switch-master`,
        ratio: `${lost} of ${acked.toLocaleString('en-US')} writes lost (${((lost / RATE) * 1000).toFixed(1)} ms of writes at ${RATE.toLocaleString('en-US')}/s)`,
        target: `follower ≤ ${FOLLOWER_TARGET_MS} ms; loss reported`,
        met: worst <= FOLLOWER_TARGET_MS,
        cause: `The follower took ${formatMs(worst)} after a majority agreed: it asks every Sentinel, ROLE on the new master, then one compare-and-set on the registry.`,
      },
    ],
    details: samples.map(
      (s, i) =>
        `rep ${i + 1}: Sentinel ${formatMs(s.sentinelMs)}, follower ${formatMs(s.followerMs)}, death to routing ${formatMs(s.totalMs)}; ${s.lost} of ${s.acked} writes lost`,
    ),
  }
}

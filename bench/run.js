#!/usr/bin/env node
// The benchmark harness: `npm run bench` (full, under ten minutes) or
// `npm run bench -- --quick` (a minute or two). Starts its own redis-server
// processes, runs every benchmark several times, prints the table and rewrites
// BENCHMARKS.md. See BENCHMARKS.md, "How to reproduce".
import {readFileSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'

import * as assign from './assign.js'
import * as backup from './backup.js'
import * as check from './check.js'
import * as fleet from './fleet.js'
import {ROOT, cleanup, loadAverage, machine} from './lib.js'
import * as list from './list.js'
import * as lookup from './lookup.js'
import * as move from './move.js'
import * as promote from './promote.js'
import * as registry from './registry.js'
import * as sentinel from './sentinel.js'
import * as split from './split.js'

// reps: repetitions of assign and lookup; coldReps: of shards:list, a third of a second each.
// splitKeysPerDb: keys in each of the split source's 100 dbs (~200 bytes each: ~1 GB full).
// moveBigKeys: keys of 1 KB in the one database of the shards:move throughput row (~1 GB full).
// registryHashes: the map of the registry benchmarks (export, import, counts); --scale: ten million.
const SETTINGS = {
  full: {
    hashes: 1_000_000,
    reps: 5,
    coldReps: 15,
    splitKeysPerDb: 40_000,
    splitReps: 3,
    registryHashes: 1_000_000,
    backupReps: 3,
    moveBigKeys: 1_000_000,
    moveReps: 3,
  },
  quick: {
    hashes: 200_000,
    reps: 3,
    coldReps: 5,
    splitKeysPerDb: 4000,
    splitReps: 1,
    registryHashes: 100_000,
    backupReps: 1,
    moveBigKeys: 20_000,
    moveReps: 1,
  },
}

const BENCHMARKS = [
  ['shards:assign', assign],
  ['shards:lookup', lookup],
  ['shards:list', list],
  ['shards:promote', promote],
  ['shards:split', split],
  ['move', move],
  ['shards:check', check],
  ['fleet', fleet],
  ['registry', registry],
  ['backup', backup],
  ['sentinel', sentinel],
]

const COLUMNS = [
  ['benchmark', 'benchmark'],
  ['workload', 'workload'],
  ['shardctl', 'shardctl (median)'],
  ['baseline', 'baseline (median)'],
  ['ratio', 'ratio: median (range)'],
  ['target', 'target'],
  ['result', 'result'],
]

async function main() {
  const mode = process.argv.includes('--quick') ? 'quick' : 'full'
  const settings = {...SETTINGS[mode]}
  if (process.argv.includes('--scale')) settings.registryHashes = 10_000_000
  const started = new Date()
  const host = machine()
  note(
    `shardctl benchmarks, ${mode} run: ${settings.hashes.toLocaleString('en-US')} hashes, ${settings.reps} repetitions (shards:list ${settings.coldReps})`,
  )

  const results = []
  // --only <name>: run one benchmark and print it, without rewriting BENCHMARKS.md;
  // with --update, its rows and repetitions in BENCHMARKS.md are replaced (or added).
  const only = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1] : undefined
  if (only !== undefined && !BENCHMARKS.some(([n]) => n === only)) {
    console.error(`no benchmark named ${JSON.stringify(only)}: one of ${BENCHMARKS.map(([n]) => n).join(', ')}`)
    process.exitCode = 2
    return
  }
  for (const [name, benchmark] of BENCHMARKS.filter(([n]) => only === undefined || n === only)) {
    note(`${name}...`)
    const t0 = Date.now()
    results.push({name, ...(await benchmark.run(settings))})
    note(`${name}: ${((Date.now() - t0) / 1000).toFixed(0)} s`)
  }
  // met: null is a figure reported without a target.
  const rows = results.flatMap((r) => r.rows).map((row) => ({...row, result: row.met === null ? 'reported' : row.met ? 'met' : 'missed'}))
  const seconds = (Date.now() - started.getTime()) / 1000

  console.log(textTable(rows))
  for (const row of rows.filter((r) => r.met === false)) console.log(`\n${row.benchmark}: missed. ${row.cause}`)
  if (only !== undefined) {
    for (const r of results) for (const d of r.details) console.log(`  ${d}`)
    if (!process.argv.includes('--update')) return
    const file = join(ROOT, 'BENCHMARKS.md')
    writeFileSync(file, updated(readFileSync(file, 'utf8'), {mode, host, started, seconds, rows, results}))
    note(`\nUpdated the ${only} rows of BENCHMARKS.md (${seconds.toFixed(0)} s).`)
    return
  }
  writeFileSync(join(ROOT, 'BENCHMARKS.md'), markdown({mode, settings, host, started, seconds, rows, results}))
  note(`\nWrote BENCHMARKS.md (${seconds.toFixed(0)} s).`)
}

function tableRow(row) {
  const cell = (text) => text.replaceAll('|', '\\|')
  return `| ${COLUMNS.map(([key]) => cell(key === 'result' && row.met === false ? '**missed**' : row[key])).join(' | ')} |`
}

function missedParagraph(row) {
  return `**${row.benchmark}** (${row.shardctl}, ratio ${row.ratio}, target ${row.target}): ${row.cause}`
}

/**
 * BENCHMARKS.md with one benchmark's figures replaced, each where it was (a reader's diff
 * shows figures changing, not rows moving): its table rows (matched by the benchmark and
 * workload columns; new ones go at the end of the table), its paragraphs under "Why
 * targets are missed", its repetitions, and a line under "Machine" saying when, on which
 * commit and under which load these rows were taken, since they are not the full run's.
 */
function updated(text, {mode, host, started, seconds, rows, results}) {
  const names = new Set(rows.map((row) => row.benchmark))
  // A row is its benchmark and workload: a run leaves the rows of workloads it did not measure
  // (--scale's 10,000 shards beside the full run's 1,000).
  const rowKey = (benchmark, workload) => `${benchmark}\u0000${workload}`
  const keyOfRow = (line) => {
    const [benchmark, workload] = line.slice(2).split(' | ')
    return rowKey(benchmark.replaceAll('\\|', '|'), (workload ?? '').replaceAll('\\|', '|'))
  }
  const nameOfParagraph = (line) => /^\*\*(.+?)\*\* \(/.exec(line)?.[1]
  let lines = text.split('\n')
  // The table: each new row where its old one was, the others after the table's last row.
  const fresh = new Map(rows.map((row) => [rowKey(row.benchmark, row.workload), tableRow(row)]))
  lines = inPlace(lines, (line) => (line.startsWith('| ') ? keyOfRow(line) : undefined), fresh)
  const lastRow = lines.findLastIndex((line) => line.startsWith('| '))
  lines.splice(lastRow + 1, 0, ...fresh.values())
  // Why targets are missed: each paragraph where its old one was (an old one no longer missed
  // goes, with the blank line after it), the others at the end of the section.
  const missed = new Map(rows.filter((row) => row.met === false).map((row) => [row.benchmark, missedParagraph(row)]))
  lines = inPlace(lines, (line) => nameOfParagraph(line), missed, names)
  let why = lines.indexOf('## Why targets are missed')
  if (missed.size > 0 && why === -1) {
    const machineAt = lines.indexOf('## Machine')
    lines.splice(machineAt, 0, '## Why targets are missed', '')
    why = machineAt
  }
  if (missed.size > 0) {
    const next = lines.findIndex((line, i) => i > why && line.startsWith('## '))
    lines.splice(next, 0, ...[...missed.values()].flatMap((paragraph) => [paragraph, '']))
  }
  // Machine: say where these rows come from, in place of what it said of them before.
  const date = started.toISOString().replace('T', ' ').slice(0, 16)
  const stamp = (name) => `* ${name} rows: taken alone (\`--only ${name} --update\`)`
  const stamps = new Map(
    results.map((r) => [
      r.name,
      `${stamp(r.name)} on ${date} UTC, ${mode} run, commit ${host.commit}, load ${host.load} at the start and ${loadAverage()} at the end; took ${Math.round(seconds)} s`,
    ]),
  )
  lines = inPlace(lines, (line) => results.find((r) => line.startsWith(stamp(r.name)))?.name, stamps)
  const machineEnd = lines.findIndex((line, i) => i > lines.indexOf('## Machine') && line.startsWith('## '))
  lines.splice(machineEnd - 1, 0, ...stamps.values())
  // Repetitions: replace the benchmark's section, or add it at the end.
  for (const r of results) {
    const section = [`### ${r.name}`, '', ...r.details.map((d) => `* ${d}`), '']
    const start = lines.indexOf(`### ${r.name}`)
    if (start === -1) {
      while (lines.at(-1) === '') lines.pop()
      lines.push('', ...section)
    } else {
      const end = lines.findIndex((line, i) => i > start && line.startsWith('#'))
      lines.splice(start, (end === -1 ? lines.length : end) - start, ...section)
    }
  }
  while (lines.at(-1) === '') lines.pop()
  return `${lines.join('\n')}\n`
}

/**
 * `lines` with each line whose key (keyOf) is in `fresh` replaced by fresh's line, taken
 * out of `fresh` (what is left there had no line to replace). A line whose key is only in
 * `drop` goes, with the blank line after it.
 */
function inPlace(lines, keyOf, fresh, drop = new Set()) {
  const out = []
  let dropped = false
  for (const line of lines) {
    if (dropped && line === '') {
      dropped = false
      continue
    }
    dropped = false
    const key = keyOf(line)
    if (key !== undefined && fresh.has(key)) {
      out.push(fresh.get(key))
      fresh.delete(key)
    } else if (key !== undefined && drop.has(key)) dropped = true
    else out.push(line)
  }
  return out
}

function textTable(rows) {
  const cells = [COLUMNS.map(([, title]) => title), ...rows.map((row) => COLUMNS.map(([key]) => row[key]))]
  const widths = COLUMNS.map((_, i) => Math.max(...cells.map((line) => line[i].length)))
  return cells
    .map((line) =>
      line
        .map((cell, i) => cell.padEnd(widths[i]))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')
}

function markdown({mode, settings, host, started, seconds, rows, results}) {
  const table = [
    `| ${COLUMNS.map(([, title]) => title).join(' | ')} |`,
    `| ${COLUMNS.map(() => '---').join(' | ')} |`,
    ...rows.map(tableRow),
  ]
  const missed = rows.filter((row) => row.met === false)
  const date = started.toISOString().replace('T', ' ').slice(0, 16)
  return `# Benchmarks

Written by \`npm run bench\` (\`bench/run.js\`) on ${date} UTC, ${mode} run. Do not edit by hand: run it again.

The machines are shared and noisy, so every figure is a **ratio** against a baseline
measured in the same run, on the same machine, right before it; each ratio is the
median over the repetitions, with their range in brackets.${
    mode === 'quick'
      ? `

This is a quick run: with ${settings.hashes.toLocaleString('en-US')} hashes the fixed startup weighs more,
so assign and lookup ratios come out lower than in a full run, for which the targets are set.`
      : ''
  }

${table.join('\n')}

${missed.length === 0 ? 'Every target is met.' : `## Why targets are missed\n\n${missed.map(missedParagraph).join('\n\n')}`}

## Machine

* CPU: ${host.cpu}, ${host.cores} cores, ${host.memoryGb} GB memory
* load average (1, 5, 15 min): ${host.load} at the start, ${loadAverage()} at the end (other work on the machine shows here)
* Node.js ${host.node}, redis-server ${host.redis}
* shardctl: commit ${host.commit}, as built in \`dist/\`
* ${mode} run: ${settings.hashes.toLocaleString('en-US')} hashes (registry rows: ${settings.registryHashes.toLocaleString('en-US')}), ${settings.reps} repetitions (shards:list: ${settings.coldReps}); took ${Math.round(seconds)} s

## How to reproduce

\`\`\`sh
npm run build                  # the benchmarks run dist/, as bin/run.js does
npm run bench                  # full run: under ten minutes; rewrites BENCHMARKS.md
npm run bench -- --quick       # ${SETTINGS.quick.hashes.toLocaleString('en-US')} hashes, ${SETTINGS.quick.reps} repetitions: a minute or two
npm run bench -- --scale       # the registry rows at 10,000,000 hashes instead of 1,000,000
npm run bench -- --only registry  # one benchmark, printed, BENCHMARKS.md left alone
npm run bench -- --only backup --update  # one benchmark, its rows in BENCHMARKS.md replaced
\`\`\`

Needs \`redis-server\` and \`redis-benchmark\` on PATH (Debian: \`redis-server\`, \`redis-tools\`).
Do not run it while \`npm test\` or \`npm run build\` runs: both delete and rebuild \`dist/\`.
The harness starts its own \`redis-server\` processes on free loopback ports, each in its
own temporary directory, and stops exactly those at the end, on failure and on Ctrl-C.
Every shardctl run is a new \`node bin/run.js …\` process, timed from spawn to exit;
\`bench/usage.js\` is preloaded into it (\`node --import\`) to report its peak memory
(max RSS) and CPU time.

* **shards:assign**: a registry, and an instance with 128 databases holding 100 shards
  (\`shards:init\` in four groups of 25 with weights 1, 2, 3, 4). Each repetition empties
  \`shards.map\` and runs \`redis-benchmark -c 50 -P 64 -n N -r 1000000000 HSETNX shards.map key:__rand_int__ v\`,
  empties it again and runs \`shards:assign --stdin --quiet\` with stdin the file of N
  hashes \`key:000000000000\`, \`key:000000000001\`, … Ratio: N / shardctl's wall time, over
  redis-benchmark's requests per second. Peak memory: the largest max RSS of the runs.
* **shards:lookup**: the same registry with the N hashes assigned; each repetition runs
  \`redis-benchmark -c 50 -P 64 -n N -r N HGET shards.map key:__rand_int__\` (exactly the
  assigned hashes), then \`shards:lookup --stdin\` on the file, stdout to /dev/null
  (exit 0: every hash found). Ratio as for assign.
* **shards:list**: a registry and 20 instances with \`--databases 64\`, 50 shards each
  (\`shards:init\`), 100 keys in every shard's database. After one untimed run of each,
  every repetition times \`node -e 0\`, \`shardctl --version\` (oclif's startup alone, for
  the analysis) and \`shards:list --json\` (which probes every instance; the JSON is
  checked: 1,000 healthy shards). Ratio: shards:list's wall time over node's.
* **shards:promote**: a registry, a master and its replica with 4 shards, and a client
  writing 5,000/s to them that follows the registry's events and counts every
  acknowledged write. Each repetition promotes the replica with \`shards:promote --yes\`,
  then hands back with Redis's \`FAILOVER TO\` plus the registry update an operator would
  script. Figure: the longest gap between two acknowledged writes around each; at the
  end every acknowledged write is read back (lost = missing).
* **shards:split**: an instance with 100 databases filled by \`DEBUG POPULATE\` (~200-byte
  values). Baseline: an empty instance's \`REPLICAOF\` full sync of it, until its link is
  up. Then \`shards:split --to\` moves the 50 odd databases to another empty instance
  while the client writes 5,000/s to 8 of the moved shards. Ratio: the split's wall
  time over the sync's; gap and lost as for promote.
* **shards:move**: three parts, each a fresh set of instances. (1) An instance with 100
  databases filled by \`DEBUG POPULATE\` (~200-byte values, as the split); baseline: an empty
  instance's \`REPLICAOF\` full sync of it, until its link is up and it streams (that copy is
  then stopped). Then \`shards:move s007 --to\` another instance that already holds data in
  db 0: the shard lands in db 1 (checked: every key arrived, db 0 untouched). Ratio: the
  move's wall time over the sync's; peak memory: the move's max RSS. (2) The same with one
  database of 1 KB values (\`DEBUG POPULATE\` ${SETTINGS.full.moveBigKeys.toLocaleString('en-US')} keys, ~1 GB): ratio of the
  throughputs, the instance's \`used_memory_dataset\` over each wall time. (3) 16 databases of
  20,000 keys; the client writes 5,000/s to s003, following the registry's events, while
  \`shards:move s003\` runs; gap and lost as for promote, and the pause the move reports.
* **shards:check**: a registry and 10 instances (AOF, fenced) with a replica each, 10
  shards per instance. Each repetition times \`node -e 0\`, \`shardctl --version\` and
  \`shards:check --canary --json\` (checked: healthy, every canary seen on every
  replica). Figures: the p50 and p99 (nearest rank) of the check's wall time.
* **fleet**: a registry and 200 instances (AOF, no replica), 50 shards on each: 10,000
  shards registered by one \`shards:import\`. Five repetitions each of \`node -e 0\`, then
  \`shards:list --json\` and \`shards:check --allow-no-replica --json\` (checked: 10,000
  healthy shards). Every instance's \`total_connections_received\` is read before and
  after each run: exactly one connection per instance means every instance was probed
  once. Ratio over node's wall time; peak memory: the largest max RSS.
* **registry**: a registry with 2,000 shards and the map (1,000,000 hashes; 10,000,000
  with \`--scale\`). Baselines: a bare client-side HSCAN of the map to a file, and
  \`redis-cli --pipe\` of the same HSETs into an empty instance. Then
  \`shards:export --with-map\`, \`shards:list --counts --no-probe\`, \`shards:import\` of the
  export into an empty registry, and again onto it after 1% of its entries were
  re-pointed (both checked entry by entry). While each import runs, a client PINGs the
  registry every 10 ms: the longest answer is the longest stall.
* **backup**: an instance with 100 databases filled by \`DEBUG POPULATE\` (~200-byte values,
  as the split), registered as 100 shards, no replica (so the snapshot comes from it; every
  test instance waits no \`repl-diskless-sync-delay\`). Each repetition times
  \`redis-cli --rdb\` of it to a file, then \`shards:backup --instance\` of it to a directory and
  to S3 (s3rver in a child process on loopback). Ratio: shardctl's snapshot bytes per second
  over redis-cli's; peak memory: shardctl's max RSS. Then one shard (db 0) restored out of
  that backup into db 7 of another instance: \`shards:restore\` against the manual way,
  redis-server started on the snapshot and \`MIGRATE … KEYS\` of db 0, 1,000 keys at a time;
  ratio of the wall times.
* **sentinel**: a registry, a master with two replicas and 4 shards, three Sentinels
  (\`sentinel:register --down-after 1s\`), \`sentinel:follow --json\` running, and the client
  writing 5,000/s. Each repetition (a fresh set) kills the master with SIGKILL. Sentinel's
  part: from the kill to the time the follower heard the majority-th \`+switch-master\`;
  the follower's: from there to its \`failover-followed\` event (its change is in the
  registry). Lost: acknowledged writes missing on the new master (the asynchronous
  replication window).

## Repetitions

${results.map((r) => `### ${r.name}\n\n${r.details.map((d) => `* ${d}`).join('\n')}`).join('\n\n')}
`
}

function note(message) {
  process.stderr.write(`${message}\n`)
}

// Stop every server and child on every way out: success, failure, Ctrl-C, kill.
// process.on, not once: execa's exit handler (signal-exit) re-raises the signal,
// killing this process mid-cleanup, when it finds itself the only listener left.
let stopping = false
for (const [signal, code] of [
  ['SIGINT', 130],
  ['SIGTERM', 143],
  ['SIGHUP', 129],
]) {
  process.on(signal, () => {
    if (stopping) return
    stopping = true
    note(`\n${signal}: stopping the redis-server processes this run started...`)
    cleanup().finally(() => process.exit(code))
  })
}
try {
  await main()
} catch (error) {
  process.exitCode = 1
  note(`bench failed: ${error.stack ?? error}`)
} finally {
  await cleanup()
}

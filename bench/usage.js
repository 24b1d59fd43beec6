// Preloaded into every shardctl process the benchmarks run (node --import): on exit,
// write the process's own resource usage to $BENCH_USAGE_FILE as JSON: peak resident
// memory (max RSS, KB) and CPU time (ms). Needs nothing installed (unlike
// /usr/bin/time). It costs a few milliseconds of start-up (measured ~6 ms): the
// cold-start benchmark (list.js) times its runs without it.
import {writeFileSync} from 'node:fs'

const file = process.env.BENCH_USAGE_FILE
if (file) {
  process.on('exit', () => {
    const usage = process.resourceUsage()
    writeFileSync(file, JSON.stringify({maxRssKb: usage.maxRSS, cpuMs: (usage.userCPUTime + usage.systemCPUTime) / 1000}))
  })
}

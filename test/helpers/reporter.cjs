// The spec reporter, plus where the time went and one closing line in the plain form CI
// reads: "N passed, N failed, N skipped".
//
// Always: the slowest test files (wall time, hooks included) on one line. With
// SHARDCTL_TEST_TIMES=1: every file's wall time and the slowest tests, slowest first.
// Under mocha --parallel, a file's events arrive at once when it is done: its tests' own
// times are summed instead (hooks not counted), and said so.
const {relative} = require('node:path')
const Mocha = require('mocha')

const {EVENT_RUN_END, EVENT_SUITE_BEGIN, EVENT_SUITE_END, EVENT_TEST_END} = Mocha.Runner.constants

const seconds = (ms) => `${(ms / 1000).toFixed(1)} s`

class SpecWithTotals extends Mocha.reporters.Spec {
  constructor(runner, options) {
    super(runner, options)
    const detailed = process.env.SHARDCTL_TEST_TIMES === '1'
    const parallel = Boolean(options.parallel)
    const started = Date.now()
    /** file -> wall time of its top-level suites, before/after hooks included (or, in parallel, its tests' times) */
    const files = new Map()
    const openedAt = new Map()
    const tests = []
    const fileOf = (suite) => (suite.file ? relative(process.cwd(), suite.file) : '(root hooks)')

    runner.on(EVENT_SUITE_BEGIN, (suite) => {
      if (suite.parent?.root) openedAt.set(suite, Date.now())
    })
    runner.on(EVENT_SUITE_END, (suite) => {
      if (!openedAt.has(suite)) return
      const file = fileOf(suite)
      files.set(file, (files.get(file) ?? 0) + Date.now() - openedAt.get(suite))
      openedAt.delete(suite)
    })
    runner.on(EVENT_TEST_END, (test) => {
      if (test.duration === undefined) return
      tests.push({title: test.fullTitle(), file: fileOf(test), ms: test.duration})
      if (parallel) files.set(fileOf(test), (files.get(fileOf(test)) ?? 0) + test.duration)
    })

    runner.once(EVENT_RUN_END, () => {
      const out = (line) => process.stdout.write(`${line}\n`)
      const byTime = [...files].sort((a, b) => b[1] - a[1])
      if (detailed) {
        out('')
        out(
          parallel
            ? 'Time of the tests per file (run in parallel: hooks not counted), slowest first:'
            : 'Wall time per file (hooks included), slowest first:',
        )
        const width = Math.max(...byTime.map(([f]) => f.length), 4)
        for (const [file, ms] of byTime) out(`  ${file.padEnd(width)}  ${seconds(ms).padStart(8)}`)
        out('')
        out('Slowest tests:')
        for (const t of tests.sort((a, b) => b.ms - a.ms).slice(0, 25)) out(`  ${seconds(t.ms).padStart(8)}  ${t.file}: ${t.title}`)
      }
      if (byTime.length > 0) {
        const slowest = byTime
          .slice(0, 5)
          .map(([file, ms]) => `${file} ${seconds(ms)}`)
          .join(', ')
        out(`${seconds(Date.now() - started)} in all; slowest files: ${slowest}`)
      }
      const s = runner.stats
      out(`${s.passes} passed, ${s.failures} failed, ${s.pending} skipped`)
    })
  }
}

module.exports = SpecWithTotals

// Mocha settings. With test files named on the command line, run just those, in one
// process; otherwise every test, two files at a time (the tests mostly wait on redis-server
// processes and child commands, so a second file uses what the first leaves idle: measured
// on 2 cores, 975 s one at a time). The longest files go first, so that no long file starts
// last and leaves the other worker idle while it ends. Every file already stands a second
// one beside it: CI's timing phase runs the timing-sensitive ones two at a time under load.
// No test has a time limit: this timeout only stops a hang.
const {readdirSync} = require('node:fs')
const {join} = require('node:path')

const named = process.argv.slice(2).some((a) => /\.test\.ts$/.test(a))

module.exports = {
  'node-option': ['import=tsx'],
  timeout: 300000,
  recursive: true,
  reporter: './test/helpers/reporter.cjs',
  require: ['test/helpers/hooks.ts'],
}

// Measured one at a time (SHARDCTL_TEST_TIMES=1), slowest first; the rest follow by name.
const longest = [
  'test/ops/promote.test.ts',
  'test/ops/split.test.ts',
  'test/ops/cutover.test.ts',
  'test/commands/export-import.test.ts',
  'test/sentinel/follow.test.ts',
  'test/sentinel/coordinate.test.ts',
  'test/sentinel/registry.test.ts',
  'test/ops/move.test.ts',
  'test/commands/sandbox.test.ts',
  'test/commands/bad-input.test.ts',
  'test/commands/backup.test.ts',
  'test/commands/fast-path.test.ts',
]

function testFiles(dir) {
  return readdirSync(dir, {withFileTypes: true}).flatMap((entry) => {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) return testFiles(path)
    return entry.name.endsWith('.test.ts') ? [path] : []
  })
}

if (!named) {
  const all = testFiles('test').sort()
  module.exports.spec = [...longest.filter((f) => all.includes(f)), ...all.filter((f) => !longest.includes(f))]
  module.exports.parallel = true
  module.exports.jobs = Number(process.env.SHARDCTL_TEST_JOBS ?? 2)
}

// Mocha settings. With test files named on the command line, run just those;
// otherwise every test. No test has a time limit: this timeout only stops a hang.
const named = process.argv.slice(2).some((a) => /\.test\.ts$/.test(a))

module.exports = {
  'node-option': ['import=tsx'],
  timeout: 300000,
  recursive: true,
  reporter: './test/helpers/reporter.cjs',
  require: ['test/helpers/hooks.ts'],
}
if (!named) module.exports.spec = ['test/**/*.test.ts']

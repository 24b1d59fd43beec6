// The start-up fast path (BENCHMARKS.md, "shards:list --json (cold)"). The commands of
// src/fast/commands.ts run from one bundled file, dist/fast/commands.cjs, compiled with
// V8's code cache: no module resolution over hundreds of files, no oclif plugin
// discovery, no recompiling the same code on every start. Help, every other command
// and SHARDCTL_NO_BUNDLE=1 go through oclif as before.
import {readFileSync, renameSync, writeFileSync} from 'node:fs'
import {createRequire} from 'node:module'
import {dirname, join} from 'node:path'
import {fileURLToPath} from 'node:url'
import vm from 'node:vm'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const BUNDLE = join(ROOT, 'dist', 'fast', 'commands.cjs')
/** Kept in step with src/fast/commands.ts (a test checks); read here without loading the bundle. */
export const BUNDLED = new Set(['shards:check', 'shards:list', 'shards:lookup'])

/** Run argv's command from the bundle and resolve true, or resolve false for oclif to run it. */
export async function runBundled(argv) {
  const [id, ...args] = argv.slice(2)
  if (!BUNDLED.has(id) || process.env.SHARDCTL_NO_BUNDLE === '1' || wantsHelp(args)) return false
  const bundle = load(BUNDLE)
  if (bundle === undefined) return false
  await bundle.run(id, args, ROOT, JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')))
  return true
}

/** --help or -h before a `--`: oclif renders help. */
function wantsHelp(args) {
  const end = args.indexOf('--')
  return (end === -1 ? args : args.slice(0, end)).some((a) => a === '--help' || a === '-h')
}

/**
 * The bundle as a CommonJS module, compiled from its code cache when one matches. After a
 * run that went through (exit 0, or 3: done, and something to report) and had to compile,
 * the cache is written (atomically, next to the bundle; skipped where that is read-only):
 * it then holds every function that run compiled, not only those of an early failure.
 * undefined when there is no bundle (a checkout not built yet).
 */
function load(file) {
  let source
  try {
    source = readFileSync(file, 'utf8')
  } catch {
    return undefined
  }
  const cacheFile = `${file}.cache`
  let cachedData
  try {
    cachedData = readFileSync(cacheFile)
  } catch {}
  const script = new vm.Script(`(function (exports, require, module, __filename, __dirname) {${source}\n})`, {
    filename: file,
    cachedData,
  })
  if (cachedData === undefined || script.cachedDataRejected) {
    process.once('exit', (code) => {
      if (code !== 0 && code !== 3) return
      try {
        const partial = `${cacheFile}.${process.pid}`
        writeFileSync(partial, script.createCachedData())
        renameSync(partial, cacheFile)
      } catch {}
    })
  }
  const module = {exports: {}}
  script.runInThisContext()(module.exports, createRequire(file), module, file, dirname(file))
  return module.exports
}

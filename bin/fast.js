// The start-up fast path (BENCHMARKS.md, "shards:list --json (cold)"). Every command of
// src/fast/commands.ts runs from one bundled file, dist/fast/commands.cjs, compiled with
// V8's code cache: no module resolution over hundreds of files, no oclif plugin
// discovery, no recompiling the same code on every start. Help, --version, unknown
// commands, the plugins' commands and SHARDCTL_NO_BUNDLE=1 go through oclif as before.
import {accessSync, constants, readFileSync, renameSync, rmSync, writeFileSync} from 'node:fs'
import {createHash, randomBytes} from 'node:crypto'
import {createRequire} from 'node:module'
import {dirname, join} from 'node:path'
import {fileURLToPath} from 'node:url'
import vm from 'node:vm'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const BUNDLE = join(ROOT, 'dist', 'fast', 'commands.cjs')
/** Kept in step with src/fast/commands.ts (a test checks); read here without loading the bundle. */
export const BUNDLED = new Set([
  'backups:list',
  'backups:prune',
  'backups:verify',
  'sandbox:down',
  'sandbox:status',
  'sandbox:up',
  'sentinel:follow',
  'sentinel:register',
  'sentinel:unregister',
  'shards:add',
  'shards:assign',
  'shards:backup',
  'shards:check',
  'shards:export',
  'shards:history',
  'shards:import',
  'shards:init',
  'shards:list',
  'shards:lookup',
  'shards:move',
  'shards:promote',
  'shards:rebalance',
  'shards:reconcile',
  'shards:remove',
  'shards:restore',
  'shards:split',
  'shards:unlock',
  'shards:verify',
  'shards:watch',
  'shards:weight',
])

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
 * The bundle as a CommonJS module, compiled from its code cache when the cache was made from
 * this very source. V8 itself checks only the source's length, so the cache starts with a
 * hash of the source it was made from: a cache left from another build is never used.
 * After a run that went through (exit 0, or 3: done, and something to report) and had to
 * compile, the cache is written next to the bundle, atomically, where that is writable: it
 * then holds every function that run compiled, not only those of an early failure.
 * undefined when there is no usable bundle (a checkout not built yet): oclif runs instead.
 */
function load(file) {
  let bytes
  try {
    bytes = readFileSync(file)
  } catch {
    return undefined
  }
  const source = bytes.toString('utf8')
  const cacheFile = `${file}.cache`
  const header = Buffer.from(`${createHash('sha1').update(bytes).digest('hex')}\n`)
  let cachedData
  try {
    const cache = readFileSync(cacheFile)
    if (cache.subarray(0, header.length).equals(header)) cachedData = cache.subarray(header.length)
  } catch {
    // no cache yet, or unreadable: compile from source
  }
  let script
  let exports
  try {
    script = new vm.Script(`(function (exports, require, module, __filename, __dirname) {${source}\n})`, {filename: file, cachedData})
    const module = {exports: {}}
    script.runInThisContext()(module.exports, createRequire(file), module, file, dirname(file))
    exports = module.exports
  } catch {
    return undefined
  }
  if ((cachedData === undefined || script.cachedDataRejected) && writable(dirname(file))) {
    process.once('exit', (code) => {
      if (code !== 0 && code !== 3) return
      const partial = `${cacheFile}.${process.pid}.${randomBytes(6).toString('hex')}`
      try {
        writeFileSync(partial, Buffer.concat([header, script.createCachedData()]), {flag: 'wx'})
        renameSync(partial, cacheFile)
      } catch {
        rmSync(partial, {force: true})
      }
    })
  }
  return exports
}

function writable(dir) {
  try {
    accessSync(dir, constants.W_OK)
    return true
  } catch {
    return false
  }
}

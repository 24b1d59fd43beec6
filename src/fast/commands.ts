/**
 * The start-up fast path: the commands a script runs cold and often (list, lookup,
 * check: read-only, quick, run from cron and CI), bundled by
 * scripts/build.js into dist/fast/commands.cjs and started by bin/run.js without
 * oclif's plugin discovery. Each is the very command class oclif runs; only the
 * Config differs: built from package.json instead of loaded with every plugin's
 * manifest. The rest of the tool, and --help, go through oclif.
 */
import type {Config} from '@oclif/core'

import {Errors} from '@oclif/core'

import ShardsCheck from '../commands/shards/check.js'
import ShardsList from '../commands/shards/list.js'
import ShardsLookup from '../commands/shards/lookup.js'

const COMMANDS = {'shards:check': ShardsCheck, 'shards:list': ShardsList, 'shards:lookup': ShardsLookup}

export const ids = Object.keys(COMMANDS)

interface PackageJson {
  name: string
  version: string
  oclif: {bin: string}
}

/** Run one command of COMMANDS as oclif would: the same lifecycle, exit code and error path. */
export async function run(id: string, argv: string[], root: string, pjson: PackageJson): Promise<void> {
  const command = COMMANDS[id as keyof typeof COMMANDS]
  command.id = id
  try {
    // What oclif's Command.run does after Config.load.
    const instance = new command(argv, liteConfig(root, pjson)) as unknown as {_run(): Promise<unknown>}
    await instance._run()
  } catch (error) {
    // The command printed its own error (base-command catch) and left through exit().
    if (error instanceof Errors.ExitError) process.exit(error.oclif.exit ?? 1)
    process.stderr.write(`Error: ${(error as Error).message}\n`)
    process.exit(1)
  }
}

/** The part of oclif's Config that a command reads (bin, environment scope, hooks). */
function liteConfig(root: string, pjson: PackageJson): Config {
  const {bin} = pjson.oclif
  const scopedEnvVarKeys = (key: string) => [`${bin}_${key}`.replaceAll('@', '').replaceAll(/[/-]/g, '_').toUpperCase()]
  const scopedEnvVar = (key: string) => process.env[scopedEnvVarKeys(key).find((k) => process.env[k]) ?? '']
  const config = {
    root,
    bin,
    name: pjson.name,
    version: pjson.version,
    pjson,
    topicSeparator: ':',
    userAgent: `${pjson.name}/${pjson.version} ${process.platform}-${process.arch} node-${process.version}`,
    theme: undefined,
    scopedEnvVarKeys,
    scopedEnvVarKey: (key: string) => scopedEnvVarKeys(key)[0],
    scopedEnvVar,
    scopedEnvVarTrue: (key: string) => ['1', 'true'].includes(scopedEnvVar(key) ?? ''),
    // No hook of this tool or its plugins runs for these commands (preparse, prerun).
    runHook: async () => ({successes: [], failures: []}),
  }
  return config as unknown as Config
}

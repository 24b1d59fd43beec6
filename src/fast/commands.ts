/**
 * The start-up fast path: every command of the tool, bundled by scripts/build.js into
 * dist/fast/commands.cjs and started by bin/run.js without oclif's plugin discovery.
 * Each is the very command class oclif runs; only the Config differs: built from
 * package.json instead of loaded with every plugin's manifest. Help, --version, unknown
 * commands and the plugins' commands go through oclif.
 *
 * Each command is imported when it runs: in the bundle, a module and what it imports are
 * initialised on first use, so a command pays only for its own code (ioredis, tables,
 * prompts, the S3 client are loaded by the commands that reach them).
 */
import type {Command, Config} from '@oclif/core'

import {Errors} from '@oclif/core'

type CommandClass = (new (argv: string[], config: Config) => Command) & {id: string}

const COMMANDS: Record<string, () => Promise<CommandClass>> = {
  'backups:list': async () => (await import('../commands/backups/list.js')).default,
  'backups:prune': async () => (await import('../commands/backups/prune.js')).default,
  'backups:verify': async () => (await import('../commands/backups/verify.js')).default,
  'sandbox:down': async () => (await import('../commands/sandbox/down.js')).default,
  'sandbox:status': async () => (await import('../commands/sandbox/status.js')).default,
  'sandbox:up': async () => (await import('../commands/sandbox/up.js')).default,
  'sentinel:follow': async () => (await import('../commands/sentinel/follow.js')).default,
  'sentinel:register': async () => (await import('../commands/sentinel/register.js')).default,
  'sentinel:unregister': async () => (await import('../commands/sentinel/unregister.js')).default,
  'shards:add': async () => (await import('../commands/shards/add.js')).default,
  'shards:assign': async () => (await import('../commands/shards/assign.js')).default,
  'shards:backup': async () => (await import('../commands/shards/backup.js')).default,
  'shards:check': async () => (await import('../commands/shards/check.js')).default,
  'shards:export': async () => (await import('../commands/shards/export.js')).default,
  'shards:history': async () => (await import('../commands/shards/history.js')).default,
  'shards:import': async () => (await import('../commands/shards/import.js')).default,
  'shards:init': async () => (await import('../commands/shards/init.js')).default,
  'shards:list': async () => (await import('../commands/shards/list.js')).default,
  'shards:lookup': async () => (await import('../commands/shards/lookup.js')).default,
  'shards:move': async () => (await import('../commands/shards/move.js')).default,
  'shards:promote': async () => (await import('../commands/shards/promote.js')).default,
  'shards:rebalance': async () => (await import('../commands/shards/rebalance.js')).default,
  'shards:reconcile': async () => (await import('../commands/shards/reconcile.js')).default,
  'shards:remove': async () => (await import('../commands/shards/remove.js')).default,
  'shards:restore': async () => (await import('../commands/shards/restore.js')).default,
  'shards:split': async () => (await import('../commands/shards/split.js')).default,
  'shards:unlock': async () => (await import('../commands/shards/unlock.js')).default,
  'shards:verify': async () => (await import('../commands/shards/verify.js')).default,
  'shards:watch': async () => (await import('../commands/shards/watch.js')).default,
  'shards:weight': async () => (await import('../commands/shards/weight.js')).default,
}

export const ids = Object.keys(COMMANDS)

interface PackageJson {
  name: string
  version: string
  oclif: {bin: string}
}

/** Run one command of COMMANDS as oclif would: the same lifecycle, exit code and error path. */
export async function run(id: string, argv: string[], root: string, pjson: PackageJson): Promise<void> {
  const command = await COMMANDS[id]()
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

import {readFileSync} from 'node:fs'
import {homedir} from 'node:os'
import {join} from 'node:path'

import {usageError} from './errors.js'
import {type ConnectTarget, canonicalRegistry, parseRegistryAddress, redact} from './registry/address.js'
import {DEFAULT_PREFIX} from './registry/schema.js'

/**
 * Named fleets, so nobody changes the wrong one: a small JSON file,
 * $SHARDCTL_CONFIG or $XDG_CONFIG_HOME/shardctl/config.json (~/.config/...):
 *
 *   {
 *     "current": "staging",
 *     "contexts": {
 *       "prod-eu": {"registry": "redis://10.0.0.2:6379/0", "prefix": "shards"},
 *       "staging": {"registry": "redis://10.1.0.2:6379/0"}
 *     }
 *   }
 *
 * --context NAME (or SHARDCTL_CONTEXT) picks one, else "current"; a registry or prefix
 * given as a flag or in the environment still wins. Every confirmation names the fleet.
 * Keep passwords out of it (SHARDCTL_REGISTRY_PASSWORD, --ask-password).
 */
export interface FleetContext {
  name: string
  registry?: string
  prefix?: string
}

export function configPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.SHARDCTL_CONFIG) return env.SHARDCTL_CONFIG
  return join(env.XDG_CONFIG_HOME || join(homedir(), '.config'), 'shardctl', 'config.json')
}

interface ConfigFile {
  current?: unknown
  contexts?: Record<string, {registry?: unknown; prefix?: unknown}>
}

/** The config file, parsed; undefined when there is none. */
function readConfig(path: string): ConfigFile | undefined {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw usageError(`cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`)
  }
  try {
    return JSON.parse(text) as ConfigFile
  } catch (error) {
    throw usageError(`${path} is not JSON: ${(error as Error).message}`)
  }
}

/** The context to use: the one named, or the file's current one, or none (no file: none). */
export function loadContext(name: string | undefined, env: NodeJS.ProcessEnv = process.env): FleetContext | undefined {
  const path = configPath(env)
  const config = readConfig(path)
  if (config === undefined) {
    if (name !== undefined)
      throw usageError(`no context "${name}": ${path} does not exist`, 'create it with the fleets you operate (see README, Several fleets)')
    return undefined
  }
  const contexts = config.contexts ?? {}
  const wanted = name ?? (typeof config.current === 'string' ? config.current : undefined)
  if (wanted === undefined) return undefined
  const context = contexts[wanted]
  if (!context) throw usageError(`no context "${wanted}" in ${path}`, `it has ${Object.keys(contexts).join(', ') || 'none'}`)
  if (context.registry !== undefined && typeof context.registry !== 'string')
    throw usageError(`context "${wanted}" in ${path}: registry is not a string`)
  if (context.prefix !== undefined && typeof context.prefix !== 'string')
    throw usageError(`context "${wanted}" in ${path}: prefix is not a string`)
  return {name: wanted, registry: context.registry, prefix: context.prefix}
}

/**
 * The fleet a registry and prefix are: the context in use if it is that fleet, else
 * any context of the file that is (same database, however spelled, and same prefix),
 * else none. A context whose registry does not parse is no fleet.
 */
export function fleetOf(
  acting: {registry: ConnectTarget; prefix: string},
  inUse: FleetContext | undefined,
  env: NodeJS.ProcessEnv = process.env,
): FleetContext | undefined {
  const target = canonicalRegistry(acting.registry)
  const isIt = (context: FleetContext) => {
    if ((context.prefix ?? DEFAULT_PREFIX) !== acting.prefix || context.registry === undefined) return false
    try {
      return canonicalRegistry(parseRegistryAddress(context.registry)) === target
    } catch {
      return false
    }
  }
  if (inUse && isIt(inUse)) return inUse
  let config: ConfigFile | undefined
  try {
    config = readConfig(configPath(env))
  } catch {
    return undefined
  }
  for (const [name, context] of Object.entries(config?.contexts ?? {})) {
    const candidate = {
      name,
      registry: typeof context.registry === 'string' ? context.registry : undefined,
      prefix: typeof context.prefix === 'string' ? context.prefix : undefined,
    }
    if (isIt(candidate)) return candidate
  }
  return undefined
}

/** How a confirmation names the fleet it acts on: by the context that is that fleet, else by its address alone. */
export function fleetLabel(context: FleetContext | undefined, registry: string): string {
  return context ? `on fleet ${context.name} (${redact(registry)})` : `on registry ${redact(registry)}`
}

import type {Redis} from 'ioredis'

import {ExitCode, ShardctlError} from '../errors.js'

/**
 * Modules (whose types the source may hold) and function libraries (which the source's
 * snapshot carries, and which its scripts may call) that the source has and the target
 * lacks: refused before anything is copied, each named. `shards:move` asks in its
 * preflight; the copy engine asks again as it starts.
 */
export async function refuseMissingExtensions(
  source: Pick<Redis, 'call'>,
  target: Pick<Redis, 'call'>,
  sourceWhere: string,
  targetWhere: string,
): Promise<void> {
  for (const [command, field, what] of [
    [['MODULE', 'LIST'], 'name', 'module'],
    [['FUNCTION', 'LIST'], 'library_name', 'function library'],
  ] as const) {
    const [has, lacks] = await Promise.all([named(source, command, field), named(target, command, field)])
    const missing = [...has].filter((name) => !lacks.has(name))
    if (missing.length > 0) {
      throw new ShardctlError(
        `${sourceWhere} has the ${what}${missing.length > 1 ? 's' : ''} ${missing.join(', ')}, which ${targetWhere} lacks: nothing was copied`,
        {code: 'EEXTENSION', exitCode: ExitCode.usage, hint: `load the same ${what} on the target first`},
      )
    }
  }
}

/** The names a listing command gives (MODULE LIST, FUNCTION LIST); none when the server does not know the command. */
async function named(client: Pick<Redis, 'call'>, command: readonly string[], field: string): Promise<Set<string>> {
  const reply = (await client.call(command[0], ...command.slice(1)).catch(() => [])) as unknown[][]
  const names = new Set<string>()
  for (const item of reply) {
    const at = item.findIndex((v) => String(v) === field)
    if (at !== -1) names.add(String(item[at + 1]))
  }
  return names
}

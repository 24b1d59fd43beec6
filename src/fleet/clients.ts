import type {Redis} from 'ioredis'

/** The connections an instance has, from CLIENT LIST: who uses which database. */

export interface ClientInfo {
  id: number
  addr: string
  name: string
  db: number
  /** The last command it ran ("NULL" before any). */
  cmd: string
}

/**
 * What a client library sends by itself when it (re)connects: a connection whose last
 * command is one of these has done no work of the application's yet.
 */
const SETUP_COMMAND =
  /^(null|select|auth|hello|ping|info|echo|readonly|readwrite|quit|reset|command(\|.*)?|client\|(setname|setinfo|id|getname|tracking|no-evict|no-touch))$/i

/** Whether the connection has run an application command, not only its library's set-up. */
export function hasWorked(client: ClientInfo): boolean {
  return !SETUP_COMMAND.test(client.cmd)
}

/**
 * Whether a command (as CLIENT LIST names it: "set", "config|set") can change data, from
 * the flags COMMAND INFO gives it: "write", or "may_replicate" (scripts, functions).
 * EXEC runs whatever was queued; a command the server does not describe counts as a
 * write: when in doubt, a stray.
 */
export function isWriteCommand(name: string, flags: string[] | undefined): boolean {
  if (flags === undefined || name.toLowerCase() === 'exec') return true
  return flags.includes('write') || flags.includes('may_replicate')
}

/** isWriteCommand with the flags asked of the instance once per command name. */
export function writeCommandsOf(client: Redis): (name: string) => Promise<boolean> {
  const known = new Map<string, boolean>()
  return async (name) => {
    const key = name.toLowerCase()
    if (!known.has(key)) {
      const reply = (await client.call('COMMAND', 'INFO', key).catch(() => [null])) as ([string, number, string[]] | null)[]
      known.set(key, isWriteCommand(key, reply[0]?.[2]))
    }
    return known.get(key)!
  }
}

/** One CLIENT LIST line: `id=7 addr=127.0.0.1:5301 laddr=... name= age=0 ... db=3 ...` */
export function parseClientLine(line: string): ClientInfo | undefined {
  const fields: Record<string, string> = {}
  for (const part of line.trim().split(' ')) {
    const eq = part.indexOf('=')
    if (eq > 0) fields[part.slice(0, eq)] = part.slice(eq + 1)
  }
  const id = Number(fields.id)
  if (!Number.isInteger(id)) return undefined
  return {id, addr: fields.addr ?? '', name: fields.name ?? '', db: Number(fields.db ?? 0), cmd: fields.cmd ?? 'NULL'}
}

export async function listClients(client: Redis, type: 'normal' | 'pubsub' = 'normal'): Promise<ClientInfo[]> {
  const list = (await client.call('CLIENT', 'LIST', 'TYPE', type)) as string
  return list
    .split('\n')
    .map(parseClientLine)
    .filter((c): c is ClientInfo => c !== undefined)
}

/** Application connections using one of these databases (never our own). */
export async function clientsOn(client: Redis, dbs: Set<number>): Promise<ClientInfo[]> {
  const own = Number(await client.call('CLIENT', 'ID'))
  return (await listClients(client)).filter((c) => c.id !== own && dbs.has(c.db))
}

/** Close connections by id; one that closed meanwhile is not an error. */
export async function killClients(client: Redis, ids: number[]): Promise<void> {
  await Promise.all(ids.map((id) => client.call('CLIENT', 'KILL', 'ID', String(id)).catch(() => undefined)))
}

/**
 * Cut every connection of another run of shardctl, known by its connection name.
 * A run whose lease was lost cannot reconnect (its connections never retry), so once
 * cut it can no longer act on this instance, whatever it had planned.
 */
export async function cutConnectionsNamed(client: Redis, name: string, except?: number): Promise<number> {
  const theirs = [...(await listClients(client, 'normal')), ...(await listClients(client, 'pubsub'))].filter(
    (c) => c.name === name && c.id !== except,
  )
  await killClients(
    client,
    theirs.map((c) => c.id),
  )
  return theirs.length
}

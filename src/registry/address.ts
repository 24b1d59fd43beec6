import {usageError} from '../errors.js'

/**
 * Where a shard lives: an instance (host:port) and a database number.
 * Credentials are kept apart so they can never be written into the registry.
 */
export interface ShardAddress {
  host: string
  port: number
  db: number
}

export interface Credentials {
  username?: string
  password?: string
  tls?: boolean
}

export type ConnectTarget = ShardAddress & Credentials

/** An instance: where one redis-server listens. The registry names it host:port (instanceKey). */
export interface Endpoint {
  host: string
  port: number
}

const MAX_DB = 1_000_000

function parsePort(text: string, input: string): number {
  if (!/^\d{1,5}$/.test(text)) throw usageError(`invalid port in address "${input}"`, 'use host:port/db, e.g. 10.0.0.5:6379/3')
  const port = Number(text)
  if (port < 1 || port > 65_535) throw usageError(`port ${port} out of range in address "${input}"`, 'a port is 1-65535')
  return port
}

function parseDb(text: string | undefined, input: string): number {
  if (text === undefined || text === '') return 0
  if (!/^\d{1,7}$/.test(text) || Number(text) >= MAX_DB) {
    throw usageError(`invalid database number in address "${input}"`, 'the part after / is a database number, e.g. host:6379/3')
  }
  return Number(text)
}

function checkHost(host: string, input: string): string {
  if (host === '') throw usageError(`missing host in address "${input}"`, 'use host:port/db, e.g. 10.0.0.5:6379/3')
  if (host.includes(':')) {
    if (!/^[0-9A-Fa-f:.]+(%[\w.-]+)?$/.test(host)) throw usageError(`invalid IPv6 host in address "${input}"`)
  } else if (!/^[A-Za-z0-9_.-]+$/.test(host)) {
    throw usageError(`invalid host in address "${input}"`, 'a host is a name or an IP address')
  }
  return host
}

const SCHEME = /^([a-z][a-z0-9+.-]*):\/\//i

/**
 * Hide the credentials of a redis:// URL before it is echoed in a message. The
 * credentials run to the *last* "@" of the URL, so a password holding "/", "#", "?",
 * "@", ":" or spaces is hidden whole; the user name (up to the first ":") is kept.
 */
export function redact(input: string): string {
  return input.replace(/(rediss?:\/\/)(.*)@/gi, (_m, scheme: string, auth: string) => {
    const colon = auth.indexOf(':')
    return colon === -1 ? `${scheme}***@` : `${scheme}${auth.slice(0, colon)}:***@`
  })
}

/**
 * Parse `host:port/db`, `[v6]:port/db` or a `redis://` / `rediss://` URL.
 * Port is required for the plain form (a shard address without a port is almost certainly a typo);
 * URLs default to 6379 as redis-cli does.
 */
export function parseAddress(input: string): ConnectTarget {
  const text = input.trim()
  if (text === '') throw usageError('empty address', 'use host:port/db, e.g. 10.0.0.5:6379/3')
  if (SCHEME.test(text)) return parseUrl(text)
  if (text.includes('@')) {
    throw usageError(
      `invalid address "${redact(`redis://${text}`).slice('redis://'.length)}"`,
      'credentials go in a URL: redis://user:password@host:port/db',
    )
  }

  const match = /^(?:\[([^\]]*)\]|([^:/[\]]*)):([^/]*)(?:\/(.*))?$/.exec(text)
  if (!match) {
    throw usageError(`invalid address "${text}"`, 'use host:port/db (IPv6 as [::1]:6379/3) or redis://host:port/db')
  }
  const host = checkHost(match[1] ?? match[2], text)
  return {host, port: parsePort(match[3], text), db: parseDb(match[4], text)}
}

/**
 * A redis:// URL, parsed by hand: WHATWG URL parsing would cut a password holding
 * "#", "?" or "/" in the wrong place (and then echo part of it as a host). Everything
 * up to the last "@" is the credentials; messages only ever show the URL without them.
 */
function parseUrl(text: string): ConnectTarget {
  const [, scheme] = SCHEME.exec(text)!
  const rest = text.slice(scheme.length + 3)
  const at = rest.lastIndexOf('@')
  const auth = at === -1 ? undefined : rest.slice(0, at)
  const where = at === -1 ? rest : rest.slice(at + 1)
  const safe = `${scheme}://${auth === undefined ? '' : auth.includes(':') ? `${auth.slice(0, auth.indexOf(':'))}:***@` : '***@'}${where}`
  if (scheme.toLowerCase() !== 'redis' && scheme.toLowerCase() !== 'rediss') {
    throw usageError(`unsupported scheme "${scheme}" in "${safe}"`, 'use redis:// or rediss://')
  }
  const match = /^(?:\[([^\]]*)\]|([^:/?#[\]]*))(?::([^/?#]*))?(?:\/([^?#]*))?(?:[?#].*)?$/.exec(where)
  if (!match) throw usageError(`invalid URL "${safe}"`, 'use redis://[user:password@]host:port/db')
  const host = checkHost(match[1] ?? match[2], safe)
  const port = match[3] === undefined || match[3] === '' ? 6379 : parsePort(match[3], safe)
  const target: ConnectTarget = {host, port, db: parseDb(match[4], safe)}
  if (auth !== undefined) {
    const decode = (part: string) => {
      try {
        return decodeURIComponent(part)
      } catch {
        throw usageError(`invalid escape in the credentials of "${safe}"`, 'percent-encode "%" in the user and password as %25')
      }
    }
    const colon = auth.indexOf(':')
    const username = colon === -1 ? '' : decode(auth.slice(0, colon))
    const password = decode(colon === -1 ? auth : auth.slice(colon + 1))
    if (username !== '') target.username = username
    if (password !== '') target.password = password
  }
  if (scheme.toLowerCase() === 'rediss') target.tls = true
  return target
}

/** Parse an instance (`host:port`); a database part is refused because an instance holds them all. */
export function parseInstance(input: string): ConnectTarget {
  const target = parseAddress(input)
  if (/\/\d+\s*$/.test(input) && !/^rediss?:\/\//i.test(input.trim())) {
    throw usageError(`"${input}" names a database, but an instance was expected`, 'give host:port without /db')
  }
  return target
}

function formatHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host
}

/** The registry form: always `host:port/db`, never credentials. */
export function formatAddress(address: ShardAddress): string {
  return `${formatHost(address.host)}:${address.port}/${address.db}`
}

/** An instance's key: `host:port`. */
export function instanceKey(address: {host: string; port: number}): string {
  return `${formatHost(address.host)}:${address.port}`
}

/** Every spelling of this machine's loopback: one host. */
const LOOPBACK = new Set(['localhost', '127.0.0.1', '::1', '::ffff:7f00:1'])

/**
 * A host as one name, whatever its spelling: letters in one case, IPv4 and IPv6 in
 * their normal form (0:0:0:0:0:0:0:1 is ::1, 127.1 is 127.0.0.1), loopback as
 * 127.0.0.1. What two spellings cannot tell (two names of one server) the server's
 * run_id can, where it answers (fleet/identity.ts).
 */
export function canonicalHost(host: string): string {
  const lower = host.toLowerCase().replace(/\.$/, '')
  let normal = lower
  try {
    normal = new URL(`http://${formatHost(lower)}/`).hostname.replace(/^\[(.*)\]$/, '$1')
  } catch {
    // not a host the URL parser takes (an IPv6 zone): its lower case is its name
  }
  return LOOPBACK.has(normal) ? '127.0.0.1' : normal
}

/** An instance as one name, for comparing: see canonicalHost. */
export function canonicalInstance(address: {host: string; port: number}): string {
  return instanceKey({host: canonicalHost(address.host), port: address.port})
}

/** A database as one name, for comparing: see canonicalHost. */
export function canonicalDatabase(address: ShardAddress): string {
  return `${canonicalInstance(address)}/${address.db}`
}

export function sameInstance(a: {host: string; port: number}, b: {host: string; port: number}): boolean {
  return canonicalInstance(a) === canonicalInstance(b)
}

/** Whether two spellings name one host (see canonicalHost). */
export function sameHost(a: string, b: string): boolean {
  return a === b || canonicalHost(a) === canonicalHost(b)
}

/** The instance a name made by instanceKey (or given as host:port) stands for. */
export function endpointOf(key: string): Endpoint {
  const {host, port} = parseInstance(key)
  return {host, port}
}

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

/**
 * A Redis reached through Sentinel: the Sentinels to ask, and the name they know its
 * master by. Which instance is the master is decided at each connection (a majority
 * of the Sentinels agreeing, the instance answering ROLE as a master), never stored.
 */
export interface SentinelRoute {
  sentinels: Endpoint[]
  name: string
  /** The Sentinels' own credentials (SHARDCTL_SENTINEL_USER / _PASSWORD), never the registry's. */
  credentials?: Credentials
}

/**
 * Where to connect: an instance (host, port, db) and how. With `sentinel`, host and
 * port are where the master was last found (empty until the first connection).
 */
export type ConnectTarget = ShardAddress & Credentials & {sentinel?: SentinelRoute}

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
const SENTINEL_SCHEME = /^(rediss?)\+sentinel:\/\//i

/** The port a Sentinel listens on unless told otherwise. */
export const SENTINEL_PORT = 26379

/**
 * Hide the credentials of a redis:// URL before it is echoed in a message. The
 * credentials run to the *last* "@" of the URL, so a password holding "/", "#", "?",
 * "@", ":" or spaces is hidden whole; the user name (up to the first ":") is kept.
 */
export function redact(input: string): string {
  return input.replace(/(rediss?(?:\+sentinel)?:\/\/)(.*)@/gi, (_m, scheme: string, auth: string) => {
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
  const safe = `${scheme}://${hiddenAuth(auth)}${where}`
  if (scheme.toLowerCase() !== 'redis' && scheme.toLowerCase() !== 'rediss') {
    throw usageError(`unsupported scheme "${scheme}" in "${safe}"`, 'use redis:// or rediss://')
  }
  const match = /^(?:\[([^\]]*)\]|([^:/?#[\]]*))(?::([^/?#]*))?(?:\/([^?#]*))?(?:[?#].*)?$/.exec(where)
  if (!match) throw usageError(`invalid URL "${safe}"`, 'use redis://[user:password@]host:port/db')
  const host = checkHost(match[1] ?? match[2], safe)
  const port = match[3] === undefined || match[3] === '' ? 6379 : parsePort(match[3], safe)
  const target: ConnectTarget = {host, port, db: parseDb(match[4], safe)}
  if (auth !== undefined) Object.assign(target, decodeCredentials(auth, safe))
  if (scheme.toLowerCase() === 'rediss') target.tls = true
  return target
}

/** How a URL's credentials look once hidden: the user name kept, the password never shown. */
function hiddenAuth(auth: string | undefined): string {
  if (auth === undefined) return ''
  return auth.includes(':') ? `${auth.slice(0, auth.indexOf(':'))}:***@` : '***@'
}

function decodeCredentials(auth: string, safe: string): Credentials {
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
  return {...(username === '' ? {} : {username}), ...(password === '' ? {} : {password})}
}

/**
 * The registry's address: anything parseAddress takes, or the registry behind Sentinel,
 * `redis+sentinel://[user:password@]host1:26379,host2:26379,host3/<name>[/db]` (and
 * `rediss+sentinel://` for TLS). The credentials are the registry's; the Sentinels'
 * come from SHARDCTL_SENTINEL_USER / SHARDCTL_SENTINEL_PASSWORD.
 */
export function parseRegistryAddress(input: string): ConnectTarget {
  const text = input.trim()
  const scheme = SENTINEL_SCHEME.exec(text)
  if (!scheme) return parseAddress(text)
  const rest = text.slice(scheme[0].length)
  const at = rest.lastIndexOf('@')
  const auth = at === -1 ? undefined : rest.slice(0, at)
  const where = at === -1 ? rest : rest.slice(at + 1)
  const safe = `${scheme[0]}${hiddenAuth(auth)}${where}`
  const hint = 'use redis+sentinel://[user:password@]host1:26379,host2:26379,host3:26379/<master name>[/db]'
  const match = /^([^/?#]+)\/([^/?#]+)(?:\/([^/?#]*))?\/?$/.exec(where)
  if (!match) throw usageError(`invalid Sentinel URL "${safe}"`, hint)
  const sentinels = match[1].split(',').map((part) => parseSentinelAddress(part, safe))
  const name = match[2]
  if (!/^[A-Za-z0-9_.:{}-]{1,128}$/.test(name))
    throw usageError(`invalid master name "${name}" in "${safe}"`, 'a name is letters, digits and _ - . : { }')
  const keys = sentinels.map(instanceKey)
  const twice = keys.find((k, i) => keys.indexOf(k) !== i)
  if (twice) throw usageError(`Sentinel ${twice} is named twice in "${safe}"`, hint)
  return {
    host: '',
    port: 0,
    db: parseDb(match[3], safe),
    ...(auth === undefined ? {} : decodeCredentials(auth, safe)),
    ...(scheme[1].toLowerCase() === 'rediss' ? {tls: true} : {}),
    sentinel: {sentinels, name},
  }
}

/** A Sentinel: `host[:port]` or `[v6][:port]`, port 26379 unless given. */
export function parseSentinelAddress(input: string, within = input): Endpoint {
  const text = input.trim()
  const match = /^(?:\[([^\]]*)\]|([^:/[\]]*))(?::(\d*))?$/.exec(text)
  if (!match || text.includes('@'))
    throw usageError(`invalid Sentinel address "${text}" in "${within}"`, 'use host:port, e.g. 10.0.0.7:26379')
  const host = checkHost(match[1] ?? match[2], within)
  return {host, port: match[3] === undefined || match[3] === '' ? SENTINEL_PORT : parsePort(match[3], within)}
}

/** A registry target for a message: its address, or its Sentinels and name; never credentials. */
export function describeTarget(target: ConnectTarget): string {
  if (!target.sentinel) return formatAddress(target)
  const scheme = target.tls ? 'rediss+sentinel' : 'redis+sentinel'
  return `${scheme}://${target.sentinel.sentinels.map(instanceKey).join(',')}/${target.sentinel.name}/${target.db}`
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

/**
 * A registry as one name, for comparing: its database (canonicalDatabase), or behind
 * Sentinel the master name, the db and its Sentinels in one order (any one of them
 * leads to the same registry, so the set is what names it).
 */
export function canonicalRegistry(target: ConnectTarget): string {
  if (!target.sentinel) return canonicalDatabase(target)
  const sentinels = target.sentinel.sentinels.map(canonicalInstance).sort()
  return `sentinel:${sentinels.join(',')}/${target.sentinel.name}/${target.db}`
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

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

/**
 * Redact the password of a redis:// URL before it is echoed in a message.
 */
export function redact(input: string): string {
  return input.replace(/^(rediss?:\/\/)([^@/]*)@/i, (_m, scheme: string, auth: string) => {
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
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) return parseUrl(text)

  const match = /^(?:\[([^\]]*)\]|([^:/[\]]*)):([^/]*)(?:\/(.*))?$/.exec(text)
  if (!match) {
    throw usageError(`invalid address "${text}"`, 'use host:port/db (IPv6 as [::1]:6379/3) or redis://host:port/db')
  }
  const host = checkHost(match[1] ?? match[2], text)
  return {host, port: parsePort(match[3], text), db: parseDb(match[4], text)}
}

function parseUrl(text: string): ConnectTarget {
  const safe = redact(text)
  let url: URL
  try {
    url = new URL(text)
  } catch {
    throw usageError(`invalid URL "${safe}"`, 'use redis://[user:password@]host:port/db')
  }
  const scheme = url.protocol.toLowerCase()
  if (scheme !== 'redis:' && scheme !== 'rediss:') {
    throw usageError(`unsupported scheme "${scheme.replace(/:$/, '')}" in "${safe}"`, 'use redis:// or rediss://')
  }
  const host = checkHost(url.hostname.replace(/^\[|\]$/g, ''), safe)
  const port = url.port === '' ? 6379 : parsePort(url.port, safe)
  const db = parseDb(url.pathname.replace(/^\//, ''), safe)
  const target: ConnectTarget = {host, port, db}
  const decode = (part: string) => {
    try {
      return decodeURIComponent(part)
    } catch {
      throw usageError(`invalid escape in the credentials of "${safe}"`, 'percent-encode special characters in the user and password')
    }
  }
  if (url.username) target.username = decode(url.username)
  if (url.password) target.password = decode(url.password)
  if (scheme === 'rediss:') target.tls = true
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

export function sameInstance(a: {host: string; port: number}, b: {host: string; port: number}): boolean {
  return instanceKey(a) === instanceKey(b)
}

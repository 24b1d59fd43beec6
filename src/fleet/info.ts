import {sameHost as sameSpelledHost} from '../registry/address.js'

/** Parsing of the INFO command's text. */

export type InfoFields = Record<string, string>

export function parseInfo(text: string): InfoFields {
  const fields: InfoFields = {}
  for (const line of text.split(/\r?\n/)) {
    if (line === '' || line.startsWith('#')) continue
    const colon = line.indexOf(':')
    if (colon > 0) fields[line.slice(0, colon)] = line.slice(colon + 1)
  }
  return fields
}

/** `k1=v1,k2=v2` as found in INFO's keyspace and replica lines. */
export function parseList(value: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const part of value.split(',')) {
    const eq = part.indexOf('=')
    if (eq > 0) out[part.slice(0, eq)] = part.slice(eq + 1)
  }
  return out
}

/** Keys per database, from INFO keyspace: db3:keys=10,expires=0,avg_ttl=0 */
export function parseKeyspace(info: InfoFields): Map<number, number> {
  const keys = new Map<number, number>()
  for (const [field, value] of Object.entries(info)) {
    const match = /^db(\d+)$/.exec(field)
    if (match) keys.set(Number(match[1]), Number(parseList(value).keys ?? 0))
  }
  return keys
}

export interface ConnectedReplica {
  host: string
  port: number
  state: string
  offset: number
  lagSeconds: number
}

export interface ReplicationInfo {
  role: 'master' | 'slave' | string
  /** For a replica: whom it follows. */
  masterHost?: string
  masterPort?: number
  linkUp?: boolean
  /** For a replica: seconds since the last interaction with its master. */
  lastIoSeconds?: number
  /** True while a replica is still loading its first copy. */
  syncInProgress?: boolean
  /** The replication offset this instance has processed. */
  offset: number
  /** For a master: its replicas as it sees them. */
  replicas: ConnectedReplica[]
  replid: string
}

export function parseReplication(info: InfoFields): ReplicationInfo {
  const role = info.role ?? 'unknown'
  const replication: ReplicationInfo = {
    role,
    offset: Number(info.slave_repl_offset ?? info.master_repl_offset ?? 0),
    replicas: [],
    replid: info.master_replid ?? '',
  }
  if (role === 'slave') {
    replication.masterHost = info.master_host
    replication.masterPort = Number(info.master_port)
    replication.linkUp = info.master_link_status === 'up'
    replication.lastIoSeconds = Number(info.master_last_io_seconds_ago ?? -1)
    replication.syncInProgress = info.master_sync_in_progress === '1'
  }
  for (const [field, value] of Object.entries(info)) {
    if (!/^slave\d+$/.test(field)) continue
    const r = parseList(value)
    replication.replicas.push({
      host: r.ip,
      port: Number(r.port),
      state: r.state,
      offset: Number(r.offset ?? 0),
      lagSeconds: Number(r.lag ?? -1),
    })
  }
  return replication
}

/** Whether a host an instance reports (INFO's master_host, a replica's ip) is the one the registry names. */
export function sameHost(reported: string | undefined, registered: string): boolean {
  return reported !== undefined && sameSpelledHost(reported, registered)
}

import type {Redis} from 'ioredis'

import {ShardctlError} from '../errors.js'
import type {ConnectionPool} from '../fleet/connect.js'
import {endpointOf, formatAddress, instanceKey, parseAddress} from '../registry/address.js'
import {Change, type Registry} from '../registry/registry.js'
import {plural} from '../ui/terminal.js'

/**
 * Writes a client with stale routing got acknowledged on a moved database after a
 * split's cut-over: the split keeps them where they landed and records them in
 * P._strays (source host:port/db -> shard). shards:reconcile moves those keys to where
 * the registry routes the shard now, key by key with MIGRATE (atomic per key: a key
 * is deleted on the source only once the destination has it). A key the destination
 * already has is a conflict: left on the source and named, unless --replace.
 */

export interface StrayEntry {
  /** Where the writes landed: host:port/db. */
  source: string
  shard: string
  /** Keys when recorded. */
  recorded: number
  recordedAt?: string
}

export interface ReconcileRow extends StrayEntry {
  /** Where the shard lives now (the destination), or null if it left the registry. */
  to: string | null
  /** Keys found on the source now. */
  keys: number
  moved: number
  /** Keys the destination already has (up to 100 named). */
  conflicts: string[]
  conflictCount: number
  /** The source database is empty: its record is gone. */
  done: boolean
}

export async function readStrays(registry: Registry): Promise<StrayEntry[]> {
  const raw = await registry.guard(registry.keys.strays, 'a hash', () => registry.client.hgetall(registry.keys.strays))
  return Object.entries(raw)
    .map(([source, json]) => {
      let parsed: {shard?: string; keys?: number; at?: string} = {}
      try {
        parsed = JSON.parse(json)
      } catch {
        // an unreadable record still names its database
      }
      return {source, shard: String(parsed.shard ?? ''), recorded: Number(parsed.keys ?? 0), recordedAt: parsed.at}
    })
    .sort((a, b) => a.source.localeCompare(b.source))
}

const BATCH = 500
const MIGRATE_TIMEOUT_MS = 5000

/** A connection of our own on one database (SCAN and EXISTS need it selected). */
async function onDb(pool: ConnectionPool, address: string): Promise<Redis> {
  const {host, port, db} = parseAddress(address)
  const client = await pool.dedicated({host, port})
  await client.select(db)
  return client
}

export async function reconcileStrays(
  registry: Registry,
  pool: ConnectionPool,
  options: {dryRun: boolean; replace: boolean; onProgress?: (line: string) => void},
): Promise<ReconcileRow[]> {
  const entries = await readStrays(registry)
  const {shards} = await registry.snapshot()
  const rows: ReconcileRow[] = []
  for (const entry of entries) {
    const shard = shards.find((s) => s.id === entry.shard)
    const row: ReconcileRow = {
      ...entry,
      to: shard ? formatAddress(shard.master) : null,
      keys: 0,
      moved: 0,
      conflicts: [],
      conflictCount: 0,
      done: false,
    }
    rows.push(row)
    if (!shard) continue
    if (row.to === entry.source)
      throw new ShardctlError(`shard ${shard.id} is routed to ${entry.source} again: its strays are already where it lives`, {
        code: 'ECONFLICT',
        hint: `remove the record: redis-cli HDEL ${registry.keys.strays} ${entry.source}`,
      })
    const source = await onDb(pool, entry.source)
    const destination = await onDb(pool, row.to!)
    row.keys = await source.dbsize()
    const to = parseAddress(row.to!)
    const auth = pool.credentialsOf(to)
    const authArgs =
      auth.password === undefined ? [] : auth.username === undefined ? ['AUTH', auth.password] : ['AUTH2', auth.username, auth.password]
    let cursor = '0'
    do {
      const [next, keys] = await source.scan(cursor, 'COUNT', String(BATCH))
      cursor = next
      if (keys.length === 0) continue
      const present = await Promise.all(keys.map((k) => destination.exists(k)))
      const free = keys.filter((_, i) => present[i] === 0)
      const taken = keys.filter((_, i) => present[i] !== 0)
      row.conflictCount += taken.length
      if (!options.replace) row.conflicts.push(...taken.slice(0, Math.max(0, 100 - row.conflicts.length)))
      if (options.dryRun) continue
      const move = async (batch: string[], replace: boolean) => {
        if (batch.length === 0) return
        const reply = await source.call(
          'MIGRATE',
          to.host,
          String(to.port),
          '',
          String(to.db),
          String(MIGRATE_TIMEOUT_MS),
          ...(replace ? ['REPLACE'] : []),
          ...authArgs,
          'KEYS',
          ...batch,
        )
        if (reply !== 'OK' && reply !== 'NOKEY')
          throw new ShardctlError(`MIGRATE from ${entry.source} to ${row.to} answered ${String(reply)}`, {code: 'EFAILED'})
        row.moved += batch.length
      }
      await move(free, false).catch(async (error: Error) => {
        // A key written at the destination meanwhile: move the rest one by one.
        if (!/BUSYKEY/.test(error.message)) throw error
        for (const key of free) {
          await move([key], false).catch((e: Error) => {
            if (!/BUSYKEY/.test(e.message)) throw e
            row.conflictCount++
            if (row.conflicts.length < 100) row.conflicts.push(key)
          })
        }
      })
      if (options.replace) await move(taken, true)
      options.onProgress?.(`${entry.source}: ${row.moved.toLocaleString('en-US')} of ${plural(row.keys, 'key')} moved to ${row.to}`)
    } while (cursor !== '0')
    if (!options.dryRun && (await source.dbsize()) === 0) {
      await registry.apply(new Change().hdel(registry.keys.strays, [entry.source]), 'strays.reconciled', {
        source: entry.source,
        shard: entry.shard,
        to: row.to,
        moved: row.moved,
      })
      row.done = true
    }
  }
  return rows
}

/** The instance part of a stray record, for checks that probe instances. */
export function strayInstance(entry: StrayEntry): string {
  return instanceKey(endpointOf(entry.source.replace(/\/\d+$/, '')))
}

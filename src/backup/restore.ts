import {rmSync} from 'node:fs'

import type {Redis} from 'ioredis'

import {ExitCode, ShardctlError, usageError} from '../errors.js'
import type {ConnectionPool} from '../fleet/connect.js'
import {parseInfo, parseKeyspace, parseKeyspaceExpires, parseReplication} from '../fleet/info.js'
import {databaseCount, flushDb} from '../fleet/instance.js'
import {
  type Endpoint,
  type ShardAddress,
  canonicalDatabase,
  canonicalInstance,
  endpointOf,
  formatAddress,
  instanceKey,
  parseAddress,
  sameInstance,
} from '../registry/address.js'
import {nodesOf} from '../ops/cutover.js'
import {type DocumentShard, parseDocument} from '../registry/document.js'
import {type Registry, type RegistryEvent, type ShardNodes, type ShardRepoint, compareIds} from '../registry/registry.js'
import type {Shard} from '../registry/schema.js'
import {checkRegistryDocument, fetchSnapshot} from './fetch.js'
import {DEFAULT_COPY, compareSample, copyDatabase} from './copy.js'
import type {Destination} from './destination.js'
import {type BackupEntry, listBackups, selectBackups} from './layout.js'
import {type LoadedSnapshot, loadSnapshot, localServer, scratchDirectory} from './loader.js'
import {type Manifest, type ManifestInstance, backupRegistry, manifestInstance} from './manifest.js'
import {highestRdbReadBy} from './versions.js'

/**
 * shards:restore: one shard (or every shard of an instance) brought back from a backup
 * into any instance and any database, as named steps:
 *
 *   find      the backup (--backup, or the newest at --at or before), and in its own
 *             registry.json, which instance and database held the shard then
 *   check     the target: a master, with the database, empty and used by no shard
 *             (else refused, unless --replace); able to read the snapshot's RDB
 *             version — all before anything is fetched or copied
 *   fetch     the snapshot, its sha256 and CRC64 checked against the manifest as it
 *             streams into a private directory
 *   load      a temporary local redis-server loads it; keys per database must be the
 *             manifest's
 *   copy      that database into the target with DUMP / RESTORE … ABSTTL
 *   verify    keys on the target as copied (less those expired meanwhile), a sample
 *             of keys compared value by value with the snapshot
 *   route     (--route) the shard points at its new copy: one compare-and-set step of
 *             the registry, with its event
 */
export interface RestoreRequest {
  /** A shard id, or an instance (host:port) whose every shard is restored. */
  subject: {shard: string} | {instance: Endpoint}
  backup?: string
  at?: Date
  /** Shard: host:port/db; instance: host:port (each shard keeps its database number). */
  to: ShardAddress
  replace: boolean
  route: boolean
  sample: number
  /** The registry this runs against: never a target, whatever --replace says. */
  fleet: RestoreFleet
}

/** The registry as the command reached it. */
export interface RestoreFleet {
  /** As one name (canonicalRegistry): compared with what a backup records of its registry. */
  registry: string
  prefix: string
  /** Its database number. */
  registryDb: number
  /** Its instance, when reached directly (behind Sentinel, it is known by its run_id alone). */
  registryInstance?: Endpoint
}

export interface RestoreCopy {
  shard: string
  fromDb: number
  toDb: number
  /** Where it goes: host:port/db. */
  to: string
  /** Keys the backup holds for it. */
  keys: number
  /** What the target database holds now, when something: keys, and the shards the registry routes there. */
  conflict?: {keys: number; shards: string[]}
}

export interface RestorePlan {
  backup: {
    id: string
    time: string
    location: string
    /** The fleet it was taken of: its registry as far as the manifest tells (null: older, it does not), and its prefix. */
    of: {registry: string | null; prefix: string}
    /** When it was taken of another registry or prefix (named with --backup): what differs. */
    otherFleet?: string
  }
  /** Newer backups that held the subject but could not serve (their registry.json does not match the manifest). */
  skipped: SkippedBackup[]
  /** The instance the shards lived on, then, and the node the snapshot came from. */
  instance: string
  node: string
  file: string
  bytes: number
  rdbVersion: number
  target: string
  targetVersion: string
  copies: RestoreCopy[]
  replace: boolean
  /** With --route: the registry change (shards repointed, or added back when the registry lost them). */
  routing?: {
    repoint: ShardRepoint[]
    /** Shards the registry lost: added back with the weight and fields the backup has. */
    add: {id: string; weight: number; extra: Record<string, string>; after: ShardNodes}[]
    /** The shards whose master is on the target instance now: the change applies only while that holds. */
    targetShards: string[]
  }
}

export interface RestoredCopy extends RestoreCopy {
  copied: number
  expired: number
  /** Keys on the target afterwards. */
  onTarget: number
  sampled: number
}

export interface RestoreResult {
  plan: RestorePlan
  applied: boolean
  copies: RestoredCopy[]
  routed?: RegistryEvent
}

export interface RestoreEvents {
  onStep?: (step: string) => void
  onBytes?: (bytes: number, total: number) => void
  onKeys?: (copy: RestoreCopy, copied: number) => void
}

/** A backup passed over in favour of an older one, and why. */
export interface SkippedBackup {
  id: string
  reason: string
}

/**
 * Where the backup has the subject: the backup, its manifest entry for the instance, and
 * the shards with their dbs then. A backup whose registry.json does not match its manifest
 * cannot say where the shard lived: named with --backup, it is refused with that reason;
 * otherwise an older one serves, and the newer ones passed over are said.
 */
async function findInBackups(
  destination: Destination,
  request: RestoreRequest,
): Promise<{backup: BackupEntry; entry: ManifestInstance; shards: DocumentShard[]; skipped: SkippedBackup[]}> {
  const all = await listBackups(destination)
  let candidates = request.backup === undefined ? all : selectBackups(all, request.backup, destination.location)
  candidates = candidates.filter((b) => b.manifest && (request.at === undefined || b.time.getTime() <= request.at.getTime()))
  const what = 'shard' in request.subject ? `shard ${request.subject.shard}` : `instance ${instanceKey(request.subject.instance)}`
  // Chosen by time, only backups of this registry and prefix; named, this fleet's parts first.
  const ours = candidates.filter((b) => otherFleet(b.manifest!, request.fleet) === undefined)
  const theirs = candidates.filter((b) => !ours.includes(b))
  const skipped: SkippedBackup[] = []
  for (const backup of request.backup === undefined ? ours : [...ours, ...theirs]) {
    const manifest = backup.manifest!
    const document = await checkRegistryDocument(destination, manifest)
    if (document.text === undefined) {
      if (!recordsSubject(manifest, request.subject)) continue
      const reason = document.problems.join('; ')
      if (request.backup !== undefined)
        throw new ShardctlError(`backup ${backup.id} at ${destination.location} cannot serve a restore of ${what}: ${reason}`, {
          code: 'ECHECKSUM',
          exitCode: ExitCode.unhealthy,
          hint: 'it cannot say where the shard lived: do not trust this backup; restore from another one (backups:list); nothing was changed',
        })
      skipped.push({id: backup.id, reason})
      continue
    }
    const shards = parseDocument(document.text).shards
    let entry: ManifestInstance | undefined
    let held: DocumentShard[]
    if ('shard' in request.subject) {
      const id = request.subject.shard
      const shard = shards.find((s) => s.id === id)
      if (!shard) continue
      // Its master's instance in any spelling: the backup grouped shards by instance canonically.
      entry = manifestInstance(manifest, parseAddress(shard.master))
      held = [shard]
    } else {
      const instance = request.subject.instance
      held = shards.filter((s) => sameInstance(parseAddress(s.master), instance))
      if (held.length === 0) continue
      entry = manifestInstance(manifest, instance)
    }
    if (entry) return {backup, entry, shards: held.sort((a, b) => compareIds(a.id, b.id)), skipped}
  }
  const where = `${request.backup === undefined ? '' : `backup ${request.backup} at `}${destination.location}${request.at ? ` before ${request.at.toISOString()}` : ''}`
  const passedOver = skipped.map((s) => `${s.id} (${s.reason})`).join(', ')
  const elsewhere = request.backup === undefined ? theirs.filter((b) => recordsSubject(b.manifest!, request.subject)) : []
  const ofThisFleet = request.backup === undefined ? ` of registry ${request.fleet.registry} and prefix ${request.fleet.prefix}` : ''
  throw new ShardctlError(`no complete backup${ofThisFleet} at ${where} holds ${what}${passedOver ? `; passed over: ${passedOver}` : ''}`, {
    code: 'ENOBACKUP',
    // What would have held it does not match its manifest: not a usage error.
    exitCode: skipped.length > 0 ? ExitCode.unhealthy : ExitCode.usage,
    hint:
      elsewhere.length > 0
        ? `backups of another fleet hold it: ${elsewhere
            .slice(0, 3)
            .map((b) => `${b.id} (${otherFleet(b.manifest!, request.fleet)!})`)
            .join(', ')}; to restore from one, name it with --backup`
        : 'see backups:list; a backup that is incomplete, or whose instance failed, cannot serve a restore',
  })
}

/**
 * Whether a backup was taken of another fleet than this one: its registry (as far as its
 * manifest tells, see backupRegistry) or its prefix differ. What differs, or undefined.
 * A backup that records no registry (an older one, of some instances only) cannot be told
 * apart by registry: its prefix decides.
 */
function otherFleet(manifest: Manifest, fleet: RestoreFleet): string | undefined {
  const recorded = backupRegistry(manifest)
  // An older manifest records the registry's instance, without its database.
  const sameRegistry =
    recorded === undefined ||
    recorded === fleet.registry ||
    (manifest.registryAddress === undefined &&
      (fleet.registryInstance === undefined || recorded === canonicalInstance(fleet.registryInstance)))
  const differs = [
    sameRegistry ? '' : `registry ${recorded} (this one is ${fleet.registry})`,
    manifest.prefix === fleet.prefix ? '' : `prefix ${manifest.prefix} (this one is ${fleet.prefix})`,
  ].filter(Boolean)
  return differs.length > 0 ? `taken of ${differs.join(' and ')}` : undefined
}

/** Whether a manifest records the subject among what it stored: the shard on one of its instances, or the instance. */
function recordsSubject(manifest: Manifest, subject: RestoreRequest['subject']): boolean {
  if ('shard' in subject) return manifest.instances.some((i) => i.shards.some((s) => s.id === subject.shard))
  return manifestInstance(manifest, subject.instance) !== undefined
}

export async function planRestore(
  registry: Registry,
  pool: ConnectionPool,
  destination: Destination,
  request: RestoreRequest,
): Promise<RestorePlan> {
  const {backup, entry, shards, skipped} = await findInBackups(destination, request)
  const manifest = backup.manifest!
  const target: Endpoint = {host: request.to.host, port: request.to.port}
  const targetKey = instanceKey(target)
  const copies: RestoreCopy[] = shards.map((s) => {
    const fromDb = parseAddress(s.master).db
    const toDb = 'shard' in request.subject ? request.to.db : fromDb
    return {shard: s.id, fromDb, toDb, to: formatAddress({...target, db: toDb}), keys: entry.keys[String(fromDb)] ?? 0}
  })

  if (request.fleet.registryInstance && sameInstance(request.fleet.registryInstance, target)) refuseRegistry(request.fleet, copies)
  // The target: a master that reads this RDB version, with the databases, empty and unused.
  let client: Redis
  try {
    client = await pool.get(target)
  } catch (error) {
    throw new ShardctlError(`cannot reach the target ${targetKey}: ${(error as Error).message}`, {code: 'EUNREACHABLE'})
  }
  const info = parseInfo(`${await client.info('server')}\n${await client.info('replication')}\n${await client.info('keyspace')}`)
  await refuseRegistryByRunId(registry, request.fleet, copies, info.run_id)
  const targetVersion = info.redis_version ?? 'unknown'
  if (parseReplication(info).role !== 'master')
    throw usageError(
      `the target ${targetKey} is a replica`,
      'restore into a master: a replica refuses writes, and its master would overwrite them',
    )
  refuseUnreadable(entry, targetKey, targetVersion, (await localServer()).reads)
  const databases = await databaseCount(client, target)
  const tooHigh = copies.find((c) => c.toDb >= databases)
  if (tooHigh) throw usageError(`database ${tooHigh.toDb} does not exist on ${targetKey} (it has ${databases}: 0 to ${databases - 1})`)
  const keys = parseKeyspace(info)
  const {shards: live} = await registry.snapshot()
  const users = new Map<string, string[]>()
  for (const s of live)
    for (const node of [s.master, ...s.replicas, ...s.persist])
      users.set(canonicalDatabase(node), [...(users.get(canonicalDatabase(node)) ?? []), s.id])
  for (const copy of copies) {
    const held = keys.get(copy.toDb) ?? 0
    const serving = [...new Set(users.get(canonicalDatabase({...target, db: copy.toDb})) ?? [])].sort(compareIds)
    if (held > 0 || serving.length > 0) copy.conflict = {keys: held, shards: serving}
  }
  const conflicts = copies.filter((c) => c.conflict)
  if (conflicts.length > 0 && !request.replace) {
    const said = conflicts.map(
      (c) =>
        `${c.to} ${[c.conflict!.keys > 0 ? `holds ${c.conflict!.keys} keys` : '', c.conflict!.shards.length > 0 ? `serves ${c.conflict!.shards.join(', ')}` : ''].filter(Boolean).join(' and ')}`,
    )
    throw new ShardctlError(`the target is not free: ${said.join('; ')}`, {
      code: 'ETARGETUSED',
      exitCode: ExitCode.unhealthy,
      hint: 'restore into an empty database no shard uses, or pass --replace to empty it first (after confirmation); nothing was changed',
    })
  }
  const plan: RestorePlan = {
    backup: {
      id: backup.id,
      time: manifest.startedAt,
      location: destination.location,
      of: {registry: backupRegistry(manifest) ?? null, prefix: manifest.prefix},
      otherFleet: otherFleet(manifest, request.fleet),
    },
    skipped,
    instance: entry.instance,
    node: entry.node,
    file: entry.file,
    bytes: entry.bytes,
    rdbVersion: entry.rdbVersion,
    target: targetKey,
    targetVersion,
    copies,
    replace: request.replace,
  }
  if (request.route) plan.routing = await planRouting(client, live, copies, shards, target)
  return plan
}

/**
 * The registry's own database is never a target: emptying it (--replace) would take the
 * routing, the history and this restore's own lock with it. Known by its address in any
 * spelling (before the target is reached), and by the run_id of the server answering
 * there (two names of one host, or a registry behind Sentinel).
 */
function refuseRegistry(fleet: RestoreFleet, copies: RestoreCopy[]): void {
  const into = copies.find((c) => c.toDb === fleet.registryDb)
  if (into)
    throw new ShardctlError(`the target ${into.to} is the registry's own database: a restore never writes there`, {
      code: 'ETARGETREGISTRY',
      exitCode: ExitCode.unhealthy,
      hint: 'restore into another database or instance; nothing was changed',
    })
}

async function refuseRegistryByRunId(
  registry: Registry,
  fleet: RestoreFleet,
  copies: RestoreCopy[],
  targetRunId: string | undefined,
): Promise<void> {
  if (targetRunId === undefined || !copies.some((c) => c.toDb === fleet.registryDb)) return
  // A restricted registry user may not run INFO: then its address alone told.
  const registryRunId = await registry.client
    .info('server')
    .then((text) => parseInfo(text).run_id)
    .catch(() => undefined)
  if (registryRunId === targetRunId) refuseRegistry(fleet, copies)
}

/**
 * A snapshot of a newer RDB version than a server reads is refused by it: the target (its
 * RESTORE payloads come from the local server), and the local redis-server that loads it.
 */
function refuseUnreadable(entry: ManifestInstance, targetKey: string, targetVersion: string, localReads: number): void {
  const targetReads = highestRdbReadBy(targetVersion)
  const refuse = (message: string, hint: string) => {
    throw new ShardctlError(message, {code: 'ERDBVERSION', exitCode: ExitCode.unhealthy, hint})
  }
  if (entry.rdbVersion > targetReads)
    refuse(
      `the snapshot is RDB version ${entry.rdbVersion} (Redis ${entry.redisVersion}), and the target ${targetKey} runs Redis ${targetVersion}, which reads up to RDB ${targetReads}`,
      'restore into an instance of Redis as new as the backed-up one; nothing was copied',
    )
  if (entry.rdbVersion > localReads)
    refuse(
      `the snapshot is RDB version ${entry.rdbVersion}, and the local redis-server reads up to RDB ${localReads}`,
      'install a newer redis-server here (or name one with SHARDCTL_REDIS_SERVER); nothing was copied',
    )
  if (localReads > targetReads)
    refuse(
      `the local redis-server writes RDB ${localReads} payloads, and the target ${targetKey} (Redis ${targetVersion}) reads up to RDB ${targetReads}`,
      'restore from a machine whose redis-server is no newer than the target (SHARDCTL_REDIS_SERVER names one); nothing was copied',
    )
}

/**
 * The restored shards routed to their copy: master the target database, read replicas the
 * target's own online replicas (same database), no persistence replica (a new copy has
 * none yet). A shard the registry no longer has is added back as the backup had it.
 */
async function planRouting(
  client: Redis,
  live: Shard[],
  copies: RestoreCopy[],
  backedUp: DocumentShard[],
  target: Endpoint,
): Promise<NonNullable<RestorePlan['routing']>> {
  const replicas = parseReplication(parseInfo(await client.info('replication'))).replicas.filter((r) => r.state === 'online')
  const routing: NonNullable<RestorePlan['routing']> = {repoint: [], add: [], targetShards: []}
  for (const copy of copies) {
    const now = live.find((s) => s.id === copy.shard)
    const after: ShardNodes = {
      master: copy.to,
      replicas: replicas.map((r) => formatAddress({host: r.host, port: r.port, db: copy.toDb})),
      persist: [],
    }
    // Restored where it is routed already (its own database, emptied by mistake): nothing to route.
    if (now && formatAddress(now.master) === copy.to) continue
    if (now) routing.repoint.push({id: copy.shard, before: nodesOf(now), after})
    else {
      const then = backedUp.find((s) => s.id === copy.shard)!
      routing.add.push({id: copy.shard, weight: then.weight, extra: then.extra, after})
    }
  }
  // As the registry's own check compares them: by the text of the master address.
  routing.targetShards = live.filter((s) => instanceKey(s.master) === instanceKey(target)).map((s) => s.id)
  return routing
}

export async function executeRestore(
  registry: Registry,
  pool: ConnectionPool,
  destination: Destination,
  plan: RestorePlan,
  request: RestoreRequest,
  events: RestoreEvents = {},
  options: {timeoutMs: number},
): Promise<RestoreResult> {
  const manifest = (await listBackups(destination, `${plan.backup.id}/`)).find((b) => b.id === plan.backup.id)?.manifest
  const entry = manifest && manifestInstance(manifest, endpointOf(plan.instance))
  if (!manifest || !entry) throw new ShardctlError(`backup ${plan.backup.id} changed at ${destination.location} since it was planned`)

  events.onStep?.('fetch')
  const dir = scratchDirectory()
  const problems = await fetchSnapshot(destination, manifest.id, entry, dir, (bytes) => events.onBytes?.(bytes, entry.bytes)).catch(
    (error: Error) => {
      rmSync(dir, {recursive: true, force: true})
      throw error
    },
  )
  if (problems.length > 0) {
    rmSync(dir, {recursive: true, force: true})
    throw new ShardctlError(
      `the snapshot of ${plan.instance} in backup ${manifest.id} does not match its manifest: ${problems.join('; ')}`,
      {
        code: 'ECHECKSUM',
        exitCode: ExitCode.unhealthy,
        hint: 'this copy cannot be trusted: restore from another backup (backups:list); nothing was copied',
      },
    )
  }

  events.onStep?.('load')
  const databases = Math.max(0, ...Object.keys(entry.keys).map(Number), ...plan.copies.map((c) => c.fromDb)) + 1
  const loaded = await loadSnapshot(dir, {databases, timeoutMs: options.timeoutMs})
  try {
    const loadedKeys = await loaded.keysPerDb()
    for (const copy of plan.copies) {
      if ((loadedKeys.get(copy.fromDb) ?? 0) !== copy.keys)
        throw new ShardctlError(
          `db ${copy.fromDb} of the loaded snapshot has ${loadedKeys.get(copy.fromDb) ?? 0} keys, the manifest says ${copy.keys}; nothing was copied`,
          {code: 'ECHECKSUM', exitCode: ExitCode.unhealthy},
        )
    }
    const copies = await copyAll(loaded, pool, plan, request, events)
    let routed: RegistryEvent | undefined
    if (plan.routing) {
      events.onStep?.('route')
      routed = await route(registry, plan, manifest.id)
    }
    return {plan, applied: true, copies, routed}
  } finally {
    await loaded.stop()
  }
}

async function copyAll(
  loaded: LoadedSnapshot,
  pool: ConnectionPool,
  plan: RestorePlan,
  request: RestoreRequest,
  events: RestoreEvents,
): Promise<RestoredCopy[]> {
  const target = parseAddress(plan.target)
  const results: RestoredCopy[] = []
  for (const copy of plan.copies) {
    events.onStep?.(plan.copies.length > 1 ? `copy ${copy.shard}` : 'copy')
    const source = await loaded.connection()
    await source.select(copy.fromDb)
    const sink = await pool.dedicated(target, {bulk: true})
    await sink.select(copy.toDb)
    // Still as planned: empty, unless told to replace what is there.
    const held = await sink.dbsize()
    if (held > 0) {
      if (!request.replace)
        throw new ShardctlError(`${copy.to} took ${held} keys since the plan; nothing was copied there`, {
          code: 'ETARGETUSED',
          exitCode: ExitCode.unhealthy,
          hint: 'something writes there: restore elsewhere, or pass --replace',
        })
      await flushDb(await pool.get(target), copy.toDb)
    }
    const inSnapshot = parseKeyspaceExpires(parseInfo(await source.info('keyspace'))).get(copy.fromDb) ?? {keys: 0, expires: 0}
    const done = await copyDatabase(source, sink, {...DEFAULT_COPY, sample: request.sample, onKeys: (n) => events.onKeys?.(copy, n)})
    events.onStep?.(plan.copies.length > 1 ? `verify ${copy.shard}` : 'verify')
    // SCAN on the loaded server (a replica) passes over keys whose expiry time has come:
    // those are the only ones it may leave out, so every key without one must be copied.
    const persistentInSnapshot = inSnapshot.keys - inSnapshot.expires
    const passedOver = copy.keys - done.copied - done.expired
    if (done.persistent !== persistentInSnapshot || passedOver < 0)
      throw new ShardctlError(
        `copied ${done.copied} keys (${done.persistent} without an expiry time) and skipped ${done.expired + Math.max(0, passedOver)} expired ones, of ${copy.keys} in the backup (${persistentInSnapshot} without an expiry time)`,
        {code: 'EVERIFY', exitCode: ExitCode.unhealthy, hint: 'the copy is left as it is; restore again into an empty database'},
      )
    const onTarget = await sink.dbsize()
    // Exactly the keys copied, less those whose expiry came since they were restored.
    const mayHaveExpired = done.expiringBy(Date.now())
    if (onTarget > done.copied || onTarget < done.copied - mayHaveExpired)
      throw new ShardctlError(
        `${copy.to} holds ${onTarget} keys after the copy of ${done.copied}: something else writes there, or deletes`,
        {code: 'EVERIFY', exitCode: ExitCode.unhealthy, hint: 'check what uses that database; the copy is left as it is'},
      )
    const sample = await compareSample(source, sink, done.sample)
    if (sample.differ.length > 0)
      throw new ShardctlError(
        `${sample.differ.length} of ${sample.compared} sampled keys differ on ${copy.to}: ${sample.differ.slice(0, 5).join(', ')}`,
        {
          code: 'EVERIFY',
          exitCode: ExitCode.unhealthy,
          hint: 'something else writes there; the copy is left as it is',
        },
      )
    results.push({
      ...copy,
      copied: done.copied,
      expired: done.expired + passedOver + (done.copied - onTarget),
      onTarget,
      sampled: sample.compared,
    })
  }
  return results
}

/** The registry change of --route: one compare-and-set step with its event. */
async function route(registry: Registry, plan: RestorePlan, backupId: string): Promise<RegistryEvent> {
  const routing = plan.routing!
  const added: Shard[] = routing.add.map((a) => ({
    id: a.id,
    weight: a.weight,
    extra: a.extra,
    master: parseAddress(a.after.master),
    replicas: a.after.replicas.map(parseAddress),
    persist: a.after.persist.map(parseAddress),
  }))
  return registry.routeRestored(routing.repoint, added, [{instance: plan.target, ids: routing.targetShards}], {
    ids: plan.copies.map((c) => c.shard),
    backup: backupId,
    to: Object.fromEntries(plan.copies.map((c) => [c.shard, c.to])),
  })
}

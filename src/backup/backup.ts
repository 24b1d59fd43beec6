import {createHash} from 'node:crypto'
import {Readable, type Transform, pipeline} from 'node:stream'
import {createGzip} from 'node:zlib'

import {ExitCode, ShardctlError} from '../errors.js'
import type {ConnectOptions, ConnectionPool} from '../fleet/connect.js'
import {replicationOf} from '../fleet/replication.js'
import {type ConnectTarget, type Endpoint, endpointOf, sameInstance} from '../registry/address.js'
import {readDocumentShards, shardsDocument} from '../registry/document.js'
import type {Registry} from '../registry/registry.js'
import {streamSnapshot} from '../replication/snapshot.js'
import type {Destination, WriteOptions} from './destination.js'
import {BackupLease} from './lease.js'
import {MANIFEST_FILE, REGISTRY_FILE, listBackups, partName, snapshotFile} from './layout.js'
import {MANIFEST_FORMAT, MANIFEST_VERSION, type Manifest, type ManifestFailure, type ManifestInstance} from './manifest.js'
import {
  type BackupSelection,
  type FromMode,
  type PlannedInstance,
  chooseSources,
  onlineReplicas,
  runPerHost,
  selectInstances,
} from './plan.js'
import {SnapshotCheck} from './snapshot-check.js'
import {Coalesce, Digest, Meter} from './streams.js'

/**
 * shards:backup: a snapshot of every instance taken over the replication protocol (as
 * `redis-cli --rdb` does: no access to the host's disk, no BGSAVE of ours), streamed
 * to the destination while it is checked: the RDB header, version and aux fields, keys
 * per database, Redis's own CRC64 in the trailer, and a sha256 of the bytes stored. A
 * snapshot that does not check out is not stored at all. Memory stays bounded whatever
 * the snapshot's size: every stage passes chunks on, with back-pressure to the socket.
 *
 * Steps: registry.json first (the shards:export document: which shard lived in which
 * database, then), the snapshots (at most `concurrency` at once, never two from one
 * host), then manifest.json, last: the mark that the backup is complete. Instances
 * that fail are named in the manifest; the others are still complete backups.
 */
export interface BackupRequest {
  run: string
  selection: BackupSelection
  from: FromMode
  concurrency: number
  gzip: boolean
  /** This tool's version, recorded in the manifest. */
  version: string
}

export interface BackupContext {
  registry: Registry
  /** The registry's instance (its replicas are asked for with INFO on the registry's connection). */
  registryEndpoint: Endpoint
  /** The registry as one name (canonicalRegistry), recorded in the manifest: which fleet the backup is of. */
  registryAddress: string
  pools: {shards: ConnectionPool; registry: ConnectionPool}
  /** Where and how to open a replication link to a node: its credentials (the registry's or the instances'). */
  linkTarget: (node: Endpoint, side: 'registry' | 'shards') => ConnectTarget
  options: ConnectOptions
  destination: Destination
}

export interface BackupPlan {
  id: string
  run: string
  part: string
  location: string
  gzip: boolean
  instances: PlannedInstance[]
  warnings: string[]
}

export interface BackupEvents {
  onStart?: (instance: PlannedInstance) => void
  onBytes?: (instance: string, bytes: number, total: number) => void
  onDone?: (instance: PlannedInstance, outcome: {entry?: ManifestInstance; error?: string}) => void
}

export interface BackupResult {
  id: string
  location: string
  /** complete: every instance stored, manifest written; partial: some failed (named), manifest written; failed: no manifest. */
  status: 'complete' | 'partial' | 'failed'
  startedAt: string
  endedAt: string
  instances: ManifestInstance[]
  failed: ManifestFailure[]
  warnings: string[]
  /** Why no manifest could be written, when none was. */
  error?: string
}

export async function planBackup(context: BackupContext, request: BackupRequest): Promise<BackupPlan & {shardsSeen: number}> {
  const {shards, broken} = await context.registry.snapshot()
  const replication = await replicationOf(context.registry.client)
  const {instances, whole} = selectInstances(
    shards,
    {endpoint: context.registryEndpoint, replicas: onlineReplicas(replication)},
    request.selection,
    request.from,
  )
  const {planned, warnings} = await chooseSources(instances, context.pools)
  if (broken.length > 0)
    warnings.push(`shards ${broken.map((b) => b.id).join(', ')} are corrupt in the registry: left out of registry.json (see shards:list)`)
  const part = partName(whole ? undefined : planned.map((i) => i.instance))
  return {
    id: `${request.run}/${part}`,
    run: request.run,
    part,
    location: context.destination.location,
    gzip: request.gzip,
    instances: planned,
    warnings,
    shardsSeen: shards.length,
  }
}

export async function takeBackup(
  context: BackupContext,
  plan: BackupPlan,
  request: BackupRequest,
  events: BackupEvents = {},
): Promise<BackupResult> {
  const lease = await BackupLease.take(context.registry, context.destination.location, plan.id)
  try {
    return await storeBackup(context, plan, request, events, lease)
  } finally {
    await lease.release()
  }
}

async function storeBackup(
  context: BackupContext,
  plan: BackupPlan,
  request: BackupRequest,
  events: BackupEvents,
  lease: BackupLease,
): Promise<BackupResult> {
  const {destination} = context
  const startedAt = new Date().toISOString()
  // Nothing becomes visible unless this run still holds the backup's lease.
  const fence = () => lease.confirm()
  await clearEarlierAttempt(destination, plan.id, fence)

  // registry.json first: a backup that stops later is still listed (incomplete), and
  // pruned once it is a day old.
  const {shards} = await readDocumentShards(context.registry)
  const document = Buffer.from(`${JSON.stringify(shardsDocument(context.registry.keys.prefix, shards), null, 2)}\n`)
  await destination.write(`${plan.id}/${REGISTRY_FILE}`, Readable.from([document]), {contentType: 'application/json', fence})

  const held = new Map(plan.instances.map((i) => [i.instance, i.shards]))
  const warnings = [...plan.warnings, ...(lease.warning ? [lease.warning] : [])]
  const failed: ManifestFailure[] = []
  const stored: ManifestInstance[] = []
  for (const instance of plan.instances.filter((i) => !i.source)) {
    failed.push({instance: instance.instance, error: instance.error ?? 'no node to take it from'})
    events.onDone?.(instance, {error: instance.error})
  }
  const jobs = plan.instances
    .filter((i) => i.source)
    .map((instance) => ({
      host: instance.source!.endpoint.host,
      run: async () => {
        events.onStart?.(instance)
        try {
          const entry = await snapshotInstance(context, plan, instance, events, warnings, fence)
          stored.push(entry)
          events.onDone?.(instance, {entry})
        } catch (error) {
          const message = (error as Error).message
          failed.push({instance: instance.instance, node: instance.source!.node, error: message})
          events.onDone?.(instance, {error: message})
        }
      },
    }))
  await runPerHost(jobs, request.concurrency)

  // The document is of the start: say so if the shards of these instances moved meanwhile.
  // One instance may be spelled two ways in the registry (localhost:P and 127.0.0.1:P): compared as one.
  const after = await context.registry.snapshot().catch(() => undefined)
  if (after) {
    for (const entry of stored) {
      const instance = endpointOf(entry.instance)
      const now = after.shards
        .filter((s) => sameInstance(s.master, instance))
        .map((s) => `${s.id}@${s.master.db}`)
        .sort()
      const then = (held.get(entry.instance) ?? []).map((s) => `${s.id}@${s.db}`).sort()
      if (now.join() !== then.join())
        warnings.push(
          `the shards of ${entry.instance} changed in the registry during the backup: registry.json has them as they were at its start`,
        )
    }
  }
  const order = (a: {instance: string}, b: {instance: string}) => (a.instance < b.instance ? -1 : 1)
  stored.sort(order)
  failed.sort(order)
  const endedAt = new Date().toISOString()
  const result: BackupResult = {
    id: plan.id,
    location: destination.location,
    status: failed.length === 0 ? 'complete' : stored.length === 0 ? 'failed' : 'partial',
    startedAt,
    endedAt,
    instances: stored,
    failed,
    warnings,
  }
  // A run that lost its lease says so, whatever else failed.
  await fence()
  if (stored.length === 0) return {...result, error: 'no instance could be backed up'}
  const manifest: Manifest = {
    format: MANIFEST_FORMAT,
    version: MANIFEST_VERSION,
    id: plan.id,
    run: plan.run,
    part: plan.part,
    startedAt,
    endedAt,
    shardctl: request.version,
    prefix: context.registry.keys.prefix,
    registryAddress: context.registryAddress,
    registry: {
      file: REGISTRY_FILE,
      bytes: document.length,
      sha256: createHash('sha256').update(document).digest('hex'),
      shards: shards.length,
    },
    instances: stored,
    failed,
    warnings,
  }
  // Last: from here on the backup is complete. Never over another run's manifest.
  await destination
    .write(`${plan.id}/${MANIFEST_FILE}`, Readable.from([Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`)]), {
      contentType: 'application/json',
      exclusive: true,
      fence,
    })
    .catch((error: ShardctlError) => {
      if (error.code !== 'EOBJECTEXISTS') throw error
      throw new ShardctlError(`backup ${plan.id} at ${destination.location} was completed by another run meanwhile: its manifest is kept`, {
        code: 'EBACKUPEXISTS',
        exitCode: ExitCode.locked,
        hint: 'backups:verify tells whether what it lists is intact; give each run its own --run',
      })
    })
  return result
}

/**
 * A complete backup is never written over; what a failed attempt with the same id left
 * (no manifest) is removed first, so nothing of it mixes with this one.
 */
async function clearEarlierAttempt(destination: Destination, id: string, fence: () => Promise<void>): Promise<void> {
  const earlier = (await listBackups(destination, `${id}/`)).find((b) => b.id === id)
  if (!earlier) return
  if (earlier.manifest)
    throw new ShardctlError(`backup ${id} exists already at ${destination.location} (${earlier.status})`, {
      code: 'EBACKUPEXISTS',
      exitCode: ExitCode.usage,
      hint: 'give another --run, or remove that backup first',
    })
  await fence()
  await destination.remove(earlier.objects)
}

async function snapshotInstance(
  context: BackupContext,
  plan: BackupPlan,
  instance: PlannedInstance,
  events: BackupEvents,
  warnings: string[],
  fence: WriteOptions['fence'],
): Promise<ManifestInstance> {
  const startedAt = new Date().toISOString()
  const source = instance.source!
  const target = context.linkTarget(source.endpoint, instance.registry ? 'registry' : 'shards')
  const {stream, length} = await streamSnapshot(target, {timeoutMs: context.options.timeoutMs, tls: context.options.tls})
  const total = length ?? 0
  const meter = new Meter((bytes) => events.onBytes?.(instance.instance, bytes, total))
  const check = new SnapshotCheck(`the snapshot of ${instance.instance} from ${source.node}`)
  const digest = new Digest()
  const stages: Transform[] = [new Coalesce(), meter, check, ...(plan.gzip ? [createGzip({level: 1})] : []), digest]
  const body = pipeline([stream, ...stages], () => undefined) as Digest
  const file = snapshotFile(instance.instance, plan.gzip)
  await context.destination.write(`${plan.id}/${file}`, body, {expectedBytes: length ?? instance.expectedBytes, fence})
  const facts = check.facts()
  if (!facts.checksumVerified)
    warnings.push(
      `${source.node} writes snapshots without a CRC64 (rdbchecksum no): the snapshot of ${instance.instance} is checked by its structure and sha256 only`,
    )
  return {
    instance: instance.instance,
    registry: instance.registry,
    node: source.node,
    nodeRole: source.role,
    file,
    compression: plan.gzip ? 'gzip' : 'none',
    bytes: digest.bytes,
    sha256: digest.sha256,
    rdbBytes: meter.bytes,
    crc64: facts.crc64,
    rdbVersion: facts.rdbVersion,
    redisVersion: facts.redisVersion,
    replId: facts.replId,
    replOffset: facts.replOffset,
    createdAt: facts.createdAt,
    keys: facts.keys,
    shards: instance.shards,
    startedAt,
    endedAt: new Date().toISOString(),
  }
}

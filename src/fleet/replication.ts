import {setTimeout as sleep} from 'node:timers/promises'

import type {Redis} from 'ioredis'

import {type InfoFields, type ReplicationInfo, parseInfo, parseReplication, sameHost} from './info.js'

/** Replication facts and moves on one instance: the building blocks of promote and split. */

export async function replicationOf(client: Redis): Promise<ReplicationInfo> {
  return parseReplication(parseInfo(await client.info('replication')))
}

/** Whether `info` describes a replica of host:port (loopback names count as one). */
export function follows(info: ReplicationInfo, master: {host: string; port: number}): boolean {
  return info.role === 'slave' && info.masterPort === master.port && sameHost(info.masterHost, master.host)
}

/** A master's fencing: min-replicas-to-write / min-replicas-max-lag, as CONFIG GET gives them. */
export interface FencingSettings {
  'min-replicas-to-write': string
  'min-replicas-max-lag': string
}

const FENCING = ['min-replicas-to-write', 'min-replicas-max-lag'] as const

/**
 * shardctl's write fence: a master that needs this many good replicas refuses every
 * write (NOREPLICAS), and unlike CLIENT PAUSE it never stops refusing by itself. No
 * instance has that many replicas, so the value also tells a fence shardctl set
 * (shards:check reports it) from an operator's own fencing.
 */
export const WRITE_FENCE_REPLICAS = 1_000_000

/** Redis's own defaults: what a fence whose previous settings were never recorded gives way to. */
export const DEFAULT_FENCING: FencingSettings = {'min-replicas-to-write': '0', 'min-replicas-max-lag': '10'}

export async function readFencing(client: Redis): Promise<FencingSettings> {
  const pairs = await Promise.all(FENCING.map((name) => client.config('GET', name)))
  return {'min-replicas-to-write': pairs[0][1] ?? '0', 'min-replicas-max-lag': pairs[1][1] ?? '10'}
}

export function isWriteFence(settings: Pick<FencingSettings, 'min-replicas-to-write'>): boolean {
  return Number(settings['min-replicas-to-write']) === WRITE_FENCE_REPLICAS
}

/**
 * Stop every write on a master, in two layers. CLIENT PAUSE WRITE first: writes wait
 * (at most `pauseMs`) instead of failing, and the replication offset stands still.
 * Then the fence, which does not expire: should this run be stopped for longer than
 * the pause, the writes waiting in it are refused (NOREPLICAS), never accepted behind
 * the back of a replica that is about to take over. Only liftFence ends it.
 */
export async function fenceWrites(client: Redis, pauseMs: number, previous: FencingSettings): Promise<void> {
  await pauseWrites(client, pauseMs)
  // min-replicas-max-lag 0 would switch the check off: any lag at all keeps it on.
  const lag = Number(previous['min-replicas-max-lag']) > 0 ? previous['min-replicas-max-lag'] : '10'
  await client.config('SET', 'min-replicas-to-write', String(WRITE_FENCE_REPLICAS), 'min-replicas-max-lag', lag)
}

/** End what fenceWrites began: the fencing it replaced comes back, then paused writes go on. */
export async function liftFence(client: Redis, previous: FencingSettings): Promise<void> {
  await setFencing(client, previous)
  await resumeWrites(client)
}

export async function setFencing(client: Redis, settings: FencingSettings): Promise<void> {
  await client.config('SET', ...FENCING.flatMap((name) => [name, settings[name]]))
}

/**
 * Whether the instance, as a replica, would take writes of its own (replica-read-only
 * no): those writes reach no master and vanish at the next full sync. A CONFIG that
 * does not answer counts as read-only (the default).
 */
export async function writableAsReplica(client: Redis): Promise<boolean> {
  const reply = (await client.config('GET', 'replica-read-only').catch(() => [])) as string[]
  return reply[1] === 'no'
}

export async function makeMaster(client: Redis): Promise<void> {
  await client.call('REPLICAOF', 'NO', 'ONE')
}

export async function makeReplica(client: Redis, master: {host: string; port: number}): Promise<void> {
  await client.call('REPLICAOF', master.host, String(master.port))
}

/**
 * Wait until the replica has processed everything the master has sent: its offset
 * equals the master's (or is within `slackBytes` of it). With no slack the master must
 * be paused for this to converge. Polls in tight steps because the wait is inside the
 * write pause.
 */
export async function waitForOffset(
  master: Redis,
  replica: Redis,
  deadline: number,
  slackBytes = 0,
): Promise<{masterOffset: number; replicaOffset: number; caughtUp: boolean}> {
  let masterOffset = 0
  let replicaOffset = -1
  let wait = 0
  for (;;) {
    // A replica that does not answer in time is not caught up: keep asking until the deadline.
    ;[masterOffset, replicaOffset] = await Promise.all([
      replicationOf(master).then((r) => r.offset),
      replicationOf(replica).then(
        (r) => r.offset,
        () => -1,
      ),
    ])
    if (replicaOffset >= 0 && replicaOffset + slackBytes >= masterOffset) return {masterOffset, replicaOffset, caughtUp: true}
    if (Date.now() >= deadline) return {masterOffset, replicaOffset, caughtUp: false}
    if (wait > 0) await sleep(wait)
    wait = Math.min(10, wait + 1)
  }
}

/**
 * PUBLISH enters the replication stream (Redis propagates it to replicas) without
 * touching any database: the marker that proves a replica applies the live stream.
 * Nobody needs to subscribe to it.
 */
export const STREAM_PROOF_CHANNEL = '__shardctl:stream-proof'

/**
 * Wait until `replica` applies what `master` sends *now*. A replica whose link is up
 * may not be streaming yet: after a diskless sync the master holds the stream back
 * until the replica's first REPLCONF ACK, up to about a second later, while the
 * replica applies nothing. So the proof is a write made after the link came up: the
 * master publishes a marker, and the replica's offset must reach the master's
 * offset as read after it. Returns false if the deadline passes first.
 */
export async function waitForStreaming(master: Redis, replica: Redis, deadline: number): Promise<boolean> {
  for (;;) {
    const info = await replicationOf(replica)
    if (info.linkUp && !info.syncInProgress) break
    if (Date.now() >= deadline) return false
    await sleep(10)
  }
  await master.publish(STREAM_PROOF_CHANNEL, 'ready')
  return reachesOffset(replica, (await replicationOf(master)).offset, deadline)
}

/** Wait until the replica has processed `offset` of its master's stream; false at the deadline. */
export async function reachesOffset(replica: Redis, offset: number, deadline: number): Promise<boolean> {
  let wait = 0
  for (;;) {
    if ((await replicationOf(replica)).offset >= offset) return true
    if (Date.now() >= deadline) return false
    if (wait > 0) await sleep(wait)
    wait = Math.min(10, wait + 1)
  }
}

/** Hold every write on an instance for at most `ms` (reads go on): the cut-over window. */
export async function pauseWrites(client: Redis, ms: number): Promise<void> {
  await client.call('CLIENT', 'PAUSE', String(ms), 'WRITE')
}

export async function resumeWrites(client: Redis): Promise<void> {
  await client.call('CLIENT', 'UNPAUSE')
}

/** How far a replica's initial copy has come, for a progress line. */
export interface CopyProgress {
  syncing: boolean
  linkUp: boolean
  readBytes: number
  totalBytes: number
}

export function copyProgress(info: InfoFields): CopyProgress {
  return {
    syncing: info.master_sync_in_progress === '1',
    linkUp: info.master_link_status === 'up',
    readBytes: Number(info.master_sync_read_bytes ?? 0),
    totalBytes: Number(info.master_sync_total_bytes ?? -1),
  }
}

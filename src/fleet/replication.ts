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

const FENCING = ['min-replicas-to-write', 'min-replicas-max-lag']

/**
 * Give a new master the fencing its predecessor had (min-replicas-to-write / -max-lag),
 * so a promote does not leave the shards unfenced. Best effort: CONFIG may be refused.
 * Returns what it set, or undefined when there was nothing to carry.
 */
export async function carryFencing(from: Redis, to: Redis): Promise<Record<string, string> | undefined> {
  const read = async (client: Redis) => {
    const pairs = await Promise.all(FENCING.map((name) => client.config('GET', name) as Promise<string[]>))
    return Object.fromEntries(pairs.map(([name, value]) => [name, value]))
  }
  const [old, now] = await Promise.all([read(from), read(to)])
  if (Number(old['min-replicas-to-write'] ?? 0) === 0) return undefined
  if (FENCING.every((name) => old[name] === now[name])) return undefined
  await to.config('SET', ...FENCING.flatMap((name) => [name, old[name]]))
  return old
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

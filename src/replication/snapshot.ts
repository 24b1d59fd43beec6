import {Readable} from 'node:stream'

import {ShardctlError} from '../errors.js'
import {type TlsSettings} from '../fleet/connect.js'
import {type ConnectTarget} from '../registry/address.js'
import {SnapshotFraming} from './framing.js'
import {ReplicationLink} from './link.js'

/**
 * A snapshot of an instance over the replication protocol, as `redis-cli --rdb` takes it
 * (redis-cli.c, getRDB): no access to the host's disk, no BGSAVE command, and it works on
 * a replica as well as on a master, so a backup can be taken from a persistence replica.
 *
 *     REPLCONF capa eof     the master may stream a diskless snapshot ($EOF:<mark>)
 *     REPLCONF rdb-only 1   the snapshot only: no replication stream is buffered for us, and
 *                           the master drops the link once it is sent (Redis 7.0; older
 *                           versions refuse it and we simply close after the snapshot)
 *     SYNC
 *
 * The master waits repl-diskless-sync-delay (5 s by default) before it starts a diskless
 * snapshot, hoping more replicas join; it sends a newline each second meanwhile.
 *
 * The bytes are a Readable with back-pressure: when its reader is slower than the network,
 * the socket is paused and the master waits (memory stays bounded by the stream's
 * highWaterMark plus one socket read). A master drops a replica that reads nothing for
 * repl-timeout (60 s by default): a destination slower than that loses the snapshot.
 */

export interface SnapshotOptions {
  /** Connect and handshake timeout, in milliseconds. */
  timeoutMs: number
  tls?: TlsSettings
  /** Fail when the master sends nothing for this long while we read; default 60 s (Redis's repl-timeout). */
  idleTimeoutMs?: number
  /** Abandon the snapshot: the stream fails and the socket closes. */
  signal?: AbortSignal
  /** Bytes buffered ahead of the reader before the socket is paused; default 1 MB. */
  highWaterMark?: number
}

export interface Snapshot {
  /** The RDB bytes, exactly as the master sent them (the diskless end mark removed). */
  stream: Readable
  /** The size announced by the master ($<length>); undefined for a diskless snapshot. */
  length?: number
}

export const DEFAULT_IDLE_TIMEOUT_MS = 60_000

/**
 * Resolves once the master starts sending the snapshot (after its diskless delay or its
 * BGSAVE): the stream then yields the RDB bytes and ends after the last one, or fails
 * with one line naming the host (refused, lost, timed out).
 */
export async function streamSnapshot(target: ConnectTarget, options: SnapshotOptions): Promise<Snapshot> {
  const link = await ReplicationLink.open(target, options)
  try {
    const capa = await link.call(['REPLCONF', 'capa', 'eof'])
    if ('error' in capa) throw link.refused('REPLCONF capa', capa)
    // Refused by Redis before 7.0: the snapshot is the same, we only close the link after it.
    await link.call(['REPLCONF', 'rdb-only', '1'])
  } catch (error) {
    link.close()
    throw error
  }
  link.send(['SYNC'])
  return new Promise<Snapshot>((resolve, reject) => {
    const idleMs = options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS
    let paused = false
    let started = false
    const stream = new Readable({
      highWaterMark: options.highWaterMark ?? 1024 * 1024,
      read() {
        if (!paused) return
        paused = false
        link.socket.resume()
        link.idleTimeout(idleMs)
      },
      destroy(error, callback) {
        if (!framing.done) link.close()
        callback(error)
      },
    })
    const framing = new SnapshotFraming(link.where, {
      header(header) {
        started = true
        link.phase = 'the snapshot'
        resolve({stream, length: header.length})
      },
      payload(chunk) {
        if (!stream.push(chunk) && !paused) {
          paused = true
          link.socket.pause()
          link.idleTimeout(0)
        }
      },
      end() {
        link.close()
        stream.push(null)
      },
    })
    const failed = (error: Error) => {
      if (!started) reject(error)
      else stream.destroy(lostDuringSnapshot(error, link.where, framing.received))
    }
    link.takeOver('SYNC', {
      onBytes(chunk) {
        try {
          framing.feed(chunk)
        } catch (error) {
          link.close()
          failed((error as Error).name === 'ReplyError' ? link.refused('SYNC', {error: (error as Error).message}) : (error as Error))
        }
      },
      onFailure: failed,
    })
    link.idleTimeout(idleMs)
  })
}

/** A failure once bytes flowed says how far the snapshot got. */
function lostDuringSnapshot(error: Error, where: string, received: number): Error {
  if (!(error instanceof ShardctlError) || error.code === 'EABORTED') return error
  const lost = error.code === 'ECONNLOST'
  return new ShardctlError(
    lost
      ? `lost the connection to ${where} during the snapshot, after ${received.toLocaleString('en-US')} bytes`
      : `${error.message}, after ${received.toLocaleString('en-US')} bytes`,
    {
      code: error.code,
      hint: lost
        ? 'a master drops a replica that reads nothing for repl-timeout seconds, or whose output buffer overflows: check its log, and that the destination keeps up'
        : error.hint,
      cause: error,
    },
  )
}

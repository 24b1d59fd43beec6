import {ShardctlError} from '../errors.js'

/**
 * The framing of a full synchronisation, as a master sends it after SYNC or PSYNC, fed
 * with whatever chunks the socket delivers (any byte may end a chunk):
 *
 *     \n \n ...                          keep-alives while the master prepares the snapshot
 *     +FULLRESYNC <replid> <offset>\r\n  (PSYNC only)
 *     \n \n ...                          more keep-alives (a disk-based BGSAVE in progress)
 *     $<length>\r\n <length bytes>       a snapshot written to disk first
 *  or $EOF:<40-byte mark>\r\n <bytes> <mark>   a diskless snapshot, streamed from the fork
 *     <the replication stream>           (PSYNC only)
 *
 * For the diskless form the end is known only when the last 40 bytes received equal the
 * mark, so the last 40 bytes seen are always held back: they may be the start of the mark,
 * split across reads. Like Redis's own replica (readSyncBulkPayload), the mark is looked
 * for at the end of what has arrived, never inside it: a master sends nothing after the
 * mark until the replica's first REPLCONF ACK (replicaStartCommandStream), so the mark is
 * always the last bytes received, and a search inside the payload could only find a false
 * one.
 *
 * One parser for both users: the snapshot taker (backups) and the replica client (move).
 */

/** The size of the diskless end mark (RDB_EOF_MARK_SIZE in Redis). */
export const EOF_MARK_SIZE = 40

/** A preamble line longer than this is not Redis speaking. */
const MAX_LINE = 1024

export interface FullResync {
  replid: string
  offset: number
}

export interface SnapshotHeader {
  /** The snapshot's size, when the master announced it ($<length>); undefined for a diskless one. */
  length?: number
}

export interface FramingHandler {
  /** +FULLRESYNC: where the replication stream after the snapshot starts. */
  fullResync?(resync: FullResync): void
  /** The snapshot's header line: from here on, payload. */
  header(header: SnapshotHeader): void
  /** Snapshot bytes, in order; the mark of a diskless snapshot is never part of them. */
  payload(chunk: Buffer): void
  /** The snapshot is complete; `rest` holds whatever followed it in the same read (the replication stream). */
  end(rest: Buffer): void
}

type State = 'preamble' | 'length' | 'marked' | 'done'

export class SnapshotFraming {
  private state: State = 'preamble'
  private line: Buffer[] = []
  private lineLength = 0
  /** Bytes of a `$<length>` payload still to come. */
  private remaining = 0
  private mark: Buffer | undefined
  /** The last (at most EOF_MARK_SIZE) bytes of a diskless payload, held back until more arrive. */
  private held: Buffer = Buffer.alloc(0)
  /** Payload bytes delivered so far. */
  received = 0

  /** `where` names the master in errors; `handler` receives the events. */
  constructor(
    private readonly where: string,
    private readonly handler: FramingHandler,
  ) {}

  get done(): boolean {
    return this.state === 'done'
  }

  /** Feed the next bytes from the socket. Throws on a refusal (-ERR ...) or bytes that are not the protocol. */
  feed(chunk: Buffer): void {
    let at = 0
    while (at < chunk.length) {
      switch (this.state) {
        case 'preamble': {
          at = this.readPreamble(chunk, at)
          break
        }
        case 'length': {
          const take = Math.min(this.remaining, chunk.length - at)
          this.remaining -= take
          this.deliver(chunk.subarray(at, at + take))
          at += take
          if (this.remaining === 0) this.finish(chunk.subarray(at))
          return
        }
        case 'marked': {
          this.readMarked(chunk.subarray(at))
          return
        }
        case 'done': {
          throw new Error('SnapshotFraming fed after the end of the snapshot')
        }
      }
    }
  }

  private readPreamble(chunk: Buffer, start: number): number {
    let at = start
    // Keep-alive newlines come between lines, never inside one.
    if (this.lineLength === 0) while (at < chunk.length && chunk[at] === 0x0a) at++
    if (at === chunk.length) return at
    const newline = chunk.indexOf(0x0a, at)
    const end = newline === -1 ? chunk.length : newline
    this.line.push(chunk.subarray(at, end))
    this.lineLength += end - at
    if (this.lineLength > MAX_LINE) throw this.protocolError(`a line of over ${MAX_LINE} bytes`)
    if (newline === -1) return chunk.length
    const text = Buffer.concat(this.line).toString('latin1').replace(/\r$/, '')
    this.line = []
    this.lineLength = 0
    this.readLine(text)
    // After the header line, what follows the newline is payload: the caller continues in the new state.
    if (this.state === 'length' && this.remaining === 0) this.finish(chunk.subarray(newline + 1))
    return this.state === 'done' ? chunk.length : newline + 1
  }

  private readLine(text: string): void {
    if (text.startsWith('-')) {
      const refusal = new Error(text.slice(1))
      refusal.name = 'ReplyError'
      throw refusal
    }
    const resync = /^\+FULLRESYNC ([0-9a-f]{40}) (\d+)$/i.exec(text)
    if (resync) {
      this.handler.fullResync?.({replid: resync[1], offset: Number(resync[2])})
      return
    }
    const marked = /^\$EOF:(.{40})$/s.exec(text)
    if (marked) {
      this.mark = Buffer.from(marked[1], 'latin1')
      this.state = 'marked'
      this.handler.header({})
      return
    }
    const length = /^\$(\d{1,15})$/.exec(text)
    if (length) {
      this.remaining = Number(length[1])
      this.state = 'length'
      this.handler.header({length: this.remaining})
      return
    }
    throw this.protocolError(JSON.stringify(text.slice(0, 60)))
  }

  private readMarked(chunk: Buffer): void {
    const mark = this.mark!
    if (chunk.length >= EOF_MARK_SIZE) {
      this.deliver(this.held)
      this.deliver(chunk.subarray(0, chunk.length - EOF_MARK_SIZE))
      // A copy: the socket's buffer may be reused, and holding a slice would keep all of it alive.
      this.held = Buffer.from(chunk.subarray(chunk.length - EOF_MARK_SIZE))
    } else {
      const joined = Buffer.concat([this.held, chunk])
      const keep = Math.min(EOF_MARK_SIZE, joined.length)
      this.deliver(joined.subarray(0, joined.length - keep))
      this.held = joined.subarray(joined.length - keep)
    }
    if (this.held.length === EOF_MARK_SIZE && this.held.equals(mark)) this.finish(Buffer.alloc(0))
  }

  private deliver(bytes: Buffer): void {
    if (bytes.length === 0) return
    this.received += bytes.length
    this.handler.payload(bytes)
  }

  private finish(rest: Buffer): void {
    this.state = 'done'
    this.held = Buffer.alloc(0)
    this.handler.end(rest)
  }

  private protocolError(what: string): ShardctlError {
    return new ShardctlError(`${this.where} sent ${what} where a snapshot's header was expected`, {
      code: 'EPROTOCOL',
      hint: 'check the port: it should be a Redis master or replica that allows SYNC',
    })
  }
}

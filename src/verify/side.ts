import type {ChainableCommander, Redis} from 'ioredis'

import {commandFailed} from '../fleet/connect.js'
import {parseInfo} from '../fleet/info.js'
import {instanceKey} from '../registry/address.js'

/** One database to compare: a connection to its instance, and the database number. */
export interface DatabaseRef {
  /**
   * A connection to the instance. It may be shared (a ConnectionPool connection): every
   * request goes as one pipeline that selects `db` first and, last, the database the
   * connection was on, so nothing else on it notices.
   */
  client: Redis
  db: number
}

/** A reply of a pipelined command: its error, or its value. */
export type Reply = [Error | null, unknown]

/** The commands the verify needs, and the oldest Redis that has them. */
const NEEDS = {major: 6, minor: 2, why: 'SMISMEMBER, ZMSCORE'}

/**
 * One side of a comparison: runs batches of commands on its database, and knows what
 * its Redis can do (PEXPIRETIME from 7.0; before it, PTTL and this machine's clock).
 */
export class Side {
  /** Absolute expiry times are read with PEXPIRETIME (Redis 7), exact; otherwise from PTTL. */
  exactExpiry = false
  version = ''

  constructor(
    readonly client: Redis,
    readonly db: number,
  ) {}

  async init(): Promise<void> {
    const info = parseInfo(String(await this.client.info('server')))
    this.version = info.redis_version ?? ''
    const [major, minor] = this.version.split('.').map(Number)
    if (!(major > NEEDS.major || (major === NEEDS.major && minor >= NEEDS.minor))) {
      throw new Error(`Redis ${this.version || '(unknown version)'} is too old to verify against: ${NEEDS.why} need 6.2 or later`)
    }
    this.exactExpiry = major >= 7
  }

  /**
   * Run `build`'s commands on this side's database as one pipeline. Errors of the
   * commands themselves come back in the replies (a WRONGTYPE means the key changed
   * under the comparison); an error of the connection or of SELECT is thrown.
   */
  async run(build: (pipeline: ChainableCommander) => void): Promise<Reply[]> {
    const back = currentDb(this.client)
    const pipeline = this.client.pipeline().select(this.db)
    build(pipeline)
    pipeline.select(back)
    const replies = ((await pipeline.exec().catch((error: Error) => [[error, null]])) ?? []) as Reply[]
    const failed = replies[0]?.[0] ?? replies.at(-1)?.[0] ?? (replies.length < 2 ? new Error('Connection is closed.') : null)
    if (failed)
      throw commandFailed(failed, this.where, 'verify', {timeoutMs: this.client.options.commandTimeout ?? 0, nameHostInReplies: true})
    return replies.slice(1, -1)
  }

  /** host:port/db, for messages. */
  get where(): string {
    return `${instanceKey({host: this.client.options.host ?? '127.0.0.1', port: this.client.options.port ?? 6379})}/${this.db}`
  }

  /** Keys in the database (for progress). */
  async size(): Promise<number> {
    const [[error, n]] = await this.run((p) => p.dbsize())
    if (error) throw error
    return Number(n)
  }
}

/** The database a connection is on now, as ioredis tracks it (SELECTs included). */
function currentDb(client: Redis): number {
  return client.condition?.select ?? client.options.db ?? 0
}

/** The value of a reply, or its error thrown (for commands that must not fail). */
export function valueOf<T>(reply: Reply | undefined): T {
  if (!reply) throw new Error('missing reply')
  if (reply[0]) throw reply[0]
  return reply[1] as T
}

/** A WRONGTYPE reply: the key was replaced by another type between two reads. */
export function isWrongType(reply: Reply | undefined): boolean {
  return Boolean(reply?.[0] && /^WRONGTYPE/.test(reply[0].message.replace(/^.*?refused \w+: /, '')))
}

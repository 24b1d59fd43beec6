import {createHash} from 'node:crypto'

import type {ChainableCommander, Redis} from 'ioredis'

import {commandFailed} from '../fleet/connect.js'
import {parseInfo} from '../fleet/info.js'
import {type Reply, inDatabase} from '../fleet/instance.js'
import {luaScripts} from '../lua/scripts.generated.js'
import {instanceKey} from '../registry/address.js'
import type {Outline} from './compare.js'

/** One database to compare: a connection to its instance, and the database number. */
export interface DatabaseRef {
  /**
   * A connection to the instance. It may be shared (a ConnectionPool connection): every
   * request goes as one pipeline that selects `db` and then the database the connection
   * was on (fleet/instance.ts, inDatabase), so nothing else on it notices.
   */
  client: Redis
  db: number
}

const OUTLINE = luaScripts.verifyOutline
const OUTLINE_SHA = createHash('sha1').update(OUTLINE.lua).digest('hex')

/** The commands the verify needs, and the oldest Redis that has them. */
const NEEDS = {major: 6, minor: 2, why: 'SMISMEMBER, ZMSCORE'}

export type {Reply}

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
    try {
      return await inDatabase(this.client, this.db, build)
    } catch (error) {
      throw commandFailed(error as Error, this.where, 'verify', {
        timeoutMs: this.client.options.commandTimeout ?? 0,
        nameHostInReplies: true,
      })
    }
  }

  /**
   * Type, absolute expiry, length and memory of each key, and the SHA-1 of each string
   * of at most `digestBytes` (lua/verify-outline.lua): one script call for the batch.
   */
  async outlines(keys: Buffer[], digestBytes: number): Promise<Outline[]> {
    const text = String(await this.outlineScript(keys, this.exactExpiry ? 'PEXPIRETIME' : 'PTTL', digestBytes))
    const lines = text.split('\n')
    if (lines.length !== keys.length) throw new Error(`the outline of ${keys.length} keys on ${this.where} gave ${lines.length} lines`)
    const now = Date.now()
    return lines.map((line) => {
      const [type, ttl, length, memory, digest] = line.split(' ')
      // -1: no expiry; -2: no key. PTTL is relative: made absolute with this machine's clock (the tolerance covers it).
      const t = Number(ttl)
      const expireAt = t < 0 ? -1 : this.exactExpiry ? t : now + t
      const outline: Outline = {type, expireAt, length: Number(length), memory: Number(memory)}
      if (digest) outline.digest = digest
      return outline
    })
  }

  /**
   * Whether each key exists: one EXISTS for the batch, which counts the keys it finds;
   * only when some are missing, each one's.
   */
  async exist(keys: Buffer[]): Promise<boolean[]> {
    const [all] = await this.run((p) => p.exists(...keys))
    if (Number(valueOf(all)) === keys.length) return keys.map(() => true)
    const each = await this.run((p) => {
      for (const key of keys) p.exists(key)
    })
    return each.map((reply) => Number(valueOf(reply)) === 1)
  }

  private async outlineScript(keys: Buffer[], expiry: string, digestBytes: number): Promise<unknown> {
    // EVAL_RO (Redis 7) where it exists: a paused instance (CLIENT PAUSE WRITE, as under a cut-over's fence) holds back every EVAL, even one that only reads.
    const [bySha, byBody] = this.exactExpiry ? ['EVALSHA_RO', 'EVAL_RO'] : ['EVALSHA', 'EVAL']
    const args = [String(keys.length), ...keys, expiry, String(digestBytes)]
    // By its SHA-1: the script's text is not sent (nor hashed by the server) with every batch. Sent once it is not cached there.
    const [reply] = await this.run((p) => p.call(bySha, OUTLINE_SHA, ...args))
    if (!reply[0] || !/NOSCRIPT/.test(reply[0].message)) return valueOf(reply)
    return valueOf((await this.run((p) => p.call(byBody, OUTLINE.lua, ...args)))[0])
  }

  /** host:port/db, for messages. */
  get where(): string {
    return `${instanceKey({host: this.client.options.host ?? '127.0.0.1', port: this.client.options.port ?? 6379})}/${this.db}`
  }

  /** Keys in the database (for progress). */
  async size(): Promise<number> {
    const [reply] = await this.run((p) => p.dbsize())
    return Number(valueOf(reply))
  }
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

import {setTimeout as sleep} from 'node:timers/promises'

import type {Redis} from 'ioredis'

import {ExitCode, ShardctlError} from '../errors.js'
import {type ConnectionPool, type ScriptedRedis, reopen} from '../fleet/connect.js'
import {failpoint} from '../ops/failpoint.js'
import {type Endpoint, type ShardAddress, endpointOf, formatAddress, instanceKey} from '../registry/address.js'
import {Change, type Registry, type RegistryEvent, type ShardRepoint} from '../registry/registry.js'
import {type Shard} from '../registry/schema.js'
import {nodesOf} from '../ops/cutover.js'
import {type Agreement, disagreement, distinctSentinels, majorityOf} from './quorum.js'
import {type GroupRecord, type SentinelRecord, describeRelease, readRecord, setGroup} from './record.js'
import {type SentinelCredentials, connectSentinel, sentinelId} from './sentinel.js'
import {Sentinels, sameInstance} from './sentinels.js'
import type {ConnectOptions} from '../fleet/connect.js'

/**
 * sentinel:follow: keep the registry where Sentinel's failovers put the masters.
 *
 * Events only say when to look: every Sentinel's events are heard (subscribed on each),
 * and every group is looked at again on a timer too (events can be missed, a follower
 * can start late). Looking is asking every Sentinel, and acting needs evidence: a
 * majority agreeing on the master and config epoch, an epoch newer than the one the
 * registry recorded, and the new master answering ROLE as a master. Then one
 * compare-and-set step, with its event, moves every shard of the old instance to the
 * new one (database numbers kept) and records the epoch: several followers change the
 * registry once, and a late or stale Sentinel finds nothing newer to do.
 */

export type FollowerEvent = {type: string; at: string; [detail: string]: unknown}

export interface FollowOptions {
  /** How often every group is looked at, events or not. */
  intervalMs: number
  /** Exit (non-zero) when no majority of the Sentinels has answered, or the registry has not, for this long. */
  maxNoMajorityMs: number
  onEvent: (event: FollowerEvent) => void
  /** Aborted: stop following (SIGTERM, SIGINT). */
  signal: AbortSignal
}

/** Sentinel events after which a group is looked at at once (the others are only shown). */
const LOOK_AFTER = new Set([
  '+switch-master',
  '+failover-end',
  '+config-update-from',
  '+slave',
  '+convert-to-slave',
  '-sdown',
  '-odown',
  '+slave-reconf-done',
])

export class Follower {
  private sentinels?: Sentinels
  private subscribers: Redis[] = []
  private sentinelKeys = ''
  private readonly busy = new Map<string, Promise<void>>()
  private readonly again = new Set<string>()
  /** The events that asked for the next look at a group: its outcome is told with them. */
  private readonly causes = new Map<string, {sentinel: string; event: string}[]>()
  private lastMajorityAt = Date.now()
  private lastRegistryAt = Date.now()
  private lastNoMajority = ''
  private readonly said = new Map<string, string>()
  private failure?: ShardctlError

  constructor(
    private readonly registry: Registry,
    private readonly pool: ConnectionPool,
    private readonly credentials: SentinelCredentials,
    private readonly connectOptions: ConnectOptions,
    private readonly options: FollowOptions,
  ) {}

  private emit(type: string, details: Record<string, unknown> = {}): void {
    this.options.onEvent({type, at: new Date().toISOString(), ...details})
  }

  /** Say something about a group once, until what there is to say changes. */
  private emitOnce(group: string, type: string, details: Record<string, unknown>): void {
    this.emitChanged(group, type, {group, ...details})
  }

  /** Say something once per subject (a group, a Sentinel), until what there is to say changes. */
  private emitChanged(subject: string, type: string, details: Record<string, unknown>): void {
    const text = JSON.stringify([type, details])
    if (this.said.get(subject) === text) return
    this.said.set(subject, text)
    this.emit(type, details)
  }

  /** Follow until aborted; throws when the Sentinels or the registry stay out of reach past the bound. */
  async run(): Promise<void> {
    const record = await readRecord(this.registry)
    if (!record || record.sentinels.length === 0) {
      throw new ShardctlError('the registry records no Sentinel to follow', {
        code: 'ENOSENTINEL',
        exitCode: ExitCode.usage,
        hint: 'hand the fleet to Sentinel first: sentinel:register --sentinel HOST:PORT ...',
      })
    }
    this.useSentinels(record)
    this.emit('started', {
      sentinels: record.sentinels.map(instanceKey),
      groups: [...record.groups.keys()],
      intervalMs: this.options.intervalMs,
      exitsAfterNoMajorityMs: this.options.maxNoMajorityMs,
    })
    try {
      while (!this.options.signal.aborted) {
        await this.tick()
        if (this.failure) throw this.failure
        await sleep(this.options.intervalMs, undefined, {signal: this.options.signal}).catch(() => undefined)
      }
    } finally {
      await this.stopSentinels()
    }
  }

  /** One round: the record read again (groups and Sentinels change), every group looked at, the bounds checked. */
  private async tick(): Promise<void> {
    let record: SentinelRecord | undefined
    try {
      // A registry that went silent past the timeout leaves its connection dead: opened again here (every change
      // the follower makes is a compare-and-set, so nothing it sent before can land after what it reads now).
      await reopen(this.registry.client)
      record = await readRecord(this.registry)
      this.lastRegistryAt = Date.now()
      if (this.said.delete('registry')) this.emit('registry-reachable')
    } catch (error) {
      this.emitChanged('registry', 'registry-unreachable', {reason: (error as Error).message})
      // Whether the Sentinels answer is still known: the bound that ends the follower names the right one.
      await this.countAnswers()
    }
    if (record) {
      if (record.sentinels.map(instanceKey).join(',') !== this.sentinelKeys) {
        this.emit('sentinels-changed', {sentinels: record.sentinels.map(instanceKey)})
        await this.stopSentinels()
        this.useSentinels(record)
      }
      await Promise.all([...record.groups.keys()].map((name) => this.look(name)))
      if (record.groups.size === 0) await this.countAnswers()
    }
    const now = Date.now()
    const bound = this.options.maxNoMajorityMs
    if (now - this.lastMajorityAt > bound) {
      this.failure = new ShardctlError(
        `no majority of the Sentinels has answered for ${now - this.lastMajorityAt} ms (bound ${bound} ms): ${this.lastNoMajority}`,
        {
          code: 'ENOMAJORITY',
          hint: 'the registry cannot follow a failover nobody can agree on: bring the Sentinels back, then start the follower again (a supervisor restarts it)',
        },
      )
    } else if (now - this.lastRegistryAt > bound) {
      this.failure = new ShardctlError(`the registry has not answered for ${now - this.lastRegistryAt} ms (bound ${bound} ms)`, {
        code: 'EUNREACHABLE',
        hint: 'check the registry; a supervisor restarts the follower',
      })
    }
  }

  /** With no group to look at, the Sentinels are only asked whether they answer (and who they are: each counts once). */
  private async countAnswers(): Promise<void> {
    const answers = await this.sentinels!.each((c) => sentinelId(c))
    const views = answers.map((a) => ({sentinel: a.sentinel, reachable: !a.error, monitors: false, id: a.value}))
    const {answered, total} = distinctSentinels(views, answers.length)
    if (answered >= majorityOf(total)) this.lastMajorityAt = Date.now()
    else this.lastNoMajority = `only ${answered} of ${total} Sentinels answer`
  }

  private useSentinels(record: SentinelRecord): void {
    this.sentinelKeys = record.sentinels.map(instanceKey).join(',')
    this.sentinels = new Sentinels(record.sentinels, this.credentials, this.connectOptions)
    // Heard once per address, however often the record lists it.
    for (const sentinel of this.sentinels.endpoints) void this.subscribe(sentinel)
  }

  private async stopSentinels(): Promise<void> {
    // Ends the subscription loops of this set of Sentinels.
    this.sentinelKeys = ''
    // A subscriber is dropped, not asked to QUIT: a stopped Sentinel would never answer.
    for (const s of this.subscribers.splice(0)) s.disconnect()
    await this.sentinels?.close()
  }

  /** Hear one Sentinel's events, for as long as the follower runs; a lost subscription is made again. */
  private async subscribe(sentinel: Endpoint): Promise<void> {
    const key = instanceKey(sentinel)
    const keys = this.sentinelKeys
    while (!this.options.signal.aborted && keys === this.sentinelKeys) {
      let client: ScriptedRedis | undefined
      try {
        client = await connectSentinel(sentinel, this.credentials, {
          ...this.connectOptions,
          clientName: `${this.connectOptions.clientName ?? 'shardctl'}-events`,
        })
        // A subscriber waits for events as long as it must: no command timeout on this connection.
        client.options.commandTimeout = undefined
        client.options.socketTimeout = undefined
        this.subscribers.push(client)
        const closed = new Promise<void>((resolve) => client!.once('close', () => resolve()))
        client.on('pmessage', (_pattern: string, channel: string, message: string) => this.heard(key, channel, message))
        await client.psubscribe('*')
        this.said.delete(`subscribe ${key}`)
        this.emit('subscribed', {sentinel: key})
        await closed
        if (!this.options.signal.aborted && keys === this.sentinelKeys)
          this.emit('unsubscribed', {sentinel: key, reason: 'connection lost'})
      } catch (error) {
        if (keys === this.sentinelKeys)
          this.emitChanged(`subscribe ${key}`, 'unsubscribed', {sentinel: key, reason: (error as Error).message})
      } finally {
        this.subscribers = this.subscribers.filter((s) => s !== client)
        client?.disconnect()
      }
      await sleep(1000, undefined, {signal: this.options.signal}).catch(() => undefined)
    }
  }

  /** An event from a Sentinel: shown, and when it may mean a change, its group looked at now (its payload is never trusted). */
  private heard(sentinel: string, channel: string, message: string): void {
    if (channel === '__sentinel__:hello') return
    const group = groupNamed(message)
    this.emit('sentinel-event', {sentinel, event: channel, detail: message, ...(group ? {group} : {})})
    if (!LOOK_AFTER.has(channel) || !group) return
    this.causes.set(group, [...(this.causes.get(group) ?? []), {sentinel, event: channel}])
    void this.look(group)
  }

  /** Look at one group; one look at a time per group, and one more if asked meanwhile. */
  private look(name: string): Promise<void> {
    const running = this.busy.get(name)
    if (running) {
      this.again.add(name)
      return running
    }
    const run = (async () => {
      do {
        this.again.delete(name)
        const causes = this.causes.get(name) ?? []
        this.causes.delete(name)
        let outcome: string
        try {
          outcome = await this.reconcile(name)
        } catch (error) {
          outcome = 'error'
          this.emitOnce(name, 'error', {reason: (error as Error).message})
        }
        // After an event, what looking found is told even when it is nothing: a late or stale event changed nothing.
        if (causes.length > 0) this.emit('looked', {group: name, after: causes, outcome})
      } while (this.again.has(name) && !this.options.signal.aborted)
    })().finally(() => this.busy.delete(name))
    this.busy.set(name, run)
    return run
  }

  /**
   * What the Sentinels say of a group against what the registry recorded, and the change
   * that follows from it. Returns what it found: moved, rejoined, in-sync, waiting,
   * ignored, released, unknown.
   */
  private async reconcile(name: string, retried = false): Promise<string> {
    const record = await readRecord(this.registry)
    const group = record?.groups.get(name)
    if (!record || !group) return 'unknown'
    if (group.released) {
      this.emitOnce(name, 'released', {
        reason: `released by ${describeRelease(group.released)} since ${group.released.at}: left alone until handed back`,
      })
      return 'released'
    }
    const {views, agreed} = await this.sentinels!.views(name)
    const listed = this.sentinels!.endpoints.length
    // Each Sentinel counts once: one listed under two addresses is one answer, and one of the total.
    const {answered, total} = distinctSentinels(views, listed)
    if (answered >= majorityOf(total)) this.lastMajorityAt = Date.now()
    if (!agreed) {
      const reason = disagreement(views, listed)
      if (answered < majorityOf(total)) this.lastNoMajority = reason
      this.emitOnce(name, 'waiting', {reason})
      return 'waiting'
    }
    const recordedMaster = endpointOf(group.master)
    const sameMaster = await sameInstance(agreed.master, recordedMaster)
    if (agreed.epoch < group.epoch || (agreed.epoch === group.epoch && !sameMaster)) {
      this.emitOnce(name, 'ignored', {
        reason: `a majority of the Sentinels say ${instanceKey(agreed.master)} at epoch ${agreed.epoch}; the registry follows ${group.master} from epoch ${group.epoch}: not newer`,
      })
      return 'ignored'
    }
    try {
      if (agreed.epoch > group.epoch) return await this.followFailover(name, record, group, agreed, sameMaster)
      return await this.rejoin(name, record, group)
    } catch (error) {
      if ((error as ShardctlError).code !== 'ECONFLICT' || retried) throw error
      // Someone changed the registry meanwhile (another follower, most likely): look again.
      return this.reconcile(name, true)
    }
  }

  /** A failover a majority agrees on: move every shard of the old master to the new one, in one step. */
  private async followFailover(
    name: string,
    record: SentinelRecord,
    group: GroupRecord,
    agreed: Agreement,
    sameMaster: boolean,
  ): Promise<string> {
    const {shards} = await this.registry.snapshot()
    const moving = shards.filter((s) => instanceKey(s.master) === group.master)
    if (sameMaster) {
      // The same master at a newer epoch (a failover and back, missed): only the epoch is new.
      await this.registry.apply(
        setGroup(new Change(), this.registry, name, record.stored.get(name), {...group, epoch: agreed.epoch}),
        'sentinel.epoch',
        {
          group: name,
          master: group.master,
          epoch: agreed.epoch,
        },
      )
      this.emit('epoch-recorded', {group: name, master: group.master, epoch: agreed.epoch})
      return 'moved'
    }
    if (moving.length === 0) {
      this.emitOnce(name, 'ignored', {
        reason: `no shard in the registry has its master on ${group.master} any more: the record of ${name} is stale (run sentinel:register)`,
      })
      return 'ignored'
    }
    const role = await roleOf(this.pool, agreed.master)
    if (role.role !== 'master') {
      this.emitOnce(name, 'waiting', {reason: `${instanceKey(agreed.master)}, the master a majority names, answers ROLE as ${role.role}`})
      return 'waiting'
    }
    const to = await registryForm(agreed.master, moving)
    const toKey = instanceKey(to)
    const moves: ShardRepoint[] = moving.map((s) => {
      const keep = (list: ShardAddress[]) => list.filter((r) => instanceKey(r) !== toKey).map(formatAddress)
      return {
        id: s.id,
        before: nodesOf(s),
        after: {master: formatAddress({...to, db: s.master.db}), replicas: keep(s.replicas), persist: keep(s.persist)},
      }
    })
    const after: GroupRecord = {
      master: toKey,
      epoch: agreed.epoch,
      rejoin: [...new Set([...(group.rejoin ?? []), group.master])].filter((r) => r !== toKey),
    }
    await failpoint('sentinel-switch', 'before')
    const event = await this.registry.repointShards(
      moves,
      [
        {instance: group.master, ids: moving.map((s) => s.id)},
        {instance: toKey, ids: []},
      ],
      'sentinel.failover',
      {
        group: name,
        from: group.master,
        to: toKey,
        epoch: agreed.epoch,
        shards: moving.map((s) => s.id),
        sentinels: `${agreed.votes} of ${agreed.of}`,
        removedMaster: group.master,
      },
      (change) => setGroup(change, this.registry, name, record.stored.get(name), after),
    )
    this.said.delete(name)
    this.emit('failover-followed', {...eventDetails(event), group: name})
    return 'moved'
  }

  /** The former masters a failover removed, named again as replicas once the new master's ROLE lists them online. */
  private async rejoin(name: string, record: SentinelRecord, group: GroupRecord): Promise<string> {
    if (!group.rejoin?.length) return 'in-sync'
    const role = await roleOf(this.pool, endpointOf(group.master))
    if (role.role !== 'master') return 'in-sync'
    const back: string[] = []
    for (const instance of group.rejoin) {
      for (const r of role.replicas) if (await sameInstance(r, endpointOf(instance))) back.push(instance)
    }
    if (back.length === 0) return 'in-sync'
    const {shards} = await this.registry.snapshot()
    const mine = shards.filter((s) => instanceKey(s.master) === group.master)
    const moves: ShardRepoint[] = mine.map((s) => {
      const named = new Set([...s.replicas, ...s.persist].map(instanceKey))
      const added = back.filter((b) => !named.has(b)).map((b) => formatAddress({...endpointOf(b), db: s.master.db}))
      const before = nodesOf(s)
      return {id: s.id, before, after: {...before, replicas: [...before.replicas, ...added]}}
    })
    const after: GroupRecord = {...group, rejoin: group.rejoin.filter((r) => !back.includes(r))}
    if (after.rejoin!.length === 0) delete after.rejoin
    const event = await this.registry.repointShards(
      moves,
      [{instance: group.master, ids: mine.map((s) => s.id)}],
      'sentinel.replica-rejoined',
      {group: name, master: group.master, replicas: back, shards: mine.map((s) => s.id)},
      (change) => setGroup(change, this.registry, name, record.stored.get(name), after),
    )
    this.emit('replica-rejoined', {...eventDetails(event), group: name})
    return 'rejoined'
  }
}

/** The group a Sentinel event is about: "+switch-master <name> ...", "... @ <name> <ip> <port>", "master <name> ...". */
export function groupNamed(message: string): string | undefined {
  const at = /@ (\S+) \S+ \d+$/.exec(message)
  if (at) return at[1]
  const master = /^master (\S+) /.exec(message)
  if (master) return master[1]
  const first = /^(\S+) \S+ \d+ \S+ \d+$/.exec(message)
  return first?.[1]
}

/** What an instance says of itself: its role, and (a master) the replicas online on it. */
export async function roleOf(pool: ConnectionPool, instance: Endpoint): Promise<{role: string; replicas: Endpoint[]}> {
  try {
    const reply = (await (await pool.get(instance)).call('ROLE')) as unknown[]
    const replicas =
      reply[0] === 'master' && Array.isArray(reply[2]) ? (reply[2] as string[][]).map(([host, port]) => ({host, port: Number(port)})) : []
    return {role: String(reply[0]), replicas}
  } catch (error) {
    return {role: `unreachable (${(error as Error).message})`, replicas: []}
  }
}

/** The new master as the registry names it: the replica it already names there (a host name kept), else Sentinel's address. */
async function registryForm(reported: Endpoint, shards: Shard[]): Promise<Endpoint> {
  for (const shard of shards) {
    for (const r of [...shard.replicas, ...shard.persist]) if (await sameInstance(reported, r)) return {host: r.host, port: r.port}
  }
  return reported
}

function eventDetails(event: RegistryEvent): Record<string, unknown> {
  const {v: _v, type: _type, at: _at, by: _by, command: _command, ...details} = event
  return details
}

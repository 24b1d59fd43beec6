import {ExitCode, ShardctlError} from '../errors.js'
import {listClients} from '../fleet/clients.js'
import type {ConnectOptions, ConnectionPool} from '../fleet/connect.js'
import {type Credentials, type Endpoint, endpointOf, instanceKey} from '../registry/address.js'
import type {NeverElectHook, ReleaseHook} from '../ops/cutover.js'
import {type JournalEntry, readJournal} from '../ops/journal.js'
import {Change, type Registry} from '../registry/registry.js'
import {nameGroups, replicationGroups} from './groups.js'
import {majorityOf} from './quorum.js'
import {type GroupRecord, type SentinelRecord, groupOf, readRecord, releasedFor, setGroup} from './record.js'
import {DEFAULT_SETTINGS, settleAndCheck} from './register.js'
import {type MonitorSettings, type SentinelCredentials, checkQuorum, isDown, knownReplicas, monitor, removeName} from './sentinel.js'
import {Sentinels, ipOf, sameInstance} from './sentinels.js'
import {plural} from '../ui/terminal.js'

/**
 * shardctl's own operations beside Sentinel, never against it. Sentinel turns a replica
 * that became a master behind its back into a replica again within seconds, so an
 * operation that changes who is master takes the group out of Sentinel's hands first
 * (every Sentinel removes it: all of them, or the operation does not start), and hands
 * it back once it is over, with the master the registry then routes to:
 *
 *   graceful promote   released before the fence, handed back with the new master
 *   split              Sentinel keeps guarding the source during the long copy (the
 *                      targets get replica-priority 0, so it never elects one);
 *                      released right before the cut-over; handed back after it, and
 *                      each target registered as a group of its own
 *   emergency promote  refused while the Sentinels have a quorum (they decide), unless
 *                      the operator insists (--overrule-sentinel)
 *
 * An instance that Sentinels monitor without the registry knowing of them is refused
 * too (--overrule-sentinel to go on): shardctl cannot take it out of their hands.
 * These are hooks the commands call around the operations of ops/, which stay
 * unaware of Sentinel.
 */

export interface Released {
  name: string
  /** The group as recorded before it was released. */
  before: GroupRecord
  /** The shards it had: where they are routed afterwards decides the master handed back. */
  shards: string[]
  /** Sentinels that could not be asked to remove it (only when the operator insisted). */
  unreached: string[]
}

export interface HandBack {
  /** Groups monitored again (or anew), by name, with their master. */
  groups: {name: string; master: string}[]
  /** What did not work: said to the operator, exit 3. */
  problems: string[]
}

export class SentinelCoordination {
  private constructor(
    private readonly registry: Registry,
    private readonly pool: ConnectionPool,
    private readonly record: SentinelRecord | undefined,
    private readonly sentinels: Sentinels | undefined,
    private readonly credentials: Credentials,
  ) {}

  static async open(
    registry: Registry,
    pool: ConnectionPool,
    access: {sentinel: SentinelCredentials; instance: Credentials; options: ConnectOptions},
  ): Promise<SentinelCoordination> {
    const record = await readRecord(registry)
    const sentinels = record?.sentinels.length ? new Sentinels(record.sentinels, access.sentinel, access.options) : undefined
    return new SentinelCoordination(registry, pool, record, sentinels, access.instance)
  }

  async close(): Promise<void> {
    await this.sentinels?.close()
  }

  private get settings(): MonitorSettings {
    return {...DEFAULT_SETTINGS, quorum: majorityOf(this.record!.sentinels.length), ...this.record!.settings}
  }

  /** The recorded group whose master is `instance`, if any. */
  groupOf(instance: string): {name: string; group: GroupRecord} | undefined {
    return groupOf(this.record, instance)
  }

  /**
   * Refuse an instance that Sentinels monitor without the registry recording them: they
   * would revert (or fight) what the operation does. Sentinel names its connections
   * sentinel-<id>-cmd.
   */
  async refuseUnknownSentinels(instance: string, overrule: boolean): Promise<void> {
    if (this.groupOf(instance) || overrule) return
    const client = await this.pool.get(endpointOf(instance)).catch(() => undefined)
    if (!client) return
    const watchers = (await listClients(client).catch(() => []))
      .filter((c) => /^sentinel-[0-9a-f]+-cmd$/.test(c.name))
      .map((c) => c.addr.replace(/:\d+$/, ''))
    if (watchers.length === 0) return
    throw new ShardctlError(
      `${instance} is monitored by ${plural(watchers.length, 'Sentinel')} the registry does not record (connections from ${[...new Set(watchers)].join(', ')}): they would turn the operation back`,
      {
        code: 'ESENTINEL',
        exitCode: ExitCode.usage,
        hint: 'hand the fleet to them with sentinel:register --sentinel HOST:PORT (then shardctl coordinates with them), or remove the instance from them; --overrule-sentinel goes on anyway',
      },
    )
  }

  /**
   * An emergency promote of a monitored instance: Sentinel decides while it can. Refused
   * when a majority of the Sentinels answer and CKQUORUM passes, unless `insist`.
   */
  async checkEmergency(instance: string, insist: boolean): Promise<void> {
    const found = this.groupOf(instance)
    if (!found || !this.sentinels || found.group.released || insist) return
    // Failed over already: the Sentinels name another master, which a promote of its own would demote.
    const {agreed} = await this.sentinels.views(found.name)
    if (agreed && !(await sameInstance(agreed.master, endpointOf(instance)))) {
      throw new ShardctlError(
        `Sentinel has failed ${instance} over already: ${agreed.votes} of ${agreed.of} Sentinels name ${instanceKey(agreed.master)} the master of ${found.name} (epoch ${agreed.epoch})`,
        {
          code: 'ESENTINEL',
          exitCode: ExitCode.unhealthy,
          hint: `run sentinel:follow: it moves the registry to ${instanceKey(agreed.master)}; nothing was changed`,
        },
      )
    }
    const answers = await this.sentinels.each((client) => checkQuorum(client, found.name))
    const able = answers.filter((a) => a.value?.ok)
    if (able.length < majorityOf(answers.length)) return
    throw new ShardctlError(
      `Sentinel monitors ${instance} (group ${found.name}) and can fail it over itself (CKQUORUM: ${able[0].value!.message})`,
      {
        code: 'ESENTINEL',
        exitCode: ExitCode.usage,
        hint: 'let Sentinel decide (sentinel:follow moves the registry when it does); --overrule-sentinel promotes anyway, taking the group out of its hands',
      },
    )
  }

  /**
   * Take an instance's group out of Sentinel's hands for an operation. First the
   * registry marks it released (the follower leaves it alone from then on), then every
   * Sentinel removes it; one that refuses (or does not answer, unless `insist`) undoes
   * it all and nothing changes. Refused too while the Sentinels are failing it over, or
   * name another master than the registry: that failover is theirs to finish.
   */
  async release(instance: string, operation: string, options: {insist?: boolean} = {}): Promise<Released | undefined> {
    const found = this.groupOf(instance)
    if (!found || !this.sentinels) return undefined
    const {name, group} = found
    const {shards} = await this.registry.snapshot()
    const mine = shards.filter((s) => instanceKey(s.master) === instance).map((s) => s.id)
    // Released already by a run that stopped: the Sentinels are asked again (it may have stopped before they were).
    const again = Boolean(group.released)
    const {views, agreed} = again ? {views: [], agreed: undefined} : await this.sentinels.views(name)
    const busy = views.find((v) => v.flags?.some((f) => f === 'failover_in_progress' || f === 'o_down'))
    if (!again && !options.insist && (!agreed || !(await sameInstance(agreed.master, endpointOf(instance))) || busy)) {
      throw new ShardctlError(
        busy
          ? `Sentinel ${busy.sentinel} is failing over ${instance} (${busy.flags!.join(',')}): nothing was changed`
          : `the Sentinels do not agree that ${instance} is the master of ${name}: nothing was changed`,
        {
          code: 'ESENTINEL',
          hint: 'let the failover finish (sentinel:follow moves the registry), look at shards:check, then run the command again',
        },
      )
    }
    const stored = this.record!.stored.get(name)
    // The operator (user@host) who released it, as every event names them; the operation beside it.
    const released: GroupRecord = again
      ? group
      : {...group, released: {by: this.registry.actor.user, for: operation, at: new Date().toISOString()}}
    if (!again) {
      await this.registry.apply(setGroup(new Change(), this.registry, name, stored, released), 'sentinel.released', {
        group: name,
        master: instance,
        for: operation,
      })
      this.record!.stored.set(name, JSON.stringify(released))
      this.record!.groups.set(name, released)
    }
    const results = await this.sentinels.each((client) => removeName(client, name))
    const failed = results.filter((r) => r.error)
    if (failed.length > 0 && !options.insist && !again) {
      // All or nothing: monitored again where it was removed, and no longer marked released.
      const at = await ipOf(endpointOf(instance))
      for (const r of results.filter((r) => !r.error && r.value === 'removed')) {
        await monitor(await this.sentinels.client(endpointOf(r.sentinel)), name, at, this.settings, this.credentials).catch(() => undefined)
      }
      await this.registry.apply(setGroup(new Change(), this.registry, name, JSON.stringify(released), group), 'sentinel.handed-back', {
        group: name,
        master: instance,
      })
      this.record!.stored.set(name, JSON.stringify(group))
      this.record!.groups.set(name, group)
      throw new ShardctlError(
        `Sentinel ${failed[0].sentinel} could not release ${name}: ${failed[0].error!.message}; nothing was changed`,
        {
          code: 'ESENTINEL',
          hint: 'every Sentinel must let go of an instance before shardctl changes its master: bring that Sentinel back, then run the command again',
        },
      )
    }
    if (failed.length > 0 && again && !options.insist) {
      throw new ShardctlError(`Sentinel ${failed[0].sentinel} could not release ${name}: ${failed[0].error!.message}`, {
        code: 'ESENTINEL',
        hint: 'every Sentinel must let go of an instance before shardctl changes its master: bring that Sentinel back, then run the command again',
      })
    }
    return {name, before: group, shards: mine, unreached: failed.map((f) => f.sentinel)}
  }

  /**
   * The release of `instance`'s group as a step of the operation's journal (none when
   * no recorded Sentinel monitors it): the journal opens first, so a run stopped at any
   * point after it leaves a journal, and the run that finishes or rolls the operation
   * back hands the group back (releasedBy). `released()` is what this run released.
   */
  releaseHook(
    instance: string,
    operation: string,
    options: {insist?: boolean} = {},
  ): {hook?: ReleaseHook; released: () => Released | undefined} {
    const found = this.groupOf(instance)
    let released: Released | undefined
    const hook = found &&
      this.sentinels && {
        group: found.name,
        release: async () => {
          released = await this.release(instance, operation, options)
        },
      }
    return {hook, released: () => released}
  }

  /**
   * The group an interrupted operation released and did not hand back (its master is
   * one of `instances`), for the run that finishes or rolls the operation back.
   */
  releasedBy(operation: string, instances: string[], shards: string[], entry?: JournalEntry): Released | undefined {
    // The journal names the group its operation was to release (step sentinel-release): handed back if the registry marks it released.
    const named = (entry?.steps.find((s) => s.name === 'sentinel-release')?.result as {group?: string} | undefined)?.group
    const group = named === undefined ? undefined : this.record?.groups.get(named)
    if (named !== undefined && group?.released) return {name: named, before: group, shards, unreached: []}
    for (const [name, group] of this.record?.groups ?? []) {
      if (releasedFor(group.released) === operation && instances.includes(group.master)) return {name, before: group, shards, unreached: []}
    }
    return undefined
  }

  /**
   * Hand a released group back, with the master the registry routes its shards to now
   * (the new one after a promote, the old one after a rollback), and register `targets`
   * (a split's) as groups of their own. Problems are returned, not thrown: the
   * operation itself is over.
   */
  async handBack(released: Released | undefined, targets: string[] = []): Promise<HandBack> {
    const out: HandBack = {groups: [], problems: []}
    if (!this.sentinels || !this.record) return out
    const record = (await readRecord(this.registry)) ?? this.record
    const {shards} = await this.registry.snapshot()
    const names: string[] = []
    const change = new Change()
    const planned: {name: string; master: string}[] = []
    if (released) {
      // The master the group's shards are routed to now: the same one after a split (its staying shards) or a
      // rollback, the new one after a promote.
      const masters = shards.filter((s) => released.shards.includes(s.id)).map((s) => instanceKey(s.master))
      const master = masters.includes(released.before.master) ? released.before.master : (masters[0] ?? released.before.master)
      // A Sentinel that could not be told to let go keeps the old name and epoch: a new name keeps its view apart.
      const name = released.unreached.length > 0 ? freshName(released.name, record) : released.name
      planned.push({name, master})
      const after: GroupRecord = {master, epoch: 0}
      if (name !== released.name)
        change
          .expectField(this.registry.keys.sentinel, `group:${released.name}`, record.stored.get(released.name))
          .hdel(this.registry.keys.sentinel, [`group:${released.name}`])
      setGroup(change, this.registry, name, name === released.name ? record.stored.get(name) : undefined, after)
    }
    if (targets.length > 0) {
      const groups = replicationGroups(shards.filter((s) => targets.includes(instanceKey(s.master))))
      for (const [name, group] of nameGroups(groups, record, this.registry.keys.prefix)) {
        if (record.groups.has(name)) continue
        planned.push({name, master: group.master})
        setGroup(change, this.registry, name, undefined, {master: group.master, epoch: 0})
      }
    }
    for (const {name, master} of planned) {
      const at = await ipOf(endpointOf(master))
      const results = await this.sentinels.each((client) => monitor(client, name, at, this.settings, this.credentials))
      for (const r of results.filter((r) => r.error && !/Duplicate master name/i.test(r.error.message)))
        out.problems.push(`Sentinel ${r.sentinel} did not take ${name} back: ${r.error!.message}`)
      names.push(name)
      out.groups.push({name, master})
    }
    if (out.problems.length > 0) {
      out.problems.push('run sentinel:register once those Sentinels answer: until then Sentinel does not fail these instances over')
      // Still marked released where it was: the follower and the check say so.
      return out
    }
    await this.registry.apply(change, 'sentinel.handed-back', {groups: Object.fromEntries(planned.map((p) => [p.name, p.master]))})
    for (const q of await settleAndCheck(this.sentinels, names)) if (!q.ok) out.problems.push(`CKQUORUM for ${q.group}: ${q.message}`)
    return out
  }

  /**
   * Once an operation is over (its journal closed; an interrupted one is handed back by
   * the run that finishes it): the released group handed back, a split's targets
   * registered when it moved shards off a monitored source, or forgotten by the
   * Sentinels when it did not release the source (rolled back before its cut-over).
   */
  async finish(released: Released | undefined, split?: {source: string; targets: string[]; applied: boolean}): Promise<HandBack> {
    if (await readJournal(this.registry)) return {groups: [], problems: []}
    const problems: string[] = []
    if (split && !released) problems.push(...(await this.forgetTargets(split.source, split.targets)))
    const monitored = Boolean(released) || Boolean(split && this.groupOf(split.source))
    const back = await this.handBack(released, split?.applied && monitored ? split.targets : [])
    return {groups: back.groups, problems: [...problems, ...back.problems]}
  }

  /**
   * After a split, whatever its outcome: a Sentinel that learnt a target as a replica
   * (it followed the source during the copy; the source's group may have failed over
   * meanwhile) would turn it back into a replica once it stops following. RESET makes it
   * forget, and find the real replicas again. Not during a failover (RESET aborts it).
   */
  async forgetTargets(_source: string, targets: string[]): Promise<string[]> {
    if (!this.sentinels || !this.record || targets.length === 0) return []
    const problems: string[] = []
    const ends = targets.map(endpointOf)
    const names = [...this.record.groups.keys()]
    await this.sentinels.each(async (client, sentinel) => {
      for (const name of names) {
        const known = await knownReplicas(client, name).catch(() => [])
        let learnt = false
        for (const k of known) for (const t of ends) if (await sameInstance(k.instance, t)) learnt = true
        if (!learnt) continue
        const [, , , , , , , , , flags] = (await client.call('SENTINEL', 'MASTER', name)) as string[]
        // RESET also forgets replicas that are down (a dead former master would then never be made a replica again).
        const down = known.filter((k) => isDown(k.flags) && !ends.some((t) => instanceKey(t) === instanceKey(k.instance)))
        if (/failover_in_progress/.test(flags ?? '') || down.length > 0) {
          problems.push(
            `Sentinel ${instanceKey(sentinel)} knows ${plural(targets.length, 'split target')} (${targets.join(', ')}) as replicas of ${name} and will make them replicas again; once ${down.length > 0 ? `${down.map((d) => instanceKey(d.instance)).join(', ')} are back` : 'its failover is over'}, run SENTINEL RESET ${name} on it`,
          )
          continue
        }
        await client.call('SENTINEL', 'RESET', name)
      }
    })
    return problems
  }

  /**
   * Keep Sentinel from ever electing these (a split's targets while they follow the
   * source): replica-priority 0, as a step of the operation's journal with the values
   * before (none when the source is not monitored). What a run that ends the operation
   * puts back with restorePriority.
   */
  async neverElect(source: string, instances: Endpoint[]): Promise<NeverElectHook | undefined> {
    if (!this.sentinels || !this.groupOf(source)) return undefined
    const previous: Record<string, string> = {}
    for (const instance of instances) {
      const [, value] = (await (await this.pool.get(instance)).config('GET', 'replica-priority')) as [string, string]
      previous[instanceKey(instance)] = value ?? '100'
    }
    const apply = async () => {
      for (const instance of instances) await (await this.pool.get(instance)).config('SET', 'replica-priority', '0')
    }
    return {previous, apply}
  }

  async restorePriority(previous: Record<string, string> | undefined): Promise<void> {
    for (const [instance, value] of Object.entries(previous ?? {})) {
      const client = await this.pool.get(endpointOf(instance)).catch(() => undefined)
      await client?.config('SET', 'replica-priority', value).catch(() => undefined)
    }
  }
}

function freshName(name: string, record: SentinelRecord): string {
  const base = name.replace(/-\d+$/, '')
  let n = 2
  while (record.groups.has(`${base}-${n}`) || `${base}-${n}` === name) n++
  return `${base}-${n}`
}

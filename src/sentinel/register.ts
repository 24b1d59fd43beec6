import {setTimeout as sleep} from 'node:timers/promises'

import {ExitCode, ShardctlError, usageError} from '../errors.js'
import type {Credentials, Endpoint} from '../registry/address.js'
import {canonicalInstance, endpointOf, instanceKey} from '../registry/address.js'
import {readHistory} from '../registry/history.js'
import {Change, HISTORY_LIMIT, type Registry, type RegistryEvent} from '../registry/registry.js'
import {type ReplicationGroup, nameGroups, replicationGroups} from './groups.js'
import {majorityOf} from './quorum.js'
import {type GroupRecord, type SentinelRecord, groupField, readRecord, setGroup} from './record.js'
import {type MonitorSettings, checkQuorum, configure, monitor, monitoredMasters, removeName, sentinelId} from './sentinel.js'
import {type Sentinels, distinctAddresses, failedOn, ipOf, namedTwice} from './sentinels.js'

/**
 * sentinel:register: hand the fleet's replication groups to Redis Sentinel. Everything
 * is checked on every Sentinel before anything changes (a name another master has, an
 * instance monitored under another name); then each Sentinel monitors each group with
 * the same settings and the instances' credentials; a Sentinel that refuses undoes the
 * run's MONITORs everywhere. Once the Sentinels know each other, CKQUORUM; then the
 * Sentinels and the groups are recorded in the registry (one atomic change).
 */

export const DEFAULT_SETTINGS: Omit<MonitorSettings, 'quorum'> = {downAfterMs: 30_000, failoverTimeoutMs: 180_000, parallelSyncs: 1}

export interface RegisterRequest {
  /** The Sentinels given (--sentinel); the recorded ones when empty. */
  sentinels: Endpoint[]
  settings: Partial<MonitorSettings>
  /** Prefix of new group names. */
  namePrefix: string
  /** The instances' credentials, given to Sentinel (auth-pass, auth-user). */
  instanceCredentials: Credentials
  /** Only these groups (by name or master instance); all when empty. */
  only?: string[]
}

export interface PlannedGroup extends ReplicationGroup {
  name: string
  /** The master's address as Sentinel takes it (an IP). */
  at: Endpoint
  /** Per Sentinel: monitor it anew, or only set its settings (it monitors it already). */
  actions: {sentinel: string; action: 'monitor' | 'configure'}[]
  /** The config epoch the Sentinels have for it now (0 for a new name). */
  epoch: number
  /** Recorded as released by an operation that did not hand it back. */
  released: boolean
}

export interface RegisterPlan {
  sentinels: string[]
  settings: MonitorSettings
  groups: PlannedGroup[]
}

export interface RegisterResult {
  plan: RegisterPlan
  applied: boolean
  /** CKQUORUM per group: ok, or what a Sentinel said. */
  quorum: {group: string; ok: boolean; message: string}[]
}

/**
 * The Sentinels to use: given ones (a superset of the recorded ones), else the recorded ones.
 * A Sentinel given twice (in any spelling) is refused: it would count twice toward every
 * majority. A recorded list that names one twice (written by an older version) is used once each.
 */
export function chooseSentinels(given: Endpoint[], record: SentinelRecord | undefined): Endpoint[] {
  const recorded = distinctAddresses(record?.sentinels ?? [])
  if (given.length === 0) {
    if (recorded.length === 0)
      throw usageError('no Sentinel given, and the registry records none', 'name them with --sentinel HOST:PORT (repeat)')
    return recorded
  }
  const twice = namedTwice(given)
  if (twice) {
    const [a, b] = twice.map(instanceKey)
    throw usageError(
      a === b ? `Sentinel ${a} is given twice` : `Sentinel ${a} is given twice (also as ${b})`,
      'give each Sentinel once: a majority is of Sentinels, and one given twice would count twice',
    )
  }
  const keys = new Set(given.map(canonicalInstance))
  const left = recorded.filter((s) => !keys.has(canonicalInstance(s)))
  if (left.length > 0) {
    throw usageError(
      `the registry records Sentinel ${left.map(instanceKey).join(', ')}, not given here`,
      'give every recorded Sentinel (and any new one), or remove the fleet from it first with sentinel:unregister --sentinel',
    )
  }
  return given
}

/** Refuse two addresses that reach one Sentinel (its SENTINEL MYID is the same): it would count twice toward every majority. */
export async function refuseSameSentinel(sentinels: Sentinels): Promise<void> {
  const ids = await sentinels.all('SENTINEL MYID', (client) => sentinelId(client))
  const first = new Map<string, string>()
  for (const [i, id] of ids.entries()) {
    if (id === undefined) continue
    const before = first.get(id)
    if (before !== undefined) {
      throw usageError(
        `Sentinels ${before} and ${sentinels.keys[i]} are one Sentinel (the same SENTINEL MYID, ${id})`,
        'give each Sentinel once: a majority is of Sentinels, and one given twice would count twice',
      )
    }
    first.set(id, sentinels.keys[i])
  }
}

export async function planRegister(registry: Registry, sentinels: Sentinels, request: RegisterRequest): Promise<RegisterPlan> {
  const record = await readRecord(registry)
  const {shards} = await registry.snapshot()
  let named = [...nameGroups(replicationGroups(shards), record, request.namePrefix)]
  if (request.only && request.only.length > 0) {
    const wanted = new Set(request.only)
    named = named.filter(([name, g]) => wanted.has(name) || wanted.has(g.master))
    const known = new Set(named.flatMap(([name, g]) => [name, g.master]))
    const unknown = request.only.filter((o) => !known.has(o))
    if (unknown.length > 0)
      throw usageError(`no replication group ${unknown.join(', ')} in the registry`, 'see sentinel:register --dry-run for the groups')
  }
  if (named.length === 0) throw usageError('the registry has no shard to hand to Sentinel', 'add shards first (shards:init, shards:add)')
  const total = sentinels.endpoints.length
  const quorum = request.settings.quorum ?? record?.settings?.quorum ?? majorityOf(total)
  if (quorum < 1 || quorum > total)
    throw usageError(`--quorum ${quorum} with ${total} Sentinels`, `give a quorum from 1 to ${total} (a majority: ${majorityOf(total)})`)
  const settings: MonitorSettings = {...DEFAULT_SETTINGS, ...record?.settings, ...definedOnly(request.settings), quorum}

  // What every Sentinel monitors now: every check is made before anything changes.
  await refuseSameSentinel(sentinels)
  const monitored = await sentinels.all('SENTINEL MASTERS', (client) => monitoredMasters(client))
  const groups: PlannedGroup[] = []
  for (const [name, group] of named) {
    const at = await ipOf(endpointOf(group.master))
    const recorded = record?.groups.get(name)
    let epoch = 0
    const actions = monitored.map((masters, i) => {
      const sentinel = sentinels.keys[i]
      const byName = masters.find((m) => m.name === name)
      if (byName) {
        if (instanceKey(byName.master) !== instanceKey(at)) {
          throw new ShardctlError(
            recorded
              ? `Sentinel ${sentinel} has group ${name} at ${instanceKey(byName.master)}, the registry at ${group.master}: a failover the registry has not followed`
              : `Sentinel ${sentinel} monitors another master under the name ${name} (${instanceKey(byName.master)})`,
            {
              code: 'ECONFLICT',
              exitCode: ExitCode.usage,
              hint: recorded
                ? 'run sentinel:follow (it moves the registry where Sentinel says), then register again'
                : 'choose another --name-prefix, or remove that name from the Sentinel',
            },
          )
        }
        epoch = Math.max(epoch, byName.epoch)
        return {sentinel, action: 'configure' as const}
      }
      const other = masters.find((m) => instanceKey(m.master) === instanceKey(at))
      if (other) {
        throw new ShardctlError(`Sentinel ${sentinel} already monitors ${group.master} under another name, ${other.name}`, {
          code: 'ECONFLICT',
          exitCode: ExitCode.usage,
          hint: `an instance is monitored once: remove ${other.name} from the Sentinels (SENTINEL REMOVE ${other.name}), or leave this group to it`,
        })
      }
      return {sentinel, action: 'monitor' as const}
    })
    groups.push({...group, name, at, actions, epoch, released: Boolean(recorded?.released)})
  }
  return {sentinels: sentinels.keys, settings, groups}
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>
}

/** How long Sentinels take to find each other for a new name: their hello messages go out every 2 s. */
const SETTLE_MS = 10_000

export async function applyRegister(
  registry: Registry,
  sentinels: Sentinels,
  plan: RegisterPlan,
  credentials: Credentials,
  onProgress?: (message: string) => void,
): Promise<RegisterResult> {
  const added: {sentinel: Endpoint; name: string}[] = []
  const results = await sentinels.each(async (client, sentinel) => {
    for (const group of plan.groups) {
      const action = group.actions.find((a) => a.sentinel === instanceKey(sentinel))!.action
      if (action === 'monitor') {
        await monitor(client, group.name, group.at, plan.settings, credentials)
        added.push({sentinel, name: group.name})
      } else {
        await configure(client, group.name, plan.settings, credentials)
      }
    }
  })
  const failed = results.find((r) => r.error)
  if (failed) {
    // All or nothing: what this run added is removed again, everywhere it was added.
    for (const {sentinel, name} of added) await removeName(await sentinels.client(sentinel), name).catch(() => undefined)
    throw failedOn(failed.sentinel, 'to monitor the fleet (nothing was changed)', failed.error!)
  }
  onProgress?.(`Monitored by ${plan.sentinels.length} Sentinels; waiting for them to find each other...`)
  const quorum = await settleAndCheck(
    sentinels,
    plan.groups.map((g) => g.name),
  )
  await recordRegistration(registry, plan)
  return {plan, applied: true, quorum}
}

/** Wait (bounded) until every Sentinel knows the others for each name, then CKQUORUM each name. */
export async function settleAndCheck(sentinels: Sentinels, names: string[]): Promise<RegisterResult['quorum']> {
  const others = sentinels.endpoints.length - 1
  const deadline = Date.now() + SETTLE_MS
  for (;;) {
    const views = await Promise.all(names.map((name) => sentinels.views(name)))
    const known = views.every(({views}) => views.every((v) => v.reachable && (v.otherSentinels ?? 0) >= others))
    if (known || Date.now() > deadline) break
    await sleep(100)
  }
  return Promise.all(
    names.map(async (group) => {
      const answers = await sentinels.each((client) => checkQuorum(client, group))
      const bad = answers.find((a) => a.error || !a.value?.ok)
      if (!bad) return {group, ok: true, message: answers[0].value!.message}
      return {group, ok: false, message: `Sentinel ${bad.sentinel}: ${bad.error?.message ?? bad.value!.message}`}
    }),
  )
}

/** The Sentinels, their settings and the groups, recorded in one change (each group compared first). */
async function recordRegistration(registry: Registry, plan: RegisterPlan): Promise<void> {
  const record = await readRecord(registry)
  const change = new Change().expectType(registry.keys.sentinel, 'hash', 'none')
  change.hset(registry.keys.sentinel, {sentinels: JSON.stringify(plan.sentinels), settings: JSON.stringify(plan.settings)})
  for (const group of plan.groups) {
    const before = record?.groups.get(group.name)
    const after: GroupRecord = {
      master: group.master,
      epoch: group.epoch,
      ...(before?.rejoin?.length ? {rejoin: before.rejoin} : {}),
    }
    setGroup(change, registry, group.name, record?.stored.get(group.name), after)
  }
  await registry.apply(change, 'sentinel.registered', {
    sentinels: plan.sentinels,
    groups: Object.fromEntries(plan.groups.map((g) => [g.name, g.master])),
  })
}

export interface UnregisterResult {
  /** Group names removed from every Sentinel, and from the record. */
  removed: string[]
  /** Groups a Sentinel did not answer for: still recorded, still monitored there. */
  kept: {group: string; sentinels: string[]}[]
}

/** Remove groups from the Sentinels, then from the record; a group a Sentinel could not drop stays recorded. */
export async function unregister(registry: Registry, sentinels: Sentinels, names: string[]): Promise<UnregisterResult> {
  const results = await sentinels.each(async (client) => {
    const out: Record<string, string> = {}
    for (const name of names) out[name] = await removeName(client, name).catch((error: Error) => `error: ${error.message}`)
    return out
  })
  const kept = names
    .map((group) => ({
      group,
      sentinels: results.filter((r) => r.error || r.value![group].startsWith('error')).map((r) => r.sentinel),
    }))
    .filter((k) => k.sentinels.length > 0)
  const removed = names.filter((n) => !kept.some((k) => k.group === n))
  const record = await readRecord(registry)
  if (record && removed.length > 0) {
    const change = new Change()
    for (const name of removed) {
      if (!record.stored.has(name)) continue
      change.expectField(registry.keys.sentinel, groupField(name), record.stored.get(name))
    }
    const left = [...record.groups.keys()].filter((n) => !removed.includes(n))
    if (left.length === 0) change.del(registry.keys.sentinel)
    else change.hdel(registry.keys.sentinel, removed.map(groupField))
    await registry.apply(change, 'sentinel.unregistered', {groups: removed, sentinels: sentinels.keys})
  }
  return {removed, kept}
}

/** For each of `names` the registry's history says was unregistered: the latest such event (a rerun then has nothing to do). */
export async function unregisteredBefore(registry: Registry, names: string[]): Promise<Map<string, RegistryEvent>> {
  const found = new Map<string, RegistryEvent>()
  for (const event of await readHistory(registry, HISTORY_LIMIT)) {
    if (event.type !== 'sentinel.unregistered' || !Array.isArray(event.groups)) continue
    for (const name of event.groups as string[]) if (names.includes(name) && !found.has(name)) found.set(name, event)
  }
  return found
}

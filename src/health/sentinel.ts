import type {ConnectOptions} from '../fleet/connect.js'
import {type Endpoint, endpointOf, instanceKey} from '../registry/address.js'
import type {Shard} from '../registry/schema.js'
import {disagreement, majorityOf} from '../sentinel/quorum.js'
import {type SentinelRecord, describeRelease} from '../sentinel/record.js'
import {
  type MonitoredMaster,
  type SentinelCredentials,
  checkQuorum,
  inTilt,
  isDown,
  knownReplicas,
  monitoredMasters,
  unreachableView,
  viewOf,
} from '../sentinel/sentinel.js'
import {Sentinels, sameInstance} from '../sentinel/sentinels.js'
import {plural} from '../ui/terminal.js'

/**
 * shards:check's Sentinel section, when the registry records Sentinels: per group,
 * whether every Sentinel agrees with the registry (master address, config epoch), the
 * quorum (CKQUORUM), the replicas Sentinel knows against those the registry names; and
 * for the whole fleet, Sentinels that do not answer or are in TILT, an instance
 * monitored twice, and a master the registry routes to that no Sentinel monitors.
 */
export interface SentinelGroupRow {
  group: string
  /** The master the registry routes the group's shards to (as recorded). */
  master: string
  shards: string[]
  epoch: number
  /** Per Sentinel: what it says of the group. */
  views: {sentinel: string; master?: string; epoch?: number; flags?: string[]; error?: string}[]
  quorum?: string
  problems: string[]
}

export interface SentinelReport {
  sentinels: {sentinel: string; reachable: boolean; tilt?: boolean; error?: string}[]
  groups: SentinelGroupRow[]
  /** Problems of the Sentinels themselves and of the fleet as a whole. */
  fleet: {subject: string; problems: string[]}[]
}

export async function checkSentinel(
  record: SentinelRecord,
  shards: Shard[],
  access: {credentials: SentinelCredentials; options: ConnectOptions},
  /** Only some shards are checked (--shard): only their groups. */
  filtered = false,
): Promise<SentinelReport> {
  const sentinels = new Sentinels(record.sentinels, access.credentials, access.options)
  try {
    return await inspect(record, shards, sentinels, filtered)
  } finally {
    await sentinels.close()
  }
}

async function inspect(record: SentinelRecord, shards: Shard[], sentinels: Sentinels, filtered: boolean): Promise<SentinelReport> {
  const total = sentinels.endpoints.length
  const state = await sentinels.each(async (client) => ({tilt: await inTilt(client), masters: await monitoredMasters(client)}))
  const report: SentinelReport = {
    sentinels: state.map((s) => ({sentinel: s.sentinel, reachable: !s.error, tilt: s.value?.tilt, error: s.error?.message})),
    groups: [],
    fleet: [],
  }
  const answered = state.filter((s) => !s.error).length
  for (const s of state) {
    if (s.error) report.fleet.push({subject: `Sentinel ${s.sentinel}`, problems: [`does not answer: ${s.error.message}`]})
    else if (s.value!.tilt)
      report.fleet.push({
        subject: `Sentinel ${s.sentinel}`,
        problems: ['is in TILT mode (its clock jumped, or it was stopped): it acts on nothing for 30 s'],
      })
  }
  if (answered < majorityOf(total)) {
    report.fleet.push({
      subject: 'Sentinels',
      problems: [
        `only ${answered} of ${total} Sentinels answer (a majority is ${majorityOf(total)}): no failover can be authorised, and sentinel:follow cannot follow one`,
      ],
    })
  }

  const byMaster = new Map<string, Shard[]>()
  for (const shard of shards) byMaster.set(instanceKey(shard.master), [...(byMaster.get(instanceKey(shard.master)) ?? []), shard])

  for (const [name, group] of record.groups) {
    const mine = byMaster.get(group.master) ?? []
    // With --shard, only the groups of the shards checked.
    if (filtered && mine.length === 0) continue
    const row: SentinelGroupRow = {
      group: name,
      master: group.master,
      shards: mine.map((s) => s.id),
      epoch: group.epoch,
      views: [],
      problems: [],
    }
    report.groups.push(row)
    if (group.released) {
      row.problems.push(
        `released from Sentinel by ${describeRelease(group.released)} at ${group.released.at}: no automatic failover until it is handed back (finish that operation, or run sentinel:register)`,
      )
      continue
    }
    if (mine.length === 0)
      row.problems.push(`the registry routes no shard to ${group.master} any more: the record is stale (run sentinel:register)`)
    const {views} = await gatherAll(sentinels, name)
    row.views = views.map((v) => ({
      sentinel: v.sentinel,
      master: v.master && instanceKey(v.master),
      epoch: v.epoch,
      flags: v.flags,
      error: v.reachable ? (v.monitors ? undefined : 'does not monitor it') : v.error,
    }))
    for (const v of views) {
      if (!v.reachable) continue
      if (!v.monitors) {
        row.problems.push(`Sentinel ${v.sentinel} does not monitor it`)
        continue
      }
      if (!(await sameInstance(v.master!, endpointOf(group.master)))) {
        row.problems.push(
          `Sentinel ${v.sentinel} says the master is ${instanceKey(v.master!)} (epoch ${v.epoch}), the registry routes to ${group.master}: run sentinel:follow`,
        )
      } else if (v.epoch !== group.epoch) {
        row.problems.push(`Sentinel ${v.sentinel} is at config epoch ${v.epoch}, the registry recorded ${group.epoch}`)
      }
      const flagged = (v.flags ?? []).filter((f) => ['s_down', 'o_down', 'failover_in_progress'].includes(f))
      if (flagged.length > 0) row.problems.push(`Sentinel ${v.sentinel} flags the master ${flagged.join(', ')}`)
    }
    if (answered < majorityOf(total)) row.problems.push(disagreement(views, total))
    const quorum = await sentinels.each((client) => checkQuorum(client, name))
    const bad = quorum.find((q) => !q.error && !q.value!.ok)
    row.quorum = bad ? `${bad.sentinel}: ${bad.value!.message}` : (quorum.find((q) => q.value)?.value?.message ?? 'unknown')
    if (bad) row.problems.push(`CKQUORUM on ${bad.sentinel}: ${bad.value!.message}`)
    row.problems.push(...(await replicaProblems(sentinels, name, mine, group.rejoin ?? [])))
  }

  // A master the registry routes to that no Sentinel monitors (for the recorded groups), and an instance monitored twice.
  const recordedMasters = new Set([...record.groups.values()].map((g) => g.master))
  for (const [master, list] of byMaster) {
    if (!recordedMasters.has(master)) {
      report.fleet.push({
        subject: master,
        problems: [
          `the registry routes ${plural(list.length, 'shard')} here (${list[0].id}...), but no Sentinel monitors it for the fleet: run sentinel:register`,
        ],
      })
    }
  }
  for (const s of state) {
    if (!s.value) continue
    for (const problem of await monitoredTwice(s.value.masters, record, [...byMaster.keys()]))
      report.fleet.push({subject: `Sentinel ${s.sentinel}`, problems: [problem]})
  }
  return report
}

/** Every Sentinel's view (not only a majority's: a check reports them all). */
async function gatherAll(sentinels: Sentinels, name: string) {
  const views = await Promise.all(
    sentinels.endpoints.map(async (s) => {
      try {
        return await viewOf(await sentinels.client(s), instanceKey(s), name)
      } catch (error) {
        return unreachableView(instanceKey(s), error as Error)
      }
    }),
  )
  return {views}
}

/** Replicas Sentinel knows against those the registry names, and former masters not back yet. */
async function replicaProblems(sentinels: Sentinels, name: string, shards: Shard[], rejoin: string[]): Promise<string[]> {
  const answers = await sentinels.each((client) => knownReplicas(client, name))
  const known = answers.find((a) => a.value)?.value
  if (!known || shards.length === 0) return []
  const named = new Map<string, Endpoint>()
  for (const shard of shards) for (const r of [...shard.replicas, ...shard.persist]) named.set(instanceKey(r), r)
  const problems: string[] = []
  for (const [key, replica] of named) {
    let found = false
    for (const k of known) if (await sameInstance(k.instance, replica)) found = true
    if (!found) problems.push(`the registry names replica ${key}, which Sentinel does not know: it would never be promoted or repointed`)
  }
  for (const k of known) {
    let isNamed = false
    for (const r of named.values()) if (await sameInstance(k.instance, r)) isNamed = true
    let returning = false
    for (const r of rejoin) if (await sameInstance(k.instance, endpointOf(r))) returning = true
    if (returning) {
      if (isDown(k.flags)) problems.push(`former master ${instanceKey(k.instance)} is down: it rejoins as a replica when it returns`)
      continue
    }
    if (!isNamed && !isDown(k.flags))
      problems.push(`Sentinel knows replica ${instanceKey(k.instance)}, which the registry does not name: Sentinel may promote it`)
  }
  return problems
}

/** An instance a Sentinel monitors under two names, or under a name the registry does not record while a recorded group has it. */
async function monitoredTwice(masters: MonitoredMaster[], record: SentinelRecord, routed: string[]): Promise<string[]> {
  const problems: string[] = []
  const byAddress = new Map<string, string[]>()
  for (const m of masters) byAddress.set(instanceKey(m.master), [...(byAddress.get(instanceKey(m.master)) ?? []), m.name])
  for (const [address, names] of byAddress) {
    let ours = false
    for (const r of routed) if (await sameInstance(endpointOf(address), endpointOf(r))) ours = true
    const recorded = names.filter((n) => record.groups.has(n))
    if (names.length > 1 && (ours || recorded.length > 0))
      problems.push(`monitors ${address} twice, as ${names.join(' and ')}: two names can fail it over twice`)
  }
  return problems
}

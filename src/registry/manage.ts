import {ExitCode, ShardctlError, usageError} from '../errors.js'
import type {ConnectionPool} from '../fleet/connect.js'
import {type Identity, identify, identityOf} from '../fleet/identity.js'
import {databaseCount} from '../fleet/instance.js'
import {type ShardAddress, instanceKey} from './address.js'
import {shares} from './assign.js'
import {Change, type Registry, compareIds, unknownShard} from './registry.js'
import {type Shard, isValidShardId, sharedDatabases, validateShardId} from './schema.js'
import {plural} from '../ui/terminal.js'

/**
 * The everyday registry changes behind add / remove / init / weight. Each returns what it
 * did (or, with dryRun, would do) so that commands only render.
 */

export interface NewShard {
  id: string
  master: ShardAddress
  replicas: ShardAddress[]
  persist?: ShardAddress[]
  weight: number
}

/** Master and replicas of one shard are different servers: compared by what they are, not how they are spelled. */
function checkDistinct(shard: NewShard, identity: Identity): void {
  const nodes = [shard.master, ...shard.replicas, ...(shard.persist ?? [])]
  const ids = nodes.map((a) => identity.instance(a))
  const second = ids.findIndex((id, i) => ids.indexOf(id) !== i)
  if (second === -1) return
  const [a, b] = [nodes[ids.indexOf(ids[second])], nodes[second]].map((n) => instanceKey(n))
  throw usageError(
    a === b ? `${a} is named twice for shard ${shard.id}` : `${a} and ${b} are one instance, named twice for shard ${shard.id}`,
    'master and replicas must be different instances',
  )
}

/**
 * The identity of the instances a change involves: the new shards' nodes, and the
 * masters already registered on the same ports (another name of one of them would
 * otherwise pass). Probed where they answer; an instance that does not is known by
 * its canonical address.
 */
async function identityFor(pool: ConnectionPool | undefined, existing: Shard[], shards: NewShard[]): Promise<Identity> {
  if (!pool) return identityOf(new Map())
  const ports = new Set(shards.map((s) => s.master.port))
  return identify(pool, [
    ...shards.flatMap((s) => [s.master, ...s.replicas, ...(s.persist ?? [])]),
    ...existing.filter((s) => ports.has(s.master.port)).map((s) => s.master),
  ])
}

function toShard(shard: NewShard): Shard {
  return {
    id: shard.id,
    weight: shard.weight,
    master: strip(shard.master),
    replicas: shard.replicas.map(strip),
    persist: (shard.persist ?? []).map(strip),
    extra: {},
  }
}

/** Never let credentials reach the registry. */
function strip(a: ShardAddress): ShardAddress {
  return {host: a.host, port: a.port, db: a.db}
}

/**
 * Refuse an id that exists, a master database another shard already uses (SPEC §4.9),
 * and a shard whose master and replicas are not different instances.
 */
async function checkFree(registry: Registry, shards: NewShard[], pool?: ConnectionPool): Promise<void> {
  const {shards: existing, broken} = await registry.snapshot()
  const ids = new Set([...existing.map((s) => s.id), ...broken.map((b) => b.id)])
  for (const shard of shards) {
    if (ids.has(shard.id)) throw usageError(`shard ${shard.id} already exists`, 'choose another id, or remove it first')
  }
  for (const shard of shards) checkDistinct(shard, identityOf(new Map()))
  const identity = await identityFor(pool, existing, shards)
  for (const shard of shards) checkDistinct(shard, identity)
  const [shared] = sharedDatabases([...existing, ...shards], identity.database)
  if (shared) {
    const fresh = new Set(shards.map((s) => s.id))
    const [mine, theirs] = [shared.ids.filter((id) => fresh.has(id)), shared.ids.filter((id) => !fresh.has(id))]
    const who = theirs.length > 0 ? `shard ${theirs.join(', ')}` : `shard ${mine.slice(1).join(', ')} of the same command`
    throw usageError(
      `${shared.database} is already the master of ${who}; it cannot also hold shard ${mine[0]}`,
      'a database holds one shard: choose another database',
    )
  }
}

export async function addShard(
  registry: Registry,
  shard: NewShard,
  options: {dryRun: boolean; pool?: ConnectionPool},
): Promise<{shard: Shard; applied: boolean}> {
  validateShardId(shard.id)
  await checkFree(registry, [shard], options.pool)
  const entry = toShard(shard)
  if (!options.dryRun) await registry.addShards([entry])
  return {shard: entry, applied: !options.dryRun}
}

export interface RemovePlan {
  id: string
  /** Hashes assigned to the shard: routed nowhere once it is removed; still served once it is drained. */
  hashes: number
  action: 'remove' | 'drain'
  /** A drain of a shard whose weight is 0 already: nothing to change, nothing to publish. */
  alreadyDrained?: boolean
  applied: boolean
}

/**
 * Remove a shard, refused while hashes point at it (they would route nowhere) unless
 * forced; or drain it (weight 0) so it takes no new hashes.
 */
export async function planRemoval(registry: Registry, id: string, options: {drain: boolean; onCounting?: () => void}): Promise<RemovePlan> {
  validateShardId(id)
  const weights = await registry.weights()
  if (!weights.has(id)) throw unknownShard(id)
  options.onCounting?.()
  const hashes = await registry.assignmentsOf(id)
  if (!options.drain) return {id, hashes, action: 'remove', applied: false}
  return {id, hashes, action: 'drain', alreadyDrained: weights.get(id) === 0, applied: false}
}

export function refuseRemoval(plan: RemovePlan): ShardctlError {
  return new ShardctlError(`${plural(plan.hashes, 'hash still points', 'hashes still point')} at shard ${plan.id}`, {
    code: 'EINUSE',
    // A refusal because of what the registry holds, not an unexpected failure.
    exitCode: ExitCode.unhealthy,
    hint: 'use --drain to stop new assignments, move the data first, or --force to remove it anyway',
  })
}

/**
 * A refused removal, recorded in the history (and published, informational) like every
 * refused or aborted operation: who tried to remove what, and how many hashes stopped it.
 */
export async function recordRefusedRemoval(registry: Registry, plan: RemovePlan): Promise<void> {
  await registry.apply(new Change(), 'shard.remove-refused', {id: plan.id, hashes: plan.hashes})
}

export async function applyRemoval(registry: Registry, plan: RemovePlan): Promise<RemovePlan> {
  if (plan.action === 'drain' && plan.alreadyDrained) return plan
  if (plan.action === 'drain') await registry.setWeights(new Map([[plan.id, 0]]), {drained: true})
  else await registry.removeShard(plan.id, {orphanedHashes: plan.hashes})
  return {...plan, applied: true}
}

export interface InitOptions {
  instance: {host: string; port: number}
  replicas: {host: string; port: number}[]
  count: number
  firstDb: number
  idPrefix: string
  firstId?: number
  weight: number
}

/** The next free number after the ids that already use this prefix: init twice, ids never collide. */
function nextIdNumber(prefix: string, ids: Iterable<string>): number {
  let next = 0
  const pattern = new RegExp(`^${prefix.replace(/[-]/g, '\\-')}(\\d+)$`)
  for (const id of ids) {
    const match = pattern.exec(id)
    if (match) next = Math.max(next, Number(match[1]) + 1)
  }
  return next
}

/** N shards on consecutive databases of one instance, refused beyond its `databases` setting. */
export async function planInit(registry: Registry, pool: ConnectionPool, options: InitOptions): Promise<NewShard[]> {
  if (!/^[A-Za-z0-9][A-Za-z0-9_-]{0,40}$/.test(options.idPrefix)) {
    throw usageError(`invalid id prefix "${options.idPrefix}"`, 'letters, digits, _ and -, starting with a letter or digit')
  }
  const databases = await databaseCount(await pool.get(options.instance), options.instance)
  const lastDb = options.firstDb + options.count - 1
  if (lastDb >= databases) {
    throw usageError(
      `${instanceKey(options.instance)} has ${plural(databases, 'database')}; dbs ${options.firstDb}-${lastDb} do not fit`,
      'lower --count or --first-db, or raise "databases" in the instance\'s redis.conf',
    )
  }
  const weights = await registry.weights()
  const first = options.firstId ?? nextIdNumber(options.idPrefix, weights.keys())
  const width = Math.max(3, String(first + options.count - 1).length)
  const shards: NewShard[] = []
  for (let i = 0; i < options.count; i++) {
    const db = options.firstDb + i
    const id = `${options.idPrefix}${String(first + i).padStart(width, '0')}`
    if (!isValidShardId(id)) throw usageError(`shard id "${id}" would be invalid`, 'use a shorter --id-prefix')
    shards.push({
      id,
      master: {...strip({...options.instance, db})},
      replicas: options.replicas.map((r) => ({host: r.host, port: r.port, db})),
      weight: options.weight,
    })
  }
  await checkFree(registry, shards, pool)
  return shards
}

export async function applyInit(registry: Registry, shards: NewShard[]): Promise<void> {
  await registry.addShards(shards.map(toShard), {init: true})
}

export interface WeightChange {
  id: string
  current: number
  proposed: number
  /** What the proposal was computed from: keys in the db or hashes assigned. */
  fill?: number
}

export async function planWeight(registry: Registry, id: string, weight: number): Promise<WeightChange> {
  validateShardId(id)
  const current = (await registry.weights()).get(id)
  if (current === undefined) throw unknownShard(id)
  return {id, current, proposed: weight}
}

/**
 * The weight --even gives a shard already past its target, of a mean of 100: small, and
 * never 0. Weight 0 is the operator's drain, which --even keeps; a shard --even weighted
 * down stays one it weighs again, and gets more once it is the emptier one.
 */
export const EVEN_FLOOR = 1

/**
 * Weights that steer new assignments toward the emptier shards. The aim: after as many new
 * items again as the fleet holds now, every shard holds the same. A shard's weight is what
 * it lacks of that target, scaled so the mean weight is 100; a shard already past it gets
 * EVEN_FLOOR. Drained shards (weight 0) stay drained. An empty fleet gets equal weights.
 */
export function proposeEvenWeights(current: Map<string, number>, fill: Map<string, number>): WeightChange[] {
  const active = [...current].filter(([, w]) => w > 0).map(([id]) => id)
  const total = active.reduce((sum, id) => sum + (fill.get(id) ?? 0), 0)
  const target = (2 * total) / Math.max(1, active.length)
  const lack = new Map(active.map((id) => [id, total === 0 ? 1 : Math.max(0, target - (fill.get(id) ?? 0))]))
  const lackTotal = [...lack.values()].reduce((a, b) => a + b, 0)
  const proposals = [...current]
    .sort(([a], [b]) => compareIds(a, b))
    .map(([id, weight]) => {
      const share = lack.has(id) && lackTotal > 0 ? lack.get(id)! / lackTotal : 0
      const proposed = lack.has(id) ? Math.max(EVEN_FLOOR, Math.round(share * 100 * active.length)) : 0
      return {id, current: weight, proposed, fill: fill.get(id) ?? 0}
    })
  // New numbers that give every shard the share it has now are no change: keep the weights.
  const shareOf = (key: 'current' | 'proposed') => shares(new Map(proposals.map((p) => [p.id, p[key]])))
  const [before, after] = [shareOf('current'), shareOf('proposed')]
  const anyWeight = (of: Map<string, number>) => [...of.values()].some((v) => v > 0)
  const sameShares =
    anyWeight(before) && anyWeight(after) && proposals.every((p) => Math.abs(before.get(p.id)! - after.get(p.id)!) < 0.0005)
  return sameShares ? proposals.map((p) => ({...p, proposed: p.current})) : proposals
}

export async function applyWeights(registry: Registry, changes: WeightChange[], details: Record<string, unknown> = {}): Promise<void> {
  const changed = changes.filter((c) => c.current !== c.proposed)
  if (changed.length === 0) return
  await registry.setWeights(new Map(changed.map((c) => [c.id, c.proposed])), details)
}

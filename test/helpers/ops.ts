import {setTimeout as sleep} from 'node:timers/promises'

import {Redis} from 'ioredis'

import {parseInfo, parseReplication} from '../../src/fleet/info.js'
import {type RunningCli, isStopped, startCli, until} from './cli.js'
import {type TestServer, dumpDb, withClients} from './redis.js'

/**
 * Helpers for the long operations under faults: where the journal stands, a run
 * stopped at a precise step (as a frozen operator would be), and the whole state of a
 * small fleet, to prove that something changed nothing.
 */

export interface JournalView {
  owner?: string
  steps: {name: string; state: 'started' | 'done'}[]
}

export async function readJournal(reg: Redis, prefix = 'shards'): Promise<JournalView | null> {
  const raw = await reg.get(`${prefix}._journal`)
  return raw === null ? null : (JSON.parse(raw) as JournalView)
}

export const stepDone = (journal: JournalView | null, step: string) =>
  journal !== null && journal.steps.some((s) => s.name === step && s.state === 'done')

/** Wait until the journal records the step as done. */
export async function untilStepDone(reg: Redis, step: string): Promise<void> {
  await until(`the journal records step ${step} as done`, async () => stepDone(await readJournal(reg), step))
}

/**
 * Start a command that stops itself (SIGSTOP) at a step, and wait until it has. It
 * fails clearly if the command ended instead of reaching the step.
 */
export async function stoppedAt(args: string[], point: string, env: Record<string, string | undefined> = {}): Promise<RunningCli> {
  const run = await startCli(args, {env: {...env, SHARDCTL_FAILPOINT: point}})
  let ended = false
  void run.done.then(() => {
    ended = true
  })
  await until(`the command stopped at ${point}`, () => {
    if (ended) throw new Error(`the command ended before ${point}: ${run.stderr()}${run.stdout()}`)
    return isStopped(run.pid)
  })
  return run
}

export function resume(run: RunningCli): void {
  process.kill(run.pid, 'SIGCONT')
}

/**
 * How long a fault test freezes an operator or stalls the registry: half as long again as the
 * default --max-pause (1 s), so the pause it causes always runs past it.
 */
export const PAST_MAX_PAUSE_MS = 1500

/** Keep a process stopped for a while (the fault itself: a frozen operator), then let it go on. */
export async function frozenFor(run: RunningCli, ms: number): Promise<void> {
  await sleep(ms)
  resume(run)
}

export async function roleOf(server: TestServer): Promise<{role: string; masterPort?: number}> {
  return withClients([server], async ([c]) => {
    const r = parseReplication(parseInfo(await c.info('replication')))
    return {role: r.role, masterPort: r.masterPort}
  })
}

/**
 * Wait until replication among these servers has settled: every replica has its
 * copy, its link up, and the offset of its master (nothing writes meanwhile). A
 * replica still loading a full sync would otherwise show a keyspace that changes by
 * itself between two looks.
 */
export async function replicationSettled(servers: TestServer[]): Promise<void> {
  const byPort = new Map(servers.map((s) => [s.port, s]))
  await until('replication settled', async () => {
    for (const s of servers) {
      const info = await withClients([s], async ([c]) => parseReplication(parseInfo(await c.info('replication'))))
      if (info.role !== 'slave') continue
      if (!info.linkUp || info.syncInProgress) return false
      const master = byPort.get(info.masterPort!)
      if (!master) continue
      const offset = await withClients([master], async ([c]) => parseReplication(parseInfo(await c.info('replication'))).offset)
      if (info.offset < offset) return false
    }
    return true
  })
}

/**
 * Everything an operator could change on a small fleet: the registry's content, and
 * each instance's role, fencing and keys per database (once replication has settled).
 */
export async function fleetState(reg: Redis, servers: TestServer[]): Promise<unknown> {
  await replicationSettled(servers)
  const registry = await dumpDb(reg)
  const instances = await Promise.all(
    servers.map((s) =>
      withClients([s], async ([c]) => ({
        port: s.port,
        ...parseReplicationSummary(await c.info('replication')),
        fencing: await c.config('GET', 'min-replicas-*'),
        keyspace: (await c.info('keyspace'))
          .split('\n')
          .filter((l) => l.startsWith('db'))
          .map((l) => l.replace(/,expires.*$/, '').trim()),
      })),
    ),
  )
  return {registry, instances}
}

function parseReplicationSummary(text: string): {role: string; masterPort?: number} {
  const r = parseReplication(parseInfo(text))
  return {role: r.role, masterPort: r.masterPort}
}

/** No instance is left with shardctl's write fence (min-replicas-to-write 1000000). */
export async function fencesOf(servers: TestServer[]): Promise<string[]> {
  const fenced: string[] = []
  for (const s of servers) {
    const [, value] = await withClients([s], ([c]) => c.config('GET', 'min-replicas-to-write'))
    if (value === '1000000') fenced.push(String(s.port))
  }
  return fenced
}

/** Whether the instance takes a write right now (not fenced, paused or a replica): a SET with a short timeout. */
export async function takesWrites(server: TestServer, db = 0): Promise<boolean> {
  const probe = new Redis({
    port: server.port,
    host: '127.0.0.1',
    db,
    protocol: 2,
    commandTimeout: 2000,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  })
  probe.on('error', () => undefined)
  try {
    await probe.set('__takes_writes', '1')
    await probe.del('__takes_writes')
    return true
  } catch {
    return false
  } finally {
    probe.disconnect()
  }
}

import {randomBytes} from 'node:crypto'

import {ExitCode, ShardctlError} from '../errors.js'
import type {Registry} from '../registry/registry.js'
import type {OperatorLock} from './lock.js'

/**
 * The operation journal (SPEC §4.3): a long operation records each step in the
 * registry before it takes it, so a run killed at any point leaves enough behind for
 * the next run to finish the operation or roll it back. One operation at a time:
 * the journal is written only under the operator lock (and fenced by it).
 */

export interface StepRecord {
  name: string
  state: 'started' | 'done'
  at: string
  /** What a finished step must leave for a recovery (e.g. a setting it changed and must restore). */
  result?: unknown
}

export interface JournalEntry<P = unknown> {
  v: 1
  id: string
  type: 'promote' | 'split'
  /** What the operation is about, e.g. the instance being promoted away from. */
  target: string
  by: string
  startedAt: string
  plan: P
  steps: StepRecord[]
}

export async function readJournal(registry: Registry): Promise<JournalEntry | undefined> {
  const raw = await registry.guard(registry.keys.journal, 'a string', () => registry.client.get(registry.keys.journal))
  if (raw === null) return undefined
  try {
    const entry = JSON.parse(raw) as JournalEntry
    if (entry.v !== 1 || !Array.isArray(entry.steps)) throw new Error('unknown shape')
    return entry
  } catch (error) {
    throw new ShardctlError(`the operation journal ${registry.keys.journal} is unreadable: ${(error as Error).message}`, {
      code: 'ECORRUPT',
      hint: `inspect it with redis-cli GET ${registry.keys.journal}; delete it once the fleet is consistent`,
    })
  }
}

/** The last step that was started, and whether it finished. */
export function lastStep(entry: JournalEntry): StepRecord | undefined {
  return entry.steps.at(-1)
}

export function stepDone(entry: JournalEntry, name: string): boolean {
  return entry.steps.some((s) => s.name === name && s.state === 'done')
}

/** Fault injection for tests: SHARDCTL_FAILPOINT=<step>:<when>:<action>, e.g. demote:after:kill or plan:after:sleep-1500. */
async function failpoint(step: string, when: 'before' | 'after'): Promise<void> {
  const spec = process.env.SHARDCTL_FAILPOINT
  if (!spec) return
  const [name, at, action] = spec.split(':')
  if (name !== step || at !== when) return
  if (action === 'kill') process.kill(process.pid, 'SIGKILL')
  const sleep = /^sleep-(\d+)$/.exec(action ?? '')
  if (sleep) await new Promise((resolve) => setTimeout(resolve, Number(sleep[1])))
}

export class Journal<P> {
  /** Told the name of each step as it starts (progress for a person). */
  onStep?: (name: string) => void

  private constructor(
    private readonly registry: Registry,
    private readonly lock: OperatorLock,
    readonly entry: JournalEntry<P>,
  ) {}

  /** Start a new operation; refused while another one awaits recovery. */
  static async begin<P>(registry: Registry, lock: OperatorLock, type: JournalEntry['type'], target: string, plan: P): Promise<Journal<P>> {
    const pending = await readJournal(registry)
    if (pending) throw pendingOperation(pending)
    const entry: JournalEntry<P> = {
      v: 1,
      id: randomBytes(6).toString('hex'),
      type,
      target,
      by: registry.actor.user,
      startedAt: new Date().toISOString(),
      plan,
      steps: [],
    }
    const journal = new Journal(registry, lock, entry)
    await journal.save()
    return journal
  }

  /** Take over an operation a killed run left behind. */
  static resume<P>(registry: Registry, lock: OperatorLock, entry: JournalEntry<P>): Journal<P> {
    return new Journal(registry, lock, entry)
  }

  /** Record the step, take it, record that it is done (with its result, if asked to keep it). */
  async step<T>(name: string, action: () => Promise<T>, options: {keepResult?: boolean} = {}): Promise<T> {
    this.onStep?.(name)
    this.entry.steps.push({name, state: 'started', at: new Date().toISOString()})
    await this.save()
    await failpoint(name, 'before')
    const result = await action()
    this.entry.steps.push({name, state: 'done', at: new Date().toISOString(), ...(options.keepResult ? {result} : {})})
    await this.save()
    await failpoint(name, 'after')
    return result
  }

  /** The operation is over (finished or rolled back): the journal goes, the outcome is in the history. */
  async close(): Promise<void> {
    await this.write('')
  }

  private save(): Promise<void> {
    return this.write(JSON.stringify(this.entry))
  }

  private async write(json: string): Promise<void> {
    try {
      await this.registry.client.journal(this.registry.keys.lock, this.registry.keys.journal, this.lock.value, json)
    } catch (error) {
      if ((error as Error).message.includes('LOCKLOST')) {
        throw new ShardctlError('the operator lock was lost during the operation; stopped before the next step', {
          code: 'ELOCKLOST',
          exitCode: ExitCode.locked,
          hint: 'run the same command again to finish or roll back the operation',
        })
      }
      throw error
    }
  }
}

export function pendingOperation(entry: JournalEntry): ShardctlError {
  const last = lastStep(entry)
  const where = last ? `at step "${last.name}" (${last.state})` : 'before its first step'
  return new ShardctlError(`an interrupted ${entry.type} of ${entry.target}, started by ${entry.by} at ${entry.startedAt}, stopped ${where}`, {
    code: 'EPENDING',
    exitCode: ExitCode.unexpected,
    hint: `run shardctl shards:${entry.type} ${entry.target} to finish or roll it back first`,
  })
}

import {format} from 'node:util'

import type {Config} from '@oclif/core'

import ShardsMove from '../commands/shards/move.js'
import type {OperatorLock} from '../ops/lock.js'
import {note} from '../ui/terminal.js'

/**
 * shards:move as a rebalance runs it, in this process: the same command, flags and
 * code path as typed by hand, with its data lines sent to stderr as progress (the
 * rebalance's own stdout is its plan and result) and its --json document kept, not printed.
 * It runs under the rebalance's operator lock, held (and renewed) across all the moves so
 * that no other operator comes in between two of them: its journal and registry changes
 * are fenced by that lock, and its connections bear the lock's token, so that an operator
 * who takes the lock over can cut them.
 */
class MoveStep extends ShardsMove {
  static override id = 'shards:move'
  document?: unknown
  declare protected readonly operatorToken: string

  constructor(
    argv: string[],
    config: Config,
    private readonly rebalanceLock: OperatorLock,
  ) {
    super(argv, config)
    this.operatorToken = rebalanceLock.token
  }

  /** The rebalance's lock: neither taken nor released by the move. */
  protected override async lock(): Promise<OperatorLock> {
    const registry = await this.registry()
    registry.fence = {key: this.rebalanceLock.key, value: this.rebalanceLock.value}
    return this.rebalanceLock
  }

  public override log(message = '', ...args: unknown[]): void {
    if (!this.jsonEnabled()) note(format(message, ...args))
  }

  public override logJson(json: unknown): void {
    this.document = json
  }

  /** Run it as oclif would: init, run, catch (the error said), finally (connections closed). */
  public go(): Promise<unknown> {
    return this._run()
  }
}

/**
 * One move, under the rebalance's lock; its outcome: exit code 0, or the one shards:move exited with; its error was
 * said on stderr, or (--json) is returned.
 */
export async function runMove(argv: string[], config: Config, lock: OperatorLock): Promise<{exitCode: number; error?: unknown}> {
  const step = new MoveStep(argv, config, lock)
  // Each command run adds its own stdout error listener: taken off again, so that many moves add none.
  const listeners = new Set(process.stdout.listeners('error'))
  try {
    await step.go()
    return {exitCode: 0}
  } catch (error) {
    const code = (error as {oclif?: {exit?: number}}).oclif?.exit
    if (typeof code !== 'number') throw error
    return {exitCode: code, error: (step.document as {error?: unknown} | undefined)?.error}
  } finally {
    for (const listener of process.stdout.listeners('error'))
      if (!listeners.has(listener)) process.stdout.removeListener('error', listener as (...args: unknown[]) => void)
  }
}

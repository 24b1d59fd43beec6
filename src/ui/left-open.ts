import {ExitCode, ShardctlError} from '../errors.js'
import {describeIds} from '../health/groups.js'
import type {LeftOpen, StillRefusing} from '../ops/cutover.js'
import {formatDuration} from './progress.js'
import {plural} from './terminal.js'

/**
 * A cut-over that stopped half-way, said so that nobody has to dig: every instance that
 * still refuses writes and why (shardctl's fence since when, a replica the registry
 * already routes to, a host that does not answer) with the shards on it, whether an
 * acknowledged write could have been lost, and the exact command that finishes or rolls
 * the operation back. One line for a person (the base command adds the hint), the same
 * facts as fields of the --json error. Exit 5 while something refuses writes.
 */
export function leftOpenError(left: LeftOpen, recoverCommand: string, now = Date.now()): ShardctlError {
  const {type, target} = left.operation
  const stopped = left.retried
    ? `the ${type} of ${target} stopped half-way and did not heal within --heal-within ${formatDuration(left.healWithinMs)}`
    : `the ${type} of ${target} stopped half-way`
  const refusing =
    left.refusing.length > 0
      ? `writes are refused by ${left.refusing.map((r) => describeRefusal(r, now)).join(', and by ')}`
      : `no instance refuses writes, but the ${type} stays open in the journal and no other operation can start`
  const lost = left.lossless ? '; no acknowledged write was lost' : ''
  // What the failure itself advises (bring a host back, look at the registry, --force) comes after the command.
  const advice = left.cause.hint ? ` (${left.cause.hint})` : ''
  return new ShardctlError(`${stopped} (${left.cause.message}): ${refusing}${lost}`, {
    code: left.refusing.length > 0 ? 'EDEGRADED' : 'EOPEN',
    exitCode: left.refusing.length > 0 ? ExitCode.degraded : ExitCode.unexpected,
    hint: `to finish or roll it back, run: ${recoverCommand}${advice}`,
    details: {
      operation: left.operation,
      cause: left.cause,
      healWithinMs: left.healWithinMs,
      refusing: left.refusing,
      lossless: left.lossless,
      recover: recoverCommand,
    },
  })
}

function describeRefusal(r: StillRefusing, now: number): string {
  const shards = r.shards.length > 0 ? `${plural(r.shards.length, 'shard')} ${describeIds(r.shards)}` : 'no shard routed to it now'
  const since = r.fencedSince ? ` since ${r.fencedSince} (${formatDuration(Math.max(0, now - Date.parse(r.fencedSince)))} ago)` : ''
  switch (r.why) {
    case 'fence':
      return `${r.instance} (shardctl's write fence${since}; ${shards})`
    case 'replica':
      return `${r.instance} (still a replica, yet the registry routes ${shards} to it)`
    case 'silent':
      return `${r.instance} (it does not answer${r.fencedSince ? `; shardctl's write fence is on${since}` : ''}; ${shards})`
  }
}

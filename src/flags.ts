import {Flags} from '@oclif/core'

import type {DestinationSettings} from './backup/destination.js'
import {usageError} from './errors.js'
import {
  type ConnectTarget,
  type Endpoint,
  parseAddress,
  parseInstance,
  parseRegistryAddress,
  parseSentinelAddress,
} from './registry/address.js'
import {DEFAULT_PREFIX, parseWeight, validatePrefix, validateShardId} from './registry/schema.js'

/**
 * Flags shared by the commands, defined once with their parsers and environment variables.
 * Defaults never touch the network: `oclif manifest` evaluates them.
 */

/** `500ms`, `5s`, `2m`; a bare number is milliseconds. */
/**
 * A duration (500, 500ms, 5s, 2m) as milliseconds. `what` names where it came from in a
 * refusal ("--grace: invalid duration ..."); 0 is refused unless `zero` allows it.
 */
export function parseDuration(input: string, what?: string, options: {zero?: boolean} = {}): number {
  const from = what ? `${what}: ` : ''
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$/i.exec(input)
  if (!match) throw usageError(`${from}invalid duration "${input}"`, 'use milliseconds (500), or a unit: 500ms, 5s, 2m')
  const factor = {ms: 1, s: 1000, m: 60_000}[(match[2] ?? 'ms').toLowerCase() as 'ms' | 's' | 'm']
  const ms = Math.round(Number(match[1]) * factor)
  if (ms < 0 || (ms === 0 && !options.zero)) throw usageError(`${from}duration "${input}" must be more than 0`)
  return ms
}

/**
 * A moment in ISO 8601, read the same on every machine: 2026-12-02, 2026-12-02T13:00,
 * 2026-12-02 13:00:05.250, each with an optional zone (Z, +01:00, -0500). Without a zone
 * it is UTC, as every time shardctl prints is: never this machine's local time, which
 * would pick another moment in another timezone.
 */
export function parseInstant(input: string, what: string): Date {
  const match = /^\s*(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(\.\d{1,3})?)?)?\s*(Z|[+-]\d{2}:?\d{2})?\s*$/i.exec(input)
  const refuse = () =>
    usageError(`${what}: invalid time "${input}"`, 'use ISO 8601 in UTC (2026-12-02T13:00Z) or with its offset (2026-12-02T14:00+01:00)')
  if (!match) throw refuse()
  const [, y, mo, d, h = '00', mi = '00', s = '00', fraction = '', zone = 'Z'] = match
  const offset = zone.toUpperCase() === 'Z' ? 'Z' : `${zone.slice(0, 3)}:${zone.slice(-2)}`
  const date = new Date(`${y}-${mo}-${d}T${h}:${mi}:${s}${fraction.padEnd(fraction ? 4 : 0, '0')}${offset}`)
  // Out-of-range fields (month 13, 25:00, Feb 30) are refused, not rolled over.
  const fields = new Date(`${y}-${mo}-${d}T${h}:${mi}:${s}Z`)
  if (Number.isNaN(date.getTime()) || fields.getUTCDate() !== Number(d) || fields.getUTCHours() !== Number(h)) throw refuse()
  return date
}

export function parseCount(input: string, what: string, min = 0, max = 1_000_000): number {
  if (!/^\d+$/.test(input.trim())) throw usageError(`invalid ${what} "${input}"`, `give a whole number from ${min} to ${max}`)
  const n = Number(input)
  if (n < min || n > max) throw usageError(`${what} ${n} out of range`, `give a whole number from ${min} to ${max}`)
  return n
}

export const registryFlag = Flags.custom<ConnectTarget>({
  char: 'r',
  env: 'SHARDCTL_REGISTRY',
  summary: 'Registry Redis: redis://[user:password@]host:port/db, host:port/db, or redis+sentinel://host1,host2,host3/<name>[/db].',
  default: async () => parseAddress('redis://127.0.0.1:6379/0'),
  defaultHelp: async () => 'redis://127.0.0.1:6379/0',
  helpValue: '<url>',
  parse: async (input) => parseRegistryAddress(input),
})

export const prefixFlag = Flags.custom<string>({
  env: 'SHARDCTL_PREFIX',
  summary: 'Key prefix of the registry (P.map, P.list, P.<id>).',
  default: DEFAULT_PREFIX,
  helpValue: '<prefix>',
  parse: async (input) => validatePrefix(input),
})

export const timeoutFlag = Flags.custom<number>({
  env: 'SHARDCTL_TIMEOUT',
  summary: 'Connect and command timeout for every Redis (500ms, 5s; bare number = ms).',
  default: 5000,
  defaultHelp: async () => '5s',
  helpValue: '<duration>',
  parse: async (input) => parseDuration(input),
})

/**
 * --heal-within of split and promote: how long a cut-over that fails half-way keeps
 * trying to finish or roll back by itself. Its default follows --max-pause, so it is
 * decided in the command (healWithinMs); 0 turns healing off.
 */
export const healWithinFlag = Flags.string({
  summary: 'After a failure half-way (a host or the registry silent), how long to keep trying to finish or roll back.',
  description:
    'A cut-over that loses a host or the registry does not stop at the first timeout: until this long after the failure it runs again what a rerun would run (the same recovery, the same journal, the same lock), so a host that is back in time costs a pause, not an outage. Past it, the run names every instance that still refuses writes and the command that finishes the operation, and exits 5. 0: report at once.',
  helpValue: '<duration>',
  defaultHelp: async () => '--max-pause + 5s',
})

/** The bound --heal-within gives, or its default: --max-pause plus a few seconds for the hosts to come back. */
export function healWithinMs(given: string | undefined, maxPauseMs: number): number {
  if (given === undefined) return maxPauseMs + 5000
  if (/^\s*0+(\.0*)?\s*(ms|s|m)?\s*$/i.test(given)) return 0
  const ms = parseDuration(given, '--heal-within')
  if (ms > 600_000) throw usageError('--heal-within is at most 10m', 'past that, let a person or a cron job run --recover')
  return ms
}

export const yesFlag = Flags.boolean({
  char: 'y',
  env: 'SHARDCTL_YES',
  summary: 'Answer yes to every confirmation (needed where no terminal can ask).',
  default: false,
})

export const dryRunFlag = Flags.boolean({
  summary: 'Show what would change, change nothing.',
  default: false,
})

export const noColorFlag = Flags.boolean({
  summary: 'No colour (also NO_COLOR, a pipe, or --json).',
  default: false,
})

export const shardIdArg = (input: string) => Promise.resolve(validateShardId(input))

export const weightFlag = Flags.custom<number>({
  summary: 'Weight: share of new assignments relative to the other shards (0 = none).',
  helpValue: '<weight>',
  parse: async (input) => parseWeight(input),
})

export const addressFlag = Flags.custom<ConnectTarget>({
  helpValue: '<host:port/db>',
  parse: async (input) => parseAddress(input),
})

export const instanceFlag = Flags.custom<ConnectTarget>({
  helpValue: '<host:port>',
  parse: async (input) => parseInstance(input),
})

export const countFlag = (what: string, min: number, max: number) =>
  Flags.custom<number>({
    helpValue: '<n>',
    parse: async (input) => parseCount(input, what, min, max),
  })

/** TLS and credentials: for the registry (rediss:// or these files) and the shard instances. */
export const tlsFlags = {
  'tls-ca': Flags.string({
    env: 'SHARDCTL_TLS_CA',
    summary: 'CA certificate (PEM) to verify TLS servers with.',
    helpValue: '<file>',
    helpGroup: 'CONNECTION',
  }),
  'tls-cert': Flags.string({
    env: 'SHARDCTL_TLS_CERT',
    summary: 'Client certificate (PEM) for TLS.',
    helpValue: '<file>',
    helpGroup: 'CONNECTION',
  }),
  'tls-key': Flags.string({
    env: 'SHARDCTL_TLS_KEY',
    summary: 'Client private key (PEM) for TLS.',
    helpValue: '<file>',
    helpGroup: 'CONNECTION',
  }),
  'tls-insecure': Flags.boolean({
    env: 'SHARDCTL_TLS_INSECURE',
    summary: 'Do not verify TLS certificates (warns; for tests only).',
    helpGroup: 'CONNECTION',
  }),
  'instance-tls': Flags.boolean({
    env: 'SHARDCTL_INSTANCE_TLS',
    summary: 'Connect to shard instances over TLS (default: as the registry).',
    allowNo: true,
    helpGroup: 'CONNECTION',
  }),
  'instance-user': Flags.string({
    env: 'SHARDCTL_INSTANCE_USER',
    summary: 'ACL user for the shard instances (password: SHARDCTL_INSTANCE_PASSWORD or --ask-password).',
    helpGroup: 'CONNECTION',
  }),
  'ask-password': Flags.boolean({
    summary: 'Prompt for the password (not echoed) instead of taking it from the URL or environment.',
    helpGroup: 'CONNECTION',
  }),
}

/** Where backups are: a directory or s3://bucket/prefix (SHARDCTL_BACKUPS for both directions). */
export const backupsFlag = (direction: 'to' | 'from') =>
  Flags.string({
    env: 'SHARDCTL_BACKUPS',
    summary:
      direction === 'to'
        ? 'Where the backup goes: a directory, or s3://bucket/prefix.'
        : 'Where the backups are: a directory, or s3://bucket/prefix.',
    helpValue: '<dir|s3://bucket/prefix>',
    required: true,
  })

/** Reaching S3 or an S3-compatible store. Credentials: the AWS SDK's standard chain, never a flag. */
export const s3Flags = {
  's3-endpoint': Flags.string({
    env: 'SHARDCTL_S3_ENDPOINT',
    summary: "An S3-compatible store's URL (https://minio.internal:9000); AWS S3 when absent.",
    helpValue: '<url>',
    helpGroup: 'S3',
  }),
  's3-region': Flags.string({
    env: 'SHARDCTL_S3_REGION',
    summary: "The bucket's region (default: AWS_REGION, else us-east-1).",
    helpValue: '<region>',
    helpGroup: 'S3',
  }),
}

/** Server-side encryption of what a backup writes to S3. */
export const sseFlags = {
  sse: Flags.string({
    env: 'SHARDCTL_S3_SSE',
    summary: 'Server-side encryption of every object written to S3.',
    options: ['AES256', 'aws:kms'],
    helpGroup: 'S3',
  }),
  'sse-kms-key-id': Flags.string({
    env: 'SHARDCTL_S3_KMS_KEY_ID',
    summary: 'The KMS key for --sse aws:kms (default: the account key for S3).',
    helpValue: '<key-id|arn>',
    helpGroup: 'S3',
  }),
}

/** The destination settings the S3 and encryption flags give (absent ones left to the defaults). */
export function destinationSettings(flags: {
  timeout: number
  's3-endpoint'?: string
  's3-region'?: string
  sse?: string
  'sse-kms-key-id'?: string
}): DestinationSettings {
  const endpoint = flags['s3-endpoint']
  if (endpoint !== undefined && !/^https?:\/\/[^\s/]+/i.test(endpoint))
    throw usageError('--s3-endpoint is not an http(s) URL', 'e.g. https://minio.internal:9000')
  const s3 = {
    endpoint,
    region: flags['s3-region'],
    sse: flags.sse as 'AES256' | 'aws:kms' | undefined,
    kmsKeyId: flags['sse-kms-key-id'],
  }
  return {timeoutMs: flags.timeout, s3: Object.fromEntries(Object.entries(s3).filter(([, v]) => v !== undefined))}
}
/** A Redis Sentinel, host:port (port 26379 unless given); repeatable. Credentials: SHARDCTL_SENTINEL_USER / _PASSWORD. */
export const sentinelFlag = Flags.custom<Endpoint>({
  summary: 'A Redis Sentinel, host:port (repeat for each; default: the ones the registry records).',
  helpValue: '<host:port>',
  multiple: true,
  parse: async (input) => parseSentinelAddress(input),
})

/** A duration flag (500ms, 5s, 2m) as milliseconds. */
export const durationFlag = Flags.custom<number>({
  helpValue: '<duration>',
  parse: async (input) => parseDuration(input),
})

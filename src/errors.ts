/**
 * Exit codes of SPEC §5, and the one error type the core throws.
 * Commands map every failure to one of these codes and one line of text.
 */
export const ExitCode = {
  ok: 0,
  unexpected: 1,
  usage: 2,
  unhealthy: 3,
  locked: 4,
  /** A cut-over stopped half-way and could not heal: some instance still refuses writes. */
  degraded: 5,
  interrupted: 130,
} as const

export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode]

export class ShardctlError extends Error {
  readonly exitCode: ExitCodeValue
  /** What the operator can do about it, shown after the message. */
  readonly hint?: string
  /** A stable machine-readable code for --json consumers. */
  readonly code: string
  /** Structured facts for --json consumers, printed in the error object beside code and message. */
  readonly details?: Record<string, unknown>

  constructor(
    message: string,
    options: {code?: string; exitCode?: ExitCodeValue; hint?: string; cause?: unknown; details?: Record<string, unknown>} = {},
  ) {
    super(message, options.cause === undefined ? undefined : {cause: options.cause})
    this.name = 'ShardctlError'
    this.exitCode = options.exitCode ?? ExitCode.unexpected
    this.code = options.code ?? 'EFAILED'
    this.hint = options.hint
    this.details = options.details
  }
}

/** Bad flags, arguments or input: exit 2. */
export function usageError(message: string, hint?: string): ShardctlError {
  return new ShardctlError(message, {code: 'EUSAGE', exitCode: ExitCode.usage, hint})
}

/** The registry holds something that does not match the schema. */
export function corruptRegistryError(message: string, hint?: string): ShardctlError {
  return new ShardctlError(message, {
    code: 'ECORRUPT',
    exitCode: ExitCode.unexpected,
    hint: hint ?? 'inspect the key with redis-cli and repair it by hand',
  })
}

/**
 * Whether the operator asked for stack traces: DEBUG, which bin/run.js hands over as
 * SHARDCTL_DEBUG so that no library's debug output (which would echo credentials) sees it.
 */
export function debugWanted(): boolean {
  return Boolean(process.env.SHARDCTL_DEBUG || process.env.DEBUG)
}

import {X509Certificate} from 'node:crypto'
import {readFileSync} from 'node:fs'

import {Command, Errors, Flags, type Interfaces} from '@oclif/core'

import {ExitCode, ShardctlError, debugWanted, usageError} from './errors.js'

import {type ConnectOptions, ConnectionPool, close, connect} from './fleet/connect.js'
import {OperatorLock, newOperatorToken, operatorClientName} from './ops/lock.js'
import {noColorFlag, parseDuration, prefixFlag, registryFlag, timeoutFlag, tlsFlags} from './flags.js'
import {type FleetContext, fleetLabel, fleetOf, loadContext} from './config.js'
import {
  type ConnectTarget,
  type Credentials,
  type Endpoint,
  describeTarget,
  formatAddress,
  parseRegistryAddress,
} from './registry/address.js'
import {Registry, currentActor} from './registry/registry.js'
import type {Sentinels} from './sentinel/sentinels.js'
import {registryKeys, validatePrefix} from './registry/schema.js'
import {rememberEnvironmentSecrets, rememberSecret, rememberUrlSecrets, scrub} from './ui/secrets.js'
import {StepReporter, loadProgressBars} from './ui/progress.js'
import {closest} from './ui/suggest.js'
import {type TerminalMode, confirm, decideTerminal, note, paint} from './ui/terminal.js'

export type BaseFlags<T extends typeof Command> = Interfaces.InferredFlags<T['baseFlags'] & T['flags']>
export type Args<T extends typeof Command> = Interfaces.InferredArgs<T['args']>

export const EXIT_CODES_HELP = `EXIT CODES
  0    success
  1    unexpected error (unreachable host, corrupt registry, conflict)
  2    usage error: bad flags or arguments, or a confirmation needed where no terminal can ask
  3    unhealthy, partial, or refused because of what the fleet holds
  4    another operator holds the lock
  5    degraded: a split, move or promote stopped half-way and some instance still refuses
       writes; the last line names them and the command that finishes or rolls it back
  130  interrupted`

/**
 * The base of every command: shared flags, the terminal decision, connection lifetime
 * (every client closed on every path) and the mapping of every failure to one line
 * and an exit code of SPEC §5 — under --json too.
 */
export abstract class ShardctlCommand<T extends typeof Command> extends Command {
  static override enableJsonFlag = true
  static override baseFlags = {
    'no-color': noColorFlag,
  }

  protected flags!: BaseFlags<T>
  protected args!: Args<T>
  /** Every positional argument, for a command that takes several (static strict = false). */
  protected positional: string[] = []
  protected terminal!: TerminalMode

  private readonly cleanups: (() => Promise<void>)[] = []
  /** The flags that took their default: given neither on the command line nor in the environment. */
  private defaulted = new Set<string>()

  /** Whether a flag that has a default was given, on the command line or through its environment variable. */
  protected given(flag: string): boolean {
    return !this.defaulted.has(flag)
  }
  private readonly onSigint = () => void this.interrupted()

  public override async init(): Promise<void> {
    // Before anything can echo them: the passwords in the arguments and the environment.
    rememberUrlSecrets([...this.argv, process.env.SHARDCTL_REGISTRY ?? '', process.env.SHARDCTL_S3_ENDPOINT ?? ''])
    rememberEnvironmentSecrets()
    await super.init()
    // Decide the terminal first, from argv, so even a parse error is rendered right.
    this.terminal = decideTerminal({json: this.jsonEnabled(), noColor: this.argv.includes('--no-color')})
    process.once('SIGINT', this.onSigint)
    // A reader that stops early (`| head`) is not an error: stop quietly.
    process.stdout.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'EPIPE') process.exit(ExitCode.ok)
    })
    const {args, argv, flags, metadata} = await this.parse({
      args: this.ctor.args,
      baseFlags: this.ctor.baseFlags,
      enableJsonFlag: this.ctor.enableJsonFlag,
      flags: this.ctor.flags,
      strict: this.ctor.strict,
    })
    this.flags = flags as BaseFlags<T>
    this.args = args as Args<T>
    this.positional = argv.map(String)
    this.defaulted = new Set(
      Object.entries(metadata.flags)
        .filter(([, m]) => m.setFromDefault)
        .map(([name]) => name),
    )
    this.terminal = decideTerminal({json: this.jsonEnabled(), noColor: Boolean(this.flags['no-color'])})
  }

  /** Ask before a destructive step; --yes answers, and no terminal without --yes is exit 2. */
  protected async confirm(question: string): Promise<boolean> {
    return confirm(this.terminal, question, {yes: Boolean((this.flags as {yes?: boolean}).yes)})
  }

  /**
   * Finish with exit 3 (SPEC §5: partial) after the result was shown: under --json the
   * result is printed as the document, in a terminal the warning goes to stderr.
   */
  protected partial(result: object, message: string): never {
    if (this.jsonEnabled()) this.logJson(result)
    else this.warn(message)
    this.exit(ExitCode.unhealthy)
    throw new Error('unreachable')
  }

  /** Under --json, streaming commands print one compact JSON document per line. */
  protected ndjson = false

  public override logJson(json: unknown): void {
    // oclif's logJson colourises; --json never has colour, and stringify is 30x faster.
    process.stdout.write(`${this.ndjson ? JSON.stringify(json) : JSON.stringify(json, null, 2)}\n`)
  }

  /** Register work to do on every exit path (after success, failure or Ctrl-C). */
  protected onCleanup(fn: () => Promise<void>): void {
    this.cleanups.push(fn)
  }

  /** What a long operation shows of its steps (see ui/progress.ts). */
  protected async reporter(waits: Record<string, number> = {}): Promise<StepReporter> {
    if (!this.jsonEnabled() && process.stderr.isTTY) await loadProgressBars()
    return new StepReporter(this.terminal, waits)
  }

  /** Progress and warnings: stderr, silent under --json. */
  protected progress(message: string): void {
    if (!this.jsonEnabled()) note(message)
  }

  public override warn(message: string | Error): string | Error {
    note(paint.warn(`Warning: ${typeof message === 'string' ? message : message.message}`))
    return message
  }

  public override async finally(error: Error | undefined): Promise<void> {
    process.removeListener('SIGINT', this.onSigint)
    await this.closeEverything()
    return super.finally(error)
  }

  private async closeEverything(): Promise<void> {
    // Last registered, first run: a lock is released before the connection it uses is closed.
    const cleanups = this.cleanups.splice(0)
    for (const fn of cleanups.reverse()) await fn().catch(() => undefined)
  }

  /** Said after "Interrupted." when Ctrl-C comes in the middle of something that outlives the process. */
  protected interruptNote?: string

  private async interrupted(): Promise<void> {
    note(this.interruptNote ? `Interrupted. ${this.interruptNote}` : 'Interrupted.')
    await this.closeEverything()
    process.exit(ExitCode.interrupted)
  }

  public override async catch(error: Error & {exitCode?: number; oclif?: {exit?: number}}): Promise<never> {
    if (error instanceof Errors.ExitError) throw error
    const failure = describeFailure(error)
    const unknownFlag = /Nonexistent flags?: --?([\w-]+)/.exec(error.message)
    if (unknownFlag) {
      const known = Object.keys({...this.ctor.baseFlags, ...this.ctor.flags, json: true})
      const suggestion = closest(unknownFlag[1], known)
      if (suggestion) failure.hint = `did you mean --${suggestion}? (see --help)`
    }
    if (debugWanted() && error.stack) note(error.stack)
    if (this.jsonEnabled()) {
      this.logJson({
        error: {
          code: failure.code,
          message: failure.message,
          hint: failure.hint && scrub(failure.hint),
          exitCode: failure.exitCode,
          ...failure.details,
        },
      })
    } else {
      const hint = failure.hint ? paint.dim(` — ${failure.hint}`) : ''
      note(`${paint.bad('Error:')} ${failure.message}${hint}`)
    }
    // Printed already: leave through oclif's silent exit with the intended code.
    this.exit(failure.exitCode)
    throw error // unreachable: exit() throws
  }
}

type RegistryFlags = Interfaces.InferredFlags<(typeof RegistryCommand)['baseFlags']>

/** A command that talks to the registry (and the fleet): --registry, --prefix, --timeout. */
export abstract class RegistryCommand<T extends typeof Command> extends ShardctlCommand<T> {
  private registryInstance?: Promise<Registry>
  private shardPool?: Promise<ConnectionPool>

  static override baseFlags = {
    ...ShardctlCommand.baseFlags,
    context: Flags.string({
      env: 'SHARDCTL_CONTEXT',
      summary: 'A named fleet from the config file (registry, prefix): see README, Several fleets.',
      helpValue: '<name>',
    }),
    registry: registryFlag(),
    prefix: prefixFlag(),
    timeout: timeoutFlag(),
    ...tlsFlags,
  }

  private connections?: Promise<Connections>

  /** The named fleet in use, if any (config file, --context). */
  protected context?: FleetContext

  public override async init(): Promise<void> {
    await super.init()
    const flags = this.flags as RegistryFlags
    this.context = loadContext(flags.context)
    // A registry or prefix given as a flag or in the environment wins over the context.
    if (this.context?.registry && !this.given('registry')) {
      rememberUrlSecrets([this.context.registry])
      flags.registry = parseRegistryAddress(this.context.registry)
    }
    if (this.context?.prefix && !this.given('prefix')) flags.prefix = validatePrefix(this.context.prefix)
  }

  /**
   * Every question names the fleet it acts on, so nobody changes the wrong one: the
   * context that is this registry and prefix (the one in use, or another of the file),
   * else the registry's address alone — never a context whose registry -r overrode.
   */
  protected override confirm(question: string): Promise<boolean> {
    const flags = this.flags as RegistryFlags
    const fleet = fleetOf({registry: flags.registry, prefix: flags.prefix}, this.context)
    return super.confirm(`${fleetLabel(fleet, describeTarget(flags.registry))}: ${question}`)
  }

  /**
   * A command line that reaches the same fleet as this run, for the operator to run
   * next (e.g. the one that finishes an operation): the flags and environment that
   * named the registry, prefix, context and TLS files, never a credential.
   */
  protected sameFleetCommand(...command: string[]): string {
    const flags = this.flags as RegistryFlags
    const args = [this.config.bin, ...command]
    if (this.given('context') && flags.context) args.push('--context', flags.context)
    if (this.given('registry')) {
      const registry = flags.registry
      args.push('-r', registry.sentinel ? describeTarget(registry) : `${registry.tls ? 'rediss' : 'redis'}://${formatAddress(registry)}`)
    }
    if (this.given('prefix')) args.push('--prefix', flags.prefix)
    for (const file of ['tls-ca', 'tls-cert', 'tls-key', 'instance-user'] as const) {
      if (flags[file] !== undefined) args.push(`--${file}`, flags[file])
    }
    if (flags['tls-insecure']) args.push('--tls-insecure')
    if (flags['instance-tls'] !== undefined) args.push(flags['instance-tls'] ? '--instance-tls' : '--no-instance-tls')
    return args.map(shellWord).join(' ')
  }

  /** This run's token: in its lock, and in the name of every connection it opens. */
  protected readonly operatorToken = newOperatorToken()

  /**
   * Where and how to connect, decided once: the registry's credentials come from its
   * URL, SHARDCTL_REGISTRY_USER / SHARDCTL_REGISTRY_PASSWORD, or a prompt; the
   * instances' from SHARDCTL_INSTANCE_USER / SHARDCTL_INSTANCE_PASSWORD, or else the
   * registry's (user and password together: SHARDCTL_INSTANCE_PASSWORD alone is the
   * instances' `default` user's password). Passwords are never put in a message.
   */
  protected resolveConnections(): Promise<Connections> {
    this.connections ??= (async () => {
      const flags = this.flags as RegistryFlags
      const env = process.env
      const read = (flag: string, file: string | undefined) => {
        if (file === undefined) return undefined
        try {
          return readFileSync(file)
        } catch (error) {
          throw usageError(`cannot read --${flag} ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`)
        }
      }
      if ((flags['tls-cert'] === undefined) !== (flags['tls-key'] === undefined)) {
        const [given, missing] = flags['tls-cert'] === undefined ? ['tls-key', 'tls-cert'] : ['tls-cert', 'tls-key']
        throw usageError(`--${given} needs --${missing}`, 'a TLS client certificate is given with its private key: pass both, or neither')
      }
      const tls = {
        ca: certificate('tls-ca', flags['tls-ca'], read('tls-ca', flags['tls-ca'])),
        cert: certificate('tls-cert', flags['tls-cert'], read('tls-cert', flags['tls-cert'])),
        key: read('tls-key', flags['tls-key']),
        insecure: flags['tls-insecure'],
      }
      if (tls.insecure) this.warn('TLS certificates are not verified (--tls-insecure): anyone on the path can read and change this traffic')
      const registry: ConnectTarget = {...flags.registry}
      registry.username ??= env.SHARDCTL_REGISTRY_USER || undefined
      if (flags['ask-password'])
        registry.password = await this.askPassword(
          `Password for the registry ${describeTarget(registry)}${registry.username ? ` (user ${registry.username})` : ''}:`,
        )
      registry.password ??= env.SHARDCTL_REGISTRY_PASSWORD || undefined
      rememberSecret(registry.password)
      let instancePassword = env.SHARDCTL_INSTANCE_PASSWORD || undefined
      // A password of the instances' own without a user of theirs is the default user's:
      // the registry's ACL user is the registry's, and goes with the registry's password only.
      const instanceUser = flags['instance-user'] ?? (instancePassword === undefined ? registry.username : undefined)
      if (instancePassword === undefined && flags['ask-password'] && flags['instance-user'] !== undefined) {
        instancePassword = await this.askPassword(`Password for the shard instances (user ${flags['instance-user']}):`)
      }
      instancePassword ??= flags['instance-user'] === undefined ? registry.password : undefined
      rememberSecret(instancePassword)
      const instanceTls = flags['instance-tls'] ?? Boolean(registry.tls)
      // The Sentinels (the registry's, and the fleet's) speak TLS when the instances do.
      const sentinel: Credentials = {
        username: env.SHARDCTL_SENTINEL_USER || undefined,
        password: env.SHARDCTL_SENTINEL_PASSWORD || undefined,
        tls: registry.sentinel ? Boolean(registry.tls) : instanceTls,
      }
      if (registry.sentinel) registry.sentinel = {...registry.sentinel, credentials: sentinel}
      return {
        registry,
        sentinel,
        instance: {username: instanceUser, password: instancePassword, tls: instanceTls},
        options: {timeoutMs: flags.timeout, clientName: operatorClientName(this.operatorToken), tls},
      }
    })()
    return this.connections
  }

  private async askPassword(message: string): Promise<string> {
    if (!this.terminal.interactive)
      throw usageError('--ask-password needs a terminal', 'set SHARDCTL_REGISTRY_PASSWORD / SHARDCTL_INSTANCE_PASSWORD instead')
    const {password} = await import('./ui/prompts.js')
    return password({message}, {output: process.stderr})
  }

  /** The registry, connected on first use and closed when the command ends. */
  protected async registry(): Promise<Registry> {
    const flags = this.flags as RegistryFlags
    if (!this.registryInstance) {
      const client = this.resolveConnections().then(({registry, options}) =>
        connect(registry, options).catch((error: ShardctlError) => {
          throw this.given('registry') || this.context?.registry ? error : defaultRegistryUnreachable(error)
        }),
      )
      this.onCleanup(() => client.then(close, () => undefined))
      this.registryInstance = client.then((c) => {
        const registry = new Registry(c, registryKeys(flags.prefix), currentActor(this.id ?? 'shardctl'))
        registry.confirmation = {replicas: flags.registry.sentinel ? 1 : 'auto', timeoutMs: flags.timeout}
        return registry
      })
    }
    return this.registryInstance
  }

  /**
   * Plan, ask, then lock: a person may take minutes to answer, and must not hold the
   * operator lock meanwhile. Where a question will be shown, the plan is made without
   * the lock, asked about, then made again under the lock and compared: if it changed
   * while the question was open, nothing is done (exit 3). Where none will be (--yes,
   * no terminal, nothing to ask), the lock is taken first and the plan made once.
   * `ask` renders the plan and returns the question, or undefined when there is none.
   */
  protected async planThenLock<P>(
    make: () => Promise<P>,
    ask: (plan: P) => string | undefined,
    fingerprint: (plan: P) => unknown = (plan) => plan,
  ): Promise<{plan: P; confirmed: boolean}> {
    const yes = Boolean((this.flags as {yes?: boolean}).yes)
    if (yes || !this.terminal.interactive) {
      await this.lock()
      const plan = await make()
      const question = ask(plan)
      return {plan, confirmed: question === undefined || (await this.confirm(question))}
    }
    const first = await make()
    const question = ask(first)
    if (question !== undefined && !(await this.confirm(question))) return {plan: first, confirmed: false}
    await this.lock()
    const plan = await make()
    if (JSON.stringify(fingerprint(plan)) !== JSON.stringify(fingerprint(first))) {
      throw new ShardctlError('the registry or the fleet changed while the question was open; nothing was changed', {
        code: 'ECHANGED',
        exitCode: ExitCode.unhealthy,
        hint: 'run the command again to see the new plan',
      })
    }
    return {plan, confirmed: true}
  }

  /**
   * Take the operator lock for the rest of the command (SPEC §4.4): released on every
   * exit path, and every registry change made meanwhile is fenced by it.
   */
  protected lock(): Promise<OperatorLock> {
    this.held ??= this.acquireLock()
    return this.held
  }

  private held?: Promise<OperatorLock>

  private async acquireLock(): Promise<OperatorLock> {
    const registry = await this.registry()
    const lease = process.env.SHARDCTL_LOCK_LEASE
    const leaseMs = lease === undefined || lease === '' ? undefined : parseDuration(lease, 'SHARDCTL_LOCK_LEASE')
    const lock = await OperatorLock.acquire(registry.client, registry.keys.lock, registry.actor, {token: this.operatorToken, leaseMs})
    // Long operations renew from a thread a busy main thread cannot starve.
    if ((this.ctor as {longRunning?: boolean}).longRunning) {
      const {registry: target, options} = await this.resolveConnections()
      await lock
        .renewInWorker(target, options)
        .catch((error: Error) => this.warn(`the lock is renewed from the main thread only: ${error.message}`))
    }
    this.onCleanup(() => lock.release())
    await registry.confirm('the operator lock')
    registry.fence = {key: lock.key, value: lock.value}
    // Taken over from a run that left an operation open: cut that run off first.
    const {cutOffJournalOwner} = await import('./ops/takeover.js')
    await cutOffJournalOwner(registry, () => this.pool(), this.operatorToken)
    return lock
  }

  /**
   * The Sentinels the fleet is handed to: those given, else those the registry records
   * (sentinel/record.ts); connections closed when the command ends.
   */
  protected async sentinels(given: Endpoint[] = []): Promise<Sentinels> {
    const [{Sentinels}, {readRecord}, {chooseSentinels}] = await Promise.all([
      import('./sentinel/sentinels.js'),
      import('./sentinel/record.js'),
      import('./sentinel/register.js'),
    ])
    const {sentinel, options} = await this.resolveConnections()
    const endpoints = chooseSentinels(given, await readRecord(await this.registry()))
    const sentinels = new Sentinels(endpoints, sentinel, options)
    this.onCleanup(() => sentinels.close())
    return sentinels
  }

  /** Connections to shard instances, one per instance, closed when the command ends. */
  protected async pool(): Promise<ConnectionPool> {
    this.shardPool ??= this.resolveConnections().then(({instance, options}) => {
      const pool = new ConnectionPool(options, () => instance)
      this.onCleanup(() => pool.closeAll())
      return pool
    })
    return this.shardPool
  }
}

/** A word as a POSIX shell reads it back: quoted only when it must be. */
function shellWord(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", "'\\''")}'`
}

/** The default registry (nothing given) does not answer: say that it was the default, and how to name one. */
function defaultRegistryUnreachable(error: ShardctlError): ShardctlError {
  // Reached but refused (authentication, not Redis, TLS): that error says what is true.
  if (!(error instanceof ShardctlError) || error.code !== 'EUNREACHABLE') return error
  const [, where, why] = /^cannot reach (\S+): (.*)$/.exec(error.message) ?? [undefined, '127.0.0.1:6379', error.message]
  return new ShardctlError(`no registry given, and the default one (${where}) cannot be reached: ${why}`, {
    code: error.code,
    exitCode: error.exitCode,
    hint: 'name the registry with -r host:port/db or SHARDCTL_REGISTRY (e.g. export SHARDCTL_REGISTRY=redis://10.0.0.2:6379/0)',
    cause: error,
  })
}

export interface Connections {
  registry: ConnectTarget
  /** For Redis Sentinels: SHARDCTL_SENTINEL_USER / SHARDCTL_SENTINEL_PASSWORD. */
  sentinel: Credentials
  instance: Credentials
  options: ConnectOptions
}

interface Failure {
  message: string
  hint?: string
  code: string
  exitCode: number
  details?: Record<string, unknown>
}

/** Every error as one line, without secrets, with the exit code SPEC §5 gives it. */
export function describeFailure(error: Error & {oclif?: {exit?: number}; code?: string}): Failure {
  if (error instanceof ShardctlError) {
    return {message: oneLine(error.message), hint: error.hint, code: error.code, exitCode: error.exitCode, details: error.details}
  }
  if (/NOPERM/.test(error.message)) {
    return {
      message: `the Redis ACL does not allow this: ${oneLine(error.message.replace(/^.*?NOPERM\s*/, ''))}`,
      hint: 'use a user with the permissions this command needs (README: Security)',
      code: 'ENOPERM',
      exitCode: ExitCode.unexpected,
    }
  }
  if (error.name === 'ExitPromptError' || error.name === 'AbortPromptError') {
    return {message: 'cancelled', code: 'EINTERRUPTED', exitCode: ExitCode.interrupted}
  }
  const parseError =
    error.oclif?.exit === 2 ||
    'parse' in error ||
    /^(Nonexistent flag|Unexpected argument|Missing \d+ required arg|Expected )/.test(error.message)
  if (parseError || error instanceof Errors.CLIError) {
    // oclif wraps our parsers' errors: keep the innermost, most precise line.
    const cause = (error as {cause?: unknown}).cause
    if (cause instanceof ShardctlError) return describeFailure(cause)
    return {message: oneLine(error.message), hint: 'see --help', code: 'EUSAGE', exitCode: ExitCode.usage}
  }
  return {
    message: oneLine(error.message.split('\n')[0] || String(error)),
    hint: debugWanted() ? undefined : 'set DEBUG=1 for details',
    code: error.code ?? 'EUNEXPECTED',
    exitCode: ExitCode.unexpected,
  }
}

/**
 * oclif's errors made one line: "Parsing --flag\n\t<reason>\nSee more help with --help",
 * "The following error occurred:\n  Missing required flag against", "--dry-run=true cannot
 * also be provided when using --recover" read "--flag: <reason>", "Missing required flag
 * against", "--dry-run cannot also be provided when using --recover".
 */
function oneLine(message: string): string {
  const lines = message
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !/^See more help with/.test(l) && !/^The following errors? occurred:?$/.test(l))
  let out = ''
  for (const line of lines) out = out === '' ? line : out.endsWith(':') ? `${out} ${line}` : `${out}: ${line}`
  return scrub(
    out
      .replace(/^Parsing (--\S+)/, '$1')
      .replaceAll(/(--[\w-]+)=true\b/g, '$1')
      .replaceAll(/ {2,}/g, ' '),
  )
}

/**
 * A certificate file's content, refused (usage error) when it is not a certificate: given
 * and unusable, it would otherwise be ignored where nothing speaks TLS, and fail far from
 * its cause where something does.
 */
function certificate(flag: string, file: string | undefined, content: Buffer | undefined): Buffer | undefined {
  if (content === undefined) return undefined
  try {
    new X509Certificate(content)
  } catch {
    throw usageError(`--${flag} ${file} is not a certificate`, 'give a PEM file (-----BEGIN CERTIFICATE-----)')
  }
  return content
}

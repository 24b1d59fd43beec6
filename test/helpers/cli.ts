import {appendFileSync, readFileSync} from 'node:fs'
import {dirname, join} from 'node:path'
import {fileURLToPath} from 'node:url'

import {runCommand} from '@oclif/test'

export const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
export const binary = join(root, 'bin', 'run.js')

/**
 * Everything any command printed during the run, and the passwords tests used:
 * the root hook checks that no password was ever printed (SPEC 4.8).
 */
export const printed: string[] = []
export const secrets = new Set<string>()

export function secret(value: string): string {
  secrets.add(value)
  return value
}

export interface CliResult {
  stdout: string
  stderr: string
  exitCode: number
}

/**
 * Run a command in-process through @oclif/test. The exit code is what the real
 * binary would exit with: 0, or the code the command failed with.
 */
export async function cli(args: string[]): Promise<CliResult & {result: unknown}> {
  const {error, result, stderr, stdout} = await runCommand(args, {root})
  const exitCode = error ? ((error as {oclif?: {exit?: number}}).oclif?.exit ?? 1) : 0
  printed.push(stdout, stderr)
  return {exitCode, result, stderr, stdout}
}

/** A CLI process under way: its pid (to signal it), and its outcome once it ends. */
export interface RunningCli {
  pid: number
  done: Promise<CliResult>
  /** Everything it has written to stderr so far. */
  stderr: () => string
  /** Everything it has written to stdout so far (a long-running command's events). */
  stdout: () => string
}

export interface CliOptions {
  input?: string
  env?: Record<string, string | undefined>
  /** Another copy of bin/run.js (a test's own install); this checkout's by default. */
  binary?: string
}

/** Start the real binary in its own process: stdin, environment, signals and exit codes as a user gets them. */
export async function startCli(args: string[], options: CliOptions = {}): Promise<RunningCli> {
  const {execa} = await import('execa')
  const env: Record<string, string | undefined> = {
    ...process.env,
    NO_COLOR: undefined,
    FORCE_COLOR: undefined,
    DEBUG: undefined,
    ...options.env,
  }
  const started = performance.now()
  const child = execa('node', [options.binary ?? binary, ...args], {
    env,
    extendEnv: false,
    input: options.input,
    stdin: options.input === undefined ? 'ignore' : undefined,
    reject: false,
    stripFinalNewline: false,
  })
  let stderr = ''
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString()
  })
  let stdout = ''
  child.stdout?.on('data', (chunk: Buffer) => {
    stdout += chunk.toString()
  })
  const pid = child.pid!
  running.add(pid)
  const done = child.then((result) => {
    running.delete(pid)
    logSpawn(args, started, result.exitCode)
    printed.push(String(result.stdout), String(result.stderr))
    return {exitCode: result.exitCode ?? 1, stderr: String(result.stderr), stdout: String(result.stdout)}
  })
  return {pid, done, stderr: () => stderr, stdout: () => stdout}
}

/**
 * SHARDCTL_SPAWN_LOG=<file>: one line per CLI process a test starts (the command, its exit code
 * and how long it ran, in ms), to count what the suite spends on starting the binary.
 */
function logSpawn(args: string[], started: number, exitCode: number | undefined): void {
  const log = process.env.SHARDCTL_SPAWN_LOG
  if (log === undefined) return
  appendFileSync(log, `${args.find((a) => !a.startsWith('-')) ?? '-'}\t${exitCode}\t${Math.round(performance.now() - started)}\n`)
}

/** CLI processes not yet ended: a test that failed half-way may leave one stopped or waiting. */
const running = new Set<number>()

/** Kill what a test left running (root hook, after each test), so it cannot hold a lock or the run open. */
export function killLeftovers(): void {
  for (const pid of running) {
    try {
      process.kill(pid, 'SIGKILL')
    } catch {
      // already gone
    }
  }
  running.clear()
}

/** Run the real binary to its end. */
export async function spawnCli(args: string[], options: CliOptions = {}): Promise<CliResult> {
  return (await startCli(args, options)).done
}

/** Whether a process is stopped (SIGSTOP): state T in /proc. */
export function isStopped(pid: number): boolean {
  try {
    return /^\d+ \(.*\) [Tt] /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return false
  }
}

/**
 * Wait (boundedly) until `condition` holds, polling it; a hang becomes a clear failure. The bound
 * (at least 3 minutes) only tells a hang from slowness: under load (three test files at a time
 * beside two redis-benchmark loops) a Sentinel failover once took more than a minute to reach
 * the registry.
 */
export async function until(what: string, condition: () => boolean | Promise<boolean>, attempts = 18_000): Promise<void> {
  for (let i = 0; i < attempts; i++) {
    if (await condition()) return
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  throw new Error(`never happened: ${what}`)
}

/** Run the binary under a pseudo-terminal (util-linux `script`), typing `keys` into it: the interactive path. */
export async function ttyCli(
  args: string[],
  keys: string,
  env: Record<string, string | undefined> = {},
  /** Run while the question is on the screen, before the answer is typed. */
  whileAsking?: () => Promise<void>,
): Promise<CliResult & {screen: string}> {
  const {execa} = await import('execa')
  const started = performance.now()
  const quoted = ['node', binary, ...args].map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(' ')
  const child = execa('script', ['-qefc', quoted, '/dev/null'], {
    env: {...process.env, CI: undefined, NO_COLOR: undefined, TERM: 'xterm', ...env},
    extendEnv: false,
    reject: false,
  })
  // Type the answer once the prompt has been drawn.
  let typed = false
  let asked: Promise<void> = Promise.resolve()
  child.stdout?.on('data', (chunk: Buffer) => {
    if (!typed && /\?/.test(chunk.toString())) {
      typed = true
      asked = (whileAsking?.() ?? Promise.resolve()).finally(() => child.stdin?.write(keys))
    }
  })
  const done = await child
  logSpawn(args, started, done.exitCode)
  await asked
  const screen = String(done.stdout)
  printed.push(screen, String(done.stderr))
  return {exitCode: done.exitCode ?? 1, screen, stderr: String(done.stderr), stdout: screen}
}

/** ANSI escape sequences, to prove there are none. */
export const ANSI = /\u001B\[[0-9;]*m/

/** Every terminal escape sequence (colours, cursor moves), to read a screen as text. */
export const ANSI_ALL = /\u001B(\[[0-9;?]*[A-Za-z]|\][^\u0007]*\u0007)/g

/** The error a promise rejects with; fails the test when it resolves. */
export async function rejectionOf(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise
  } catch (error) {
    return error as Error
  }
  throw new Error('it did not fail')
}

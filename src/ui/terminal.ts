import chalk from 'chalk'
import Table from 'cli-table3'

import {ExitCode, ShardctlError} from '../errors.js'
import {scrub} from './secrets.js'

/**
 * The terminal decisions, made once per run: colour, whether a person can answer a
 * prompt, and where progress goes. stdout carries data; everything else goes to stderr.
 */
export interface TerminalMode {
  color: boolean
  interactive: boolean
  json: boolean
}

export function decideTerminal(options: {json: boolean; noColor: boolean}): TerminalMode {
  const env = process.env
  // NO_COLOR counts when it is set to something (no-color.org): an empty one is not set.
  const color = !options.json && !options.noColor && !env.NO_COLOR && Boolean(process.stdout.isTTY) && env.TERM !== 'dumb'
  // chalk 5 ignores NO_COLOR: set its level ourselves so every colour call obeys the decision.
  chalk.level = color ? (Math.max(chalk.level, 1) as typeof chalk.level) : 0
  const interactive = !options.json && Boolean(process.stdin.isTTY) && Boolean(process.stdout.isTTY) && !isCi()
  return {color, interactive, json: options.json}
}

function isCi(): boolean {
  const ci = process.env.CI
  return ci !== undefined && ci !== '' && ci !== '0' && ci.toLowerCase() !== 'false'
}

export const paint = {
  ok: (s: string) => chalk.green(s),
  warn: (s: string) => chalk.yellow(s),
  bad: (s: string) => chalk.red(s),
  dim: (s: string) => chalk.dim(s),
  bold: (s: string) => chalk.bold(s),
  head: (s: string) => chalk.bold.cyan(s),
}

/** The one table renderer. No built-in colour: cli-table3's defaults emit ANSI even into a pipe. */
export function renderTable(head: string[], rows: (string | number)[][], align?: ('left' | 'right')[]): string {
  const table = new Table({
    head: head.map((h) => paint.head(h)),
    style: {head: [], border: [], compact: true, 'padding-left': 1, 'padding-right': 1},
    ...(align ? {colAligns: align} : {}),
    chars: {
      top: '',
      'top-mid': '',
      'top-left': '',
      'top-right': '',
      bottom: '',
      'bottom-mid': '',
      'bottom-left': '',
      'bottom-right': '',
      left: '',
      'left-mid': '',
      mid: '',
      'mid-mid': '',
      right: '',
      'right-mid': '',
      middle: ' ',
    },
  })
  for (const row of rows) table.push(row.map(String))
  return table
    .toString()
    .split('\n')
    .map((line) => line.replace(/\s+$/, ''))
    .join('\n')
}

/** Write a line of progress or a warning: stderr, never stdout. */
export function note(message: string): void {
  process.stderr.write(`${scrub(message)}\n`)
}

/**
 * Ask for confirmation. Without a terminal no one can answer, so a destructive step
 * needs --yes: that is a usage error (exit 2) naming the flag.
 */
export async function confirm(mode: TerminalMode, question: string, options: {yes: boolean}): Promise<boolean> {
  if (options.yes) return true
  if (!mode.interactive) {
    throw new ShardctlError(`confirmation needed: ${question}`, {
      code: 'ENOTTY',
      exitCode: ExitCode.usage,
      hint: 'no terminal to ask in: pass --yes (or set SHARDCTL_YES=1) to go ahead, or --dry-run to only look',
    })
  }
  const {confirm: ask} = await import('./prompts.js')
  return ask({message: question, default: false}, {output: process.stderr})
}

export function formatPercent(fraction: number): string {
  if (!Number.isFinite(fraction)) return '-'
  return `${(fraction * 100).toFixed(fraction > 0 && fraction < 0.001 ? 3 : 1)}%`
}

/**
 * The one way a count meets its noun: "1 shard", "2 shards", "1,000 hashes", "1 entry",
 * "3 redis-server processes". Give `many` for anything else, or for a verb that agrees
 * with the count: plural(n, 'hash points', 'hashes point').
 */
export function plural(n: number, noun: string, many = pluralOf(noun)): string {
  return `${n.toLocaleString('en-US')} ${n === 1 ? noun : many}`
}

/** The English plural of a noun (its last word): hash → hashes, entry → entries, replica → replicas. */
function pluralOf(noun: string): string {
  if (/(s|x|z|ch|sh)$/.test(noun)) return `${noun}es`
  if (/[^aeiou]y$/.test(noun)) return `${noun.slice(0, -1)}ies`
  return `${noun}s`
}

/** Bytes as a person reads them: 512 B, 3.2 kB, 14.0 MB, 1.2 GB. */
export function formatBytes(n: number): string {
  if (n < 1000) return `${n} B`
  const units = ['kB', 'MB', 'GB', 'TB']
  let value = n / 1000
  let unit = 0
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000
    unit++
  }
  return `${value.toFixed(1)} ${units[unit]}`
}

/** A horizontal bar for a fraction 0..1, `width` cells wide, in eighths of a cell. */
export function bar(fraction: number, width: number): string {
  const eighths = Math.round(Math.max(0, Math.min(1, fraction)) * width * 8)
  const partial = ['', '▏', '▎', '▍', '▌', '▋', '▊', '▉'][eighths % 8]
  return `${'█'.repeat(Math.floor(eighths / 8))}${partial}`
}

export function formatCount(n: number | undefined): string {
  return n === undefined ? '-' : n.toLocaleString('en-US')
}

/** A moment as a person reads it, UTC to the second: 2026-12-02 14:00:05. */
export function formatTimestamp(date: Date): string {
  return date
    .toISOString()
    .replace('T', ' ')
    .replace(/\.\d+Z$/, '')
}

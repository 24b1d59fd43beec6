import type {MultiBar, SingleBar} from 'cli-progress'

import {scrub} from './secrets.js'
import {bar as drawBar, formatBytes, note, paint, type TerminalMode} from './terminal.js'

/**
 * Progress of a long operation, on stderr. In a terminal: each step with its
 * duration once it ends, a bar for the copy (bytes done of total, rate, time left)
 * and a countdown for waits. In a pipe or a log: one line per step as it ends, no
 * redraw. Under --json: nothing (the result says it all).
 */
export class StepReporter {
  private current?: {name: string; since: number}
  private bar?: SingleBar
  private countdown?: NodeJS.Timeout
  private readonly live: boolean

  constructor(
    private readonly mode: TerminalMode,
    /** Waits worth counting down, by step name (ms). */
    private readonly waits: Record<string, number> = {},
  ) {
    this.live = !mode.json && Boolean(process.stderr.isTTY)
  }

  /** A step starts (the one before ends). */
  step(name: string): void {
    this.end()
    this.current = {name, since: Date.now()}
    if (this.live && this.waits[name] !== undefined) this.startCountdown(name, this.waits[name])
  }

  /** Bytes of the live copy received so far, of the total the source announced (0 when unknown). */
  copied(read: number, total: number): void {
    if (!this.live || !BarClass) return
    const mb = (n: number) => Math.round(n / 1e5) / 10
    if (!this.bar) {
      this.bar = new BarClass({
        format: `  ${this.current?.name ?? 'copy'} {bar} {percentage}% | {value}/{total} MB | {rate} MB/s | {eta_formatted} left`,
        stream: process.stderr,
        hideCursor: true,
        clearOnComplete: true,
        barsize: 24,
      })
      this.bar.start(Math.max(mb(total), 0.1), 0, {rate: '0.0'})
    }
    const seconds = Math.max(0.001, (Date.now() - (this.current?.since ?? Date.now())) / 1000)
    if (total > 0) this.bar.setTotal(mb(total))
    this.bar.update(mb(read), {rate: (read / 1e6 / seconds).toFixed(1)})
  }

  /** The operation is over: the last step ends too. */
  end(): void {
    this.stopLive()
    if (!this.current || this.mode.json) return
    const ms = Date.now() - this.current.since
    note(paint.dim(`  ${this.current.name.padEnd(13)} ${formatDuration(ms)}`))
    this.current = undefined
  }

  private startCountdown(name: string, ms: number): void {
    const until = Date.now() + ms
    const draw = () => process.stderr.write(`\r  ${name.padEnd(13)} ${formatDuration(Math.max(0, until - Date.now()))} left \u001B[K`)
    draw()
    this.countdown = setInterval(draw, 250)
    this.countdown.unref()
  }

  private stopLive(): void {
    if (this.countdown) {
      clearInterval(this.countdown)
      this.countdown = undefined
      process.stderr.write('\r\u001B[K')
    }
    if (this.bar) {
      this.bar.stop()
      this.bar = undefined
    }
  }
}

/**
 * Several transfers at once (a backup of many instances, a restore): in a terminal a
 * bar each (bytes done of the total, rate, time left), redrawn together; in a pipe or a
 * log one line per transfer as it ends; under --json nothing.
 */
export class TransferProgress {
  private readonly live: boolean
  private multi?: MultiBar
  private readonly bars = new Map<string, {bar: SingleBar; since: number; label: string}>()

  constructor(private readonly mode: TerminalMode) {
    this.live = !mode.json && Boolean(process.stderr.isTTY) && MultiBarClass !== undefined
  }

  /** A transfer begins: `label` says what goes where. */
  start(name: string, label: string): void {
    if (!this.live) return
    this.multi ??= new MultiBarClass({format: '{line}', stream: process.stderr, hideCursor: true, clearOnComplete: true})
    this.bars.set(name, {bar: this.multi.create(1, 0, {line: `  ${label}`}), since: Date.now(), label})
  }

  /** Bytes moved so far, of `total` (0 when the source did not say). */
  update(name: string, bytes: number, total: number): void {
    const entry = this.bars.get(name)
    if (!entry) return
    const seconds = Math.max(0.001, (Date.now() - entry.since) / 1000)
    const rate = bytes / seconds
    const known = total > 0
    const parts = [
      `  ${entry.label}`,
      known ? `${drawBar(bytes / total, 20).padEnd(20)} ${Math.floor((100 * bytes) / total)}%` : '',
      `${formatBytes(bytes)}${known ? ` of ${formatBytes(total)}` : ''}`,
      `${formatBytes(rate)}/s`,
      known && rate > 0 && bytes < total ? `${formatDuration(((total - bytes) / rate) * 1000)} left` : '',
    ]
    entry.bar.update(0, {line: parts.filter(Boolean).join('  ')})
  }

  /** A transfer ended, well or not: its one line (printed above the bars that go on). */
  finish(name: string, line: string): void {
    if (this.mode.json) return
    const entry = this.bars.get(name)
    if (entry && this.multi) {
      this.multi.remove(entry.bar)
      this.bars.delete(name)
      this.multi.log(`${scrub(line)}\n`)
      return
    }
    note(line)
  }

  end(): void {
    this.multi?.stop()
    this.multi = undefined
    this.bars.clear()
  }
}

/** cli-progress is loaded where a bar is drawn, not at every start of the tool. */
let BarClass: typeof SingleBar
let MultiBarClass: typeof MultiBar
export async function loadProgressBars(): Promise<void> {
  const module = (await import('cli-progress')).default
  BarClass ??= module.SingleBar
  MultiBarClass ??= module.MultiBar
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`
}

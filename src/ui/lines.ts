import {once} from 'node:events'
import {createInterface} from 'node:readline'
import type {Readable, Writable} from 'node:stream'

/** One item per line of a stream: trailing CR stripped, blank lines skipped. */
export async function* readLines(input: Readable): AsyncGenerator<string> {
  const lines = createInterface({input, crlfDelay: Number.POSITIVE_INFINITY})
  for await (const line of lines) {
    const item = line.endsWith('\r') ? line.slice(0, -1) : line
    if (item.trim() !== '') yield item
  }
}

/**
 * Buffered line output that respects backpressure, so a million results cost
 * a thousand writes and never pile up in memory when the reader is slow.
 */
export class LineWriter {
  private buffer: string[] = []

  constructor(
    private readonly out: Writable = process.stdout,
    private readonly flushEvery = 1000,
  ) {}

  async write(line: string): Promise<void> {
    this.buffer.push(line)
    if (this.buffer.length >= this.flushEvery) await this.flush()
  }

  async flush(): Promise<void> {
    if (this.buffer.length === 0) return
    const chunk = `${this.buffer.join('\n')}\n`
    this.buffer = []
    if (!this.out.write(chunk)) await once(this.out, 'drain')
  }
}

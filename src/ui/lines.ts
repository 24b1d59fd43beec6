import {once} from 'node:events'
import type {Readable, Writable} from 'node:stream'

import {ShardctlError} from '../errors.js'

/** A line of the input that failed its check: where, and why. Nothing from it on was read. */
export class BadLine extends ShardctlError {
  constructor(
    readonly line: number,
    cause: ShardctlError,
  ) {
    super(`line ${line.toLocaleString('en-US')}: ${cause.message}`, {code: cause.code, exitCode: cause.exitCode, hint: cause.hint, cause})
  }
}

/**
 * Lines of a stream in batches: trailing CR stripped, blank lines skipped. Reading
 * raw chunks and yielding arrays keeps a million lines to a thousand promises. With
 * `check`, each line is checked as it is read: the lines before a bad one are yielded,
 * then BadLine is thrown, before anything after it is taken.
 */
export async function* readLineBatches(input: Readable, size = 1000, check?: (line: string) => unknown): AsyncGenerator<string[]> {
  let rest = ''
  let number = 0
  let bad: BadLine | undefined
  const batch: string[] = []
  const take = (line: string) => {
    number++
    const item = line.endsWith('\r') ? line.slice(0, -1) : line
    if (item.trim() === '') return
    try {
      check?.(item)
    } catch (error) {
      if (!(error instanceof ShardctlError)) throw error
      bad = new BadLine(number, error)
      return
    }
    batch.push(item)
  }
  input.setEncoding('utf8')
  for await (const chunk of input as AsyncIterable<string>) {
    const lines = (rest + chunk).split('\n')
    rest = lines.pop()!
    for (const line of lines) {
      take(line)
      if (bad) break
    }
    // What one read brought is worked off before waiting for the next: a slow writer
    // (a person typing) gets answers at once, a fast one fills whole batches.
    while (batch.length > 0) yield batch.splice(0, size)
    if (bad) throw bad
  }
  if (rest !== '') take(rest)
  while (batch.length > 0) yield batch.splice(0, size)
  if (bad) throw bad
}

/** Write a chunk of output, waiting when the reader is slower than we are. */
export async function writeChunk(out: Writable, chunk: string): Promise<void> {
  if (chunk !== '' && !out.write(chunk)) await once(out, 'drain')
}

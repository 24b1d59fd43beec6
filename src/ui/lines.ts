import {once} from 'node:events'
import type {Readable, Writable} from 'node:stream'

/**
 * Lines of a stream in batches: trailing CR stripped, blank lines skipped. Reading
 * raw chunks and yielding arrays keeps a million lines to a thousand promises.
 */
export async function* readLineBatches(input: Readable, size = 1000): AsyncGenerator<string[]> {
  let rest = ''
  const batch: string[] = []
  const take = (line: string) => {
    const item = line.endsWith('\r') ? line.slice(0, -1) : line
    if (item.trim() !== '') batch.push(item)
  }
  input.setEncoding('utf8')
  for await (const chunk of input as AsyncIterable<string>) {
    const lines = (rest + chunk).split('\n')
    rest = lines.pop()!
    for (const line of lines) take(line)
    // What one read brought is worked off before waiting for the next: a slow writer
    // (a person typing) gets answers at once, a fast one fills whole batches.
    while (batch.length > 0) yield batch.splice(0, size)
  }
  take(rest)
  while (batch.length > 0) yield batch.splice(0, size)
}

/** Write a chunk of output, waiting when the reader is slower than we are. */
export async function writeChunk(out: Writable, chunk: string): Promise<void> {
  if (chunk !== '' && !out.write(chunk)) await once(out, 'drain')
}

import {createReadStream} from 'node:fs'

/**
 * Reading a registry document of any size in constant memory. The document is one
 * JSON object; everything in it is small except "map" (shard hash -> shard id, ten
 * million entries and more), so the reader parses every other member whole and hands
 * the map's entries out a batch at a time, never holding it. A scanner of its own,
 * because the map is a flat object of strings: finding quotes and colons is all the
 * parsing it needs, at the speed of indexOf.
 */

export class DocumentSyntaxError extends Error {}

export interface DocumentPass {
  /** Every top-level member but "map", parsed. */
  members: Record<string, unknown>
  /** Whether the document has a "map" member. */
  hasMap: boolean
}

/** Read the document's members, skipping over the map (checking its syntax). */
export async function readMembers(file: string, chunkSize = 1 << 20): Promise<DocumentPass> {
  const members: Record<string, unknown> = {}
  let hasMap = false
  await scan(
    file,
    {
      member: (key, value) => {
        members[key] = value
      },
      map: () => {
        hasMap = true
      },
    },
    chunkSize,
  )
  return {members, hasMap}
}

/**
 * The map's entries, in batches of up to `size` entries, in document order. A batch is
 * flat, hash then id: [hash, id, hash, id, ...], ready to be a command's arguments.
 */
export async function* readMap(file: string, size = 5000, chunkSize = 1 << 20): AsyncGenerator<string[]> {
  const batches: string[][] = []
  // The scanner pushes; this generator pulls. The scanner waits while batches pile up,
  // until the consumer takes one.
  let taken: (() => void) | undefined
  let batch: string[] = []
  let wake: (() => void) | undefined
  let done = false
  let failure: unknown
  const pending = scan(
    file,
    {
      pair: (hash, id) => {
        batch.push(hash, id)
        if (batch.length < size * 2) return undefined
        batches.push(batch)
        batch = []
        wake?.()
        if (batches.length <= 2) return undefined
        return new Promise<void>((resolve) => {
          taken = resolve
        })
      },
    },
    chunkSize,
  ).then(
    () => {
      if (batch.length > 0) batches.push(batch)
      done = true
      wake?.()
    },
    (error: unknown) => {
      failure = error
      done = true
      wake?.()
    },
  )
  for (;;) {
    if (batches.length > 0) {
      const next = batches.shift()!
      if (batches.length <= 2 && taken) {
        const resume = taken
        taken = undefined
        resume()
      }
      yield next
      continue
    }
    if (done) break
    await new Promise<void>((resolve) => {
      wake = resolve
    })
    wake = undefined
  }
  await pending
  if (failure) throw failure
}

interface Handlers {
  member?: (key: string, value: unknown) => void
  /** The map begins. */
  map?: () => void
  pair?: (hash: string, id: string) => Promise<void> | undefined
}

/** The scanner: a cursor over the text, refilled from the file as it runs out. */
async function scan(file: string, on: Handlers, chunkSize: number): Promise<void> {
  const stream = createReadStream(file, {encoding: 'utf8', highWaterMark: chunkSize})
  const chunks = stream[Symbol.asyncIterator]()
  let text = ''
  let at = 0
  let ended = false

  const more = async (): Promise<boolean> => {
    if (ended) return false
    const next = await chunks.next()
    if (next.done) {
      ended = true
      return false
    }
    text = text.slice(at) + (next.value as string)
    at = 0
    return true
  }
  const fail = (what: string): never => {
    throw new DocumentSyntaxError(`${what} (near "${text.slice(Math.max(0, at - 20), at + 20).replaceAll('\n', ' ')}")`)
  }
  /** The next character that is not white space, without taking it. */
  const peek = async (): Promise<string | undefined> => {
    for (;;) {
      while (at < text.length && (text[at] === ' ' || text[at] === '\n' || text[at] === '\r' || text[at] === '\t')) at++
      if (at < text.length) return text[at]
      if (!(await more())) return undefined
    }
  }
  const expect = async (char: string): Promise<void> => {
    if ((await peek()) !== char) fail(`expected "${char}"`)
    at++
  }
  /** A JSON string at the cursor, decoded. */
  const string = async (): Promise<string> => {
    if ((await peek()) !== '"') fail('expected a string')
    let start = at
    let from = at + 1
    for (;;) {
      const quote = text.indexOf('"', from)
      if (quote === -1) {
        // Refill, keeping the string's beginning: it moves to the front of the buffer.
        const offset = from - start
        at = start
        if (!(await more())) fail('unterminated string')
        start = at
        from = at + offset
        continue
      }
      // An escaped quote has an odd number of backslashes before it.
      let backslashes = 0
      for (let i = quote - 1; i > start && text[i] === '\\'; i--) backslashes++
      if (backslashes % 2 === 1) {
        from = quote + 1
        continue
      }
      const raw = text.slice(start, quote + 1)
      at = quote + 1
      if (!raw.includes('\\')) return raw.slice(1, -1)
      try {
        return JSON.parse(raw) as string
      } catch {
        return fail('invalid escape in a string')
      }
    }
  }
  /** Any JSON value at the cursor, whole: its extent found by nesting (strings skipped), then JSON.parse. */
  const value = async (): Promise<unknown> => {
    const first = await peek()
    if (first === undefined) fail('unexpected end')
    if (first === '"') return string()
    let begin = at
    let i = at
    let depth = 0
    let inString = false
    let escaped = false
    for (;;) {
      if (i >= text.length) {
        // Refill, keeping the value's beginning: it moves to the front of the buffer.
        const offset = i - begin
        at = begin
        const filled = await more()
        begin = at
        i = begin + offset
        if (!filled) {
          if (depth === 0 && !inString) break
          fail('unexpected end')
        }
        continue
      }
      const c = text[i]
      if (inString) {
        if (escaped) escaped = false
        else if (c === '\\') escaped = true
        else if (c === '"') inString = false
        i++
        continue
      }
      if (c === '"') inString = true
      else if (c === '{' || c === '[') depth++
      else if (c === '}' || c === ']') {
        if (depth === 0) break
        depth--
        if (depth === 0) {
          i++
          break
        }
      } else if (depth === 0 && (c === ',' || c === ' ' || c === '\n' || c === '\r' || c === '\t')) break
      i++
    }
    const raw = text.slice(begin, i)
    at = i
    try {
      return JSON.parse(raw)
    } catch (error) {
      return fail(`not JSON (${(error as Error).message})`)
    }
  }

  /**
   * Take the map entries that lie whole in the buffer, from an entry's first quote on.
   * Status 'end' after the map's closing brace; 'more' where an entry is cut by the
   * end of the buffer (the cursor left at its start, for the general path); 'next'
   * after an entry whose consumer asks to wait (`wait`) before going on.
   */
  const pairsInBuffer = (): {status: 'end' | 'more' | 'next'; wait?: Promise<void>} => {
    const keep = on.pair !== undefined
    for (;;) {
      const entry = at
      while (at < text.length && text.charCodeAt(at) <= 32) at++
      if (at >= text.length || text.charCodeAt(at) !== 34) {
        at = entry
        return {status: 'more'}
      }
      const hash = quoted(at, keep)
      if (hash === undefined) {
        at = entry
        return {status: 'more'}
      }
      let i = quotedEnd
      while (i < text.length && text.charCodeAt(i) <= 32) i++
      if (i >= text.length) {
        at = entry
        return {status: 'more'}
      }
      if (text.charCodeAt(i) !== 58) fail('expected ":" in the map')
      i++
      while (i < text.length && text.charCodeAt(i) <= 32) i++
      if (i >= text.length) {
        at = entry
        return {status: 'more'}
      }
      if (text.charCodeAt(i) !== 34) fail(`map entry ${JSON.stringify(quoted(at, true))} is not a string`)
      const id = quoted(i, keep)
      if (id === undefined) {
        at = entry
        return {status: 'more'}
      }
      i = quotedEnd
      while (i < text.length && text.charCodeAt(i) <= 32) i++
      if (i >= text.length) {
        at = entry
        return {status: 'more'}
      }
      const next = text.charCodeAt(i)
      if (next !== 44 && next !== 125) fail('expected "," or "}" in the map')
      at = i + 1
      const wait = keep ? on.pair!(hash, id) : undefined
      if (next === 125) return {status: 'end', wait}
      if (wait) return {status: 'next', wait}
    }
  }
  /**
   * A complete string token starting at `from` (its quote), decoded, or undefined when
   * the buffer cuts it; `quotedEnd` is then just past its closing quote. With `keep`
   * false only its syntax is checked and '' returned: the first pass allocates nothing.
   */
  let quotedEnd = 0
  const quoted = (from: number, keep: boolean): string | undefined => {
    let search = from + 1
    for (;;) {
      const quote = text.indexOf('"', search)
      if (quote === -1) return undefined
      let backslashes = 0
      for (let k = quote - 1; k > from && text.charCodeAt(k) === 92; k--) backslashes++
      if (backslashes % 2 === 1) {
        search = quote + 1
        continue
      }
      quotedEnd = quote + 1
      if (keep) {
        const raw = text.slice(from + 1, quote)
        if (!raw.includes('\\')) return raw
      } else {
        let escaped = false
        for (let k = from + 1; k < quote && !escaped; k++) escaped = text.charCodeAt(k) === 92
        if (!escaped) return ''
      }
      try {
        const decoded = JSON.parse(text.slice(from, quote + 1)) as string
        return keep ? decoded : ''
      } catch {
        return fail('invalid escape in a string')
      }
    }
  }

  await expect('{')
  if ((await peek()) === '}') {
    at++
  } else {
    for (;;) {
      const key = await string()
      await expect(':')
      if (key === 'map') {
        on.map?.()
        await expect('{')
        if ((await peek()) === '}') at++
        else {
          // The hot loop: every complete entry in the buffer is taken synchronously;
          // the (slower) general path only runs where the buffer ends mid-entry.
          for (;;) {
            const fast = pairsInBuffer()
            if (fast.wait) await fast.wait
            if (fast.status === 'end') break
            if (fast.status === 'next') continue
            const hash = await string()
            await expect(':')
            if ((await peek()) !== '"') fail(`map entry ${JSON.stringify(hash)} is not a string`)
            const id = await string()
            const waiting = on.pair?.(hash, id)
            if (waiting) await waiting
            const next = await peek()
            at++
            if (next === '}') break
            if (next !== ',') fail('expected "," or "}" in the map')
          }
        }
      } else {
        // Parsed even when nobody asked for it: the cursor must pass it.
        const parsed = await value()
        on.member?.(key, parsed)
      }
      const next = await peek()
      at++
      if (next === '}') break
      if (next !== ',') fail('expected "," or "}"')
    }
  }
  if ((await peek()) !== undefined) fail('text after the document')
}

/**
 * RESP parsing for the live copy: the commands of a master's replication stream (arrays
 * of bulk strings, with the exact number of bytes each took, for byte-exact offsets) and
 * the replies of the target (any RESP2 reply, nested, checked for errors).
 *
 * Both parsers take chunks cut anywhere and never re-copy a partial message on every
 * chunk: when a message is incomplete they note how many bytes it needs at least, and
 * gather the chunks until that many have arrived.
 */

const CR = 0x0d
const LF = 0x0a

/** Chunks gathered until a message can be parsed; `need` is the total the last attempt required. */
class Gather {
  private parts: Buffer[] = []
  private length = 0
  buf: Buffer = Buffer.alloc(0)
  pos = 0
  need = 0

  add(chunk: Buffer): boolean {
    this.parts.push(chunk)
    this.length += chunk.length
    if (this.buf.length - this.pos + this.length < this.need) return false
    const rest = this.buf.subarray(this.pos)
    this.buf = rest.length === 0 && this.parts.length === 1 ? this.parts[0] : Buffer.concat([rest, ...this.parts])
    this.pos = 0
    this.parts = []
    this.length = 0
    this.need = 0
    return true
  }

  /** Bytes held and not yet parsed. */
  get held(): number {
    return this.buf.length - this.pos + this.length
  }
}

/** The line starting at `at` (without CRLF) and where the next begins; undefined when incomplete. */
function readLine(buf: Buffer, at: number): {text: string; next: number} | undefined {
  const newline = buf.indexOf(LF, at)
  if (newline === -1) return undefined
  const end = newline > at && buf[newline - 1] === CR ? newline - 1 : newline
  return {text: buf.toString('latin1', at, end), next: newline + 1}
}

export class RespProtocolError extends Error {}

/**
 * Commands from a master. `onCommand` receives the arguments and the bytes the command
 * took in the stream; a stray newline (a keep-alive) is reported as no arguments, one byte.
 */
export class CommandParser {
  private readonly gather = new Gather()

  constructor(private readonly onCommand: (args: Buffer[], length: number) => void) {}

  get held(): number {
    return this.gather.held
  }

  feed(chunk: Buffer): void {
    if (!this.gather.add(chunk)) return
    const g = this.gather
    for (;;) {
      if (g.pos >= g.buf.length) return
      const parsed = this.parseOne(g.buf, g.pos)
      if (typeof parsed === 'number') {
        g.need = parsed - g.pos
        return
      }
      const start = g.pos
      g.pos = parsed.end
      this.onCommand(parsed.args, parsed.end - start)
    }
  }

  /** A complete command ({args, end}) or, when incomplete, the buffer length it needs at least. */
  private parseOne(buf: Buffer, start: number): {args: Buffer[]; end: number} | number {
    const first = buf[start]
    if (first === LF || first === CR) return {args: [], end: start + 1}
    if (first !== 0x2a) {
      // An inline command: masters never send one, but a line is a line.
      const line = readLine(buf, start)
      if (!line) return buf.length + 1
      const words = line.text.trim().split(/\s+/).filter(Boolean)
      return {args: words.map((w) => Buffer.from(w, 'latin1')), end: line.next}
    }
    const header = readLine(buf, start)
    if (!header) return buf.length + 1
    const count = Number(header.text.slice(1))
    if (!Number.isInteger(count)) throw new RespProtocolError(`a command header ${JSON.stringify(header.text.slice(0, 40))}`)
    const args: Buffer[] = []
    let at = header.next
    for (let i = 0; i < count; i++) {
      if (at >= buf.length) return at + 4
      const bulk = readLine(buf, at)
      if (!bulk) return buf.length + 1
      if (bulk.text[0] !== '$') throw new RespProtocolError(`an argument header ${JSON.stringify(bulk.text.slice(0, 40))}`)
      const length = Number(bulk.text.slice(1))
      if (!Number.isInteger(length) || length < 0)
        throw new RespProtocolError(`an argument length ${JSON.stringify(bulk.text.slice(0, 40))}`)
      const end = bulk.next + length + 2
      if (end > buf.length) return end
      args.push(buf.subarray(bulk.next, bulk.next + length))
      at = end
    }
    return {args, end: at}
  }
}

export interface Reply {
  /** The first error in the reply (at any depth: EXEC's array holds each command's), or undefined. */
  error?: string
}

/** Replies from the target, in order: `onReply` for each complete top-level reply, with its bytes. */
export class ReplyParser {
  private readonly gather = new Gather()

  constructor(private readonly onReply: (reply: Reply, bytes: Buffer) => void) {}

  feed(chunk: Buffer): void {
    if (!this.gather.add(chunk)) return
    const g = this.gather
    while (g.pos < g.buf.length) {
      const found: Reply = {}
      const end = this.skip(g.buf, g.pos, found)
      if (end < 0) {
        g.need = -end - g.pos
        return
      }
      const start = g.pos
      g.pos = end
      this.onReply(found, g.buf.subarray(start, end))
    }
  }

  /** The end of the reply at `at`, or minus the buffer length it needs at least. */
  private skip(buf: Buffer, at: number, found: Reply): number {
    const line = readLine(buf, at)
    if (!line) return -(buf.length + 1)
    const kind = line.text[0]
    switch (kind) {
      case '+':
      case ':': {
        return line.next
      }
      case '-': {
        found.error ??= line.text.slice(1)
        return line.next
      }
      case '$': {
        const length = Number(line.text.slice(1))
        if (length < 0) return line.next
        const end = line.next + length + 2
        return end > buf.length ? -end : end
      }
      case '*': {
        const count = Number(line.text.slice(1))
        let next = line.next
        for (let i = 0; i < count; i++) {
          if (next >= buf.length) return -(next + 3)
          next = this.skip(buf, next, found)
          if (next < 0) return next
        }
        return next
      }
      default: {
        throw new RespProtocolError(`a reply ${JSON.stringify(line.text.slice(0, 40))}`)
      }
    }
  }
}

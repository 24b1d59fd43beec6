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
 * What to do with a command that has an argument too large to hold (see CommandParser's
 * `large`): pass its bytes on as they come (`forward`), drop them as they come
 * (`discard`), or gather it whole as any other command (`gather`).
 */
export type LargeCommandChoice = 'forward' | 'discard' | 'gather'

export interface LargeCommandHandler {
  /** Arguments larger than this many bytes are not gathered whole (unless `start` says so). */
  above: number
  /**
   * A command with such an argument begins: `args` are the arguments before it (the
   * command's name at least), `count` all of them.
   */
  start(args: Buffer[], count: number): LargeCommandChoice
  /** The command's bytes, exactly as they came, in order (forward only). */
  bytes(chunk: Buffer): void
  /** The command ended: the bytes it took in all. */
  end(length: number): void
}

/** A large command being passed through: what is left of it. */
interface Passing {
  forward: boolean
  /** Arguments whose header is still to come. */
  argsLeft: number
  /** Bytes left of the current argument, its CRLF included. */
  inArg: number
  /** A header line cut between two chunks. */
  line: Buffer
  /** Bytes of the command so far. */
  length: number
}

/**
 * Commands from a master. `onCommand` receives the arguments and the bytes the command
 * took in the stream; a stray newline (a keep-alive) is reported as no arguments, one byte.
 *
 * A command with an argument larger than `large.above` (a client's 100 MB SET) is never
 * held whole: once its name and the arguments before the large one are known, `large`
 * decides, and the command's bytes then pass through a chunk at a time. What is held
 * stays at one chunk plus a header line, whatever the command's size.
 */
export class CommandParser {
  private readonly gather = new Gather()
  private passing: Passing | undefined
  /** The most bytes held at once, for tests and reports. */
  peakHeld = 0

  constructor(
    private readonly onCommand: (args: Buffer[], length: number) => void,
    private readonly large?: LargeCommandHandler,
  ) {}

  get held(): number {
    return this.gather.held
  }

  feed(chunk: Buffer): void {
    if (this.passing) {
      const used = this.pass(chunk)
      if (this.passing || used === chunk.length) return
      chunk = chunk.subarray(used)
    }
    const ready = this.gather.add(chunk)
    this.peakHeld = Math.max(this.peakHeld, this.gather.held)
    if (!ready) return
    const g = this.gather
    for (;;) {
      if (g.pos >= g.buf.length) return
      const parsed = this.parseOne(g.buf, g.pos)
      if (parsed === 'passing') {
        g.pos = g.buf.length
        return
      }
      if (typeof parsed === 'number') {
        g.need = parsed - g.pos
        return
      }
      const start = g.pos
      g.pos = parsed.end
      this.onCommand(parsed.args, parsed.end - start)
    }
  }

  /**
   * A complete command ({args, end}); when incomplete, the buffer length it needs at least;
   * 'passing' when a large command has begun to pass through (the whole buffer from
   * `start` is its beginning).
   */
  private parseOne(buf: Buffer, start: number): {args: Buffer[]; end: number} | number | 'passing' {
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
      const length = argumentLength(bulk.text)
      const end = bulk.next + length + 2
      if (end > buf.length) {
        if (this.large && i > 0 && length > this.large.above) {
          const choice = this.large.start(args, count)
          if (choice !== 'gather') {
            const forward = choice === 'forward'
            this.passing = {forward, argsLeft: count - i - 1, inArg: end - buf.length, line: Buffer.alloc(0), length: buf.length - start}
            if (forward) this.large.bytes(buf.subarray(start))
            return 'passing'
          }
        }
        return end
      }
      args.push(buf.subarray(bulk.next, bulk.next + length))
      at = end
    }
    return {args, end: at}
  }

  /** Bytes of a large command passing through; returns how many of `chunk` were its own. */
  private pass(chunk: Buffer): number {
    const p = this.passing!
    let at = 0
    while (at < chunk.length) {
      if (p.inArg > 0) {
        const n = Math.min(p.inArg, chunk.length - at)
        p.inArg -= n
        at += n
        continue
      }
      if (p.argsLeft === 0) break
      // The next argument's header: "$<length>\r\n", maybe cut between chunks.
      const newline = chunk.indexOf(LF, at)
      if (newline === -1) {
        p.line = Buffer.concat([p.line, chunk.subarray(at)])
        if (p.line.length > 64) throw new RespProtocolError(`an argument header ${JSON.stringify(p.line.toString('latin1', 0, 40))}`)
        at = chunk.length
        break
      }
      const line = Buffer.concat([p.line, chunk.subarray(at, newline + 1)])
      p.line = Buffer.alloc(0)
      at = newline + 1
      const text = line.toString('latin1', 0, line.length - (line.length > 1 && line[line.length - 2] === CR ? 2 : 1))
      p.inArg = argumentLength(text) + 2
      p.argsLeft--
    }
    p.length += at
    if (p.forward && at > 0) this.large!.bytes(chunk.subarray(0, at))
    if (p.inArg === 0 && p.argsLeft === 0) {
      this.passing = undefined
      this.large!.end(p.length)
    }
    return at
  }
}

/** The length an argument's header line ("$<length>") gives. */
function argumentLength(text: string): number {
  if (text[0] !== '$') throw new RespProtocolError(`an argument header ${JSON.stringify(text.slice(0, 40))}`)
  const length = Number(text.slice(1))
  if (!Number.isInteger(length) || length < 0) throw new RespProtocolError(`an argument length ${JSON.stringify(text.slice(0, 40))}`)
  return length
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

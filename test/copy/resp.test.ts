import {expect} from 'chai'

import {CommandParser, type LargeCommandChoice, type Reply, ReplyParser} from '../../src/copy/resp.js'
import {encodeCommand} from '../../src/replication/link.js'

/** The stream parsers give the same commands, lengths and replies however the bytes are cut. */
describe('copy/resp: parsing the stream and the replies, cut anywhere', () => {
  const stream = Buffer.concat([
    encodeCommand(['SELECT', '3']),
    Buffer.from('\n'),
    encodeCommand(['SET', 'k', Buffer.alloc(300, 7)]),
    encodeCommand(['MULTI']),
    encodeCommand(['INCR', 'n']),
    encodeCommand(['EXEC']),
    encodeCommand(['PING']),
  ])

  const commandsOf = (chunks: Buffer[]) => {
    const seen: {args: string[]; length: number}[] = []
    const parser = new CommandParser((args, length) => seen.push({args: args.map((a) => a.toString('latin1')), length}))
    for (const chunk of chunks) parser.feed(chunk)
    return seen
  }

  it('reports each command with the exact bytes it took, whatever the cut', () => {
    const whole = commandsOf([stream])
    expect(whole.map((c) => c.args[0] ?? '')).to.deep.equal(['SELECT', '', 'SET', 'MULTI', 'INCR', 'EXEC', 'PING'])
    expect(whole.reduce((sum, c) => sum + c.length, 0)).to.equal(stream.length)
    for (let cut = 1; cut < stream.length; cut++) {
      expect(commandsOf([stream.subarray(0, cut), stream.subarray(cut)]), `cut at ${cut}`).to.deep.equal(whole)
    }
    expect(commandsOf([...stream].map((b) => Buffer.from([b])))).to.deep.equal(whole)
  })

  it('finds an error at any depth of a reply (EXEC holds one per command)', () => {
    const replies = Buffer.from('+OK\r\n+QUEUED\r\n*3\r\n:1\r\n$3\r\nabc\r\n-WRONGTYPE bad\r\n$-1\r\n*2\r\n*1\r\n:5\r\n$0\r\n\r\n')
    const whole: Reply[] = []
    const parser = new ReplyParser((r) => whole.push(r))
    parser.feed(replies)
    expect(whole).to.deep.equal([{}, {}, {error: 'WRONGTYPE bad'}, {}, {}])
    for (let cut = 1; cut < replies.length; cut++) {
      const seen: Reply[] = []
      const cutParser = new ReplyParser((r) => seen.push(r))
      cutParser.feed(replies.subarray(0, cut))
      cutParser.feed(replies.subarray(cut))
      expect(seen, `cut at ${cut}`).to.deep.equal(whole)
    }
  })

  describe('a command with an argument too large to hold', () => {
    const value = (fill: number) => Buffer.alloc(1000, fill)
    const set = encodeCommand(['SET', 'k', value(1), 'PX', '100000'])
    const hset = encodeCommand(['HSET', 'h', 'f', value(2), 'g', value(3)])
    const large = Buffer.concat([
      encodeCommand(['SELECT', '3']),
      set,
      encodeCommand(['PUBLISH', 'channel', value(4)]),
      encodeCommand(['INCR', 'n']),
      hset,
      encodeCommand(['COPY', 'k', value(5)]),
      encodeCommand(['PING']),
    ])

    /**
     * Forward SET and HSET, drop PUBLISH, gather the rest. `seen`: each command's name and
     * length, the same whichever way it came; `delivered`: what went on (the bytes passed
     * through, or a whole SET or HSET encoded again); `passed`: the commands that passed.
     */
    const parse = (chunks: Buffer[]) => {
      const seen: string[] = []
      const delivered: Buffer[] = []
      const passed: string[] = []
      let name = ''
      let forwarding: Buffer[] = []
      const parser = new CommandParser(
        (args, length) => {
          seen.push(`${args[0].toString('latin1')} ${length}`)
          if (['SET', 'HSET'].includes(args[0].toString('latin1'))) delivered.push(encodeCommand(args))
        },
        {
          above: 100,
          start(args, count): LargeCommandChoice {
            name = args[0].toString('latin1')
            passed.push(`${name} ${args.length}/${count}`)
            return name === 'PUBLISH' ? 'discard' : name === 'COPY' ? 'gather' : 'forward'
          },
          bytes: (chunk) => forwarding.push(Buffer.from(chunk)),
          end(length) {
            seen.push(`${name} ${length}`)
            if (forwarding.length > 0) delivered.push(Buffer.concat(forwarding))
            forwarding = []
          },
        },
      )
      for (const chunk of chunks) parser.feed(chunk)
      return {seen, delivered, passed, peak: parser.peakHeld}
    }
    const tens = (bytes: Buffer) => {
      const chunks: Buffer[] = []
      for (let at = 0; at < bytes.length; at += 10) chunks.push(bytes.subarray(at, at + 10))
      return chunks
    }

    it('passes it through exactly as it came, or drops it, and goes on with the next command, whatever the cut', () => {
      const whole = parse([large])
      const lengthOf = (...args: (string | Buffer)[]) => encodeCommand(args).length
      expect(whole.seen).to.deep.equal([
        `SELECT ${lengthOf('SELECT', '3')}`,
        `SET ${set.length}`,
        `PUBLISH ${lengthOf('PUBLISH', 'channel', value(4))}`,
        `INCR ${lengthOf('INCR', 'n')}`,
        `HSET ${hset.length}`,
        `COPY ${lengthOf('COPY', 'k', value(5))}`,
        `PING ${lengthOf('PING')}`,
      ])
      expect(whole.delivered).to.deep.equal([set, hset])
      // In chunks of ten bytes each large argument is cut: all four pass, COPY is then gathered.
      const inTens = parse(tens(large))
      expect(inTens.passed).to.deep.equal(['SET 2/5', 'PUBLISH 2/3', 'HSET 3/6', 'COPY 2/3'])
      expect(inTens.seen).to.deep.equal(whole.seen)
      expect(inTens.delivered).to.deep.equal(whole.delivered)
      for (let cut = 1; cut < large.length; cut++) {
        const twice = parse([large.subarray(0, cut), large.subarray(cut)])
        expect(twice.seen, `cut at ${cut}`).to.deep.equal(whole.seen)
        expect(twice.delivered, `cut at ${cut}`).to.deep.equal(whole.delivered)
      }
      const bytewise = parse([...large].map((b) => Buffer.from([b])))
      expect(bytewise.seen).to.deep.equal(whole.seen)
      expect(bytewise.delivered).to.deep.equal(whole.delivered)
    })

    it('holds no more than a header line and one chunk of it, never the argument', () => {
      const {peak} = parse(tens(large))
      // COPY's 1,000-byte key is gathered whole (it is read before anything is decided); nothing else is.
      expect(peak).to.be.within(1000, 1100)
      const withoutCopy = large.subarray(0, large.length - encodeCommand(['COPY', 'k', value(5)]).length - 14)
      expect(parse(tens(withoutCopy)).peak).to.be.below(100)
    })
  })
})

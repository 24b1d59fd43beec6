import {expect} from 'chai'

import {CommandParser, type Reply, ReplyParser} from '../../src/copy/resp.js'
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
})

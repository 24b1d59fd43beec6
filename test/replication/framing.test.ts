import {randomBytes} from 'node:crypto'

import {expect} from 'chai'

import {ShardctlError} from '../../src/errors.js'
import {type FullResync, type SnapshotHeader, EOF_MARK_SIZE, SnapshotFraming} from '../../src/replication/framing.js'

/** Everything a framing reports, for one way of cutting the input. */
function frame(chunks: Buffer[]): {resync?: FullResync; header?: SnapshotHeader; payload: Buffer; rest?: Buffer; ends: number} {
  const out: {resync?: FullResync; header?: SnapshotHeader; payload: Buffer[]; rest?: Buffer; ends: number} = {payload: [], ends: 0}
  const framing = new SnapshotFraming('h:1', {
    fullResync: (resync) => (out.resync = resync),
    header: (header) => (out.header = header),
    payload: (chunk) => out.payload.push(Buffer.from(chunk)),
    end: (rest) => {
      out.ends++
      out.rest = Buffer.from(rest)
    },
  })
  for (const chunk of chunks) {
    if (framing.done) {
      // What a caller does after the end: the rest of the socket's bytes are the replication stream.
      out.rest = Buffer.concat([out.rest!, chunk])
      continue
    }
    framing.feed(chunk)
  }
  return {...out, payload: Buffer.concat(out.payload)}
}

function splitAt(data: Buffer, ...points: number[]): Buffer[] {
  const cuts = [0, ...points, data.length]
  return cuts.slice(1).map((end, i) => data.subarray(cuts[i], end))
}

const REPLID = 'a'.repeat(40)
const MARK = Buffer.from('0123456789abcdef0123456789abcdef01234567')

describe('replication/framing: the bytes of a full synchronisation', () => {
  it('a diskless snapshot: the end mark is found however the input is cut, at every byte position', () => {
    const payload = randomBytes(300)
    const input = Buffer.concat([Buffer.from(`\n\n+FULLRESYNC ${REPLID} 1234\r\n\n$EOF:${MARK}\r\n`), payload, MARK])
    for (let at = 0; at <= input.length; at++) {
      const out = frame(splitAt(input, at))
      expect(out.resync, `cut at ${at}`).to.deep.equal({replid: REPLID, offset: 1234})
      expect(out.header).to.deep.equal({})
      expect(out.payload.equals(payload), `cut at ${at}`).to.equal(true)
      expect(out.ends).to.equal(1)
    }
    // And cut in three, at every pair of positions around the mark.
    const markStart = input.length - EOF_MARK_SIZE
    for (let a = markStart - 45; a <= input.length; a++) {
      for (let b = a; b <= input.length; b++) {
        const out = frame(splitAt(input, a, b))
        expect(out.payload.equals(payload), `cut at ${a} and ${b}`).to.equal(true)
        expect(out.ends).to.equal(1)
      }
    }
  })

  it('a diskless snapshot fed one byte at a time, and one shorter than its mark', () => {
    for (const payload of [randomBytes(1000), Buffer.from('REDIS0010'), Buffer.alloc(0)]) {
      const input = Buffer.concat([Buffer.from(`$EOF:${MARK}\r\n`), payload, MARK])
      const out = frame(splitAt(input, ...Array.from({length: input.length - 1}, (_, i) => i + 1)))
      expect(out.payload.equals(payload)).to.equal(true)
      expect(out.ends).to.equal(1)
    }
  })

  it('payload bytes that look like the start of the mark are payload, not the end', () => {
    const payload = Buffer.concat([randomBytes(10), MARK.subarray(0, 39), randomBytes(3), MARK.subarray(0, 20)])
    const input = Buffer.concat([Buffer.from(`$EOF:${MARK}\r\n`), payload, MARK])
    for (let at = 0; at <= input.length; at++) {
      const out = frame(splitAt(input, at))
      expect(out.payload.equals(payload), `cut at ${at}`).to.equal(true)
      expect(out.ends).to.equal(1)
    }
  })

  it('no end before the mark: a snapshot cut short never ends', () => {
    const input = Buffer.concat([Buffer.from(`$EOF:${MARK}\r\n`), randomBytes(100), MARK.subarray(0, 39)])
    expect(frame([input]).ends).to.equal(0)
  })

  it('a snapshot with a length: exactly that many bytes, and the replication stream after it kept, at every cut', () => {
    const payload = randomBytes(200)
    const stream = Buffer.from('*1\r\n$4\r\nPING\r\n')
    const input = Buffer.concat([Buffer.from(`\n+FULLRESYNC ${REPLID} 0\r\n\n\n$200\r\n`), payload, stream])
    for (let at = 0; at <= input.length; at++) {
      const out = frame(splitAt(input, at))
      expect(out.header, `cut at ${at}`).to.deep.equal({length: 200})
      expect(out.payload.equals(payload), `cut at ${at}`).to.equal(true)
      expect(out.rest!.equals(stream), `cut at ${at}`).to.equal(true)
      expect(out.ends).to.equal(1)
    }
  })

  it('an empty snapshot ($0) ends at its header', () => {
    const out = frame([Buffer.from('$0\r\n*1\r\n')])
    expect(out.header).to.deep.equal({length: 0})
    expect(out.ends).to.equal(1)
    expect(out.rest!.toString()).to.equal('*1\r\n')
  })

  it("a master's refusal is a ReplyError in its own words", () => {
    expect(() => frame([Buffer.from("\n-NOMASTERLINK Can't SYNC while not connected with my master\r\n")]))
      .to.throw("NOMASTERLINK Can't SYNC while not connected with my master")
      .with.property('name', 'ReplyError')
  })

  it('bytes that are not the protocol fail with one line naming the host', () => {
    for (const input of ['HTTP/1.1 400 Bad Request\r\n', `$EOF:short\r\n`, '$-1\r\n', 'x'.repeat(2000)]) {
      let error: unknown
      try {
        frame([Buffer.from(input)])
      } catch (error_) {
        error = error_
      }
      expect(error, input).to.be.instanceOf(ShardctlError)
      expect((error as ShardctlError).code).to.equal('EPROTOCOL')
      expect((error as Error).message).to.match(/^h:1 sent .* where a snapshot's header was expected$/)
    }
  })
})

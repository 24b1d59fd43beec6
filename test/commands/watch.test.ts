import {setTimeout as sleep} from 'node:timers/promises'

import {expect} from 'chai'
import type {Redis} from 'ioredis'

import {ANSI, binary, cli, printed, spawnCli, until} from '../helpers/cli.js'
import {type TestServer, startReplicated, startServer, waitForCatchUp, waitForStreaming, withClients} from '../helpers/redis.js'

const CHANNEL = 'shards._events'

/** Wait until `n` clients subscribe to the event channel on a server. */
async function subscribed(client: Redis, n = 1): Promise<void> {
  await until('the watcher subscribed', async () => (await numsub(client)) >= n)
}

async function numsub(client: Redis): Promise<number> {
  const [, count] = (await client.call('PUBSUB', 'NUMSUB', CHANNEL)) as [string, number]
  return count
}

const lines = (stdout: string) => stdout.split('\n').filter((l) => l !== '')

/** A registry with a replica; `shards:watch` runs as a real process, changes come from others. */
describe('shards:watch', () => {
  let registry: TestServer
  let replica: TestServer
  let shard: TestServer
  let reg: Redis
  const r = () => ['-r', registry.url]

  before(async () => {
    ;({
      master: registry,
      replicas: [replica],
    } = await startReplicated(1))
    shard = await startServer()
    reg = registry.client()
  })
  beforeEach(() => reg.flushall())
  after(async () => {
    reg.disconnect()
    await Promise.all([registry, replica, shard].map((s) => s.stop()))
  })

  /**
   * Add, weight and assign from other processes: the three events every watcher must
   * print. Each test names its own shard, so an event left over from another test
   * cannot stand in for one of its own.
   */
  async function makeChanges(id: string): Promise<void> {
    expect((await cli(['shards:add', id, '--master', shard.address(1), ...r()])).exitCode).to.equal(0)
    expect((await cli(['shards:weight', id, '3', '--yes', ...r()])).exitCode).to.equal(0)
    expect((await cli(['shards:assign', `user:${id}`, ...r()])).exitCode).to.equal(0)
  }

  it('prints the events of an add, a weight and an assign made by other processes, in order, as NDJSON', async () => {
    const watching = spawnCli(['shards:watch', '--json', '--count', '3', ...r()])
    await subscribed(reg)
    await makeChanges('plain1')
    const run = await watching
    expect(run.exitCode, run.stderr).to.equal(0)
    const events = lines(run.stdout).map((l) => JSON.parse(l))
    expect(events.map((e) => e.type)).to.deep.equal(['shards.added', 'weights.changed', 'hashes.assigned'])
    expect(events[0].ids).to.deep.equal(['plain1'])
    expect(events[1].weights).to.deep.equal({plain1: 3})
    for (const e of events) expect(e).to.include({db: 0, prefix: 'shards'}).and.to.include.keys('at', 'by', 'command')
    // What was published is what the history recorded (an assign of one batch: its one event,
    // and in the history how many hashes each shard got).
    const history = (await reg.lrange('shards._history', 0, -1)).map((h) => JSON.parse(h)).reverse()
    expect(history[2].perShard).to.deep.equal({plain1: 1})
    delete history[2].perShard
    expect(events).to.deep.equal(history)
  })

  it('a watch on db 3 leaves out the events of the registry in db 0 of the same server (pub/sub ignores databases)', async () => {
    const db3 = ['-r', registry.url.replace(/\/0$/, '/3')]
    const watching = spawnCli(['shards:watch', '--json', '--count', '1', ...db3])
    await subscribed(reg)
    expect((await cli(['shards:add', 'db0', '--master', shard.address(1), ...r()])).exitCode).to.equal(0)
    expect((await cli(['shards:add', 'db3', '--master', shard.address(2), ...db3])).exitCode).to.equal(0)
    const run = await watching
    expect(run.exitCode, run.stderr).to.equal(0)
    const events = lines(run.stdout).map((l) => JSON.parse(l))
    expect(events).to.have.length(1)
    expect(events[0]).to.include({type: 'shards.added', db: 3, prefix: 'shards'})
    expect(events[0].ids).to.deep.equal(['db3'])
  })

  it('--via a replica of the registry: the events reached two servers', async () => {
    // Whatever earlier tests published has reached the replica before this watcher listens.
    await waitForCatchUp(replica, registry)
    const watching = spawnCli(['shards:watch', '--via', `127.0.0.1:${replica.port}`, '--json', '--count', '3', ...r()])
    await withClients([replica], ([onReplica]) => subscribed(onReplica))
    await makeChanges('via1')
    const run = await watching
    expect(run.exitCode, run.stderr).to.equal(0)
    const events = lines(run.stdout).map((l) => JSON.parse(l))
    expect(events.map((e) => e.type)).to.deep.equal(['shards.added', 'weights.changed', 'hashes.assigned'])
    expect(events[0].ids).to.deep.equal(['via1'])
    expect(events[1].weights).to.deep.equal({via1: 3})
  })

  it("the help's jq example filters on an event type that is published", async () => {
    const help = await spawnCli(['shards:watch', '--help'])
    const filtered = [...help.stdout.matchAll(/\.type == \\"([\w.-]+)\\"/g)].map((m) => m[1])
    expect(filtered.length, help.stdout).to.be.greaterThan(0)
    const watching = spawnCli(['shards:watch', '--json', '--count', '3', ...r()])
    await subscribed(reg)
    await makeChanges('help1')
    const published = lines((await watching).stdout).map((l) => JSON.parse(l).type)
    for (const type of filtered) expect(published).to.include(type)
  })

  /** A replica of `master` of its own, applying its stream before a watch starts: the test then changes whom it follows. */
  async function ownReplica(master: TestServer): Promise<TestServer> {
    const own = await startServer(['--replicaof', '127.0.0.1', String(master.port)])
    await waitForStreaming(own, master)
    return own
  }

  /** The watch ended with exit 1 and one line (after its "Watching" line) that says why, no stack trace. */
  function expectEnded(run: {exitCode: number; stderr: string}, why: RegExp): void {
    expect(run.exitCode, run.stderr).to.equal(1)
    const said = run.stderr.trim().split('\n')
    expect(said[0]).to.match(/^Watching /)
    expect(said.slice(1)).to.have.length(1)
    expect(said[1]).to.match(why)
  }

  for (const [what, detach, now] of [
    ['REPLICAOF NO ONE', (c: Redis) => c.replicaof('NO', 'ONE'), () => 'a master'],
    ['it follows another master', (c: Redis) => c.replicaof('127.0.0.1', String(shard.port)), () => `a replica of 127.0.0.1:${shard.port}`],
  ] as const) {
    it(`--via a replica that stops following the registry (${what}) ends the watch: exit 1, naming the replica and what it became`, async () => {
      const own = await ownReplica(registry)
      try {
        const watching = spawnCli(['shards:watch', '--via', `127.0.0.1:${own.port}`, ...r()])
        const client = own.client()
        await subscribed(client)
        await detach(client)
        expectEnded(
          await watching,
          new RegExp(
            `--via 127\\.0\\.0\\.1:${own.port} no longer follows the registry 127\\.0\\.0\\.1:${registry.port}: it is now ${now().replaceAll('.', '\\.')}: events published on the registry no longer reach it`,
          ),
        )
      } finally {
        await own.stop()
      }
    })
  }

  it('--via a replica whose link to the registry stays down past --timeout ends the watch: exit 1, naming it', async () => {
    const lonely = await startServer()
    const own = await ownReplica(lonely)
    try {
      const watching = spawnCli(['shards:watch', '--via', `127.0.0.1:${own.port}`, '--timeout', '500ms', '-r', lonely.url])
      await subscribed(own.client())
      await lonely.stop()
      expectEnded(
        await watching,
        new RegExp(
          `--via 127\\.0\\.0\\.1:${own.port} has lost its link to the registry 127\\.0\\.0\\.1:${lonely.port} for more than 500 ms`,
        ),
      )
    } finally {
      await Promise.all([own.stop(), lonely.stop()])
    }
  })

  it('--count N prints exactly N events, even when more arrive in one read', async () => {
    const watching = spawnCli(['shards:watch', '--json', '--count', '3', ...r()])
    await subscribed(reg)
    // One script, six events: they reach the watcher in one socket read.
    await reg.eval("for i = 1, 6 do redis.call('PUBLISH', KEYS[1], cjson.encode({v = 1, type = 'burst', n = i})) end", 1, CHANNEL)
    const run = await watching
    expect(run.exitCode, run.stderr).to.equal(0)
    expect(lines(run.stdout).map((l) => JSON.parse(l).n)).to.deep.equal([1, 2, 3])
  })

  it('--via an instance that is not a replica of the registry is refused in one line, exit 2', async () => {
    const run = await spawnCli(['shards:watch', '--via', `127.0.0.1:${shard.port}`, ...r()])
    expect(run.exitCode).to.equal(2)
    expect(run.stderr.trim().split('\n')).to.have.length(1)
    expect(run.stderr).to.match(
      new RegExp(`--via 127.0.0.1:${shard.port} is not a replica of the registry 127.0.0.1:${registry.port}: it is a master`),
    )
  })

  it('stays subscribed while idle for longer than --timeout', async () => {
    const watching = spawnCli(['shards:watch', '--json', '--count', '1', '--timeout', '200ms', ...r()])
    await subscribed(reg)
    // Idle for five timeouts: the watcher must still be there, by its heartbeat.
    await sleep(1000)
    await subscribed(reg)
    expect((await cli(['shards:add', 'idle1', '--master', shard.address(9), ...r()])).exitCode).to.equal(0)
    const run = await watching
    expect(run.exitCode, run.stderr).to.equal(0)
    const events = lines(run.stdout).map((l) => JSON.parse(l))
    expect(events).to.have.length(1)
    expect(events[0]).to.include({type: 'shards.added'})
    expect(events[0].ids).to.deep.equal(['idle1'])
  })

  it('one plain line per event without --json, no colour into a pipe; a message that is not JSON is shown, not fatal', async () => {
    const watching = spawnCli(['shards:watch', '--count', '4', ...r()])
    await subscribed(reg)
    await makeChanges('line1')
    await reg.publish(CHANNEL, 'not json at all')
    const run = await watching
    expect(run.exitCode, run.stderr).to.equal(0)
    const out = lines(run.stdout)
    expect(out).to.have.length(4)
    expect(out[0]).to.match(/^\d{4}-\d\d-\d\dT\S+ shards\.added .*by \S+@\S+ \(shards:add\)$/)
    expect(out[1]).to.match(/weights\.changed weights=\{"line1":3\}/)
    expect(out[3]).to.match(/\(not JSON\) not json at all$/)
    expect(run.stdout + run.stderr).not.to.match(ANSI)
    expect(run.stderr).to.match(/^Watching shards\._events on 127\.0\.0\.1:\d+\. Ctrl-C to stop\./)
  })

  it('losing the registry ends the watch with exit 1 and a line naming the host', async () => {
    const lonely = await startServer()
    try {
      const watching = spawnCli(['shards:watch', '--timeout', '500ms', '-r', lonely.url])
      const client = lonely.client()
      await subscribed(client)
      client.disconnect()
      await lonely.stop()
      const run = await watching
      expect(run.exitCode).to.equal(1)
      expect(run.stderr).to.match(new RegExp(`lost the connection to 127\\.0\\.0\\.1:${lonely.port}`))
      expect(run.stderr).not.to.match(/\n\s+at /)
    } finally {
      await lonely.stop()
    }
  })

  it('Ctrl-C ends it with exit 130 and closes its connection', async () => {
    const {execa} = await import('execa')
    const child = execa('node', [binary, 'shards:watch', ...r()], {reject: false, stdin: 'ignore'})
    await subscribed(reg)
    child.kill('SIGINT')
    const done = await child
    printed.push(String(done.stdout), String(done.stderr))
    expect(done.exitCode).to.equal(130)
    expect(String(done.stderr)).to.match(/Interrupted\./)
    // The server notices the closed socket a moment later.
    await until('the watcher unsubscribed', async () => (await numsub(reg)) === 0)
  })

  it('an unreachable registry fails within --timeout, naming it', async () => {
    const run = await spawnCli(['shards:watch', '--timeout', '300ms', '-r', 'redis://127.0.0.1:1/0'])
    expect(run.exitCode).to.equal(1)
    expect(run.stderr).to.match(/cannot reach 127\.0\.0\.1:1/)
  })
})

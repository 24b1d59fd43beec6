import {expect} from 'chai'

import {binary, cli, printed, spawnCli, until} from '../helpers/cli.js'
import {useFleet} from '../helpers/fleet.js'

describe('shards:assign and shards:lookup', () => {
  const fleet = useFleet({instances: 1})
  const inst = () => `127.0.0.1:${fleet.instances[0].master.port}`

  beforeEach(async () => {
    await cli(['shards:init', '--yes', '--instance', inst(), '--count', '4', ...fleet.r()])
  })

  it('assigns fresh hashes and keeps existing assignments', async () => {
    await fleet.reg.hset('shards.map', 'old', 's003')
    const run = await cli(['shards:assign', 'old', 'new1', 'new2', '--json', ...fleet.r()])
    expect(run.exitCode).to.equal(0)
    const result = JSON.parse(run.stdout)
    expect(result).to.include({total: 3, assigned: 2, existing: 1})
    expect(result.results[0]).to.deep.equal({hash: 'old', shard: 's003', assigned: false})
    for (const r of result.results.slice(1)) expect(await fleet.reg.hget('shards.map', r.hash)).to.equal(r.shard)
  })

  it('--dry-run gives a hash named twice one shard, once: the second is existing, as a real run says', async () => {
    const dry = await cli(['shards:assign', 'n1', 'n1', 'n1', 'n1', 'n2', '--dry-run', '--json', ...fleet.r()])
    expect(dry.exitCode, dry.stderr).to.equal(0)
    const result = JSON.parse(dry.stdout)
    const n1 = result.results.filter((r: {hash: string}) => r.hash === 'n1')
    expect(new Set(n1.map((r: {shard: string}) => r.shard)).size).to.equal(1)
    expect(n1.map((r: {assigned: boolean}) => r.assigned)).to.deep.equal([true, false, false, false])
    expect(result).to.include({total: 5, assigned: 2, existing: 3})
    expect(await fleet.reg.hlen('shards.map')).to.equal(0)
    // The real run agrees on the counts.
    const real = JSON.parse((await cli(['shards:assign', 'n1', 'n1', 'n1', 'n1', 'n2', '--json', ...fleet.r()])).stdout)
    expect(real).to.include({total: 5, assigned: 2, existing: 3})
  })

  it('lookup of a hash whose shard was removed is not found: named, exit 3', async () => {
    await fleet.reg.hset('shards.map', 'kept', 's000', 'lost', 'gone')
    const run = await cli(['shards:lookup', 'kept', 'lost', '--json', ...fleet.r()])
    expect(run.exitCode).to.equal(3)
    expect(JSON.parse(run.stdout)).to.include({total: 2, found: 1, unassigned: 0, orphaned: 1})
    const human = await cli(['shards:lookup', 'kept', 'lost', ...fleet.r()])
    expect(human.exitCode).to.equal(3)
    expect(human.stdout).to.include('gone (not in the registry)')
    expect(human.stderr).to.match(/1 of 2 hashes points at a shard the registry does not have/)
    const streamed = await spawnCli(['shards:lookup', '--stdin', ...fleet.r()], {input: 'kept\nlost\n'})
    expect(streamed.exitCode).to.equal(3)
    expect(streamed.stdout).to.include('lost\tgone\t-')
    expect(streamed.stderr).to.include('2 hashes: 1 found, 0 unassigned, 1 on a shard the registry does not have.')
  })

  it('assignment follows the weights (many draws, wide tolerance) and never picks weight 0', async () => {
    await cli(['shards:weight', 's000', '1', ...fleet.r()])
    await cli(['shards:weight', 's001', '3', ...fleet.r()])
    await cli(['shards:weight', 's002', '6', ...fleet.r()])
    await cli(['shards:weight', 's003', '0', ...fleet.r()])
    const n = 20_000
    const input = Array.from({length: n}, (_, i) => `u${i}`).join('\n')
    const run = await spawnCli(['shards:assign', '--stdin', '--quiet', ...fleet.r()], {input})
    expect(run.exitCode).to.equal(0)
    const counts: Record<string, number> = {}
    for (const id of await fleet.reg.hvals('shards.map')) counts[id] = (counts[id] ?? 0) + 1
    expect(counts.s003).to.equal(undefined)
    // Expected 2,000 / 6,000 / 12,000; the standard deviation is below 70, so 8 sd is 560.
    for (const [id, p] of [
      ['s000', 0.1],
      ['s001', 0.3],
      ['s002', 0.6],
    ] as const) {
      expect(Math.abs(counts[id] - n * p), id).to.be.lessThan(560)
    }
  })

  /** A `shards:assign --stdin` kept running: hashes are written to it as the test goes, and answered in order. */
  async function runningAssign(): Promise<{
    send: (hashes: string[]) => Promise<void>
    end: () => Promise<{exitCode: number; stderr: string}>
  }> {
    const {execa} = await import('execa')
    const child = execa('node', [binary, 'shards:assign', '--stdin', '--quiet', ...fleet.r()], {reject: false, stdin: 'pipe'})
    let sent = 0
    return {
      // Answered once the map holds them all: --quiet prints nothing per hash.
      async send(hashes) {
        child.stdin.write(`${hashes.join('\n')}\n`)
        sent += hashes.length
        await until(`${sent} hashes assigned`, async () => (await fleet.reg.hlen('shards.map')) >= sent)
      },
      async end() {
        child.stdin.end()
        const done = await child
        printed.push(String(done.stdout), String(done.stderr))
        return {exitCode: done.exitCode ?? 1, stderr: String(done.stderr)}
      },
    }
  }
  const shardsOf = async (hashes: string[]) => fleet.reg.hmget('shards.map', ...hashes)

  it('a drain takes effect at once: a running --stdin assign gives the drained shard no hash after the change', async () => {
    const assign = await runningAssign()
    try {
      const before = Array.from({length: 2000}, (_, i) => `before:${i}`)
      await assign.send(before)
      expect(await shardsOf(before), 'drawn from the weights read at the start').to.include('s000')
      expect((await cli(['shards:weight', 's000', '0', ...fleet.r()])).exitCode).to.equal(0)
      const after = Array.from({length: 20_000}, (_, i) => `after:${i}`)
      for (let i = 0; i < after.length; i += 5000) await assign.send(after.slice(i, i + 5000))
      const shards = await shardsOf(after)
      expect(shards.filter((s) => s === null)).to.deep.equal([])
      expect(shards.filter((s) => s === 's000')).to.deep.equal([])
    } finally {
      const run = await assign.end()
      expect(run.exitCode, run.stderr).to.equal(0)
    }
  })

  it('a shard weighted up again during a running --stdin assign takes new hashes again (the event is heard)', async () => {
    const assign = await runningAssign()
    try {
      expect((await cli(['shards:weight', 's000', '0', ...fleet.r()])).exitCode).to.equal(0)
      await assign.send(Array.from({length: 1000}, (_, i) => `drained:${i}`))
      expect((await cli(['shards:weight', 's000', '1', ...fleet.r()])).exitCode).to.equal(0)
      // No refusal tells the assigner of a weight that went up: only the event does.
      let batch = 0
      await until(
        's000 takes hashes again',
        async () => {
          const hashes = Array.from({length: 500}, (_, i) => `again:${batch}:${i}`)
          batch++
          await assign.send(hashes)
          return (await shardsOf(hashes)).includes('s000')
        },
        200,
      )
    } finally {
      const run = await assign.end()
      expect(run.exitCode, run.stderr).to.equal(0)
    }
  })

  it('two processes assigning the same fresh hashes at once agree on every answer', async () => {
    const input = Array.from({length: 5000}, (_, i) => `race${i}`).join('\n')
    const [a, b] = await Promise.all([
      spawnCli(['shards:assign', '--stdin', ...fleet.r()], {input}),
      spawnCli(['shards:assign', '--stdin', ...fleet.r()], {input}),
    ])
    expect([a.exitCode, b.exitCode]).to.deep.equal([0, 0])
    expect(a.stdout).to.equal(b.stdout)
    const stored = await fleet.reg.hgetall('shards.map')
    for (const line of a.stdout.trim().split('\n')) {
      const [hash, shard] = line.split('\t')
      expect(stored[hash]).to.equal(shard)
    }
    const newOnes = (s: string) => Number(/: ([\d,]+) assigned/.exec(s)![1].replaceAll(',', ''))
    expect(newOnes(a.stderr) + newOnes(b.stderr)).to.equal(5000)
  })

  it('--shard assigns explicitly; an existing assignment moves only with --force', async () => {
    await fleet.reg.hset('shards.map', 'h', 's000')
    let run = await cli(['shards:assign', 'h', 'k', '--shard', 's002', '--json', ...fleet.r()])
    // h stays where it is, and that is said: exit 3, naming it and pointing at --force.
    expect(run.exitCode).to.equal(3)
    expect(JSON.parse(run.stdout).results).to.deep.equal([
      {hash: 'h', shard: 's000', assigned: false},
      {hash: 'k', shard: 's002', assigned: true},
    ])
    expect(JSON.parse(run.stdout)).to.include({elsewhere: 1})
    const text = await cli(['shards:assign', 'h', '--shard', 's002', ...fleet.r()])
    expect(text.exitCode).to.equal(3)
    expect(text.stderr).to.match(/1 hash is already on another shard and stayed there, not on s002: h \(s000\); move them with --force/)
    const again = await cli(['shards:assign', 'k', '--shard', 's002', ...fleet.r()])
    expect(again.exitCode, 'already on the requested shard: nothing to say').to.equal(0)
    // Moving it overwrites the routing while its keys stay on s000: not without a yes.
    run = await cli(['shards:assign', 'h', '--shard', 's002', '--force', ...fleet.r()])
    expect(run.exitCode).to.equal(2)
    expect(run.stderr).to.match(/--yes/)
    expect(await fleet.reg.hget('shards.map', 'h')).to.equal('s000')
    run = await cli(['shards:assign', 'h', 'n', '--shard', 's002', '--force', '--yes', '--json', ...fleet.r()])
    expect(run.exitCode, run.stderr).to.equal(0)
    expect(await fleet.reg.hget('shards.map', 'h')).to.equal('s002')
    expect(JSON.parse(run.stdout).results).to.deep.equal([
      {hash: 'h', shard: 's002', assigned: true, from: 's000'},
      {hash: 'n', shard: 's002', assigned: true},
    ])
    run = await cli(['shards:assign', 'h', '--force', ...fleet.r()])
    expect(run.exitCode).to.equal(2)
    expect(run.stderr).to.match(/--shard/)
  })

  it('--stdin streams tab-separated lines, or NDJSON ending with a summary under --json', async () => {
    const plain = await spawnCli(['shards:assign', '--stdin', ...fleet.r()], {input: 'a\r\nb\n\n c\n'})
    expect(plain.exitCode).to.equal(0)
    expect(
      plain.stdout
        .trim()
        .split('\n')
        .map((l) => l.split('\t')[0]),
    ).to.deep.equal(['a', 'b', ' c'])
    const json = await spawnCli(['shards:assign', '--stdin', '--json', ...fleet.r()], {input: 'a\nd\n'})
    const lines = json.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
    expect(lines).to.have.length(3)
    expect(lines[0]).to.include({hash: 'a', assigned: false})
    expect(lines[2]).to.deep.equal({summary: {total: 2, assigned: 1, existing: 1, dryRun: false}})
  })

  it('streams more hashes than one batch, in input order, and a reader that stops early ends it quietly', async () => {
    const hashes = Array.from({length: 2500}, (_, i) => `many${i}`)
    const run = await spawnCli(['shards:assign', '--stdin', ...fleet.r()], {input: hashes.join('\n')})
    expect(run.exitCode).to.equal(0)
    expect(
      run.stdout
        .trim()
        .split('\n')
        .map((l) => l.split('\t')[0]),
    ).to.deep.equal(hashes)
    const {execa} = await import('execa')
    const piped = await execa('bash', ['-c', `seq 1 200000 | node ${binary} shards:lookup --stdin -r ${fleet.registry.url} | head -1`], {
      reject: false,
    })
    expect(piped.stdout).to.equal('1\t-\t-')
    expect(piped.stderr).not.to.match(/EPIPE|Error/)
  })

  it('a bad line in the middle of --stdin: what came before is assigned and printed, nothing after; exit 3 naming the line', async () => {
    const good = Array.from({length: 5000}, (_, i) => `good:${i}`)
    const later = Array.from({length: 3000}, (_, i) => `later:${i}`)
    const input = [...good, 'x'.repeat(1025), ...later].join('\n')
    const run = await spawnCli(['shards:assign', '--stdin', ...fleet.r()], {input})
    expect(run.exitCode, run.stderr).to.equal(3)
    expect(run.stderr).to.match(/line 5,001: shard hash of 1,025 characters is too long/)
    expect(run.stderr).to.match(/5,000 hashes before it were assigned and printed/)
    const printedHashes = run.stdout
      .trim()
      .split('\n')
      .map((l) => l.split('\t')[0])
    expect(printedHashes).to.deep.equal(good)
    const map = await fleet.reg.hgetall('shards.map')
    expect(Object.keys(map).sort()).to.deep.equal([...good].sort())
    // Nothing assigned yet: the bad line changes nothing, and says so with exit 2.
    const first = await spawnCli(['shards:assign', '--stdin', ...fleet.r()], {input: `${'y'.repeat(1025)}\nz\n`})
    expect(first.exitCode, first.stderr).to.equal(2)
    expect(first.stderr).to.match(/line 1: shard hash of 1,025 characters is too long/)
    expect(await fleet.reg.hlen('shards.map')).to.equal(5000)
  })

  it('--dry-run draws but stores nothing', async () => {
    const run = await cli(['shards:assign', 'x', 'y', '--dry-run', '--json', ...fleet.r()])
    expect(run.exitCode).to.equal(0)
    expect(JSON.parse(run.stdout)).to.include({assigned: 2, dryRun: true})
    expect(await fleet.reg.exists('shards.map')).to.equal(0)
  })

  it('refuses when every weight is 0, naming the fix; nothing stored', async () => {
    for (const id of ['s000', 's001', 's002', 's003']) await cli(['shards:weight', id, '0', ...fleet.r()])
    const run = await cli(['shards:assign', 'x', ...fleet.r()])
    expect(run.exitCode).to.equal(1)
    expect(run.stderr).to.match(/every weight is 0.*shards:weight/)
    expect(await fleet.reg.exists('shards.map')).to.equal(0)
  })

  it('lookup gives shard and master; unassigned hashes are reported and exit 3', async () => {
    await fleet.reg.hset('shards.map', 'a', 's001')
    let run = await cli(['shards:lookup', 'a', ...fleet.r()])
    expect(run.exitCode).to.equal(0)
    expect(run.stdout).to.match(new RegExp(`a\\s+s001\\s+${inst().replaceAll('.', '\\.')}/1`))
    run = await cli(['shards:lookup', 'a', 'nope', '--json', ...fleet.r()])
    expect(run.exitCode).to.equal(3)
    const result = JSON.parse(run.stdout)
    expect(result).to.include({total: 2, found: 1, unassigned: 1})
    expect(result.results[1]).to.deep.equal({hash: 'nope', shard: null, master: null})
    const stream = await spawnCli(['shards:lookup', '--stdin', ...fleet.r()], {input: 'a\nnope\n'})
    expect(stream.exitCode).to.equal(3)
    expect(stream.stdout).to.equal(`a\ts001\t${inst()}/1\nnope\t-\t-\n`)
  })
})

import {existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import {connect} from 'node:net'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {expect} from 'chai'

import {scratchDirectory} from '../../src/backup/loader.js'
import {root, until} from '../helpers/cli.js'

/** Whether something accepts connections on a loopback port. */
async function answers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    socket.once('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.once('error', () => resolve(false))
  })
}

/**
 * The temporary redis-server of a restore or a deep verify (src/backup/loader.ts) never
 * outlives the process that started it, and the directories of runs that died go.
 */
describe('the temporary server that loads a snapshot', () => {
  let base: string
  before(() => {
    base = mkdtempSync(join(tmpdir(), 'shardctl-scratch-'))
  })
  after(() => {
    rmSync(base, {recursive: true, force: true})
  })

  it('dies with the process that started it, even by SIGKILL, and its directory goes', async () => {
    const {execa} = await import('execa')
    // The loader itself, in a process of its own that loads a (empty) snapshot and waits.
    const script = `
      import {loadSnapshot, scratchDirectory} from ${JSON.stringify(join(root, 'src', 'backup', 'loader.ts'))}
      const dir = scratchDirectory()
      const loaded = await loadSnapshot(dir, {databases: 16, timeoutMs: 5000})
      console.log(JSON.stringify({port: loaded.port, dir}))
      setInterval(() => undefined, 1000)
    `
    const child = execa('node', ['--import', 'tsx', '--input-type=module', '-e', script], {
      env: {SHARDCTL_SCRATCH_DIR: base},
      reject: false,
    })
    let out = ''
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString()
    })
    await until('the snapshot is loaded', () => out.includes('\n'))
    const {port, dir} = JSON.parse(out) as {port: number; dir: string}
    expect(await answers(port)).to.equal(true)
    expect(existsSync(dir)).to.equal(true)

    child.kill('SIGKILL')
    await child
    await until('the temporary server is gone', async () => !(await answers(port)))
    await until('its directory is gone', () => !existsSync(dir))
  })

  it('a run removes the directories of runs that died, and keeps those of live ones', () => {
    const dead = join(base, 'shardctl-restore-dead')
    const live = join(base, 'shardctl-restore-live')
    const unknown = join(base, 'shardctl-restore-unknown')
    for (const dir of [dead, live, unknown]) mkdirSync(dir)
    // A pid above any this system hands out: no process has it.
    writeFileSync(join(dead, 'owner.pid'), '4194305')
    writeFileSync(join(live, 'owner.pid'), String(process.pid))
    const previous = process.env.SHARDCTL_SCRATCH_DIR
    process.env.SHARDCTL_SCRATCH_DIR = base
    try {
      const mine = scratchDirectory()
      expect(existsSync(dead)).to.equal(false)
      expect(existsSync(live)).to.equal(true)
      // No owner recorded: not ours to judge.
      expect(existsSync(unknown)).to.equal(true)
      rmSync(mine, {recursive: true, force: true})
    } finally {
      if (previous === undefined) delete process.env.SHARDCTL_SCRATCH_DIR
      else process.env.SHARDCTL_SCRATCH_DIR = previous
    }
  })
})

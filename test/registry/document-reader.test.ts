import {mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {expect} from 'chai'

import {DocumentSyntaxError, readMap, readMembers} from '../../src/registry/document-reader.js'

describe('registry/document-reader: a document of any size in constant memory', () => {
  let dir: string
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'shardctl-reader-'))
  })
  after(() => rmSync(dir, {recursive: true, force: true}))

  const write = (name: string, text: string) => {
    const file = join(dir, name)
    writeFileSync(file, text)
    return file
  }
  const all = async (file: string, chunk: number) => {
    const pairs: [string, string][] = []
    for await (const batch of readMap(file, 3, chunk)) {
      expect(batch.length).to.be.within(2, 6)
      for (let i = 0; i < batch.length; i += 2) pairs.push([batch[i], batch[i + 1]])
    }
    return pairs
  }

  const doc = {
    format: 'shardctl-registry',
    version: 1,
    shards: [{id: 's1', weight: 1.5, master: 'h:1/0', replicas: ['r:1/0'], persist: [], extra: {note: 'a "quoted" {brace} [x], \\\\ end'}}],
    map: {'user:1': 's1', 'we"ird\\\\key': 's1', 'ü:ñ': 's1', '': 's1', last: 's1'},
  }

  // Every chunk size, down to 1 byte: a token cut anywhere is read whole.
  for (const chunk of [1, 2, 7, 64, 1 << 20]) {
    it(`reads members and map exactly, the map first or last, with chunks of ${chunk} bytes`, async () => {
      for (const [name, text] of [
        ['last.json', JSON.stringify(doc, null, 2)],
        ['first.json', JSON.stringify(Object.assign({map: doc.map}, doc))],
      ] as const) {
        const file = write(`${chunk}-${name}`, text)
        const {members, hasMap} = await readMembers(file, chunk)
        expect(hasMap).to.equal(true)
        expect(members).to.deep.equal({format: doc.format, version: doc.version, shards: doc.shards})
        expect(await all(file, chunk)).to.deep.equal(Object.entries(doc.map))
      }
    })
  }

  it('an empty map, no map, and an empty document', async () => {
    expect((await readMembers(write('a.json', '{"map": {}, "version": 1}'))).members).to.deep.equal({version: 1})
    expect(await all(write('b.json', '{"map": {}}'), 4)).to.deep.equal([])
    expect((await readMembers(write('c.json', '{"version": 1}'))).hasMap).to.equal(false)
    expect((await readMembers(write('d.json', ' {} '))).members).to.deep.equal({})
  })

  for (const [name, text] of [
    ['not an object', '[1, 2]'],
    ['a map entry that is not a string', '{"map": {"h": 1}}'],
    ['an unterminated string', '{"map": {"h": "s1'],
    ['text after the document', '{"a": 1} {"b": 2}'],
    ['a missing colon', '{"a" 1}'],
    ['garbage in a member', '{"a": nope}'],
    ['an invalid escape in a map key', '{"map": {"h\\x": "s1"}}'],
    ['an invalid escape in a map value', '{"map": {"h": "s\\q1"}}'],
  ] as const) {
    it(`refuses ${name}`, async () => {
      const file = write(`bad-${name.replaceAll(' ', '-')}.json`, text)
      let error: unknown
      try {
        await readMembers(file, 3)
        for await (const batch of readMap(file, 2, 3)) void batch
      } catch (caught) {
        error = caught
      }
      expect(error).to.be.instanceOf(DocumentSyntaxError)
    })
  }
})

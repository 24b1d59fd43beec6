import {expect} from 'chai'

import {displayKey} from '../../src/verify/keys.js'

describe('verify/keys: a key as a person reads it', () => {
  it('shows text as it is, and anything else quoted as redis-cli quotes it', () => {
    expect(displayKey(Buffer.from('user:42'))).to.equal('user:42')
    expect(displayKey(Buffer.from('clé'))).to.equal('clé')
    expect(displayKey(Buffer.from([0xff, 0x6b, 0x0a, 0x6e, 0x6c]))).to.equal('"\\xffk\\nnl"')
    expect(displayKey(Buffer.from('a"b\\c\t'))).to.equal('"a\\"b\\\\c\\t"')
  })

  it('never shows two keys alike: a key that starts with a quote is quoted too', () => {
    const binary = Buffer.from([0xff, 0x6b, 0x0a, 0x6e, 0x6c])
    const spelled = Buffer.from(displayKey(binary))
    expect(displayKey(spelled)).to.not.equal(displayKey(binary))
    expect(displayKey(spelled)).to.equal('"\\"\\\\xffk\\\\nnl\\""')
    expect(displayKey(Buffer.from('a"b'))).to.equal('a"b')
  })
})

import {RdbFormatError} from './format-error.js'

/**
 * LZF decompression (redis/src/lzf_d.c), for the compressed strings of an RDB the reader
 * must read as text or bytes: keys, aux fields, function code. Values are never
 * decompressed: they stay as the RDB has them, which is what a DUMP payload carries.
 */
export function lzfDecompress(input: Buffer, outputLength: number): Buffer {
  const output = Buffer.allocUnsafe(outputLength)
  let ip = 0
  let op = 0
  while (ip < input.length) {
    const control = input[ip++]
    if (control < 32) {
      // A literal run of control + 1 bytes.
      const length = control + 1
      if (ip + length > input.length || op + length > outputLength) throw new RdbFormatError('an LZF literal runs past its bounds')
      input.copy(output, op, ip, ip + length)
      ip += length
      op += length
    } else {
      // A back-reference: length and distance into what was already written.
      let length = control >> 5
      if (length === 7) {
        if (ip >= input.length) throw new RdbFormatError('an LZF back-reference is cut short')
        length += input[ip++]
      }
      if (ip >= input.length) throw new RdbFormatError('an LZF back-reference is cut short')
      let ref = op - ((control & 0x1f) << 8) - 1 - input[ip++]
      length += 2
      if (ref < 0 || op + length > outputLength) throw new RdbFormatError('an LZF back-reference points outside the output')
      // Byte by byte: a reference may overlap what it writes (a repeated run).
      for (let i = 0; i < length; i++) output[op++] = output[ref++]
    }
  }
  if (op !== outputLength) throw new RdbFormatError(`an LZF string decompressed to ${op} bytes, not the ${outputLength} announced`)
  return output
}

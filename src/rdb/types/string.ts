import {type RdbInput, type Walk} from '../input.js'

/**
 * A string value: one RDB string (raw, an integer in 1-4 bytes, or LZF-compressed).
 * The same shape carries every single-blob encoding of the other types (a listpack, a
 * ziplist, an intset, a zipmap): to the RDB they are opaque strings.
 */
export function* walkBlob(input: RdbInput): Walk {
  while (!input.skipString()) yield
}

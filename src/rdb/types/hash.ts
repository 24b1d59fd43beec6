import {RdbType} from '../constants.js'
import {RdbFormatError} from '../format-error.js'
import {type RdbInput, type Walk, skipStrings} from '../input.js'
import {walkBlob} from './string.js'

/**
 * Hashes: a listpack (7.0; a ziplist or a zipmap before) of field/value pairs, or a hash
 * table saved as field and value strings. Redis 7.4 adds fields with their own expiry:
 * a listpack preceded by the earliest field expiry (8 bytes), or a table of
 * (ttl, field, value) triples (its METADATA form also preceded by that expiry).
 */
export function* walkHash(input: RdbInput, type: number): Walk {
  switch (type) {
    case RdbType.HASH_ZIPMAP:
    case RdbType.HASH_ZIPLIST:
    case RdbType.HASH_LISTPACK:
    case RdbType.HASH_LISTPACK_EX_PRE_GA: {
      yield* walkBlob(input)
      return
    }
    case RdbType.HASH_LISTPACK_EX: {
      while (!input.fixed(8)) yield
      yield* walkBlob(input)
      return
    }
    case RdbType.HASH: {
      let count: number
      while ((count = input.length()) < 0) yield
      yield* skipStrings(input, count * 2)
      return
    }
    case RdbType.HASH_METADATA:
    case RdbType.HASH_METADATA_PRE_GA: {
      if (type === RdbType.HASH_METADATA) while (!input.fixed(8)) yield
      let count: number
      while ((count = input.length()) < 0) yield
      for (let i = 0; i < count; i++) {
        while (input.length() < 0) yield
        yield* skipStrings(input, 2)
      }
      return
    }
    default: {
      throw new RdbFormatError(`type ${type} is not a hash`)
    }
  }
}

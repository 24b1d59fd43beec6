import {RdbType} from '../constants.js'
import {RdbFormatError} from '../format-error.js'
import {type RdbInput, type Walk} from '../input.js'
import {walkBlob} from './string.js'

/**
 * Sorted sets: a listpack (or the ziplist before 7.0) of member/score pairs, or a skiplist
 * saved as member strings each followed by its score: a binary IEEE double (ZSET_2,
 * since Redis 4.0, exact) or, in the first format, the score as text (one length byte,
 * 253/254/255 standing for nan/+inf/-inf).
 */
export function* walkZset(input: RdbInput, type: number): Walk {
  switch (type) {
    case RdbType.ZSET_ZIPLIST:
    case RdbType.ZSET_LISTPACK: {
      yield* walkBlob(input)
      return
    }
    case RdbType.ZSET_2: {
      let count: number
      while ((count = input.length()) < 0) yield
      for (let i = 0; i < count; i++) {
        while (!input.skipString()) yield
        while (!input.fixed(8)) yield
      }
      return
    }
    case RdbType.ZSET: {
      let count: number
      while ((count = input.length()) < 0) yield
      for (let i = 0; i < count; i++) {
        while (!input.skipString()) yield
        let size: number
        while ((size = input.byte()) < 0) yield
        if (size < 253) while (!input.fixed(size)) yield
      }
      return
    }
    default: {
      throw new RdbFormatError(`type ${type} is not a sorted set`)
    }
  }
}

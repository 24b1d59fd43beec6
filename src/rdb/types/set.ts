import {RdbType} from '../constants.js'
import {RdbFormatError} from '../format-error.js'
import {type RdbInput, type Walk, skipStrings} from '../input.js'
import {walkBlob} from './string.js'

/** Sets: an intset (integers only), a listpack (Redis 7.2), or a hash table of member strings. */
export function* walkSet(input: RdbInput, type: number): Walk {
  switch (type) {
    case RdbType.SET_INTSET:
    case RdbType.SET_LISTPACK: {
      yield* walkBlob(input)
      return
    }
    case RdbType.SET: {
      let count: number
      while ((count = input.length()) < 0) yield
      yield* skipStrings(input, count)
      return
    }
    default: {
      throw new RdbFormatError(`type ${type} is not a set`)
    }
  }
}

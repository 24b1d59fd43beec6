import {RdbType} from '../constants.js'
import {RdbFormatError} from '../format-error.js'
import {type RdbInput, type Walk, skipStrings} from '../input.js'
import {walkBlob} from './string.js'

/**
 * Lists: a quicklist of listpack nodes (Redis 7.0, QUICKLIST_2), each node either PACKED
 * (a listpack of small elements) or PLAIN (one large element, stored as itself); the
 * quicklist of ziplists of Redis 3.2-6.2; a ziplist or a linked list of strings before.
 */
export function* walkList(input: RdbInput, type: number): Walk {
  switch (type) {
    case RdbType.LIST_ZIPLIST: {
      yield* walkBlob(input)
      return
    }
    case RdbType.LIST:
    case RdbType.LIST_QUICKLIST: {
      let count: number
      while ((count = input.length()) < 0) yield
      yield* skipStrings(input, count)
      return
    }
    case RdbType.LIST_QUICKLIST_2: {
      let nodes: number
      while ((nodes = input.length()) < 0) yield
      for (let i = 0; i < nodes; i++) {
        let container: number
        while ((container = input.length()) < 0) yield
        // QUICKLIST_NODE_CONTAINER_PLAIN = 1, _PACKED = 2
        if (container !== 1 && container !== 2) throw new RdbFormatError(`a quicklist node of unknown container ${container}`)
        while (!input.skipString()) yield
      }
      return
    }
    default: {
      throw new RdbFormatError(`type ${type} is not a list`)
    }
  }
}

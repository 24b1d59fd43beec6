import {RdbType} from '../constants.js'
import {RdbFormatError} from '../format-error.js'
import {type RdbInput, type Walk} from '../input.js'

/**
 * Streams (rdbSaveObject, OBJ_STREAM): the radix tree's nodes as (master id, listpack)
 * string pairs; the length and last id; since STREAM_LISTPACKS_2 (7.0) the first id, the
 * largest deleted id and the count of entries ever added; then every consumer group with
 * its last delivered id (and, since _2, its entries-read counter), its pending entries
 * list (16-byte raw id, 8-byte delivery time, delivery count) and its consumers (name,
 * seen time, since _3 active time, and the raw ids each one holds).
 */
export function* walkStream(input: RdbInput, type: number): Walk {
  if (type !== RdbType.STREAM_LISTPACKS && type !== RdbType.STREAM_LISTPACKS_2 && type !== RdbType.STREAM_LISTPACKS_3) {
    throw new RdbFormatError(`type ${type} is not a stream`)
  }
  const v2 = type >= RdbType.STREAM_LISTPACKS_2
  const v3 = type >= RdbType.STREAM_LISTPACKS_3
  let nodes: number
  while ((nodes = input.length()) < 0) yield
  for (let i = 0; i < nodes; i++) {
    while (!input.skipString()) yield // the node's master id
    while (!input.skipString()) yield // its listpack
  }
  // length, last id (ms, seq); _2: first id, max deleted id, entries added
  for (let i = 0, n = v2 ? 8 : 3; i < n; i++) while (input.length() < 0) yield
  let groups: number
  while ((groups = input.length()) < 0) yield
  for (let g = 0; g < groups; g++) {
    while (!input.skipString()) yield // the group's name
    for (let i = 0, n = v2 ? 3 : 2; i < n; i++) while (input.length() < 0) yield
    let pending: number
    while ((pending = input.length()) < 0) yield
    for (let p = 0; p < pending; p++) {
      while (!input.fixed(16 + 8)) yield // raw id, delivery time
      while (input.length() < 0) yield // delivery count
    }
    let consumers: number
    while ((consumers = input.length()) < 0) yield
    for (let c = 0; c < consumers; c++) {
      while (!input.skipString()) yield // the consumer's name
      while (!input.fixed(v3 ? 16 : 8)) yield // seen time (and active time)
      let held: number
      while ((held = input.length()) < 0) yield
      for (let h = 0; h < held; h++) while (!input.fixed(16)) yield
    }
  }
}

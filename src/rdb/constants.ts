/**
 * The numbers of the RDB format (redis/src/rdb.h): value types and opcodes. A value type
 * byte is what DUMP puts first in its payload, so the same numbers name a key's encoding
 * in a snapshot and in a DUMP.
 */

export const RdbType = {
  STRING: 0,
  LIST: 1,
  SET: 2,
  ZSET: 3,
  HASH: 4,
  ZSET_2: 5,
  MODULE_PRE_GA: 6,
  MODULE_2: 7,
  HASH_ZIPMAP: 9,
  LIST_ZIPLIST: 10,
  SET_INTSET: 11,
  ZSET_ZIPLIST: 12,
  HASH_ZIPLIST: 13,
  LIST_QUICKLIST: 14,
  STREAM_LISTPACKS: 15,
  HASH_LISTPACK: 16,
  ZSET_LISTPACK: 17,
  LIST_QUICKLIST_2: 18,
  STREAM_LISTPACKS_2: 19,
  SET_LISTPACK: 20,
  STREAM_LISTPACKS_3: 21,
  HASH_METADATA_PRE_GA: 22,
  HASH_LISTPACK_EX_PRE_GA: 23,
  HASH_METADATA: 24,
  HASH_LISTPACK_EX: 25,
} as const

export const RdbOpcode = {
  SLOT_INFO: 244,
  FUNCTION2: 245,
  FUNCTION_PRE_GA: 246,
  MODULE_AUX: 247,
  IDLE: 248,
  FREQ: 249,
  AUX: 250,
  RESIZEDB: 251,
  EXPIRETIME_MS: 252,
  EXPIRETIME: 253,
  SELECTDB: 254,
  EOF: 255,
} as const

/** The newest RDB version whose structures this reader knows (Redis 7.4 writes 12; 7.0 writes 10). */
export const NEWEST_RDB_VERSION = 12

/** The RDB version each Redis release writes: what a target can read (RESTORE refuses a newer payload). */
export const RDB_VERSION_OF_REDIS: [string, number][] = [
  ['7.4', 12],
  ['7.2', 11],
  ['7.0', 10],
  ['5.0', 9],
  ['4.0', 8],
  ['3.2', 7],
  ['2.8', 6],
]

/** The data type a type byte holds, as TYPE names it. */
export function typeName(type: number): 'string' | 'list' | 'set' | 'zset' | 'hash' | 'stream' | 'module' | 'unknown' {
  switch (type) {
    case RdbType.STRING: {
      return 'string'
    }
    case RdbType.LIST:
    case RdbType.LIST_ZIPLIST:
    case RdbType.LIST_QUICKLIST:
    case RdbType.LIST_QUICKLIST_2: {
      return 'list'
    }
    case RdbType.SET:
    case RdbType.SET_INTSET:
    case RdbType.SET_LISTPACK: {
      return 'set'
    }
    case RdbType.ZSET:
    case RdbType.ZSET_2:
    case RdbType.ZSET_ZIPLIST:
    case RdbType.ZSET_LISTPACK: {
      return 'zset'
    }
    case RdbType.HASH:
    case RdbType.HASH_ZIPMAP:
    case RdbType.HASH_ZIPLIST:
    case RdbType.HASH_LISTPACK:
    case RdbType.HASH_METADATA_PRE_GA:
    case RdbType.HASH_LISTPACK_EX_PRE_GA:
    case RdbType.HASH_METADATA:
    case RdbType.HASH_LISTPACK_EX: {
      return 'hash'
    }
    case RdbType.STREAM_LISTPACKS:
    case RdbType.STREAM_LISTPACKS_2:
    case RdbType.STREAM_LISTPACKS_3: {
      return 'stream'
    }
    case RdbType.MODULE_PRE_GA:
    case RdbType.MODULE_2: {
      return 'module'
    }
    default: {
      return 'unknown'
    }
  }
}

const ONE_STRING_TYPES = [
  RdbType.STRING,
  RdbType.HASH_ZIPMAP,
  RdbType.LIST_ZIPLIST,
  RdbType.SET_INTSET,
  RdbType.ZSET_ZIPLIST,
  RdbType.HASH_ZIPLIST,
  RdbType.HASH_LISTPACK,
  RdbType.ZSET_LISTPACK,
  RdbType.SET_LISTPACK,
  RdbType.HASH_LISTPACK_EX_PRE_GA,
]
const ONE_STRING = new Uint8Array(256)
for (const type of ONE_STRING_TYPES) ONE_STRING[type] = 1

/** A value stored as one RDB string: a string, or a listpack, ziplist, intset or zipmap blob. */
export function isOneString(type: number): boolean {
  return ONE_STRING[type] === 1
}

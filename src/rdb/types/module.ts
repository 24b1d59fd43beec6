import {RdbFormatError} from '../format-error.js'
import {type RdbInput, type Walk} from '../input.js'

/**
 * Module values (MODULE_2) and module aux data: a 64-bit module id (the type's name in
 * nine 6-bit characters, and a 10-bit encoding version), then the module's own data,
 * which Redis annotates field by field (an opcode, then a signed or unsigned integer, a
 * float, a double or a string) up to an EOF opcode. The annotations let a reader walk a
 * value it cannot decode; only the module itself can make sense of it.
 */

const ModuleOpcode = {EOF: 0, SINT: 1, UINT: 2, FLOAT: 3, DOUBLE: 4, STRING: 5} as const

const NAME_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'

/** A module type's name and encoding version, from its id (moduleTypeNameByID). */
export function moduleTypeOf(id: bigint): {name: string; encodingVersion: number} {
  let rest = id >> 10n
  let name = ''
  for (let i = 0; i < 9; i++) {
    name = NAME_CHARS[Number(rest & 63n)] + name
    rest >>= 6n
  }
  return {name, encodingVersion: Number(id & 1023n)}
}

/** The module's annotated fields, up to and including their EOF opcode. */
export function* walkModuleFields(input: RdbInput): Walk {
  for (;;) {
    let opcode: number
    while ((opcode = input.length()) < 0) yield
    switch (opcode) {
      case ModuleOpcode.EOF: {
        return
      }
      case ModuleOpcode.SINT:
      case ModuleOpcode.UINT: {
        while (input.length() < 0) yield
        break
      }
      case ModuleOpcode.FLOAT: {
        while (!input.fixed(4)) yield
        break
      }
      case ModuleOpcode.DOUBLE: {
        while (!input.fixed(8)) yield
        break
      }
      case ModuleOpcode.STRING: {
        while (!input.skipString()) yield
        break
      }
      default: {
        throw new RdbFormatError(`a module value with unknown field opcode ${opcode}`)
      }
    }
  }
}

/** A MODULE_2 value: its id (reported through `found`), then its fields. */
export function* walkModule(input: RdbInput, found: (module: {id: bigint; name: string; encodingVersion: number}) => void): Walk {
  let id: bigint | undefined
  while ((id = input.lengthBig()) === undefined) yield
  found({id, ...moduleTypeOf(id)})
  yield* walkModuleFields(input)
}

import {isUtf8} from 'node:buffer'

/**
 * Redis keys, hash fields and values are bytes; JSON strings are Unicode. A registry
 * document (version 2 on) writes every map key and value and every extra field of a
 * shard as a *byte string*:
 *
 *   * bytes that are valid UTF-8 and do not begin with "b64:" are written as that text;
 *   * any other bytes are written as "b64:" followed by their standard base64.
 *
 * Every byte string has exactly one form, and no two byte strings share one: a text
 * that itself begins with "b64:" is written in base64 too. Version 1 documents hold
 * text only, taken as its UTF-8 bytes, "b64:" or not.
 *
 * In memory a byte string is kept in that canonical written form (comparing forms is
 * comparing bytes), and `wire` turns it into what a Redis command takes.
 */
export const BYTES_PREFIX = 'b64:'

/** The canonical written form of some bytes. */
export function encodeBytes(bytes: Buffer): string {
  if (isUtf8(bytes)) {
    const text = bytes.toString('utf8')
    if (!text.startsWith(BYTES_PREFIX)) return text
  }
  return `${BYTES_PREFIX}${bytes.toString('base64')}`
}

/** A lone half of a surrogate pair: text that has no UTF-8 form (SURROGATE first: a quick test that rules most text out). */
const SURROGATE = /[\uD800-\uDFFF]/
const LONE_SURROGATE = /\p{Cs}/u

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/

/** The bytes a written form stands for: a string where it is plain text (what Redis commands take as is), else a Buffer. */
export function wire(form: string): string | Buffer {
  if (!form.startsWith(BYTES_PREFIX)) return form
  return Buffer.from(form.slice(BYTES_PREFIX.length), 'base64')
}

/**
 * A string read from a document, as the canonical form of the bytes it stands for; undefined
 * when it stands for none (a "b64:" that is not base64, text that is not well-formed Unicode).
 */
export function canonicalForm(text: string, version: number): string | undefined {
  if (SURROGATE.test(text) && LONE_SURROGATE.test(text)) return undefined
  if (!text.startsWith(BYTES_PREFIX)) return text
  if (version < 2) return encodeBytes(Buffer.from(text, 'utf8'))
  const base64 = text.slice(BYTES_PREFIX.length)
  if (!BASE64.test(base64)) return undefined
  return encodeBytes(Buffer.from(base64, 'base64'))
}

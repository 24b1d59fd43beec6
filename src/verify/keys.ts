/**
 * Redis keys are bytes. The verify keeps them as Buffers (a key that is not UTF-8 must
 * still be found again on both sides) and shows them as text only in reports.
 */

/** A Map key for a key's bytes: latin1 maps every byte to one character, both ways. */
export function keyId(key: Buffer): string {
  return key.toString('latin1')
}

/**
 * A key as a person reads it: its UTF-8 text when it is valid UTF-8 without control
 * characters, otherwise the way redis-cli quotes it ("\xff", "\n" escaped). A key that
 * starts with a double quote is quoted too: a text that starts with one is always the
 * quoted form, so two keys never read the same.
 */
export function displayKey(key: Buffer): string {
  const text = key.toString('utf8')
  const plain =
    Buffer.byteLength(text) === key.length &&
    !text.includes('\uFFFD') &&
    // eslint-disable-next-line no-control-regex -- control characters are exactly what must be escaped
    !/[\u0000-\u001F\u007F]/.test(text) &&
    !text.startsWith('"')
  if (plain) return text
  let out = ''
  for (const byte of key) {
    if (byte === 0x5c) out += '\\\\'
    else if (byte === 0x22) out += '\\"'
    else if (byte >= 0x20 && byte < 0x7f) out += String.fromCharCode(byte)
    else if (byte === 0x0a) out += '\\n'
    else if (byte === 0x0d) out += '\\r'
    else if (byte === 0x09) out += '\\t'
    else out += `\\x${byte.toString(16).padStart(2, '0')}`
  }
  return `"${out}"`
}

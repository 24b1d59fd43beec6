import {redact} from '../registry/address.js'

/**
 * The last line of defence for SPEC §4.8: every password this run was given (in a
 * URL on the command line, or from the environment) is remembered, and every message
 * meant for a person is scrubbed of it before it is written — whatever characters it
 * holds and wherever a library may have echoed it.
 */
const known = new Set<string>()

/** Remember a secret: as given, and as it would appear percent-encoded. Very short ones would scrub ordinary text. */
export function rememberSecret(value: string | undefined): void {
  if (value === undefined || value.length < 3) return
  known.add(value)
  known.add(encodeURIComponent(value))
}

/** Remember the credentials of every URL in these arguments, before anything parses them. */
export function rememberUrlSecrets(argv: string[]): void {
  for (const arg of argv) {
    const match = /rediss?(?:\+sentinel)?:\/\/(.*)@/i.exec(arg)
    if (!match) continue
    const auth = match[1]
    const password = auth.includes(':') ? auth.slice(auth.indexOf(':') + 1) : auth
    rememberSecret(password)
    try {
      rememberSecret(decodeURIComponent(password))
    } catch {
      // an invalid escape: the raw form is remembered already
    }
  }
}

export function scrub(text: string): string {
  let out = redact(text)
  // Longest first: a secret holding another one is replaced whole.
  for (const secret of [...known].sort((a, b) => b.length - a.length)) out = out.split(secret).join('***')
  return out
}

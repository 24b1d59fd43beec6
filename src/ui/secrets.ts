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

/**
 * The environment variables that hold secrets: the Redis passwords, and the AWS
 * credentials the S3 client of backups reads (the SDK's standard chain).
 */
export const SECRET_VARIABLES = [
  'SHARDCTL_REGISTRY_PASSWORD',
  'SHARDCTL_INSTANCE_PASSWORD',
  'SHARDCTL_SENTINEL_PASSWORD',
  'AWS_SECRET_ACCESS_KEY',
  'AWS_SESSION_TOKEN',
]

export function rememberEnvironmentSecrets(env: NodeJS.ProcessEnv = process.env): void {
  for (const name of SECRET_VARIABLES) rememberSecret(env[name])
}

/** Remember the credentials of every URL in these arguments (redis://, and an S3 endpoint's https://), before anything parses them. */
export function rememberUrlSecrets(argv: string[]): void {
  for (const arg of argv) {
    const match = /rediss?(?:\+sentinel)?:\/\/(.*)@/i.exec(arg) ?? /https?:\/\/([^/@]*)@/i.exec(arg)
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

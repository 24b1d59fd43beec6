import type {Hook} from '@oclif/core'

import {ExitCode} from '../errors.js'
import {closest} from '../ui/suggest.js'

/**
 * An unknown command: one line naming it and the closest command, exit 2 (a usage
 * error). Never a prompt, and never another command run in its place: a mistyped
 * destructive command must not become a different destructive command.
 */
const hook: Hook.CommandNotFound = async function (options) {
  const ids = options.config.commands.filter((c) => !c.hidden).map((c) => c.id)
  const typed = options.id
  const suggestion = closest(typed, ids) ?? ids.find((id) => id.endsWith(`:${typed}`))
  const message = `${typed.replaceAll(':', ' ')} is not a ${options.config.bin} command${suggestion ? `; did you mean ${suggestion}?` : ''}`
  const hint = `see ${options.config.bin} --help for the commands`
  if (options.argv?.includes('--json')) {
    process.stdout.write(`${JSON.stringify({error: {code: 'EUSAGE', message, hint, exitCode: ExitCode.usage}}, null, 2)}\n`)
  } else {
    process.stderr.write(`Error: ${message} — ${hint}\n`)
  }
  process.exit(ExitCode.usage)
}

export default hook

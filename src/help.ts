import {type Command, Help} from '@oclif/core'

import {EXIT_CODES_HELP} from './base-command.js'

/**
 * oclif's help, with the exit codes of SPEC §5 under every command. A command's own
 * `usage` is only the README's heading for it (`oclif readme` shows no `...` for a command
 * taking several arguments): help builds the usage from the arguments and flags.
 */
export default class ShardctlHelp extends Help {
  override formatCommand(command: Command.Loadable): string {
    return `${super.formatCommand({...command, usage: undefined})}\n\n${EXIT_CODES_HELP}`
  }
}

import {type Command, Help} from '@oclif/core'

import {EXIT_CODES_HELP} from './base-command.js'

/** oclif's help, with the exit codes of SPEC §5 under every command. */
export default class ShardctlHelp extends Help {
  override formatCommand(command: Command.Loadable): string {
    return `${super.formatCommand(command)}\n\n${EXIT_CODES_HELP}`
  }
}

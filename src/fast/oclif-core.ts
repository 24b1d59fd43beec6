// What the bundled commands (commands.ts) take from oclif, in place of '@oclif/core': the
// same classes, from the package's own entry points, without the index that loads the
// whole framework (help, plugins, execute). scripts/build.js aliases '@oclif/core' here.
export * as Args from '@oclif/core/args'
export {Command} from '@oclif/core/command'
export * as Errors from '@oclif/core/errors'
export * as Flags from '@oclif/core/flags'
export type {Interfaces} from '@oclif/core'

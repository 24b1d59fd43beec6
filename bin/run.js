#!/usr/bin/env node
import {runBundled} from './fast.js'
import {joinTopicWords} from './topic-words.js'

// DEBUG is shardctl's own (stack traces of unexpected errors). Libraries read it too,
// through the `debug` package, and ioredis's output echoes every command as it is
// sent, AUTH and its password included: they never see it. Moved aside before any of
// them loads (both paths below import them lazily); src/errors.ts reads it back.
if (process.env.DEBUG !== undefined) {
  process.env.SHARDCTL_DEBUG = process.env.DEBUG
  delete process.env.DEBUG
}
joinTopicWords(process.argv)
if (!(await runBundled(process.argv))) {
  const {execute} = await import('@oclif/core')
  await execute({dir: import.meta.url})
}

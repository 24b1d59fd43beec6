#!/usr/bin/env node
import {runBundled} from './fast.js'
import {joinTopicWords} from './topic-words.js'

joinTopicWords(process.argv)
if (!(await runBundled(process.argv))) {
  const {execute} = await import('@oclif/core')
  await execute({dir: import.meta.url})
}

#!/usr/bin/env node
import {execute} from '@oclif/core'

import {joinTopicWords} from './topic-words.js'

joinTopicWords(process.argv)
await execute({dir: import.meta.url})

#!/usr/bin/env -S node --import tsx
import {execute} from '@oclif/core'

import {joinTopicWords} from './topic-words.js'

joinTopicWords(process.argv)
await execute({development: true, dir: import.meta.url})

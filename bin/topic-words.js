// `shardctl shards list` means `shardctl shards:list`: commands are named with ":",
// and oclif would otherwise show the topic's help for the first word and exit 0.
// An unknown second word becomes an unknown command (exit 2, with a suggestion).
import {readFileSync} from 'node:fs'

export function joinTopicWords(argv) {
  const [topic, word] = argv.slice(2)
  if (!topic || !word || topic.startsWith('-') || word.startsWith('-') || topic.includes(':')) return
  let ids
  try {
    ids = Object.keys(JSON.parse(readFileSync(new URL('../oclif.manifest.json', import.meta.url), 'utf8')).commands)
  } catch {
    return
  }
  if (ids.includes(topic) || !ids.some((id) => id.startsWith(`${topic}:`))) return
  argv.splice(2, 2, `${topic}:${word}`)
}

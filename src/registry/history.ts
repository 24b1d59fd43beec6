import type {Registry, RegistryEvent} from './registry.js'

/**
 * The audit log: every change shardctl made, newest first, as recorded by the
 * same atomic step that made the change (so a change is never missing from it).
 */
export async function readHistory(registry: Registry, limit: number): Promise<RegistryEvent[]> {
  const raw = await registry.guard(registry.keys.history, 'a list', () => registry.client.lrange(registry.keys.history, 0, limit - 1))
  return raw.map((line) => {
    try {
      return JSON.parse(line) as RegistryEvent
    } catch {
      return {v: 1, type: 'unreadable', at: '', by: '', command: '', raw: line.slice(0, 200)}
    }
  })
}

const COMMON = new Set(['v', 'type', 'at', 'by', 'command', 'db', 'prefix', 'run'])

/** The details of an event in one short line: what changed. */
export function describeEvent(event: RegistryEvent, width = 100): string {
  const parts = Object.entries(event)
    .filter(([k]) => !COMMON.has(k))
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
  const text = parts.join(' ')
  return text.length > width ? `${text.slice(0, width - 1)}…` : text
}

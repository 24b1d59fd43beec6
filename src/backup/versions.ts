/**
 * Which RDB versions a Redis version can read: a snapshot (or a DUMP payload) of a newer
 * RDB version than the server's own is refused by it. From Redis's release notes.
 * A version newer than the table reads at least what the newest listed one reads.
 */
const READS: [version: string, rdb: number][] = [
  ['2.6.0', 6],
  ['3.2.0', 7],
  ['4.0.0', 8],
  ['5.0.0', 9],
  ['7.0.0', 10],
  ['7.2.0', 11],
  ['7.4.0', 12],
]

function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map((n) => Number.parseInt(n, 10) || 0)
  const pb = b.split('.').map((n) => Number.parseInt(n, 10) || 0)
  for (let i = 0; i < 3; i++) if ((pa[i] ?? 0) !== (pb[i] ?? 0)) return (pa[i] ?? 0) - (pb[i] ?? 0)
  return 0
}

/** The highest RDB version a Redis server of this version reads (0 when it is older than the table). */
export function highestRdbReadBy(redisVersion: string): number {
  let rdb = 0
  for (const [version, reads] of READS) if (compareVersions(redisVersion, version) >= 0) rdb = reads
  return rdb
}

/** `redis-server --version` → its version: "Redis server v=7.0.15 sha=..." */
export function parseServerVersion(output: string): string | undefined {
  return /\bv=(\d+\.\d+\.\d+)/.exec(output)?.[1]
}

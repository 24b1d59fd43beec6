/**
 * Fault injection for tests: SHARDCTL_FAILPOINT=<step>:<when>:<action>, e.g.
 * demote:after:kill, fence:before:sleep-1500, copy:after:busy-3000 (the main thread
 * busy without yielding), or registry:after:stop (the process stops itself with
 * SIGSTOP, as a frozen operator would, until it is sent SIGCONT).
 * Several may be given, separated by commas. Each fires once per run: a run that heals
 * takes some steps again, and the fault was placed at the first.
 */
const fired = new Set<string>()

export async function failpoint(step: string, when: 'before' | 'after'): Promise<void> {
  const spec = process.env.SHARDCTL_FAILPOINT
  if (!spec) return
  for (const point of spec.split(',')) {
    const [name, at, action] = point.split(':')
    if (name !== step || at !== when || fired.has(point)) continue
    fired.add(point)
    if (action === 'kill') process.kill(process.pid, 'SIGKILL')
    if (action === 'stop') process.kill(process.pid, 'SIGSTOP')
    const sleep = /^sleep-(\d+)$/.exec(action ?? '')
    if (sleep) await new Promise((resolve) => setTimeout(resolve, Number(sleep[1])))
    // busy-N: the main thread computes for N ms without yielding (timers starve meanwhile).
    const busy = /^busy-(\d+)$/.exec(action ?? '')
    if (busy) for (const end = Date.now() + Number(busy[1]); Date.now() < end;);
  }
}

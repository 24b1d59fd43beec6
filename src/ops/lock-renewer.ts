/**
 * The operator lock's renewal, in a worker thread of its own: a long operation whose
 * main thread is busy (parsing a large document, hashing a million lines) keeps its
 * lease, because this event loop is not the one that is busy. A process that is
 * stopped or killed stops renewing altogether, as it must: its lease then runs out.
 */
import {parentPort, workerData} from 'node:worker_threads'

import {type ConnectOptions, close, connect, reopen} from '../fleet/connect.js'
import type {ConnectTarget} from '../registry/address.js'

export interface RenewerData {
  target: ConnectTarget
  options: ConnectOptions
  key: string
  value: string
  leaseMs: number
  everyMs: number
}

const data = workerData as RenewerData
const client = await connect(data.target, data.options)
let stopping = false
let renewing = false

/**
 * One renewal. A registry that was silent past the timeout leaves the connection dead
 * (it never reconnects by itself): it is opened again here, so that a run healing its
 * operation after the registry came back keeps its lease. Renewing only ever extends a
 * lease that still holds this run's value, so a new connection cannot revive a lost one.
 */
async function renew(): Promise<void> {
  try {
    await reopen(client)
    const held = await client.lockRenew(data.key, data.value, String(data.leaseMs))
    if (held === 0 && !stopping) parentPort?.postMessage('lost')
  } catch {
    // A missed renewal is retried at the next tick; the lease outlives two of them.
  }
}

const timer = setInterval(() => {
  if (renewing) return
  renewing = true
  void renew().finally(() => {
    renewing = false
  })
}, data.everyMs)
parentPort?.on('message', (message) => {
  if (message !== 'stop') return
  stopping = true
  clearInterval(timer)
  void close(client).finally(() => parentPort?.close())
})
parentPort?.postMessage('ready')

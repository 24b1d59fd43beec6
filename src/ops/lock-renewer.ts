/**
 * The operator lock's renewal, in a worker thread of its own: a long operation whose
 * main thread is busy (parsing a large document, hashing a million lines) keeps its
 * lease, because this event loop is not the one that is busy. A process that is
 * stopped or killed stops renewing altogether, as it must: its lease then runs out.
 */
import {parentPort, workerData} from 'node:worker_threads'

import {type ConnectOptions, close, connect} from '../fleet/connect.js'
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
const timer = setInterval(() => {
  client.lockRenew(data.key, data.value, String(data.leaseMs)).then(
    (held) => {
      if (held === 0 && !stopping) parentPort?.postMessage('lost')
    },
    () => undefined, // a missed renewal is retried at the next tick; the lease outlives two of them
  )
}, data.everyMs)
parentPort?.on('message', (message) => {
  if (message !== 'stop') return
  stopping = true
  clearInterval(timer)
  void close(client).finally(() => parentPort?.close())
})
parentPort?.postMessage('ready')

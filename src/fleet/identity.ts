import {type ShardAddress, canonicalDatabase, canonicalInstance, endpointOf} from '../registry/address.js'
import type {ConnectionPool} from './connect.js'
import {type InstanceState, probeInstances} from './probe.js'

/**
 * Which server answers where: two addresses name one instance when they are the same
 * spelled canonically (LOCALHOST and 127.0.0.1, [0:0:0:0:0:0:0:1] and [::1]), or when
 * the servers answering there have the same run_id (two names of one host). An
 * instance that does not answer is known by its canonical address alone.
 */
export interface Identity {
  instance: (address: {host: string; port: number}) => string
  database: (address: ShardAddress) => string
}

/** The identity of what was probed (every probe reads INFO server). */
export function identityOf(states: Map<string, InstanceState>): Identity {
  const runIds = new Map<string, string>()
  for (const state of states.values()) {
    const run = state.info?.run_id
    if (run) runIds.set(canonicalInstance(endpointOf(state.instance)), run)
  }
  const instance = (address: {host: string; port: number}) => {
    const run = runIds.get(canonicalInstance(address))
    return run === undefined ? canonicalInstance(address) : `run_id ${run}`
  }
  return {
    instance,
    database: (address) => (runIds.has(canonicalInstance(address)) ? `${instance(address)}/${address.db}` : canonicalDatabase(address)),
  }
}

/** Probe these instances (in parallel, one connection each) for their identity. */
export async function identify(pool: ConnectionPool, instances: {host: string; port: number}[]): Promise<Identity> {
  return identityOf(await probeInstances(instances, pool))
}

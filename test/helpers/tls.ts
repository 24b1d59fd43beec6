import {mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {freePort} from '../../src/sandbox/redis-process.js'
import {type TestServer, startServer} from './redis.js'

async function openssl(args: string[], cwd: string): Promise<void> {
  const {execa} = await import('execa')
  await execa('openssl', args, {cwd})
}

/** A CA, a server certificate for 127.0.0.1 and a client certificate, made for this run. */
async function makeCertificates(dir: string): Promise<void> {
  await openssl(
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=shardctl-test-ca'],
    dir,
  )
  writeFileSync(join(dir, 'ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n')
  for (const name of ['server', 'client']) {
    await openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`], dir)
    await openssl(
      [
        'x509',
        '-req',
        '-in',
        `${name}.csr`,
        '-CA',
        'ca.crt',
        '-CAkey',
        'ca.key',
        '-CAcreateserial',
        '-out',
        `${name}.crt`,
        '-days',
        '2',
        '-extfile',
        'ext',
      ],
      dir,
    )
  }
}

export interface TlsTestServer {
  /** The server: its plain port for the test's own setup. */
  server: TestServer
  /** The port that speaks TLS only. */
  tlsPort: number
  /** A file of the run's certificates: ca.crt, server.crt/key, client.crt/key. */
  file: (name: string) => string
  stop: () => Promise<void>
}

/** A redis-server with a plain port and a TLS port (client certificates optional), certificates made for this run. */
export async function startTlsServer(args: string[] = []): Promise<TlsTestServer> {
  const dir = mkdtempSync(join(tmpdir(), 'shardctl-tls-'))
  const file = (name: string) => join(dir, name)
  await makeCertificates(dir)
  const tlsPort = await freePort()
  const server = await startServer([
    '--tls-port',
    String(tlsPort),
    '--tls-cert-file',
    file('server.crt'),
    '--tls-key-file',
    file('server.key'),
    '--tls-ca-cert-file',
    file('ca.crt'),
    '--tls-auth-clients',
    'optional',
    ...args,
  ])
  return {
    server,
    tlsPort,
    file,
    async stop() {
      await server.stop()
      rmSync(dir, {recursive: true, force: true})
    },
  }
}

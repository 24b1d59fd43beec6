import {mkdtempSync, readdirSync, rmSync} from 'node:fs'
import type {IncomingMessage, Server} from 'node:http'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {freePort} from '../../src/sandbox/redis-process.js'

/**
 * A real S3-compatible server for tests: s3rver, in this process, on a free loopback
 * port, storing in its own temporary directory, with a bucket `backups`. Commands reach
 * it with --s3-endpoint and the credentials below, through the AWS SDK's standard chain
 * (the environment), exactly as they reach S3.
 */
export const S3_BUCKET = 'backups'
export const S3_CREDENTIALS = {AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1'}

export interface TestS3 {
  endpoint: string
  dir: string
  /** s3://backups/<prefix> */
  url: (prefix?: string) => string
  /** Flags for a command: --s3-endpoint. */
  flags: () => string[]
  /** Multipart uploads begun and not completed (s3rver keeps their parts on disk; it does not implement AbortMultipartUpload, so aborted ones count too). */
  uploadsInProgress: () => number
  /** Called on every request as it arrives (method, URL, headers as sent): a test's hook to act at a precise moment, or to see what the SDK sent. */
  onRequest?: (method: string, url: string, headers: Record<string, string | string[] | undefined>) => void
  /** Called as each response is about to be sent: a test may replace `body` (a stream), or cut the connection (`req.socket`). */
  onResponse?: (response: {method: string; url: string; body: unknown; req: IncomingMessage}) => void
  /** Stop answering at once: the listening socket and every open connection are closed. */
  kill: () => Promise<void>
  /** Serve the same data again (on a new port: endpoint changes). */
  restart: () => Promise<void>
  stop: () => Promise<void>
}

const running = new Set<TestS3>()

export async function startS3(): Promise<TestS3> {
  const dir = mkdtempSync(join(tmpdir(), 'shardctl-s3-'))
  let http: Server | undefined
  const s3: TestS3 = {
    endpoint: '',
    dir,
    url: (prefix = '') => `s3://${S3_BUCKET}/${prefix}`,
    flags: () => ['--s3-endpoint', s3.endpoint],
    uploadsInProgress() {
      const root = join(dir, S3_BUCKET)
      const uploads = readdirSync(root).find((name) => name.endsWith('._S3rver_uploads'))
      return uploads === undefined ? 0 : readdirSync(join(root, uploads)).length
    },
    async kill() {
      if (!http) return
      const closing = new Promise<void>((resolve) => http!.close(() => resolve()))
      http.closeAllConnections()
      await closing
      http = undefined
    },
    async restart() {
      await s3.kill()
      const port = await freePort()
      // Loaded here: the root hooks import this file, and most test runs need no S3 server.
      const {default: S3rver} = await import('s3rver')
      const server = new S3rver({port, address: '127.0.0.1', silent: true, directory: dir, configureBuckets: [{name: S3_BUCKET}]})
      server.middleware.unshift(async (ctx, next) => {
        s3.onRequest?.(ctx.method, ctx.url, ctx.headers)
        await next()
        s3.onResponse?.(ctx as unknown as Parameters<NonNullable<TestS3['onResponse']>>[0])
      })
      await server.run()
      http = server.httpServer
      s3.endpoint = `http://127.0.0.1:${port}`
    },
    async stop() {
      running.delete(s3)
      await s3.kill()
      rmSync(dir, {recursive: true, force: true})
    },
  }
  await s3.restart()
  running.add(s3)
  return s3
}

/** The environment a command needs to reach the test server (the SDK's standard chain). */
export function useS3Credentials(): void {
  Object.assign(process.env, S3_CREDENTIALS)
}

export async function stopAllS3(): Promise<void> {
  await Promise.all([...running].map((s) => s.stop()))
}

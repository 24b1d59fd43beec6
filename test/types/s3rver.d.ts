// s3rver ships no types: the part the test helpers use.
declare module 's3rver' {
  import type {Server} from 'node:http'

  interface S3rverOptions {
    port?: number
    address?: string
    silent?: boolean
    directory?: string
    configureBuckets?: {name: string}[]
  }

  export default class S3rver {
    constructor(options: S3rverOptions)
    run(): Promise<unknown>
    httpServer: Server
    /** Koa's middleware stack (s3rver is a Koa application). */
    middleware: ((
      ctx: {method: string; url: string; headers: Record<string, string | string[] | undefined>},
      next: () => Promise<void>,
    ) => Promise<void>)[]
    close(): Promise<void>
  }
}

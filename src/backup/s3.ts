import type {Readable} from 'node:stream'

import {
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  type ListObjectsV2CommandOutput,
  S3Client,
} from '@aws-sdk/client-s3'
import {Upload} from '@aws-sdk/lib-storage'

import {ExitCode, ShardctlError, usageError} from '../errors.js'
import {
  type Destination,
  type S3Settings,
  type StoredObject,
  type WriteOptions,
  S3_SCHEME,
  missingObject,
  objectExists,
} from './destination.js'

// On Node 20 the SDK warns on stderr, at first use, that its releases of 2027 will need
// Node 22: nothing an operator of this tool can act on. This is the SDK's own switch.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'

/** S3's smallest part, and the most parts one object may have. */
const MIN_PART_BYTES = 5 * 1024 * 1024
const MAX_PARTS = 10_000
/** Parts in flight per upload: the memory an upload holds is this many parts. */
const PARTS_IN_FLIGHT = 4

/** `s3://bucket/prefix/` → the bucket and the prefix ("" or ending with "/"). */
export function parseS3Url(url: string): {bucket: string; prefix: string} {
  const rest = url.slice(S3_SCHEME.length)
  const slash = rest.indexOf('/')
  const bucket = slash === -1 ? rest : rest.slice(0, slash)
  const path = slash === -1 ? '' : rest.slice(slash + 1)
  // Bucket names: 3-63 of lower-case letters, digits, dots and hyphens (what S3 and compatible stores accept).
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket))
    throw usageError(`invalid S3 bucket name "${bucket}" in ${url}`, 'use s3://bucket/prefix (3-63 lower-case letters, digits, . and -)')
  const parts = path.split('/').filter((p) => p !== '')
  if (parts.some((p) => p === '.' || p === '..')) throw usageError(`invalid S3 prefix in ${url}`, 'a prefix has no . or .. parts')
  return {bucket, prefix: parts.length === 0 ? '' : `${parts.join('/')}/`}
}

/**
 * Backups in an S3 bucket (or an S3-compatible store), through the AWS SDK: its
 * request signing, retries and streaming multipart uploads. Credentials come from the
 * SDK's standard chain (environment, shared profile, instance or task role); none is
 * ever taken on the command line or printed. Every object is written with server-side
 * encryption when asked. The SDK's own CRC32 checksums are asked for only where S3
 * requires them: several S3-compatible stores refuse them, and every backup file
 * carries its own sha256 in the manifest.
 */
export class S3Destination implements Destination {
  readonly location: string
  private readonly client: S3Client
  /** The client of uploads, and how long it waits in silence. */
  private readonly writer: S3Client
  private readonly writeIdleMs: number

  constructor(
    private readonly bucket: string,
    private readonly prefix: string,
    private readonly settings: Partial<S3Settings> & {timeoutMs: number},
  ) {
    this.location = `${S3_SCHEME}${bucket}/${prefix}`
    if (settings.kmsKeyId !== undefined && settings.sse !== 'aws:kms') throw usageError('--sse-kms-key-id goes with --sse aws:kms')
    const client = (idleMs: number) =>
      new S3Client({
        endpoint: settings.endpoint,
        region: settings.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
        // Compatible stores (and the test server) serve buckets by path, not by host name.
        forcePathStyle: settings.endpoint !== undefined,
        requestChecksumCalculation: 'WHEN_REQUIRED',
        responseChecksumValidation: 'WHEN_REQUIRED',
        // --timeout bounds the connection and each silence on it (an idle timeout: a large
        // upload that keeps moving is never cut), and a silence is not retried (see below).
        retryStrategy: new AnsweredRetries(),
        requestHandler: {connectionTimeout: settings.timeoutMs, socketTimeout: idleMs},
      })
    this.client = client(settings.timeoutMs)
    // An upload's requests may wait longer in silence: S3 answers a part once it is stored,
    // and may take seconds to complete a large multipart upload. Connecting is still bounded
    // by --timeout.
    this.writeIdleMs = Math.max(settings.timeoutMs, WRITE_IDLE_MS)
    this.writer = client(this.writeIdleMs)
  }

  private key(key: string): string {
    return `${this.prefix}${key}`
  }

  async write(key: string, body: Readable, options: WriteOptions = {}): Promise<void> {
    // The body's own failure (a snapshot that did not check out) is what to report,
    // not what the SDK says while it gives the upload up.
    let bodyError: Error | undefined
    body.once('error', (error) => {
      bodyError ??= error
    })
    const partSize = Math.max(MIN_PART_BYTES, Math.ceil((options.expectedBytes ?? 0) / (MAX_PARTS * 0.9)))
    try {
      await options.fence?.()
      // S3 refuses the write itself when an object exists (If-None-Match: *); s3rver and
      // some compatible stores ignore that header, so it is looked for first too (the
      // caller's fence keeps other writers of this key away meanwhile).
      if (options.exclusive && (await this.exists(key))) throw objectExists(this.location, key)
    } catch (error) {
      body.destroy()
      throw error
    }
    const upload = new Upload({
      client: this.writer,
      params: {
        Bucket: this.bucket,
        Key: this.key(key),
        Body: body,
        ContentType: options.contentType ?? 'application/octet-stream',
        ...(this.settings.sse ? {ServerSideEncryption: this.settings.sse} : {}),
        ...(this.settings.kmsKeyId ? {SSEKMSKeyId: this.settings.kmsKeyId} : {}),
        ...(options.exclusive ? {IfNoneMatch: '*'} : {}),
      },
      partSize,
      queueSize: PARTS_IN_FLIGHT,
    })
    try {
      await upload.done()
    } catch (error) {
      body.destroy()
      const name = (error as Error).name
      if (options.exclusive && (name === 'PreconditionFailed' || name === 'ConditionalRequestConflict'))
        throw objectExists(this.location, key)
      throw bodyError ?? this.failure(error as Error, `writing ${key}`, this.writeIdleMs)
    }
    if (bodyError) throw bodyError
  }

  async read(key: string): Promise<Readable> {
    try {
      const reply = await this.client.send(new GetObjectCommand({Bucket: this.bucket, Key: this.key(key)}))
      return reply.Body as Readable
    } catch (error) {
      const name = (error as Error).name
      if (name === 'NoSuchKey' || name === 'NotFound') throw missingObject(this.location, key)
      throw this.failure(error as Error, `reading ${key}`)
    }
  }

  private async exists(key: string): Promise<boolean> {
    try {
      await this.client.send(new HeadObjectCommand({Bucket: this.bucket, Key: this.key(key)}))
      return true
    } catch (error) {
      if ((error as Error).name === 'NotFound' || (error as Error).name === 'NoSuchKey') return false
      throw this.failure(error as Error, `looking for ${key}`)
    }
  }

  async list(prefix = ''): Promise<StoredObject[]> {
    const found: StoredObject[] = []
    let token: string | undefined
    do {
      let page: ListObjectsV2CommandOutput
      try {
        page = await this.client.send(new ListObjectsV2Command({Bucket: this.bucket, Prefix: this.key(prefix), ContinuationToken: token}))
      } catch (error) {
        throw this.failure(error as Error, 'listing')
      }
      for (const object of page.Contents ?? []) {
        if (object.Key === undefined || !object.Key.startsWith(this.prefix)) continue
        found.push({key: object.Key.slice(this.prefix.length), bytes: object.Size ?? 0, modified: object.LastModified ?? new Date(0)})
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined
    } while (token)
    return found
  }

  async remove(keys: string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000)
      try {
        const reply = await this.client.send(
          new DeleteObjectsCommand({
            Bucket: this.bucket,
            Delete: {Objects: batch.map((key) => ({Key: this.key(key)})), Quiet: true},
          }),
        )
        const failed = reply.Errors?.[0]
        if (failed) throw Object.assign(new Error(failed.Message ?? failed.Code ?? 'refused'), {name: failed.Code ?? 'Error'})
      } catch (error) {
        throw this.failure(error as Error, 'removing objects')
      }
    }
  }

  /** An SDK error as one line naming the bucket and what to do. */
  private failure(
    error: Error & {code?: string; $metadata?: {httpStatusCode?: number}},
    doing: string,
    idleMs = this.settings.timeoutMs,
  ): ShardctlError {
    const where = this.location
    const say = (message: string, hint: string) =>
      new ShardctlError(`${where}: ${message} (${doing})`, {code: 'ES3', exitCode: ExitCode.unexpected, hint, cause: error})
    const name = error.name
    const status = error.$metadata?.httpStatusCode
    if (name === 'CredentialsProviderError' || /Could not load credentials/i.test(error.message))
      return say(
        'no AWS credentials found',
        'set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run where an instance role applies',
      )
    if (name === 'NoSuchBucket') return say('the bucket does not exist', 'create it, or check the bucket name and --s3-region')
    if (name === 'AccessDenied' || status === 403)
      return say('access denied', 'the credentials in use may not do this here: check the IAM policy (docs/backups.md)')
    if (name === 'InvalidAccessKeyId' || name === 'SignatureDoesNotMatch')
      return say('the credentials were refused', 'check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the profile in use')
    if (name === 'PermanentRedirect' || name === 'AuthorizationHeaderMalformed')
      return say('the bucket is in another region', 'give its region with --s3-region (or AWS_REGION)')
    const code = error.code ?? (error.cause as {code?: string} | undefined)?.code
    const endpoint = `the S3 endpoint${this.settings.endpoint ? ` ${this.settings.endpoint}` : ''}`
    if (isSilence(error))
      return say(`cannot reach ${endpoint}: no answer within ${seconds(idleMs)}`, 'check --s3-endpoint and the network, or raise --timeout')
    if (code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'ECONNRESET')
      return say(`cannot reach ${endpoint}: ${code}`, 'check --s3-endpoint and the network')
    return say(`${name}: ${error.message.split('\n')[0]}`, 'check the bucket, the credentials and --s3-endpoint')
  }
}

/** How long an upload's request may wait in silence, at least (see the constructor). */
const WRITE_IDLE_MS = 60_000

/** The endpoint said nothing for the whole timeout: while connecting, or in the middle of a request. */
function isSilence(error: Error & {code?: string}): boolean {
  const code = error.code ?? (error.cause as {code?: string} | undefined)?.code
  return error.name === 'TimeoutError' || code === 'ETIMEDOUT'
}

function seconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(3))}s`
}

/**
 * The SDK's retries, except for silence: what the endpoint answered at once (a 5xx,
 * throttling, a connection reset or refused; not a request it refused) is tried again, up
 * to 3 attempts with jittered exponential backoff; a silence past --timeout is not, so a
 * silent endpoint fails within one --timeout, as the message says, not three. Shaped as
 * the SDK's RetryStrategyV2.
 */
class AnsweredRetries {
  private static readonly ATTEMPTS = 3
  private static readonly BASE_DELAY_MS = 100
  private static readonly MAX_DELAY_MS = 20_000

  async acquireInitialRetryToken(): Promise<RetryToken> {
    return retryToken(0, 0)
  }

  async refreshRetryTokenForRetry(token: RetryToken, info: {error?: Error; errorType: string}): Promise<RetryToken> {
    const count = token.getRetryCount() + 1
    const retry = count < AnsweredRetries.ATTEMPTS && info.errorType !== 'CLIENT_ERROR' && !(info.error && isSilence(info.error))
    if (!retry) throw info.error ?? new Error('no retry')
    return retryToken(count, Math.random() * Math.min(AnsweredRetries.MAX_DELAY_MS, AnsweredRetries.BASE_DELAY_MS * 2 ** count))
  }

  recordSuccess(): void {}
}

interface RetryToken {
  getRetryCount(): number
  getRetryDelay(): number
}

function retryToken(count: number, delay: number): RetryToken {
  return {getRetryCount: () => count, getRetryDelay: () => delay}
}

import {statSync} from 'node:fs'
import type {Readable} from 'node:stream'

import {ExitCode, ShardctlError, usageError} from '../errors.js'

/**
 * Where backups are kept: a local directory or an S3 bucket (and prefix), behind one
 * interface. Keys are relative paths with "/" separators, below the destination's root.
 * A write is all or nothing: an object is visible under its key only once every byte
 * is stored (a temporary file renamed into place, a multipart upload completed), so a
 * reader never sees half an object, whatever happens to this process.
 */
export interface StoredObject {
  key: string
  bytes: number
  modified: Date
}

export interface Destination {
  /** Where, for messages and listings: a directory or s3://bucket/prefix. Never a credential. */
  readonly location: string
  /** Store a stream under `key`. If the stream fails, nothing is left under `key`. */
  write(key: string, body: Readable, options?: WriteOptions): Promise<void>
  /** Read an object; a missing one rejects with code ENOBACKUPFILE. */
  read(key: string): Promise<Readable>
  /** Every object below `prefix` (all with none), in no particular order. */
  list(prefix?: string): Promise<StoredObject[]>
  /** Remove objects; those already gone are not an error. */
  remove(keys: string[]): Promise<void>
  /** Where an object is as a file on this machine, when it is one (a local directory): read in place, not copied. */
  localFile?(key: string): string
}

export interface WriteOptions {
  /** What the object will hold, for a store that records it (S3's Content-Type). */
  contentType?: string
  /** How many bytes are expected, when known: lets a store size its parts. */
  expectedBytes?: number
  /** Never replace an object already under the key: fail with EOBJECTEXISTS instead. */
  exclusive?: boolean
  /**
   * Called last before the object becomes visible under its key (a local file: before its
   * rename; S3: before the upload begins, as S3 has no step between the last part and
   * the completion): rejecting leaves nothing under the key. A backup's lease check.
   */
  fence?: () => Promise<void>
}

/** Settings of an S3 destination; credentials come from the AWS SDK's standard chain, never from here. */
export interface S3Settings {
  /** An S3-compatible store's URL (http://minio.local:9000); AWS itself when absent. */
  endpoint?: string
  region?: string
  /** Server-side encryption of every object written. */
  sse?: 'AES256' | 'aws:kms'
  /** The KMS key for sse aws:kms (the bucket's default key when absent). */
  kmsKeyId?: string
  /** Connect timeout, in milliseconds. */
  timeoutMs: number
}

export interface DestinationSettings {
  s3?: Partial<S3Settings>
  timeoutMs: number
}

export const S3_SCHEME = 's3://'

/** A local file being written carries this in its name until it is complete and renamed into place. */
export const PARTIAL_MARK = '.partial-'

export function isS3(location: string): boolean {
  return location.toLowerCase().startsWith(S3_SCHEME)
}

/**
 * A destination from `<dir>` or `s3://bucket/prefix`: the S3 client is loaded only when
 * used. `existing`: backups are read from it, so a directory that is not there is a
 * mistyped path (exit 2), never an empty destination.
 */
export async function openDestination(
  location: string,
  settings: DestinationSettings,
  options: {existing?: boolean} = {},
): Promise<Destination> {
  if (location.trim() === '') throw usageError('no backup destination given', 'name a directory or s3://bucket/prefix')
  if (isS3(location)) {
    const {S3Destination, parseS3Url} = await import('./s3.js')
    const {bucket, prefix} = parseS3Url(location)
    return new S3Destination(bucket, prefix, {timeoutMs: settings.timeoutMs, ...settings.s3})
  }
  // Encryption asked for and not possible is refused, not ignored.
  if (settings.s3?.sse !== undefined)
    throw usageError(
      '--sse goes with an s3:// destination',
      'local backup files are readable by their owner only; encrypt the disk for more',
    )
  if (options.existing) {
    const found = statSync(location, {throwIfNoEntry: false})
    if (!found) throw usageError(`${location} does not exist`, 'name the directory the backups were written to (shards:backup --to)')
    if (!found.isDirectory())
      throw usageError(`${location} is not a directory`, 'name the directory the backups were written to (shards:backup --to)')
  }
  const {LocalDirectory} = await import('./local.js')
  return new LocalDirectory(location)
}

/** The object a backup needs is not there. */
export function missingObject(location: string, key: string): ShardctlError {
  return new ShardctlError(`${location}: ${key} does not exist`, {
    code: 'ENOBACKUPFILE',
    exitCode: ExitCode.unhealthy,
    hint: 'see backups:list for the backups this destination holds',
  })
}

/** An object is already under the key of an exclusive write. */
export function objectExists(location: string, key: string): ShardctlError {
  return new ShardctlError(`${location}: ${key} exists already`, {code: 'EOBJECTEXISTS', exitCode: ExitCode.unhealthy})
}

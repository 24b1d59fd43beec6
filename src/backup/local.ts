import {randomBytes} from 'node:crypto'
import {createWriteStream} from 'node:fs'
import {link, mkdir, open, readdir, rename, rmdir, stat, unlink} from 'node:fs/promises'
import {dirname, join, relative, resolve, sep} from 'node:path'
import type {Readable} from 'node:stream'
import {pipeline} from 'node:stream/promises'

import {ShardctlError, usageError} from '../errors.js'
import {type Destination, PARTIAL_MARK, type StoredObject, type WriteOptions, missingObject, objectExists} from './destination.js'

/**
 * Backups in a local directory. A backup is the fleet's whole data at rest: every
 * directory this creates is 0700 and every file 0600, readable by their owner only.
 * A file is written under a temporary name, flushed to disk and renamed into place,
 * then its directory is flushed: a crash leaves either the whole file or none of it.
 */
export class LocalDirectory implements Destination {
  readonly root: string
  readonly location: string

  constructor(directory: string) {
    this.root = resolve(directory)
    this.location = this.root
  }

  private path(key: string): string {
    const path = resolve(this.root, ...key.split('/'))
    if (path !== this.root && !path.startsWith(this.root + sep)) throw usageError(`invalid backup path "${key}"`)
    return path
  }

  async write(key: string, body: Readable, options: WriteOptions = {}): Promise<void> {
    const path = this.path(key)
    await this.makeDirectories(dirname(path))
    const partial = `${path}${PARTIAL_MARK}${process.pid}-${randomBytes(4).toString('hex')}`
    try {
      await pipeline(body, createWriteStream(partial, {flags: 'wx', mode: 0o600, flush: true}))
      await options.fence?.()
      if (options.exclusive) {
        // A second name for the complete file, refused if one exists: all or nothing, never over another.
        await link(partial, path).catch((error: NodeJS.ErrnoException) => {
          throw error.code === 'EEXIST' ? objectExists(this.location, key) : error
        })
        await unlink(partial)
      } else await rename(partial, path)
    } catch (error) {
      await unlink(partial).catch(() => undefined)
      throw describeFsError(this.location, error as NodeJS.ErrnoException)
    }
    await syncDirectory(dirname(path))
  }

  localFile(key: string): string {
    return this.path(key)
  }

  async read(key: string): Promise<Readable> {
    const path = this.path(key)
    try {
      const handle = await open(path, 'r')
      return handle.createReadStream()
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw missingObject(this.location, key)
      throw describeFsError(this.location, error as NodeJS.ErrnoException)
    }
  }

  async list(prefix = ''): Promise<StoredObject[]> {
    const start = prefix === '' ? this.root : this.path(prefix.replace(/\/$/, ''))
    const found: StoredObject[] = []
    const walk = async (dir: string): Promise<void> => {
      let entries
      try {
        entries = await readdir(dir, {withFileTypes: true})
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT' || (error as NodeJS.ErrnoException).code === 'ENOTDIR') return
        throw describeFsError(this.location, error as NodeJS.ErrnoException)
      }
      for (const entry of entries) {
        const path = join(dir, entry.name)
        if (entry.isDirectory()) await walk(path)
        else if (entry.isFile()) {
          const info = await stat(path).catch(() => undefined)
          if (info) found.push({key: relative(this.root, path).split(sep).join('/'), bytes: info.size, modified: info.mtime})
        }
      }
    }
    await walk(start)
    return found
  }

  async remove(keys: string[]): Promise<void> {
    const dirs = new Set<string>()
    for (const key of keys) {
      const path = this.path(key)
      await unlink(path).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'ENOENT') throw describeFsError(this.location, error)
      })
      dirs.add(dirname(path))
    }
    // Directories left empty go too, deepest first, never the root.
    for (const dir of [...dirs].sort((a, b) => b.length - a.length)) {
      for (let d = dir; d !== this.root && d.startsWith(this.root + sep); d = dirname(d)) {
        const removed = await rmdir(d).then(
          () => true,
          () => false,
        )
        if (!removed) break
      }
    }
  }

  /** Create the directories down to `dir`, each new one 0700 (mkdir's mode is masked by the umask: 0700 survives any usual one). */
  private async makeDirectories(dir: string): Promise<void> {
    try {
      await mkdir(dir, {recursive: true, mode: 0o700})
    } catch (error) {
      throw describeFsError(this.location, error as NodeJS.ErrnoException)
    }
  }
}

/** Make a rename durable: flush the directory that holds the new name. */
async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r').catch(() => undefined)
  if (!handle) return
  try {
    await handle.sync()
  } catch {
    // some file systems cannot flush a directory: the rename is as durable as they make it
  } finally {
    await handle.close()
  }
}

function describeFsError(location: string, error: NodeJS.ErrnoException): Error {
  if (error instanceof ShardctlError) return error
  const path = error.path ?? location
  switch (error.code) {
    case 'EACCES':
    case 'EPERM': {
      return new ShardctlError(`${path}: permission denied`, {
        code: 'EDESTINATION',
        hint: 'check the owner and mode of the backup directory',
      })
    }
    case 'ENOSPC': {
      return new ShardctlError(`${location}: no space left on the device`, {
        code: 'EDESTINATION',
        hint: 'free some space, or prune old backups',
      })
    }
    case 'ENOTDIR':
    case 'EEXIST': {
      return new ShardctlError(`${path}: not a directory`, {code: 'EDESTINATION', hint: 'name a directory for the backups'})
    }
    default: {
      return error.code ? new ShardctlError(`${location}: ${error.message}`, {code: 'EDESTINATION', cause: error}) : error
    }
  }
}

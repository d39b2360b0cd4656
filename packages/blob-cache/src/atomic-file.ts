import { open, readdir, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { fsError } from './fs-errors.ts';

/** A unique suffix for temporary names, so concurrent writers never share a temp file. */
export function uniqueSuffix(): string {
  return `${process.pid}-${globalThis.crypto.randomUUID().slice(0, 12)}`;
}

/**
 * Flushes a directory's entries to disk, so a rename or unlink in it survives a power loss (POSIX
 * leaves directory durability to an explicit fsync of the directory). Concurrent calls for the same
 * directory share fsyncs (see `groupSync`): a pull committing 40 blobs into `blobs/sha256` made 40
 * directory fsyncs, each a journal commit that stalls every file create on the filesystem meanwhile.
 */
export const syncDirectory: (path: string) => Promise<void> = groupSync(fsyncDirectory);

async function fsyncDirectory(path: string): Promise<void> {
  let handle: Awaited<ReturnType<typeof open>> | undefined;
  try {
    handle = await open(path, 'r');
    await handle.sync();
  } catch (error) {
    // Some filesystems refuse fsync on a directory (EINVAL/EISDIR); the rename is still atomic there.
    if (!['EINVAL', 'EISDIR', 'EBADF'].includes((error as { code?: string }).code ?? '')) {
      throw fsError(error, `syncing directory ${path}`);
    }
  } finally {
    await handle?.close();
  }
}

/**
 * Group commit: wraps `sync(key)` so that each call resolves after a run of `sync(key)` that *started
 * after the call* (what it changed before the call is covered), and calls made while a run is in
 * flight all wait for the one next run instead of one each. At most two runs per key exist at a
 * time: the one in flight and the one queued behind it. A failed run rejects exactly the calls it served.
 */
export function groupSync(sync: (key: string) => Promise<void>): (key: string) => Promise<void> {
  type Group = { running: Promise<void>; queued?: Promise<void> };
  const groups = new Map<string, Group>();
  const start = (key: string): Promise<void> => {
    const running = sync(key);
    const group: Group = { running };
    groups.set(key, group);
    const settle = () => {
      if (groups.get(key) === group && group.queued === undefined) groups.delete(key);
    };
    running.then(settle, settle);
    return running;
  };
  return (key) => {
    const group = groups.get(key);
    if (group === undefined) return start(key);
    if (group.queued !== undefined) return group.queued;
    // The run in flight may have started before this caller's change: the next run serves it (and
    // becomes the one in flight, so later callers queue behind it).
    const after = () => start(key);
    group.queued = group.running.then(after, after);
    return group.queued;
  };
}

/** Options for `writeFileAtomic`. */
export interface WriteFileAtomicOptions {
  /** The file mode of the result. Default 0o644. */
  mode?: number;
  /** Where to put the temp file; must be on the same filesystem. Default the target's directory. */
  tempDirectory?: string;
  /**
   * fsync the file and its directory (default true). Without it a crash may leave the old file, no
   * file or (on some filesystems) an empty one, but never a torn mix: only for files whose loss is harmless.
   */
  durable?: boolean;
}

/**
 * Writes `bytes` to `path` so that readers see either the old file or the new one, never a part:
 * write a temp file in the same directory, fsync it, rename it over the target, fsync the directory.
 * On failure (ENOSPC included) the temp file is removed and the target is untouched.
 */
export async function writeFileAtomic(
  path: string,
  bytes: Uint8Array | string,
  options: WriteFileAtomicOptions = {},
): Promise<void> {
  const directory = options.tempDirectory ?? dirname(path);
  const temp = join(directory, `.${basename(path)}.${uniqueSuffix()}.tmp`);
  let renamed = false;
  try {
    const handle = await open(temp, 'wx', options.mode ?? 0o644);
    try {
      await handle.writeFile(bytes);
      if (options.durable !== false) await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, path);
    renamed = true;
    if (options.durable !== false) await syncDirectory(dirname(path));
  } catch (error) {
    if (!renamed) await unlink(temp).catch(() => {});
    throw fsError(error, `writing ${path}`);
  }
}

/** How many files `syncTree` fsyncs at once: enough to keep a disk queue busy, few enough for fds. */
const SYNC_TREE_CONCURRENCY = 16;

/**
 * fsyncs every regular file and directory under `root` (symlinks and special files have no data to
 * flush; their directory entries are covered by the directory fsync).
 */
export async function syncTree(root: string): Promise<void> {
  // Buffer paths: a layer may hold names that are not UTF-8, which a string readdir would mangle.
  const paths: Buffer[] = [];
  const walk = async (directory: Buffer): Promise<void> => {
    paths.push(directory);
    for (const entry of await readdir(directory, { withFileTypes: true, encoding: 'buffer' })) {
      const path = childPath(directory, entry.name);
      if (entry.isDirectory()) await walk(path);
      else if (entry.isFile()) paths.push(path);
    }
  };
  await walk(Buffer.from(root));
  let next = 0;
  const worker = async () => {
    while (next < paths.length) {
      const path = paths[next++]!;
      let handle: Awaited<ReturnType<typeof open>> | undefined;
      try {
        // O_RDONLY suffices for fsync on Linux, and works on read-only files (mode 0444) too.
        handle = await open(path, 'r');
        await handle.sync();
      } catch (error) {
        const code = (error as { code?: string }).code ?? '';
        // Unreadable files (mode 000 as non-root) cannot be opened; nothing more can be done for them.
        if (!['EACCES', 'EPERM', 'EINVAL', 'ENOENT'].includes(code))
          throw fsError(error, `syncing ${path.toString()}`);
      } finally {
        await handle?.close();
      }
    }
  };
  await Promise.all(Array.from({ length: SYNC_TREE_CONCURRENCY }, worker));
}

/** `directory/name` as a Buffer path (names are bytes; see syncTree). */
export function childPath(directory: Buffer, name: Buffer): Buffer {
  return Buffer.concat([directory, Buffer.from('/'), name]);
}

import { open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { fsError } from './fs-errors.ts';

/** A unique suffix for temporary names, so concurrent writers never share a temp file. */
export function uniqueSuffix(): string {
  return `${process.pid}-${globalThis.crypto.randomUUID().slice(0, 12)}`;
}

/**
 * Flushes a directory's entries to disk, so a rename or unlink in it survives a power loss (POSIX
 * leaves directory durability to an explicit fsync of the directory).
 */
export async function syncDirectory(path: string): Promise<void> {
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

/** Options for `writeFileAtomic`. */
export interface WriteFileAtomicOptions {
  /** The file mode of the result. Default 0o644. */
  mode?: number;
  /** Where to put the temp file; must be on the same filesystem. Default the target's directory. */
  tempDirectory?: string;
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
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, path);
    renamed = true;
    await syncDirectory(dirname(path));
  } catch (error) {
    if (!renamed) await unlink(temp).catch(() => {});
    throw fsError(error, `writing ${path}`);
  }
}

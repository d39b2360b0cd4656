import { chmod, readdir, rm } from 'node:fs/promises';
import { childPath } from './atomic-file.ts';
import { fsError, isErrno } from './fs-errors.ts';

/**
 * Deletes a directory tree. Extracted layers may contain read-only directories (mode 0555), which a
 * non-root user cannot empty: on EACCES/EPERM the tree's directories are made writable and it retries.
 */
export async function removeTree(path: string): Promise<void> {
  try {
    await rm(path, { recursive: true, force: true });
  } catch (error) {
    if (!isErrno(error, 'EACCES', 'EPERM', 'ENOTEMPTY')) throw fsError(error, `removing ${path}`);
    await makeWritable(path);
    try {
      await rm(path, { recursive: true, force: true });
    } catch (again) {
      throw fsError(again, `removing ${path}`);
    }
  }
}

/** Makes every directory of a tree writable; Buffer paths, as a layer's names need not be UTF-8. */
export async function makeWritable(directory: string | Buffer): Promise<void> {
  const path = typeof directory === 'string' ? Buffer.from(directory) : directory;
  await chmod(path, 0o700).catch(() => {});
  const entries = await readdir(path, { withFileTypes: true, encoding: 'buffer' }).catch(() => []);
  for (const entry of entries) {
    if (entry.isDirectory()) await makeWritable(childPath(path, entry.name));
  }
}

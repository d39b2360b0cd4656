import { chmod, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
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

async function makeWritable(directory: string): Promise<void> {
  await chmod(directory, 0o700).catch(() => {});
  const entries = await readdir(directory, { withFileTypes: true }).catch(() => []);
  for (const entry of entries) {
    if (entry.isDirectory()) await makeWritable(join(directory, entry.name));
  }
}

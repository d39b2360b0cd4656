import { lstat, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openCache } from './index.ts';
import { makeWritable } from './remove-tree.ts';

// Layer trees keep names byte for byte (see @ocipull/layer-extract), so names need not be UTF-8: the
// tree walks here read directories as bytes. A string readdir turns 0xff into U+FFFD, a name that
// does not exist on disk.

const roots: string[] = [];
afterAll(async () => {
  for (const root of roots) await rm(root, { recursive: true, force: true });
});

async function tempDir(): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), 'blob-cache-raw-'));
  roots.push(root);
  return root;
}

const at = (dir: string, ...names: Buffer[]) =>
  Buffer.concat([Buffer.from(dir), ...names.flatMap((name) => [Buffer.from('/'), name])]);
const RAW_DIR = Buffer.from([0x64, 0xff]); // "d\xff"
const RAW_FILE = Buffer.from([0x63, 0x61, 0x66, 0xe9]); // "caf\xe9" (latin1)

describe('layer trees with names that are not UTF-8', () => {
  it('commits them durably (every file and directory synced), then removes them', async () => {
    const cache = await openCache({ root: await tempDir() });
    try {
      const diffId = `sha256:${'ab'.repeat(32)}`;
      const temp = await cache.createLayerTemp(diffId);
      await mkdir(at(temp, RAW_DIR));
      await writeFile(at(temp, RAW_DIR, RAW_FILE), 'raw');
      await writeFile(join(temp, 'plain'), 'plain');
      const result = await cache.commitLayer(diffId, temp);
      expect(result.committed).toBe(true);
      expect(await readFile(at(result.path, RAW_DIR, RAW_FILE), 'utf8')).toBe('raw');
      expect(await cache.removeLayer(diffId)).toBe(true);
      expect(await cache.hasLayer(diffId)).toBe(false);
    } finally {
      await cache.close();
    }
  });

  it('counts them in what gc frees', async () => {
    const root = await tempDir();
    const diffId = `sha256:${'cd'.repeat(32)}`;
    const writer = await openCache({ root });
    try {
      const temp = await writer.createLayerTemp(diffId);
      await mkdir(at(temp, RAW_DIR));
      await writeFile(at(temp, RAW_DIR, RAW_FILE), Buffer.alloc(5000, 1));
      await writeFile(join(temp, 'plain'), Buffer.alloc(300, 2));
      await writer.commitLayer(diffId, temp);
    } finally {
      await writer.close();
    }
    // A fresh handle holds no lease on the tree, and no image references it: gc takes it.
    const cache = await openCache({ root });
    try {
      const result = await cache.gc();
      expect(result.removedLayers).toEqual([diffId]);
      expect(result.freedBytes).toBeGreaterThanOrEqual(5300);
    } finally {
      await cache.close();
    }
  });

  it('makes read-only directories below such names writable before a retry of the delete', async () => {
    const root = await tempDir();
    await mkdir(at(root, RAW_DIR, RAW_DIR), { recursive: true, mode: 0o500 });
    await makeWritable(root);
    expect((await lstat(at(root, RAW_DIR))).mode & 0o777).toBe(0o700);
    expect((await lstat(at(root, RAW_DIR, RAW_DIR))).mode & 0o777).toBe(0o700);
    expect(await readdir(root, { encoding: 'buffer' })).toEqual([RAW_DIR]);
  });
});

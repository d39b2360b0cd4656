import { spawn } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { type BlobCache, openCache } from '@ocipull/blob-cache';
import type { ImageManifest } from '@ocipull/core';
import {
  buildImage,
  dir,
  file,
  type HarnessRegistry,
  readOnlyCommand,
  setTreeMode,
  startRegistry,
  treeStamp,
} from '@ocipull/test-harness';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { pull, unpackImage } from './index.ts';

// What the cache-only verbs and a warm pull do while another process runs `rm REF` then `prune`, and
// on a cache they may only read.

let work: string;
let registry: HarnessRegistry;
let cacheRoot: string;
let ref: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'ocipull-cache-race-'));
  // Traversable by the read-only child's user.
  await chmod(work, 0o755);
  await buildImage(
    {
      layers: [
        {
          entries: [
            dir('etc'),
            file('etc/os-release', 'ID=fixture\n'),
            file('etc/a', { size: 30_000, seed: 1 }),
          ],
        },
        { entries: [dir('usr'), file('usr/b', { size: 40_000, seed: 2 })], compression: 'zstd' },
        { entries: [dir('srv'), file('srv/c', { size: 20_000, seed: 3 })] },
      ],
      config: { Cmd: ['/srv/c'] },
    },
    { dir: join(work, 'image'), tag: 'v1' },
  );
  registry = await startRegistry({ repositories: { 'test/app': join(work, 'image') } });
  ref = `${registry.host}/test/app:v1`;
});

afterAll(async () => {
  await registry?.close();
  await setTreeMode(work, { directory: 0o755, file: 0o644 });
  await rm(work, { recursive: true, force: true });
});

beforeEach(async () => {
  cacheRoot = await mkdtemp(join(work, 'cache-'));
  registry.clearRequests();
});

/** Untags `ref` and collects garbage through a cache handle of its own: another process's `rm` + `prune`. */
async function removeAndPrune(): Promise<string[]> {
  const other = await openCache({ root: cacheRoot });
  try {
    expect(await other.untag(ref)).toBe(true);
    return (await other.gc()).removedBlobs;
  } finally {
    await other.close();
  }
}

/** Every blob the image recorded for `ref` needs (its manifest, config, layers) that is not in the cache. */
async function missingBlobsOfRecord(cache: BlobCache): Promise<string[]> {
  const top = await cache.resolveImage(ref);
  expect(top).toBeDefined();
  if (!(await cache.has(top!))) return [top!.digest];
  const manifest = JSON.parse((await cache.readBlob(top!.digest)).toString('utf8')) as ImageManifest;
  const missing: string[] = [];
  for (const descriptor of [manifest.config, ...manifest.layers]) {
    if (!(await cache.has(descriptor))) missing.push(descriptor.digest);
  }
  return missing;
}

/** Replaces `cache[name]` with `hook` around the original (bound, so private fields keep working). */
function hookMethod<K extends 'readBlob' | 'resolveImage' | 'fetch'>(
  cache: BlobCache,
  name: K,
  hook: (original: BlobCache[K], ...args: Parameters<BlobCache[K]>) => ReturnType<BlobCache[K]>,
): void {
  const original = (cache[name] as (...args: unknown[]) => unknown).bind(cache) as BlobCache[K];
  Object.assign(cache, { [name]: (...args: Parameters<BlobCache[K]>) => hook(original, ...args) });
}

describe('a warm pull --pull missing while another process runs rm and prune', () => {
  it('records its image whole when the record goes while it extracts (the repro: prune took the manifest)', async () => {
    await pull(ref, { cache: cacheRoot, platform: 'linux/amd64', layers: false });
    const cache = await openCache({ root: cacheRoot });
    let calls = 0;
    let removed: string[] = [];
    // resolveImage is asked first for the record, then, once every blob is committed, whether the
    // record is still there: `rm` + `prune` run in between, as they did while the repro extracted.
    hookMethod(cache, 'resolveImage', async (original, ...args) => {
      calls += 1;
      if (calls === 2) removed = await removeAndPrune();
      return original(...args);
    });
    const rootfs = join(cacheRoot, 'rootfs');
    const result = await pull(ref, {
      cache,
      platform: 'linux/amd64',
      policy: 'missing',
      rootfs,
      layers: false,
    });
    expect(calls).toBe(2);
    expect(result.offline).toBe(true);
    // The prune found nothing to take: the pull leased every blob, the manifest included.
    expect(removed).toEqual([]);
    expect(await missingBlobsOfRecord(cache)).toEqual([]);
    await cache.close();
  });

  it('records its image whole when the record goes right after it read the manifest', async () => {
    await pull(ref, { cache: cacheRoot, platform: 'linux/amd64' });
    const cache = await openCache({ root: cacheRoot });
    let removed: string[] | undefined;
    const manifestRead: Promise<void> = new Promise((resolve) => {
      hookMethod(cache, 'readBlob', async (original, ...args) => {
        const bytes = await original(...args);
        if (removed === undefined) {
          removed = await removeAndPrune();
          resolve();
        }
        return bytes;
      });
    });
    const result = await pull(ref, { cache, platform: 'linux/amd64', policy: 'missing' });
    await manifestRead;
    // The config and layers, not leased yet, went (and were fetched again); the manifest stayed.
    expect(removed).not.toContain(result.manifestDigest);
    expect(removed?.length).toBeGreaterThan(0);
    expect(await missingBlobsOfRecord(cache)).toEqual([]);
    await cache.close();
  });
});

describe('unpack while another process runs rm and prune', () => {
  it('leases every layer first: the prune takes none of those it has not opened yet', async () => {
    await pull(ref, { cache: cacheRoot, platform: 'linux/amd64', layers: false });
    const cache = await openCache({ root: cacheRoot });
    let pruned: Promise<string[]> | undefined;
    // Before the flatten opens its first layer (and so any): `rm` + `prune`.
    hookMethod(cache, 'fetch', async (original, ...args) => {
      pruned ??= removeAndPrune();
      await pruned;
      return original(...args);
    });
    const destination = join(cacheRoot, 'unpacked');
    const result = await unpackImage(ref, destination, { cache, platform: 'linux/amd64' });
    expect(result.layers).toBe(3);
    expect((await readdir(destination)).sort()).toEqual(['etc', 'srv', 'usr']);
    // The image's blobs were all leased by the unpack (manifest, config, layers): the prune took none.
    expect(await pruned).toEqual([]);
    await cache.close();
  });
});

/** What each verb did in the read-only child: `'ok'` or its error code. */
const READ_ONLY_CHILD = `
const pull = await import(process.env.PULL_ENTRY);
// Bare: resolved from the working directory, this package.
const blobCache = await import('@ocipull/blob-cache');
const { root, ref, out } = JSON.parse(process.env.CHILD_ARGUMENTS);
const outcome = async (work) => {
  try {
    await work();
    return 'ok';
  } catch (error) {
    return error.code + ': ' + error.message;
  }
};
const results = {
  images: await outcome(async () => {
    const cache = await blobCache.openCache({ root });
    if ((await cache.listImages()).length !== 1) throw new Error('no image');
    await cache.usage();
    await cache.close();
  }),
  inspect: await outcome(() => pull.inspectImage(ref, { cache: root, platform: 'linux/amd64' })),
  unpack: await outcome(() => pull.unpackImage(ref, out + '/unpacked', { cache: root, platform: 'linux/amd64' })),
  pullNeverRootfs: await outcome(() =>
    pull.pull(ref, { cache: root, platform: 'linux/amd64', policy: 'never', rootfs: out + '/rootfs', layers: false }),
  ),
  pullNeverTrees: await outcome(() => pull.pull(ref, { cache: root, platform: 'linux/amd64', policy: 'never' })),
};
process.stdout.write(JSON.stringify(results) + '\\n');
`;

describe('a cache this process may only read', () => {
  it('inspect, unpack, images and pull --pull never read it without writing to it', async () => {
    // Layer trees extracted too: pull --pull never reuses them.
    await pull(ref, { cache: cacheRoot, platform: 'linux/amd64' });
    const out = join(work, 'read-only-out');
    await mkdir(out, { mode: 0o777 });
    await chmod(out, 0o777);
    await setTreeMode(cacheRoot, { directory: 0o555, file: 0o444 });
    const before = await treeStamp(cacheRoot);
    // As root a chmod does not stop a write: the child then runs in a mount namespace of its own, where
    // the cache is a read-only bind mount (EROFS, as on read-only media).
    const [command, argv] = readOnlyCommand(cacheRoot, process.execPath, [
      '--conditions=@ocipull/source',
      '--input-type=module',
      '-e',
      READ_ONLY_CHILD,
    ]);
    const child = spawn(command, argv, {
      stdio: ['ignore', 'pipe', 'pipe'],
      cwd: import.meta.dirname,
      env: {
        ...process.env,
        PULL_ENTRY: pathToFileURL(join(import.meta.dirname, 'index.ts')).href,
        CHILD_ARGUMENTS: JSON.stringify({ root: cacheRoot, ref, out }),
      },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => {
      stdout += text;
    });
    child.stderr.setEncoding('utf8').on('data', (text: string) => {
      stderr += text;
    });
    await new Promise((resolve) => child.on('close', resolve));
    expect(stderr).toBe('');
    expect(JSON.parse(stdout)).toEqual({
      images: 'ok',
      inspect: 'ok',
      unpack: 'ok',
      pullNeverRootfs: 'ok',
      pullNeverTrees: 'ok',
    });
    expect((await readdir(join(out, 'rootfs'))).sort()).toEqual(['etc', 'srv', 'usr']);
    expect((await readdir(join(out, 'unpacked'))).sort()).toEqual(['etc', 'srv', 'usr']);
    expect(await treeStamp(cacheRoot)).toEqual(before);
  });
});

import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Digest, ErrorCode } from '@ocipull/core';
import { buildImage, file } from '@ocipull/test-harness';
import { afterAll, expect, it, vi } from 'vitest';
import { type BlobCache, openCache } from './index.ts';
import { LayoutSource } from './testing/fixtures/layout-source.ts';

// gc reads the leases, then index.json, then the leases again. A pull records its image and only then
// ends its lease, so what the first lease read protects is either still leased or in the index read
// after it — unless the two reads are not both used. This runs the pull's last two steps exactly in
// that window, between gc's index read and its second lease read.
const hooks = vi.hoisted(() => ({
  afterIndexRead: undefined as (() => Promise<void>) | undefined,
  /** Runs after the n-th lease read (1-based) since it was set. */
  afterLeaseRead: undefined as ((n: number) => Promise<void>) | undefined,
  leaseReads: 0,
}));
vi.mock('./leases.ts', async (importOriginal) => {
  const original = await importOriginal<typeof import('./leases.ts')>();
  return {
    ...original,
    readLeases: async (...args: Parameters<typeof original.readLeases>) => {
      const scan = await original.readLeases(...args);
      hooks.leaseReads += 1;
      await hooks.afterLeaseRead?.(hooks.leaseReads);
      return scan;
    },
  };
});
vi.mock('./image-records.ts', async (importOriginal) => {
  const original = await importOriginal<typeof import('./image-records.ts')>();
  return {
    ...original,
    readIndex: async (...args: Parameters<typeof original.readIndex>) => {
      const index = await original.readIndex(...args);
      const hook = hooks.afterIndexRead;
      hooks.afterIndexRead = undefined;
      await hook?.();
      return index;
    },
  };
});

const roots: string[] = [];
afterAll(async () => {
  for (const root of roots) await rm(root, { recursive: true, force: true });
});

/** A one-layer image in a fresh directory, and where a cache for it goes. */
async function oneLayerImage() {
  const dir = await mkdtemp(join(tmpdir(), 'gc-race-'));
  roots.push(dir);
  const image = await buildImage(
    { layers: [{ entries: [file('a', { size: 30_000, seed: 9 })] }] },
    { dir: join(dir, 'image'), tag: 'race' },
  );
  return { image, manifest: image.manifests[0]!, root: join(dir, 'cache') };
}

it('gc keeps what a pull records and un-leases between its index read and its second lease read', async () => {
  const { image, manifest, root } = await oneLayerImage();
  const pulling = await openCache({ root });
  await pulling.ingest(manifest.layers[0]!.descriptor, new LayoutSource(image.dir));
  await pulling.writeBlob(await readFile(manifest.config.path), manifest.config.descriptor);
  await pulling.writeBlob(await readFile(manifest.path), manifest.descriptor);
  const blobs = [manifest.descriptor, manifest.config.descriptor, manifest.layers[0]!.descriptor];

  const collector = await openCache({ root });
  hooks.afterIndexRead = async () => {
    await pulling.putImage('example.com/race:1', manifest.descriptor);
    await pulling.close();
  };
  const result = await collector.gc();
  expect(hooks.afterIndexRead).toBeUndefined();
  expect(result.removedBlobs).toEqual([]);
  for (const descriptor of blobs) expect(await collector.has(descriptor)).toBe(true);
  // The image is recorded now: a later gc keeps it through index.json alone.
  expect((await collector.gc()).removedBlobs).toEqual([]);
  await collector.close();
});

/** A cache holding one image's layer blob and extracted tree, recorded nowhere: what gc collects. */
async function unreferenced() {
  const { image, manifest, root } = await oneLayerImage();
  const layer = manifest.layers[0]!.descriptor;
  const diffId = manifest.diffIds[0]!;
  const writer = await openCache({ root });
  await writer.ingest(layer, new LayoutSource(image.dir));
  const temp = await writer.createLayerTemp(diffId);
  await writeFile(join(temp, 'b'), 'tree');
  await writer.commitLayer(diffId, temp);
  await writer.close();
  return { root, layer, diffId, source: new LayoutSource(image.dir) };
}

/** Arms `afterLeaseRead` for the n-th lease read of the next gc. */
function afterLeaseRead(n: number, run: () => Promise<void>): void {
  hooks.leaseReads = 0;
  hooks.afterLeaseRead = async (count) => {
    if (count !== n) return;
    hooks.afterLeaseRead = undefined;
    await run();
  };
}

it('a reader that leases a layer and a blob after gc read the leases keeps them (gc looks again under the lock)', async () => {
  const { root, layer, diffId, source } = await unreferenced();
  const reader = await openCache({ root });
  const collector = await openCache({ root });
  let reused: string | undefined;
  // Lease reads 1 and 2 are the sweep's; the reader arrives right after the second.
  afterLeaseRead(2, async () => {
    reused = await reader.useLayer(diffId);
    (await reader.fetchThrough(layer, source)).destroy();
  });
  const result = await collector.gc();
  expect(hooks.afterLeaseRead).toBeUndefined();
  expect([result.removedBlobs, result.removedLayers]).toEqual([[], []]);
  expect(reused).toBe(collector.layerPath(diffId));
  expect(existsSync(reused as string)).toBe(true);
  expect(await collector.has(layer)).toBe(true);
  await reader.close();
  // Nothing holds them now: the next gc takes both.
  const after = await collector.gc();
  expect([after.removedBlobs, after.removedLayers]).toEqual([[layer.digest], [diffId]]);
  await collector.close();
});

it('a reader that leases a layer while gc is removing it waits, then finds it gone (never a dangling path)', async () => {
  const { root, diffId } = await unreferenced();
  const reader = await openCache({ root });
  const collector: BlobCache = await openCache({ root });
  let pending: Promise<string | undefined> | undefined;
  // Read 3 is gc's look under the layer's lock (the blob's comes first, as read 3; the layer's is 4).
  afterLeaseRead(4, async () => {
    pending = reader.useLayer(diffId);
    // Let the reader lease and reach the lock before gc goes on to remove the tree.
    await new Promise((resolve) => setTimeout(resolve, 50));
  });
  const result = await collector.gc();
  expect(result.removedLayers).toEqual([diffId]);
  expect(pending).toBeDefined();
  expect(await pending).toBeUndefined();
  await reader.close();
  await collector.close();
});

it('an extraction that starts after gc read the leases keeps its temp tree', async () => {
  const { root, diffId } = await unreferenced();
  const collector = await openCache({ root });
  const newcomer = await openCache({ root });
  let temp: string | undefined;
  afterLeaseRead(2, async () => {
    temp = await newcomer.createLayerTemp(diffId);
    await writeFile(join(temp, 'partial'), 'being extracted');
  });
  await collector.gc();
  expect(temp).toBeDefined();
  expect(existsSync(join(temp as string, 'partial'))).toBe(true);
  await newcomer.close();
  // Its owner gone, the temp tree is an abandoned one: the next gc takes it.
  await collector.gc();
  expect(existsSync(temp as string)).toBe(false);
  await collector.close();
});

/**
 * A cache holding one blob that nothing records or leases (what gc removes), and the bytes of it. The
 * sweep's third lease read is its look under that blob's lock, right before the unlink.
 */
async function oneUnreferencedBlob() {
  const { image, manifest, root } = await oneLayerImage();
  const bytes = await readFile(manifest.path);
  const writer = await openCache({ root });
  await writer.writeBlob(bytes, manifest.descriptor);
  await writer.close();
  return { root, bytes, descriptor: manifest.descriptor, image };
}

/** Starts `start` right after gc's look under the blob's lock, and lets it run into gc's unlink. */
function whileGcRemoves<T>(start: () => Promise<T>): { settled: () => Promise<T> } {
  let pending: Promise<T> | undefined;
  afterLeaseRead(3, async () => {
    pending = start();
    pending.catch(() => {});
    // Long enough for the caller to lease and look, were it not to wait for gc's lock first.
    await new Promise((resolve) => setTimeout(resolve, 100));
  });
  return {
    settled: () => {
      expect(pending).toBeDefined();
      return pending as Promise<T>;
    },
  };
}

it('putImage of a blob gc is removing refuses with ERR_BLOB_UNKNOWN and records nothing', async () => {
  const { root, descriptor } = await oneUnreferencedBlob();
  const recorder = await openCache({ root });
  const collector = await openCache({ root });
  const put = whileGcRemoves(() => recorder.putImage('example.com/late:1', descriptor));
  expect((await collector.gc()).removedBlobs).toEqual([descriptor.digest]);
  await expect(put.settled()).rejects.toMatchObject({ code: ErrorCode.BlobUnknown });
  expect(await collector.listImages()).toEqual([]);
  await recorder.close();
  await collector.close();
});

it('putImage refuses a blob that is not in the cache, or is there with another size', async () => {
  const { root, bytes, descriptor } = await oneUnreferencedBlob();
  const cache = await openCache({ root });
  const absent = { ...descriptor, digest: `sha256:${'0'.repeat(64)}` as Digest };
  await expect(cache.putImage('example.com/absent:1', absent)).rejects.toMatchObject({
    code: ErrorCode.BlobUnknown,
  });
  await expect(
    cache.putImage('example.com/short:1', { ...descriptor, size: bytes.length - 1 }),
  ).rejects.toMatchObject({ code: ErrorCode.SizeMismatch });
  expect(await cache.listImages()).toEqual([]);
  await cache.putImage('example.com/present:1', descriptor);
  expect((await cache.listImages()).map((record) => record.ref)).toEqual(['example.com/present:1']);
  await cache.close();
});

it('writeBlob of a blob gc is removing writes it again rather than take the doomed file', async () => {
  const { root, bytes, descriptor } = await oneUnreferencedBlob();
  const writer = await openCache({ root });
  const collector = await openCache({ root });
  const write = whileGcRemoves(() => writer.writeBlob(bytes, descriptor));
  expect((await collector.gc()).removedBlobs).toEqual([descriptor.digest]);
  expect(await write.settled()).toMatchObject({ digest: descriptor.digest });
  expect(await collector.has(descriptor)).toBe(true);
  // Leased by the writer, it survives another gc.
  expect((await collector.gc()).removedBlobs).toEqual([]);
  await writer.close();
  await collector.close();
});

it('ingest of a blob gc is removing downloads it again rather than call it cached', async () => {
  const { root, layer, source } = await unreferenced();
  const reader = await openCache({ root });
  const collector = await openCache({ root });
  const ingest = whileGcRemoves(() => reader.ingest(layer, source));
  expect((await collector.gc()).removedBlobs).toEqual([layer.digest]);
  expect(await ingest.settled()).toMatchObject({ cached: false });
  expect(await collector.has(layer)).toBe(true);
  await reader.close();
  await collector.close();
});

it('useBlob leases: a blob found before gc read the leases stays; one gc is removing is reported gone', async () => {
  const { root, descriptor } = await oneUnreferencedBlob();
  const reader = await openCache({ root });
  const collector = await openCache({ root });
  let found: boolean | undefined;
  afterLeaseRead(2, async () => {
    found = await reader.useBlob(descriptor);
  });
  expect((await collector.gc()).removedBlobs).toEqual([]);
  expect(found).toBe(true);
  expect(await collector.has(descriptor)).toBe(true);
  await reader.close();

  const late = await openCache({ root });
  const use = whileGcRemoves(() => late.useBlob(descriptor));
  expect((await collector.gc()).removedBlobs).toEqual([descriptor.digest]);
  expect(await use.settled()).toBe(false);
  await late.close();
  await collector.close();
});

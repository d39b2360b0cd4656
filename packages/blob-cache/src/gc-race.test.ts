import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildImage, file } from '@ocipull/test-harness';
import { afterAll, expect, it, vi } from 'vitest';
import { openCache } from './index.ts';
import { LayoutSource } from './testing/fixtures/layout-source.ts';

// gc reads the leases, then index.json, then the leases again. A pull records its image and only then
// ends its lease, so what the first lease read protects is either still leased or in the index read
// after it — unless the two reads are not both used. This runs the pull's last two steps exactly in
// that window, between gc's index read and its second lease read.
const hooks = vi.hoisted(() => ({ afterIndexRead: undefined as (() => Promise<void>) | undefined }));
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

it('gc keeps what a pull records and un-leases between its index read and its second lease read', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'gc-race-'));
  roots.push(dir);
  const image = await buildImage(
    { layers: [{ entries: [file('a', { size: 30_000, seed: 9 })] }] },
    { dir: join(dir, 'image'), tag: 'race' },
  );
  const manifest = image.manifests[0]!;
  const root = join(dir, 'cache');
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

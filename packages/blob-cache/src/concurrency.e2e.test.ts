import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { MediaType } from '@ocipull/core';
import { digestOfFile } from '@ocipull/digest';
import {
  type BuiltImage,
  buildImage,
  file,
  type HarnessRegistry,
  Prng,
  startRegistry,
} from '@ocipull/test-harness';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openCache } from './index.ts';
import { spawnIngestChild } from './testing/fixtures/children.ts';

const MiB = 1024 * 1024;

let workDir: string;
let registry: HarnessRegistry;
let image: BuiltImage;
const name = 'e2e/gc';

beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'blob-cache-concurrency-'));
  image = await buildImage(
    {
      layers: [
        { entries: [file('big.bin', { size: 12 * MiB, seed: 7 })], compression: 'none' },
        { entries: [file('small.txt', 'small\n')] },
      ],
    },
    { dir: join(workDir, 'layout'), tag: 'v1' },
  );
  registry = await startRegistry({ repositories: { [name]: image.dir } });
}, 60_000);

afterAll(async () => {
  await registry?.close();
  await rm(workDir, { recursive: true, force: true });
});

describe('gc racing a pull in another process', () => {
  it('never removes what the pull is writing or has written before it records its image', async () => {
    const root = join(workDir, 'cache-gc');
    const cache = await openCache({ root });
    const manifest = image.manifests[0]!;
    const throttle = registry.faults.add({
      match: { kind: 'blob', digest: manifest.layers[0]!.descriptor.digest },
      action: { type: 'throttle', bytesPerSecond: 12 * MiB },
    });
    try {
      const child = spawnIngestChild({
        root,
        registryUrl: registry.url,
        name,
        descriptors: [
          ...manifest.layers.map((layer) => layer.descriptor),
          manifest.config.descriptor,
          manifest.descriptor,
        ],
        ref: 'example.com/gc:1',
        manifest: manifest.descriptor,
        // Blobs committed but not yet recorded: the window leases exist for.
        holdMs: 1500,
      });
      let exited = false;
      void child.done.then(() => {
        exited = true;
      });
      let passes = 0;
      const removed: string[] = [];
      while (!exited) {
        const result = await cache.gc();
        removed.push(...result.removedBlobs);
        passes += 1;
        await sleep(20);
      }
      const outcome = await child.done;
      expect(outcome.code, outcome.stderr).toBe(0);
      expect(passes).toBeGreaterThan(10);
      expect(removed).toEqual([]);
      expect(await cache.resolveImage('example.com/gc:1')).toMatchObject({
        digest: manifest.descriptor.digest,
      });
      // The child's lease is gone; index.json alone now keeps the image.
      expect((await cache.gc()).removedBlobs).toEqual([]);
      for (const descriptor of [
        manifest.descriptor,
        manifest.config.descriptor,
        ...manifest.layers.map((l) => l.descriptor),
      ]) {
        expect((await digestOfFile(cache.blobPath(descriptor.digest))).digest).toBe(descriptor.digest);
      }
    } finally {
      throttle.remove();
    }
  }, 60_000);
});

describe('SIGKILL during index.json updates', () => {
  it('index.json always parses and keeps every earlier record; the next writer takes over the stale lock', async () => {
    const root = join(workDir, 'cache-index');
    const cache = await openCache({ root, lockStaleMs: 2000 });
    const manifest = await cache.writeBlob('{"schemaVersion":2}', { mediaType: MediaType.OciManifest });
    await cache.putImage('example.com/keep:1', manifest);
    const prng = new Prng(7);
    for (let trial = 0; trial < 6; trial++) {
      const child = spawnIngestChild({
        mode: 'tag-loop',
        root,
        ref: `example.com/loop${trial}:t`,
        manifest,
        lockStaleMs: 2000,
      });
      // Let it start and rewrite index.json many times, then kill it at a random instant.
      for (;;) {
        await sleep(20);
        if ((await readFile(cache.layout.indexJson, 'utf8')).includes(`loop${trial}`)) break;
      }
      await sleep(prng.nextInt(300));
      child.process.kill('SIGKILL');
      await child.done;
      const index = JSON.parse(await readFile(cache.layout.indexJson, 'utf8'));
      expect(index.manifests.length).toBeGreaterThan(1);
      expect(await cache.resolveImage('example.com/keep:1')).toMatchObject({ digest: manifest.digest });
    }
    // The killed writer may hold the index lock: it goes stale after 2 s and is taken over.
    await cache.putImage('example.com/after:1', manifest);
    expect(await cache.resolveImage('example.com/after:1')).toMatchObject({ digest: manifest.digest });
    // Temp files of killed writers are left for gc (after TEMP_GRACE_MS); none is ever named index.json.
    const leftovers = (await readdir(root)).filter((entry) => entry.endsWith('.tmp'));
    for (const leftover of leftovers) expect(leftover).toMatch(/^\.index\.json\..*\.tmp$/);
  }, 90_000);
});

import {
  chmod,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  truncate,
  unlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Descriptor, type Digest, ErrorCode, isOciError, MediaType } from '@ocipull/core';
import { digestOf } from '@ocipull/digest';
import { type BuiltImage, buildImage, file, type ImageSpec } from '@ocipull/test-harness';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  defaultCacheRoot,
  openCache,
  REF_NAME_ANNOTATION,
  TEMP_GRACE_MS,
  type VerifyReport,
} from './index.ts';
import { cacheImage, LayoutSource } from './testing/fixtures/layout-source.ts';
import { MemorySource } from './testing/fixtures/memory-source.ts';

const roots: string[] = [];
afterAll(async () => {
  for (const root of roots) await rm(root, { recursive: true, force: true });
});

async function tempDir(prefix = 'blob-cache-'): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), prefix));
  roots.push(root);
  return root;
}

const base = {
  entries: [file('etc/os-release', 'ID=fixture\n'), file('bin/tool', { size: 40_000, seed: 1 })],
};
const shared = { entries: [file('usr/lib/libshared.so', { size: 60_000, seed: 2 })] };
const onlyA = { entries: [file('app/a', { size: 30_000, seed: 3 })] };
const onlyB = { entries: [file('app/b', { size: 20_000, seed: 4 })] };
const specA: ImageSpec = { layers: [base, shared, onlyA], config: { Cmd: ['/app/a'] } };
const specB: ImageSpec = { layers: [base, shared, onlyB], config: { Cmd: ['/app/b'] } };

let imageA: BuiltImage;
let imageB: BuiltImage;
let multi: BuiltImage;
let docker: BuiltImage;

beforeAll(async () => {
  const dir = await tempDir('blob-cache-fixtures-');
  imageA = await buildImage(specA, { dir, tag: 'a' });
  imageB = await buildImage(specB, { dir, tag: 'b' });
  multi = await buildImage(
    {
      images: [
        { ...specA, platform: { os: 'linux', architecture: 'amd64' } },
        { layers: [base, onlyB], platform: { os: 'linux', architecture: 'arm64' } },
      ],
    },
    { dir, tag: 'multi' },
  );
  docker = await buildImage(
    {
      format: 'docker',
      images: [
        { layers: [base, onlyB] },
        { layers: [shared], platform: { os: 'linux', architecture: 'arm64' } },
      ],
    },
    { dir, tag: 'docker' },
  );
});

function blobsOf(image: BuiltImage): Set<string> {
  const digests = new Set<string>([image.digest]);
  for (const manifest of image.manifests) {
    digests.add(manifest.descriptor.digest);
    digests.add(manifest.config.descriptor.digest);
    for (const layer of manifest.layers) digests.add(layer.descriptor.digest);
  }
  return digests;
}

function diffIdsOf(image: BuiltImage): Set<string> {
  return new Set(image.manifests.flatMap((manifest) => manifest.diffIds));
}

async function allBlobs(root: string): Promise<Set<string>> {
  return new Set((await readdir(join(root, 'blobs', 'sha256'))).map((hex) => `sha256:${hex}`));
}

async function allLayers(root: string): Promise<Set<string>> {
  return new Set((await readdir(join(root, 'layers', 'sha256'))).map((hex) => `sha256:${hex}`));
}

describe('openCache', () => {
  it('refuses an empty root rather than making the working directory a cache', async () => {
    await expect(openCache({ root: '' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
  });
});

describe('defaultCacheRoot', () => {
  it('prefers $OCIPULL_CACHE, then $XDG_CACHE_HOME/ocipull, then ~/.cache/ocipull', () => {
    expect(defaultCacheRoot({ OCIPULL_CACHE: '/c', XDG_CACHE_HOME: '/x', HOME: '/h' })).toBe('/c');
    expect(defaultCacheRoot({ XDG_CACHE_HOME: '/x' })).toBe('/x/ocipull');
    expect(defaultCacheRoot({ XDG_CACHE_HOME: '' })).toMatch(/\/\.cache\/ocipull$/);
    // A relative XDG_CACHE_HOME is ignored (XDG spec), an empty HOME is no relative `.cache`.
    expect(defaultCacheRoot({ XDG_CACHE_HOME: 'rel', HOME: '/h' })).toBe('/h/.cache/ocipull');
    expect(defaultCacheRoot({ HOME: '' })).toMatch(/^\/.*\/\.cache\/ocipull$/);
  });
});

describe('image records', () => {
  it('put, resolve, list and untag, written atomically into index.json', async () => {
    const cache = await openCache({ root: await tempDir() });
    const manifest = await cache.writeBlob('{"schemaVersion":2}', { mediaType: MediaType.OciManifest });
    const other = await cache.writeBlob('{"schemaVersion":2,"x":1}', { mediaType: MediaType.OciManifest });
    await cache.putImage('docker.io/library/alpine:3.20', manifest);
    await cache.putImage('127.0.0.1:5000/team/app@sha256:' + 'a'.repeat(64), other);
    await cache.putImage('docker.io/library/alpine:3.20', other);
    expect(await cache.resolveImage('docker.io/library/alpine:3.20')).toMatchObject({ digest: other.digest });
    expect(await cache.resolveImage('docker.io/library/alpine:3.19')).toBeUndefined();
    expect((await cache.listImages()).map((record) => record.ref)).toEqual([
      `127.0.0.1:5000/team/app@sha256:${'a'.repeat(64)}`,
      'docker.io/library/alpine:3.20',
    ]);
    const index = JSON.parse(await readFile(cache.layout.indexJson, 'utf8'));
    expect(index.manifests[1].annotations[REF_NAME_ANNOTATION]).toBe('docker.io/library/alpine:3.20');
    expect(await cache.untag('docker.io/library/alpine:3.20')).toBe(true);
    expect(await cache.untag('docker.io/library/alpine:3.20')).toBe(false);
    expect(await cache.listImages()).toHaveLength(1);
    expect((await readdir(cache.root)).filter((name) => name.endsWith('.tmp'))).toEqual([]);
  });

  it('concurrent putImage calls from separate cache handles all land (index lock)', async () => {
    const root = await tempDir();
    const caches = await Promise.all(Array.from({ length: 5 }, () => openCache({ root })));
    const manifest = await caches[0]!.writeBlob('{}', { mediaType: MediaType.OciManifest });
    await Promise.all(caches.map((cache, index) => cache.putImage(`example.com/app:v${index}`, manifest)));
    expect((await caches[0]!.listImages()).map((record) => record.ref).sort()).toEqual(
      ['v0', 'v1', 'v2', 'v3', 'v4'].map((tag) => `example.com/app:${tag}`),
    );
  });

  it('rejects a digest or an empty string as a reference', async () => {
    const cache = await openCache({ root: await tempDir() });
    const manifest = await cache.writeBlob('{}');
    for (const ref of ['', `sha256:${'0'.repeat(64)}`, 'a b']) {
      await expect(cache.putImage(ref, manifest)).rejects.toMatchObject({ code: ErrorCode.InvalidReference });
    }
  });
});

describe('layer trees', () => {
  it('commit renames a temp tree into place; a second commit of the same diff id is discarded', async () => {
    const cache = await openCache({ root: await tempDir() });
    const diffId = `sha256:${'c'.repeat(64)}` as Digest;
    expect(await cache.hasLayer(diffId)).toBe(false);
    const first = await cache.createLayerTemp(diffId);
    const second = await cache.createLayerTemp(diffId);
    await writeFile(join(first, 'one'), '1');
    await mkdir(join(second, 'ro'));
    await writeFile(join(second, 'ro', 'two'), '2');
    await chmod(join(second, 'ro'), 0o555);
    expect(await cache.commitLayer(diffId, first)).toEqual({
      committed: true,
      path: cache.layerPath(diffId),
    });
    expect(await cache.commitLayer(diffId, second)).toEqual({
      committed: false,
      path: cache.layerPath(diffId),
    });
    expect(await readdir(cache.layerPath(diffId))).toEqual(['one']);
    expect(await readdir(cache.layout.layerTemps)).toEqual([]);
    expect(await cache.hasLayer(diffId)).toBe(true);
    expect(await cache.removeLayer(diffId)).toBe(true);
    expect(await cache.removeLayer(diffId)).toBe(false);
    expect(await cache.hasLayer(diffId)).toBe(false);
    expect(await readdir(cache.layout.layerTemps)).toEqual([]);
    // A directory that createLayerTemp did not make is neither moved in nor removed.
    const mine = join(await tempDir(), 'my-project');
    await mkdir(mine);
    await writeFile(join(mine, 'keep'), 'k');
    for (const elsewhere of [mine, cache.layout.layerTemps, join(cache.layout.layerTemps, '..', '..')]) {
      await expect(cache.commitLayer(diffId, elsewhere)).rejects.toMatchObject({
        code: 'ERR_INVALID_ARGUMENT',
      });
    }
    expect(await readdir(mine)).toEqual(['keep']);
    expect(await cache.hasLayer(diffId)).toBe(false);
  });
});

describe('gc', () => {
  it('keeps exactly the reachable set of a cache with shared layers, and follows untagging', async () => {
    const root = await tempDir();
    const writer = await openCache({ root });
    await cacheImage(writer, imageA, 'example.com/a:1');
    await cacheImage(writer, imageB, 'example.com/b:1');
    await cacheImage(writer, multi, 'example.com/multi:1');
    await cacheImage(writer, docker, 'example.com/docker:1');
    // Garbage: an unreferenced blob, an orphan layer tree, an abandoned part, a stale temp file.
    const stray = await writer.writeBlob('stray bytes');
    const orphan = `sha256:${'d'.repeat(64)}` as Digest;
    await cacheImage(writer, imageA, 'example.com/a:1'); // idempotent re-cache
    await writer.commitLayer(orphan, await writer.createLayerTemp(orphan));
    await writeFile(join(writer.layout.ingest, `${'e'.repeat(64)}.part`), 'partial');
    await writeFile(join(writer.layout.ingest, `${'e'.repeat(64)}.json`), '{}');
    const staleTemp = join(root, '.index.json.1-abc.tmp');
    await writeFile(staleTemp, '{');
    const old = (Date.now() - TEMP_GRACE_MS - 60_000) / 1000;
    await utimes(staleTemp, old, old);
    await writer.close(); // the writer's lease ends: only index.json protects now

    const cache = await openCache({ root });
    const reachable = new Set([
      ...blobsOf(imageA),
      ...blobsOf(imageB),
      ...blobsOf(multi),
      ...blobsOf(docker),
    ]);
    const dry = await cache.gc({ dryRun: true });
    expect(dry.removedBlobs).toEqual([stray.digest]);
    expect(await cache.has(stray)).toBe(true);
    const result = await cache.gc();
    expect(result.removedBlobs).toEqual([stray.digest]);
    expect(result.removedLayers).toEqual([orphan]);
    expect(result.removedPartials).toBe(2);
    expect(await allBlobs(root)).toEqual(reachable);
    expect(await allLayers(root)).toEqual(
      new Set([...diffIdsOf(imageA), ...diffIdsOf(imageB), ...diffIdsOf(multi), ...diffIdsOf(docker)]),
    );
    expect(await readdir(cache.layout.ingest)).toEqual([]);
    // A Docker manifest list keeps its schema 2 manifests, configs and layers too; now drop it.
    await cache.untag('example.com/docker:1');
    await cache.gc();
    expect(await allBlobs(root)).toEqual(
      new Set([...blobsOf(imageA), ...blobsOf(imageB), ...blobsOf(multi)]),
    );

    // Untag b: its unique layer, config and manifest go; what a and multi share stays.
    await cache.remove('example.com/b:1');
    const second = await cache.gc();
    expect(await allBlobs(root)).toEqual(new Set([...blobsOf(imageA), ...blobsOf(multi)]));
    expect(await allLayers(root)).toEqual(new Set([...diffIdsOf(imageA), ...diffIdsOf(multi)]));
    expect(second.removedBlobs.sort()).toEqual(
      [...blobsOf(imageB)]
        .filter((digest) => !blobsOf(imageA).has(digest) && !blobsOf(multi).has(digest))
        .sort(),
    );
    expect(second.freedBytes).toBeGreaterThan(0);

    await cache.untag('example.com/a:1');
    await cache.untag('example.com/multi:1');
    await cache.gc();
    expect(await allBlobs(root)).toEqual(new Set());
    expect(await allLayers(root)).toEqual(new Set());
  });

  it('never removes what a live lease protects (a pull between writing blobs and putImage)', async () => {
    const root = await tempDir();
    const pulling = await openCache({ root });
    const source = new LayoutSource(imageA.dir);
    const layer = imageA.manifests[0]!.layers[2]!;
    await pulling.ingest(layer.descriptor, source);
    const temp = await pulling.createLayerTemp(layer.diffId);
    const other = await openCache({ root });
    const result = await other.gc();
    expect(result.removedBlobs).toEqual([]);
    expect(await pulling.has(layer.descriptor)).toBe(true);
    expect((await stat(temp)).isDirectory()).toBe(true);
    await pulling.commitLayer(layer.diffId, temp);
    expect((await other.gc()).removedLayers).toEqual([]);

    await pulling.close();
    const after = await other.gc();
    expect(after.removedBlobs).toEqual([layer.descriptor.digest]);
    expect(after.removedLayers).toEqual([layer.diffId]);
  });

  it('removes the holder lock a process killed before it wrote its lease left, once it is stale', async () => {
    const root = await tempDir();
    const cache = await openCache({ root, lockStaleMs: 2000 });
    const leases = cache.layout.leases;
    // Killed between taking its lease's lock and creating the lease file: a lock dir, no lease.
    await mkdir(join(leases, '1-dead.holder.lock'));
    const old = new Date(Date.now() - 60_000);
    await utimes(join(leases, '1-dead.holder.lock'), old, old);
    // One that is being set up right now (fresh lock, no lease file yet) must stay.
    await mkdir(join(leases, '2-live.holder.lock'));
    await cache.gc();
    expect((await readdir(leases)).sort()).toEqual(['2-live.holder.lock']);
    await cache.close();
  });

  it('skips a part whose download is in progress (its lock is held)', async () => {
    const root = await tempDir();
    const cache = await openCache({ root });
    const bytes = Buffer.alloc(8 * 1024 * 1024, 1);
    const descriptor: Descriptor = {
      mediaType: 'application/octet-stream',
      digest: await digestOf(bytes),
      size: bytes.length,
    };
    const source = new MemorySource();
    source.add(bytes, descriptor.digest);
    const stream = await cache.fetchThrough(descriptor, source);
    stream.pause();
    stream.read(0);
    await new Promise((resolve) => setTimeout(resolve, 50));
    const other = await openCache({ root });
    expect((await other.gc()).removedPartials).toBe(0);
    expect(await readdir(cache.layout.ingest)).toContain(`${descriptor.digest.slice(7)}.part`);
    stream.resume();
    await new Promise((resolve) => stream.on('end', resolve));
    expect(await cache.has(descriptor)).toBe(true);
  });
});

describe('gc with a size bound', () => {
  it('evicts least recently used images until blobs fit, keeping what the rest share', async () => {
    const root = await tempDir();
    const writer = await openCache({ root });
    await cacheImage(writer, imageA, 'example.com/a:1');
    await cacheImage(writer, imageB, 'example.com/b:1');
    await cacheImage(writer, multi, 'example.com/multi:1');
    await new Promise((resolve) => setTimeout(resolve, 5));
    await writer.touchImage('example.com/a:1'); // a is now the most recently used
    await writer.close();
    const cache = await openCache({ root });
    const bytesOf = async (digests: Set<string>) => {
      let total = 0;
      for (const digest of digests) total += (await cache.stat(digest))?.size ?? 0;
      return total;
    };
    const budget = await bytesOf(blobsOf(imageA));
    const result = await cache.gc({ maxBlobBytes: budget });
    expect(result.evictedImages).toEqual(['example.com/b:1', 'example.com/multi:1']);
    expect((await cache.listImages()).map((record) => record.ref)).toEqual(['example.com/a:1']);
    expect(await allBlobs(root)).toEqual(blobsOf(imageA));
    expect(await allLayers(root)).toEqual(diffIdsOf(imageA));
    expect((await cache.gc({ maxBlobBytes: budget })).evictedImages).toEqual([]);
  });
});

describe('verify and usage', () => {
  it('finds a rotted blob and quarantines it', async () => {
    const root = await tempDir();
    const cache = await openCache({ root });
    await cacheImage(cache, imageA, 'example.com/a:1');
    const layer = imageA.manifests[0]!.layers[1]!;
    const path = cache.blobPath(layer.descriptor.digest);
    await chmod(path, 0o644);
    const bytes = await readFile(path);
    bytes[100] = bytes[100]! ^ 0xff;
    await writeFile(path, bytes);
    const clean = await cache.verify({ digests: [imageA.manifests[0]!.layers[0]!.descriptor.digest] });
    expect(clean).toMatchObject({ checked: 1, corrupt: [], missing: [] });
    const report = await cache.verify();
    expect(report.checked).toBe(blobsOf(imageA).size);
    expect(report.corrupt).toHaveLength(1);
    expect(report.corrupt[0]).toMatchObject({ digest: layer.descriptor.digest, size: layer.descriptor.size });
    expect(await cache.has(layer.descriptor)).toBe(false);
    expect(await readdir(cache.layout.quarantine)).toHaveLength(1);
    const missing = await cache.verify({ digests: [layer.descriptor.digest] });
    expect(missing.missing).toEqual([layer.descriptor.digest]);
    const config = imageA.manifests[0]!.config.descriptor;
    await chmod(cache.blobPath(config.digest), 0o644);
    await writeFile(cache.blobPath(config.digest), '{}');
    const removed = await cache.verify({ quarantine: false });
    expect(removed.corrupt.map((bad) => bad.digest)).toEqual([config.digest]);
    expect(removed.corrupt[0]!.quarantinedTo).toBeUndefined();
    expect(await cache.has(config)).toBe(false);
    expect(await readdir(cache.layout.quarantine)).toHaveLength(1);
  });

  it('names the images whose blobs are gone or were just quarantined, on this verify and the next', async () => {
    const root = await tempDir();
    const cache = await openCache({ root });
    await cacheImage(cache, imageA, 'example.com/a:1');
    await cacheImage(cache, multi, 'example.com/multi:1');
    await cacheImage(cache, imageB, 'example.com/b:1');
    await cache.close();
    const [, , onlyALayer] = imageA.manifests[0]!.layers;
    // onlyA is in a:1 and multi's amd64 manifest, onlyB in b:1 and multi's arm64 manifest.
    const onlyBLayer = imageB.manifests[0]!.layers[2]!.descriptor;
    await unlink(cache.blobPath(onlyALayer!.descriptor.digest));
    await chmod(cache.blobPath(onlyBLayer.digest), 0o644);
    await truncate(cache.blobPath(onlyBLayer.digest), 1000);
    const expected = [
      { ref: 'example.com/a:1', digest: imageA.digest, missing: [onlyALayer!.descriptor.digest] },
      { ref: 'example.com/b:1', digest: imageB.digest, missing: [onlyBLayer.digest] },
      {
        ref: 'example.com/multi:1',
        digest: multi.digest,
        missing: [onlyALayer!.descriptor.digest, onlyBLayer.digest],
      },
    ];
    const byRef = (report: VerifyReport) =>
      [...report.incompleteImages].sort((a, b) => (a.ref ?? '').localeCompare(b.ref ?? ''));
    const first = await cache.verify();
    expect(first.corrupt.map((bad) => bad.digest)).toEqual([onlyBLayer.digest]);
    expect(byRef(first)).toEqual(expected);
    expect(first.indexCorrupt).toBeUndefined();
    const second = await cache.verify();
    expect(second.corrupt).toEqual([]);
    expect(byRef(second)).toEqual(expected);
    // The report is what `verify --json` prints.
    expect(JSON.parse(JSON.stringify(second)).incompleteImages).toHaveLength(3);
    // Only the blobs asked for: no image is checked.
    const some = await cache.verify({ digests: [imageA.manifests[0]!.layers[0]!.descriptor.digest] });
    expect(some).toMatchObject({ checked: 1, corrupt: [], missing: [], incompleteImages: [] });
  });

  it('takes an index with one cached platform as whole, and one with none (or a broken one) as not', async () => {
    const root = await tempDir();
    const cache = await openCache({ root });
    await cacheImage(cache, multi, 'example.com/multi:1');
    const [amd64, arm64] = multi.manifests;
    // A pull takes one platform of an index: the other manifests are not needed.
    await unlink(cache.blobPath(arm64!.descriptor.digest));
    expect((await cache.verify()).incompleteImages).toEqual([]);
    // The cached platform must be whole.
    await unlink(cache.blobPath(amd64!.config.descriptor.digest));
    expect((await cache.verify()).incompleteImages).toEqual([
      { ref: 'example.com/multi:1', digest: multi.digest, missing: [amd64!.config.descriptor.digest] },
    ]);
    // No platform left: every manifest is missing.
    await unlink(cache.blobPath(amd64!.descriptor.digest));
    expect((await cache.verify()).incompleteImages).toEqual([
      {
        ref: 'example.com/multi:1',
        digest: multi.digest,
        missing: [amd64!.descriptor.digest, arm64!.descriptor.digest],
      },
    ]);
    // And the index itself.
    await unlink(cache.blobPath(multi.digest));
    expect((await cache.verify()).incompleteImages).toEqual([
      { ref: 'example.com/multi:1', digest: multi.digest, missing: [multi.digest] },
    ]);
    await cache.close();
  });

  it('reports a corrupt index.json, or an entry of it without a digest, rather than pass', async () => {
    const root = await tempDir();
    const cache = await openCache({ root });
    await cacheImage(cache, imageA, 'example.com/a:1');
    const good = await readFile(cache.layout.indexJson, 'utf8');
    await writeFile(cache.layout.indexJson, '{');
    const report = await cache.verify();
    expect(report.checked).toBe(blobsOf(imageA).size);
    expect(report.indexCorrupt).toMatch(/index\.json is not valid JSON/);
    expect(report.incompleteImages).toEqual([]);
    const index = JSON.parse(good);
    index.manifests.push({ mediaType: MediaType.OciManifest, digest: 'sha256:nope', size: 2 });
    await writeFile(cache.layout.indexJson, JSON.stringify(index));
    expect((await cache.verify()).indexCorrupt).toMatch(/entry 2 has no valid digest/);
    await writeFile(cache.layout.indexJson, good);
    expect((await cache.verify()).indexCorrupt).toBeUndefined();
    await cache.close();
  });

  it('reports bytes per image, shared and unique', async () => {
    const root = await tempDir();
    const cache = await openCache({ root });
    await cacheImage(cache, imageA, 'example.com/a:1');
    await cacheImage(cache, imageB, 'example.com/b:1');
    await cacheImage(cache, imageB, 'example.com/b:latest');
    const stray = await cache.writeBlob('x'.repeat(1000));
    const sizeOf = (image: BuiltImage) => {
      let total = 0;
      const seen = new Set<string>();
      const add = (descriptor: Descriptor) => {
        if (seen.has(descriptor.digest)) return;
        seen.add(descriptor.digest);
        total += descriptor.size;
      };
      add(image.descriptor);
      for (const manifest of image.manifests) {
        add(manifest.config.descriptor);
        for (const layer of manifest.layers) add(layer.descriptor);
      }
      return total;
    };
    const sharedBytes = imageA.manifests[0]!.layers.slice(0, 2).reduce(
      (sum, layer) => sum + layer.descriptor.size,
      0,
    );
    const report = await cache.usage();
    const a = report.images.find((image) => image.ref === 'example.com/a:1')!;
    const b = report.images.find((image) => image.ref === 'example.com/b:latest')!;
    expect(a.bytes).toBe(sizeOf(imageA));
    expect(a.sharedBytes).toBe(sharedBytes);
    expect(a.uniqueBytes).toBe(sizeOf(imageA) - sharedBytes);
    expect(b.sharedBytes).toBe(sharedBytes);
    expect(report.sharedBytes).toBe(sharedBytes);
    expect(report.unreferencedBytes).toBe(stray.size);
    expect(report.blobBytes).toBe(sizeOf(imageA) + sizeOf(imageB) - sharedBytes + stray.size);
  });
});

describe('a new layout after a power loss', () => {
  it('an emptied oci-layout is rewritten on open; an emptied or zero-filled index.json reads as empty', async () => {
    const root = await tempDir();
    const first = await openCache({ root });
    await first.close();
    // What unsynced init files can look like after a power loss: no data, or zero blocks.
    await writeFile(join(root, 'oci-layout'), '');
    await writeFile(join(root, 'index.json'), Buffer.alloc(64));
    const cache = await openCache({ root });
    expect(await readFile(join(root, 'oci-layout'), 'utf8')).toBe('{"imageLayoutVersion":"1.0.0"}');
    expect(await cache.listImages()).toEqual([]);
    const manifest = await cache.writeBlob('{}', { mediaType: MediaType.OciManifest });
    await cache.putImage('example.com/app:v1', manifest);
    expect((await cache.listImages()).map((record) => record.ref)).toEqual(['example.com/app:v1']);
    await writeFile(join(root, 'index.json'), '');
    expect(await cache.listImages()).toEqual([]);
    await cache.close();
  });
});

describe('errors', () => {
  it('a corrupt index.json is reported as ERR_CACHE_CORRUPT', async () => {
    const root = await tempDir();
    const cache = await openCache({ root });
    await writeFile(cache.layout.indexJson, '{not json');
    try {
      await cache.listImages();
      expect.unreachable();
    } catch (error) {
      expect(isOciError(error, ErrorCode.CacheCorrupt)).toBe(true);
    }
  });
});

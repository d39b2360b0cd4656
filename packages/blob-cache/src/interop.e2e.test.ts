import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  type BuiltImage,
  buildImage,
  DEFAULT_PLATFORMS,
  file,
  type HarnessRegistry,
  requireTool,
  skopeo,
  startRegistry,
  symlink,
} from '@ocipull/test-harness';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BlobCache, openCache } from './index.ts';
import { HttpBlobSource } from './testing/fixtures/http-source.ts';
import { cacheImage } from './testing/fixtures/layout-source.ts';

const run = promisify(execFile);

let workDir: string;
let registry: HarnessRegistry;
let cache: BlobCache;
let single: BuiltImage;
let multi: BuiltImage;

/** References with a registry port, nested repositories, a tag, and a digest: the ':' and '/' cases. */
const tagged = '127.0.0.1:5000/team/app:1.0';
const dockerHub = 'docker.io/library/alpine:3.20';
let byDigest: string;

beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'blob-cache-interop-'));
  single = await buildImage(
    {
      layers: [
        { entries: [file('etc/os-release', 'ID=interop\n'), symlink('etc/alias', 'os-release')] },
        { entries: [file('data/blob.bin', { size: 200_000, seed: 5 })], compression: 'none' },
        { entries: [file('app/run.sh', '#!/bin/sh\necho hi\n', { mode: 0o755 })] },
      ],
      config: { Cmd: ['/app/run.sh'] },
    },
    { dir: join(workDir, 'layout-single'), tag: 'v1' },
  );
  multi = await buildImage(
    {
      images: DEFAULT_PLATFORMS.map((platform) => ({
        platform,
        layers: [{ entries: [file('arch', platform.architecture)] }],
      })),
    },
    { dir: join(workDir, 'layout-multi'), tag: 'v1' },
  );
  registry = await startRegistry({
    repositories: { 'interop/single': single.dir, 'interop/multi': multi.dir },
  });
  cache = await openCache({ root: join(workDir, 'cache') });
  // Blobs come over HTTP from the registry, as in a pull; manifests and configs via writeBlob.
  const singleSource = new HttpBlobSource(registry.url, 'interop/single');
  await cacheImage(cache, single, tagged, singleSource);
  await cacheImage(cache, single, dockerHub, singleSource);
  byDigest = `docker.io/library/alpine@${single.digest}`;
  await cacheImage(cache, single, byDigest, singleSource);
  await cacheImage(
    cache,
    multi,
    'ghcr.io/org/multi:latest',
    new HttpBlobSource(registry.url, 'interop/multi'),
  );
  await cache.close();
}, 120_000);

afterAll(async () => {
  await registry?.close();
  await rm(workDir, { recursive: true, force: true });
});

describe('the cache is an OCI layout that skopeo and umoci read', () => {
  for (const ref of [tagged, dockerHub, 'BY_DIGEST']) {
    it(`skopeo copy oci:<cache>:${ref} dir:…`, async () => {
      const name = ref === 'BY_DIGEST' ? byDigest : ref;
      const target = await mkdtemp(join(workDir, 'dir-'));
      await skopeo(['copy', `oci:${cache.root}:${name}`, `dir:${target}`]);
      const files = await readdir(target);
      expect(files).toContain('manifest.json');
      for (const layer of single.manifests[0]!.layers)
        expect(files).toContain(layer.descriptor.digest.slice(7));
      expect(JSON.parse(await readFile(join(target, 'manifest.json'), 'utf8')).config.digest).toBe(
        single.manifests[0]!.config.descriptor.digest,
      );
    });

    it(`umoci unpack --image <cache>:${ref}`, async () => {
      const name = ref === 'BY_DIGEST' ? byDigest : ref;
      const umoci = await requireTool('umoci');
      const bundle = join(await mkdtemp(join(workDir, 'bundle-')), 'bundle');
      await run(umoci, ['unpack', '--image', `${cache.root}:${name}`, bundle]);
      const rootfs = join(bundle, 'rootfs');
      expect(await readFile(join(rootfs, 'etc', 'os-release'), 'utf8')).toBe('ID=interop\n');
      expect(await readFile(join(rootfs, 'app', 'run.sh'), 'utf8')).toBe('#!/bin/sh\necho hi\n');
      expect((await readFile(join(rootfs, 'data', 'blob.bin'))).length).toBe(200_000);
      const config = JSON.parse(await readFile(join(bundle, 'config.json'), 'utf8'));
      expect(config.process.args).toEqual(['/app/run.sh']);
    });
  }

  it('skopeo copies a multi-platform index from the cache with --all', async () => {
    const target = await mkdtemp(join(workDir, 'dir-'));
    await skopeo(['copy', '--all', `oci:${cache.root}:ghcr.io/org/multi:latest`, `dir:${target}`]);
    const manifest = JSON.parse(await readFile(join(target, 'manifest.json'), 'utf8'));
    expect(manifest.manifests).toHaveLength(DEFAULT_PLATFORMS.length);
  });

  it('umoci lists every ref name of the cache', async () => {
    const umoci = await requireTool('umoci');
    const { stdout } = await run(umoci, ['ls', '--layout', cache.root]);
    expect(stdout.trim().split('\n').sort()).toEqual(
      [byDigest, dockerHub, 'ghcr.io/org/multi:latest', tagged].sort(),
    );
  });
});

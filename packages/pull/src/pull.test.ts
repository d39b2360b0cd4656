import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openCache } from '@ocipull/blob-cache';
import { type Descriptor, type Digest, ErrorCode, isOciError, MediaType } from '@ocipull/core';
import type { ProgressEvent } from '@ocipull/progress';
import {
  buildImage,
  charDevice,
  dir,
  file,
  type HarnessRegistry,
  hardlink,
  startRegistry,
  symlink,
  whiteout,
} from '@ocipull/test-harness';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { inspectImage, pull, SMALL_LAYER_BYTES, unpackImage } from './index.ts';

let work: string;
let registry: HarnessRegistry;
let cacheRoot: string;

const base = {
  entries: [dir('etc'), file('etc/os-release', 'ID=fixture\n'), file('etc/motd', 'hello\n'), dir('bin')],
  compression: 'gzip' as const,
};
const top = {
  entries: [whiteout('etc/motd'), file('bin/app', 'binary', { mode: 0o755 }), symlink('bin/sh', '/bin/app')],
  compression: 'zstd' as const,
};
const runtime = {
  Env: ['PATH=/bin'],
  Cmd: ['/bin/app'],
  User: '1000:1000',
  WorkingDir: '/srv',
  Labels: { a: 'b' },
};

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'ocipull-pull-'));
  await buildImage({ layers: [base, top], config: runtime }, { dir: join(work, 'oci'), tag: 'v1' });
  await buildImage(
    { format: 'docker', layers: [base, top], config: runtime },
    { dir: join(work, 'docker'), tag: 'v1' },
  );
  await buildImage(
    {
      attestations: true,
      images: [
        { layers: [base], platform: { os: 'linux', architecture: 'amd64' } },
        {
          layers: [{ entries: [file('arch', 'arm64\n')] }],
          platform: { os: 'linux', architecture: 'arm64', variant: 'v8' },
        },
      ],
    },
    { dir: join(work, 'multi'), tag: 'v1' },
  );
  registry = await startRegistry({
    repositories: {
      'test/oci': join(work, 'oci'),
      'test/docker': join(work, 'docker'),
      'test/multi': join(work, 'multi'),
    },
  });
});

afterAll(async () => {
  await registry?.close();
  await rm(work, { recursive: true, force: true });
});

beforeEach(async () => {
  cacheRoot = await mkdtemp(join(work, 'cache-'));
  registry.clearRequests();
  registry.faults.clear();
});

const ref = (name: string) => `${registry.host}/${name}:v1`;

/** Serves `layout` as `repository` and pulls it with per-layer trees and a rootfs. */
/** Every path below `root` with its type, mode, owner, content or link target, file mtime and link count. */
async function treeListing(root: string): Promise<Record<string, string>> {
  const listing: Record<string, string> = {};
  const walk = async (relative: string): Promise<void> => {
    for (const name of (await readdir(join(root, relative))).sort()) {
      const path = relative === '' ? name : `${relative}/${name}`;
      const full = join(root, path);
      const info = await lstat(full);
      const kind = info.isDirectory() ? 'dir' : info.isSymbolicLink() ? 'link' : 'file';
      let detail = `${kind} ${(info.mode & 0o7777).toString(8)} ${info.uid}:${info.gid}`;
      if (info.isSymbolicLink()) detail += ` -> ${await readlink(full)}`;
      else if (info.isFile()) {
        const hash = createHash('sha256')
          .update(await readFile(full))
          .digest('hex');
        detail += ` ${hash} ${info.mtimeMs} nlink=${info.nlink}`;
      }
      listing[path] = detail;
      if (info.isDirectory()) await walk(path);
    }
  };
  await walk('');
  return listing;
}

async function pullTreesAndRootfs(repository: string, layout: string) {
  registry.addRepository(repository, layout);
  const rootfs = join(cacheRoot, `${repository.replace('/', '-')}-rootfs`);
  const result = await pull(ref(repository), {
    cache: cacheRoot,
    platform: 'linux/amd64',
    rootfs,
    layers: true,
  });
  return { result, rootfs };
}

describe('pull', () => {
  it('pulls an OCI image into the cache, extracts each layer and flattens a rootfs', async () => {
    const events: ProgressEvent[] = [];
    const rootfs = join(cacheRoot, '..', `rootfs-${Date.now()}`);
    const result = await pull(ref('test/oci'), {
      cache: cacheRoot,
      rootfs,
      platform: 'linux/amd64',
      onProgress: (event) => events.push(event),
    });
    expect(result.reference).toBe(`${registry.host}/test/oci:v1`);
    expect(result.summary).toMatchObject({
      env: ['PATH=/bin'],
      cmd: ['/bin/app'],
      user: '1000:1000',
      workingDir: '/srv',
    });
    expect(result.summary.labels).toEqual({ a: 'b' });
    expect(result.layers).toHaveLength(2);
    // Per-layer trees: the lower one has the file, the upper one keeps the whiteout in overlay form.
    expect(await readFile(join(result.layers[0]!.path!, 'etc/os-release'), 'utf8')).toBe('ID=fixture\n');
    expect(await readFile(join(result.layers[1]!.path!, 'bin/app'), 'utf8')).toBe('binary');
    // The flattened rootfs applies the whiteout and keeps the absolute symlink verbatim.
    expect(existsSync(join(rootfs, 'etc/motd'))).toBe(false);
    expect(await readFile(join(rootfs, 'etc/os-release'), 'utf8')).toBe('ID=fixture\n');
    expect(await readlink(join(rootfs, 'bin/sh'))).toBe('/bin/app');
    // Every blob was downloaded exactly once.
    const blobGets = registry.requests.filter((r) => r.kind === 'blob' && r.method === 'GET');
    expect(blobGets.map((r) => r.digest).sort()).toEqual(
      [result.manifest.config.digest, ...result.manifest.layers.map((l) => l.digest)].sort(),
    );
    // The image is recorded and readable offline.
    const cache = await openCache({ root: cacheRoot });
    expect((await cache.resolveImage(result.reference))?.digest).toBe(result.manifestDigest);
    await cache.close();
    const types = events.map((event) => event.type);
    expect(types[0]).toBe('resolve-start');
    expect(types).toContain('resolve-end');
    expect(types.filter((t) => t === 'layer-download-end')).toHaveLength(2);
    expect(types.filter((t) => t === 'layer-extract-end')).toHaveLength(2);
    expect(types.at(-1)).toBe('pull-end');
  });

  it('extracts a layer whose hardlink targets a file of a lower layer (copy-up)', async () => {
    const layout = join(work, 'xlink');
    await buildImage(
      {
        layers: [
          { entries: [dir('lib'), file('lib/libc.so', 'elf', { mode: 0o755 })] },
          { entries: [file('other', 'x')] },
          { entries: [hardlink('lib/libc.so.6', 'lib/libc.so')] },
        ],
      },
      { dir: layout, tag: 'v1' },
    );
    const { result, rootfs } = await pullTreesAndRootfs('test/xlink', layout);
    const top = result.layers[2]!.path!;
    expect((await stat(join(top, 'lib/libc.so.6'))).ino).toBe((await stat(join(top, 'lib/libc.so'))).ino);
    expect(await readFile(join(top, 'lib/libc.so.6'), 'utf8')).toBe('elf');
    expect((await stat(join(rootfs, 'lib/libc.so.6'))).ino).toBe(
      (await stat(join(rootfs, 'lib/libc.so'))).ino,
    );
  });

  it('pulls layers whose names are not UTF-8 into per-layer trees and a rootfs, byte for byte', async () => {
    // GNU tar keeps such names as bytes (a latin1 "caf\xe9" directory and file); tree specs cannot.
    const source = join(work, 'raw-source');
    const dirName = Buffer.from('d\xff', 'latin1');
    const fileName = Buffer.from('caf\xe9', 'latin1');
    const at = (root: string, ...names: Buffer[]) =>
      Buffer.concat([Buffer.from(root), ...names.flatMap((name) => [Buffer.from('/'), name])]);
    await mkdir(at(source, dirName), { recursive: true });
    await writeFile(at(source, dirName, fileName), 'latin1 bytes');
    await writeFile(join(source, 'café'), 'utf-8 name');
    const tar = execFileSync('tar', ['--format=posix', '-C', source, '-cf', '-', '.'], {
      env: { ...process.env, LC_ALL: 'C' },
    });
    const layout = join(work, 'raw-names');
    await buildImage({ layers: [{ tar }] }, { dir: layout, tag: 'v1' });
    const { result, rootfs } = await pullTreesAndRootfs('test/raw-names', layout);
    for (const root of [result.layers[0]!.path!, rootfs]) {
      expect(await readFile(at(root, dirName, fileName), 'utf8')).toBe('latin1 bytes');
      expect(await readFile(join(root, 'café'), 'utf8')).toBe('utf-8 name');
      const names = await readdir(Buffer.from(root), { encoding: 'buffer' });
      const hex = (list: Buffer[]) => list.map((name) => name.toString('hex')).sort();
      expect(hex(names)).toEqual(hex([Buffer.from('café'), dirName]));
    }
  });

  it('pulls an image that lists the same layer blob twice (old Docker builds repeat empty layers)', async () => {
    const layout = join(work, 'repeated');
    const again = { entries: [file('a', 'one\n')] };
    await buildImage(
      {
        layers: [
          again,
          { entries: [whiteout('a'), file('b', 'two\n')] },
          { entries: [] },
          again,
          { entries: [] },
        ],
      },
      { dir: layout, tag: 'v1' },
    );
    registry.addRepository('test/repeated', layout);
    for (const layers of [true, false]) {
      registry.clearRequests();
      const cache = join(cacheRoot, `repeated-${layers}`);
      const rootfs = join(cacheRoot, `repeated-rootfs-${layers}`);
      const result = await pull(ref('test/repeated'), { cache, platform: 'linux/amd64', rootfs, layers });
      const digests = result.manifest.layers.map((layer) => layer.digest);
      expect(new Set(digests).size).toBe(3);
      expect((await readdir(rootfs)).sort()).toEqual(['a', 'b']);
      expect(await readFile(join(rootfs, 'a'), 'utf8')).toBe('one\n');
      if (layers) expect(result.layers[0]!.path).toBe(result.layers[3]!.path);
      // Each distinct blob crossed the network once.
      for (const digest of new Set(digests)) {
        const gets = registry.requests.filter(
          (r) => r.kind === 'blob' && r.digest === digest && r.method === 'GET',
        );
        expect(gets.length, digest).toBe(1);
      }
      const cached = await openCache({ root: cache });
      try {
        expect((await cached.verify()).corrupt).toEqual([]);
      } finally {
        await cached.close();
      }
    }
  });

  it('runs up to four small layers per concurrency slot, and big ones one per slot', async () => {
    const layout = join(work, 'many');
    const small = (index: number) => ({
      entries: [file(`s${index}`, randomBytes(200_000))],
      compression: 'none' as const,
    });
    await buildImage(
      { layers: Array.from({ length: 8 }, (_, index) => small(index)) },
      { dir: layout, tag: 'small' },
    );
    const big = (index: number) => ({
      entries: [file(`b${index}`, randomBytes(SMALL_LAYER_BYTES + 1024))],
      compression: 'none' as const,
    });
    await buildImage(
      { layers: Array.from({ length: 4 }, (_, index) => big(index)) },
      { dir: layout, tag: 'big' },
    );
    registry.addRepository('test/many', layout);
    // Slow blobs keep every started download open long enough to see how many run at once.
    registry.faults.add({ match: { kind: 'blob' }, action: { type: 'throttle', bytesPerSecond: 2_000_000 } });
    const peak = async (tag: string) => {
      let open = 0;
      let most = 0;
      await pull(`${registry.host}/test/many:${tag}`, {
        cache: join(cacheRoot, `many-${tag}`),
        platform: 'linux/amd64',
        layers: true,
        concurrency: 2,
        onProgress: (event: ProgressEvent) => {
          if (event.type === 'layer-download-start') most = Math.max(most, ++open);
          if (event.type === 'layer-download-end') open--;
        },
      });
      return most;
    };
    // concurrency 2 is room for eight small layers (the client's six connections per host serve them).
    expect(await peak('small')).toBeGreaterThan(4);
    expect(await peak('big')).toBe(2);
  });

  it('extracts upper layers into staging trees (extractAhead) while a slow network leaves time, with the same rootfs', async () => {
    const layout = join(work, 'staged');
    const layer = (index: number) => ({
      entries: [
        dir('usr'),
        dir('usr/lib', { mode: 0o755, mtime: new Date(Date.UTC(2021, 0, 1 + index)) }),
        file(`usr/lib/lib${index}.so`, randomBytes(150_000)),
        hardlink(`usr/lib/link${index}.so`, `usr/lib/lib${index}.so`),
        file(`etc/conf${index}`, `layer ${index}`),
        ...(index > 0 ? [whiteout(`etc/conf${index - 1}`)] : [symlink('lib', 'usr/lib')]),
        ...(index === 3 ? [dir('lib'), file('lib/own', 'replaces the lower symlink')] : []),
      ],
      compression: 'gzip' as const,
    });
    await buildImage({ layers: [0, 1, 2, 3, 4].map(layer) }, { dir: layout, tag: 'v1' });
    registry.addRepository('test/staged', layout);
    const reference = `${registry.host}/test/staged:v1`;
    const fast = join(work, `staged-fast-${Date.now()}`);
    const options = { platform: 'linux/amd64', layers: false };
    await pull(reference, { ...options, cache: join(cacheRoot, 'fast'), rootfs: fast });

    // ~0.5 s per layer: the event loop mostly waits, so with `auto` the layers above the bottom one
    // stage; with `always` they stage from the start, with `never` not at all.
    const fault = registry.faults.add({
      match: { kind: 'blob' },
      action: { type: 'throttle', bytesPerSecond: 300_000 },
    });
    const staged = async (extractAhead: 'auto' | 'always' | 'never') => {
      const parent = await mkdtemp(join(work, `staged-${extractAhead}-`));
      const rootfs = join(parent, 'rootfs');
      const seen = new Set<string>();
      const watch = setInterval(() => {
        readdir(parent).then(
          (names) => {
            for (const name of names) if (name.includes('.stage-')) seen.add(name);
          },
          () => {},
        );
      }, 10);
      try {
        await pull(reference, { ...options, extractAhead, cache: join(cacheRoot, extractAhead), rootfs });
      } finally {
        clearInterval(watch);
      }
      expect(await readdir(parent)).toEqual(['rootfs']);
      expect(await treeListing(rootfs)).toEqual(await treeListing(fast));
      expect(await readFile(join(rootfs, 'lib/own'), 'utf8')).toBe('replaces the lower symlink');
      expect(existsSync(join(rootfs, 'etc/conf3'))).toBe(false);
      expect((await stat(join(rootfs, 'usr/lib/link2.so'))).nlink).toBe(2);
      return seen.size;
    };
    try {
      expect(await staged('always')).toBeGreaterThan(0);
      expect(await staged('auto')).toBeGreaterThan(0);
      expect(await staged('never')).toBe(0);
    } finally {
      fault.remove();
    }
    await expect(
      pull(reference, { ...options, extractAhead: 'sometimes' as 'auto', cache: join(cacheRoot, 'bad') }),
    ).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
  }, 30_000);

  it('pulls a non-distributable layer from its descriptor urls, never with credentials', async () => {
    const layout = join(work, 'foreign');
    await buildImage({ layers: [base, top] }, { dir: layout, tag: 'v1' });
    const blobPath = (digest: string) => join(layout, 'blobs', ...digest.split(':'));
    const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8'));
    const manifest = JSON.parse(await readFile(blobPath(index.manifests[0].digest), 'utf8'));
    const layer = manifest.layers[0];
    // The registry does not have the layer: only the URL serves it (a signed-URL-like query included).
    const layerBytes = await readFile(blobPath(layer.digest));
    await rm(blobPath(layer.digest));
    const seen: (string | undefined)[] = [];
    const server = createServer((request, response) => {
      seen.push(request.headers.authorization);
      if (request.url === '/layers/base.tar.gz?sig=abc') response.writeHead(200).end(layerBytes);
      else response.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as { port: number };
      manifest.layers[0] = {
        ...layer,
        mediaType: MediaType.OciLayerNondistributableGzip,
        urls: [`http://127.0.0.1:${port}/layers/base.tar.gz?sig=abc`],
      };
      const bytes = Buffer.from(JSON.stringify(manifest));
      const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
      await writeFile(blobPath(digest), bytes);
      index.manifests[0] = { ...index.manifests[0], digest, size: bytes.length };
      await writeFile(join(layout, 'index.json'), JSON.stringify(index));
      registry.addRepository('test/foreign', layout);
      const rootfs = join(cacheRoot, 'foreign-rootfs');
      const result = await pull(ref('test/foreign'), { cache: cacheRoot, rootfs });
      expect(result.manifestDigest).toBe(digest);
      expect(await readFile(join(rootfs, 'etc/os-release'), 'utf8')).toBe('ID=fixture\n');
      expect(existsSync(join(rootfs, 'etc/motd'))).toBe(false);
      expect(await readFile(result.layers[0]!.blobPath)).toEqual(layerBytes);
      expect(seen).toEqual([undefined]);
      expect(registry.requests.some((request) => request.path.includes(layer.digest))).toBe(false);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('pulls a Docker v2 schema 2 image the same way', async () => {
    const result = await pull(ref('test/docker'), { cache: cacheRoot, platform: 'linux/amd64' });
    expect(result.manifest.mediaType).toBe('application/vnd.docker.distribution.manifest.v2+json');
    expect(await readFile(join(result.layers[1]!.path!, 'bin/app'), 'utf8')).toBe('binary');
    expect(result.warnings).toEqual([]);
  });

  it('takes a single-platform image as it is when another platform is asked for, and says so', async () => {
    const result = await pull(ref('test/oci'), {
      cache: cacheRoot,
      platform: 'linux/arm64/v8',
      layers: false,
    });
    expect(result.platform).toMatchObject({ os: 'linux', architecture: 'amd64' });
    expect(result.warnings).toEqual([
      'the image is for linux/amd64, not linux/arm64: no manifest names the platform to choose by, so it was pulled as it is',
    ]);
    const again = await pull(ref('test/oci'), { cache: cacheRoot, platform: 'linux/arm64', policy: 'never' });
    expect(again.warnings).toHaveLength(1);
    const picked = await pull(ref('test/multi'), {
      cache: cacheRoot,
      platform: 'linux/arm64',
      layers: false,
    });
    expect(picked.warnings).toEqual([]);
  });

  it('picks the wanted platform from an index and names what is offered on a miss', async () => {
    const result = await pull(ref('test/multi'), { cache: cacheRoot, platform: 'linux/arm64' });
    expect(result.platform).toMatchObject({ architecture: 'arm64' });
    expect(result.indexDigest).toBeDefined();
    expect(await readFile(join(result.layers[0]!.path!, 'arch'), 'utf8')).toBe('arm64\n');
    const error = await pull(ref('test/multi'), { cache: cacheRoot, platform: 'linux/s390x' }).catch(
      (e) => e,
    );
    expect(isOciError(error, ErrorCode.PlatformNotFound)).toBe(true);
    expect(String(error.message)).toContain('linux/arm64');
    // Offline, an index cached for arm64 only is in the cache, but not for amd64.
    const offline = await inspectImage(ref('test/multi'), {
      cache: cacheRoot,
      platform: 'linux/amd64',
    }).catch((e) => e);
    expect(isOciError(offline, ErrorCode.NotCached)).toBe(true);
    expect(offline.message).toBe(`${ref('test/multi')} is in the cache, but not for linux/amd64`);
    const never = await inspectImage(ref('test/never-pulled'), { cache: cacheRoot }).catch((e) => e);
    expect(never.message).toBe(`${ref('test/never-pulled')} is not in the cache`);
  });

  it('re-pulls with no registry request under --pull missing and only manifest requests under always', async () => {
    await pull(ref('test/oci'), { cache: cacheRoot, platform: 'linux/amd64' });
    registry.clearRequests();
    const warm = await pull(ref('test/oci'), {
      cache: cacheRoot,
      platform: 'linux/amd64',
      policy: 'missing',
    });
    expect(warm.offline).toBe(true);
    expect(registry.requests).toHaveLength(0);
    await pull(ref('test/oci'), { cache: cacheRoot, platform: 'linux/amd64', policy: 'always' });
    const kinds = new Set(registry.requests.map((r) => r.kind));
    kinds.delete('ping');
    kinds.delete('token');
    expect([...kinds]).toEqual(['manifest']);
  });

  it('fails with ERR_NOT_CACHED under --pull never when the image is not cached', async () => {
    const error = await pull(ref('test/oci'), { cache: cacheRoot, policy: 'never' }).catch((e) => e);
    expect(isOciError(error, ErrorCode.NotCached)).toBe(true);
    expect(registry.requests).toHaveLength(0);
  });

  it('resumes a layer whose connection was cut and still downloads each byte once', async () => {
    const built = await pull(ref('test/oci'), { cache: join(cacheRoot, 'probe'), platform: 'linux/amd64' });
    const layer = built.manifest.layers[0]!;
    registry.clearRequests();
    registry.faults.add({
      match: { kind: 'blob', digest: layer.digest },
      action: { type: 'cut', afterBytes: 20 },
    });
    const result = await pull(ref('test/oci'), { cache: cacheRoot, platform: 'linux/amd64' });
    expect(await readFile(join(result.layers[0]!.path!, 'etc/os-release'), 'utf8')).toBe('ID=fixture\n');
    const gets = registry.requests.filter(
      (r) => r.kind === 'blob' && r.digest === layer.digest && r.method === 'GET',
    );
    expect(gets.length).toBe(2);
    expect(gets[1]!.range).toBe('bytes=20-');
    expect(gets.reduce((sum, r) => sum + r.bytesSent, 0)).toBe(layer.size);
  });

  it('refuses an empty rootfs or cache path instead of taking the working directory', async () => {
    for (const options of [{ rootfs: '' }, { cache: '' }]) {
      const error = await pull(ref('test/oci'), {
        cache: cacheRoot,
        platform: 'linux/amd64',
        ...options,
      }).catch((e) => e);
      expect(isOciError(error, ErrorCode.InvalidArgument), String(error)).toBe(true);
    }
    expect(registry.requests).toHaveLength(0);
  });

  it('is not failed by a progress listener that throws, whatever the event', async () => {
    for (const layers of [true, false]) {
      const result = await pull(ref('test/oci'), {
        cache: await mkdtemp(join(work, 'cache-')),
        platform: 'linux/amd64',
        layers,
        ...(layers ? {} : { rootfs: join(await mkdtemp(join(work, 'rootfs-')), 'rootfs') }),
        onProgress: () => {
          throw new Error('a broken listener');
        },
      });
      expect(result.layers).toHaveLength(2);
    }
  });

  it('says the cache is damaged (ERR_CACHE_CORRUPT) for a config that rotted or a layer cut since', async () => {
    const pulled = await pull(ref('test/oci'), { cache: cacheRoot, platform: 'linux/amd64', layers: false });
    const configPath = join(cacheRoot, 'blobs', 'sha256', pulled.manifest.config.digest.slice(7));
    const original = await readFile(configPath);
    const bytes = Buffer.from(original);
    const at = bytes.indexOf('"created"') + 3;
    bytes[at] = (bytes[at] ?? 0) ^ 0x20;
    await writeFile(configPath, bytes);
    for (const read of [
      () =>
        pull(ref('test/oci'), {
          cache: cacheRoot,
          platform: 'linux/amd64',
          layers: false,
          policy: 'missing',
        }),
      () => inspectImage(ref('test/oci'), { cache: cacheRoot, platform: 'linux/amd64' }),
    ]) {
      const error = await read().catch((e) => e);
      expect(isOciError(error, ErrorCode.CacheCorrupt), String(error)).toBe(true);
      expect(error.message).toBe(
        `cached config ${pulled.manifest.config.digest} no longer matches its digest`,
      );
    }
    await writeFile(configPath, original);
    const layer = pulled.manifest.layers[1]!;
    const layerPath = join(cacheRoot, 'blobs', 'sha256', layer.digest.slice(7));
    await writeFile(layerPath, (await readFile(layerPath)).subarray(0, 10));
    const rootfs = join(await mkdtemp(join(work, 'cut-')), 'rootfs');
    const cut = await unpackImage(ref('test/oci'), rootfs, {
      cache: cacheRoot,
      platform: 'linux/amd64',
    }).catch((e) => e);
    expect(isOciError(cut, ErrorCode.CacheCorrupt), String(cut)).toBe(true);
    expect(cut.message).toBe(
      `cached layer ${layer.digest} of ${ref('test/oci')} is 10 bytes, not ${layer.size}`,
    );
  });

  it('gives up on a layer that keeps failing after the client retries, not after 5 times as many', async () => {
    const built = await pull(ref('test/oci'), { cache: join(cacheRoot, 'probe'), platform: 'linux/amd64' });
    const layer = built.manifest.layers[0]!;
    registry.clearRequests();
    registry.faults.add({
      match: { kind: 'blob', digest: layer.digest },
      action: { type: 'status', status: 500 },
      times: 100,
    });
    for (const layers of [true, false]) {
      registry.clearRequests();
      const error = await pull(ref('test/oci'), {
        cache: await mkdtemp(join(work, 'cache-')),
        platform: 'linux/amd64',
        layers,
        ...(layers ? {} : { rootfs: join(await mkdtemp(join(work, 'rootfs-')), 'rootfs') }),
        registry: { retryPolicy: { retries: 2, baseMs: 1, maxMs: 2 } },
      }).catch((e) => e);
      expect([error.code, error.status, error.retryable]).toEqual([ErrorCode.Registry, 500, false]);
      const gets = registry.requests.filter(
        (r) => r.kind === 'blob' && r.digest === layer.digest && r.method === 'GET',
      );
      // One request and 2 retries, plus the direct read where it was tried (its 500 is declined and
      // asked again the general way) — not the cache's 5 attempts of those.
      expect(gets.length).toBeGreaterThanOrEqual(3);
      expect(gets.length).toBeLessThanOrEqual(4);
    }
  });

  /** The pull failed with ERR_DIGEST_MISMATCH and left no rootfs, image record, blob or tree behind. */
  async function expectRefusedAsCorrupt(error: unknown, rootfs: string, layer: Descriptor, diffId?: string) {
    expect(isOciError(error, ErrorCode.DigestMismatch), String(error)).toBe(true);
    expect(existsSync(rootfs)).toBe(false);
    const cache = await openCache({ root: cacheRoot });
    expect(await cache.listImages()).toEqual([]);
    expect(await cache.has(layer)).toBe(false);
    if (diffId !== undefined) expect(await cache.hasLayer(diffId)).toBe(false);
    await cache.close();
  }

  it('returns what the extraction could not write as warnings, per layer, once each', async () => {
    const layout = join(work, 'devices');
    await buildImage(
      {
        layers: [
          { entries: [dir('etc'), file('etc/os-release', 'ID=x\n')] },
          { entries: [dir('dev'), charDevice('dev/null', 1, 3, { mode: 0o666 })] },
        ],
      },
      { dir: layout, tag: 'v1' },
    );
    const devices = await startRegistry({ repositories: { 'test/devices': layout } });
    try {
      const reference = `${devices.host}/test/devices:v1`;
      // Rootless: a device node is recorded, not made. Trees and rootfs both extract the layer.
      const extract = { rootless: true };
      const both = await pull(reference, {
        cache: cacheRoot,
        extract,
        layers: true,
        rootfs: join(cacheRoot, 'r1'),
      });
      expect(both.warnings).toHaveLength(1);
      expect(both.warnings[0]).toMatch(
        /^layer 2: dev\/null: char-device 1:3 recorded, not created \(rootless\)/,
      );
      const rootfsOnly = await pull(reference, {
        cache: join(cacheRoot, 'other'),
        extract,
        layers: false,
        rootfs: join(cacheRoot, 'r2'),
      });
      expect(rootfsOnly.warnings).toEqual(both.warnings);
      expect(existsSync(join(cacheRoot, 'r2', 'dev', 'null'))).toBe(false);
    } finally {
      await devices.close();
    }
  });

  it('a mirror serving bad bytes: the pull is taken again from the upstream alone, and succeeds', async () => {
    const mirror = await startRegistry({ repositories: { 'test/oci': join(work, 'oci') } });
    try {
      const probe = await pull(ref('test/oci'), { cache: join(cacheRoot, 'probe'), platform: 'linux/amd64' });
      const layer = probe.manifest.layers[0]!;
      mirror.faults.add({
        match: { kind: 'blob', digest: layer.digest },
        action: { type: 'corrupt', offset: 100 },
        times: Number.POSITIVE_INFINITY,
      });
      registry.clearRequests();
      const events: ProgressEvent[] = [];
      const rootfs = join(cacheRoot, 'rootfs');
      const pulled = await pull(ref('test/oci'), {
        cache: cacheRoot,
        platform: 'linux/amd64',
        rootfs,
        registry: { registries: { [registry.host]: { mirrors: [mirror.host] } } },
        onProgress: (event) => events.push(event),
      });
      expect(pulled.manifestDigest).toBe(probe.manifestDigest);
      expect(await readFile(join(rootfs, 'etc/os-release'), 'utf8')).toBe('ID=fixture\n');
      expect(events).toContainEqual(
        expect.objectContaining({
          type: 'mirror-fallback',
          mirror: mirror.host,
          reason: ErrorCode.DigestMismatch,
        }),
      );
      // The upstream served the bad layer again; the mirror was asked for it at least once.
      expect(registry.requests.some((request) => request.digest === layer.digest)).toBe(true);
      expect(mirror.requests.some((request) => request.digest === layer.digest)).toBe(true);
      expect((await (await openCache({ root: cacheRoot })).verify()).corrupt).toEqual([]);
    } finally {
      await mirror.close();
    }
  });

  it('refuses an existing rootfs before any request, and records nothing', async () => {
    const rootfs = join(cacheRoot, 'taken');
    await mkdir(rootfs);
    const error = await pull(ref('test/oci'), { cache: join(cacheRoot, 'c'), rootfs }).catch(
      (e: unknown) => e,
    );
    expect(isOciError(error, ErrorCode.InvalidArgument), String(error)).toBe(true);
    expect((error as Error).message).toContain('already exists');
    expect(registry.requests).toHaveLength(0);
    expect(await readdir(rootfs)).toEqual([]);
  });

  it('a layer blob that rotted in the cache is reported as ERR_CACHE_CORRUPT (unpack, rootfs pull, per-layer trees)', async () => {
    const cached = await pull(ref('test/oci'), { cache: cacheRoot, platform: 'linux/amd64', layers: false });
    const layer = cached.manifest.layers[0]!;
    const blob = join(cacheRoot, 'blobs', 'sha256', layer.digest.slice('sha256:'.length));
    const bytes = await readFile(blob);
    // One flipped bit in the deflate data: gunzip fails (or the diff_id does), as after disk rot.
    bytes[Math.floor(bytes.length / 2)]! ^= 0x10;
    await rm(blob, { force: true });
    await writeFile(blob, bytes, { mode: 0o444 });
    const attempts = [
      () =>
        unpackImage(ref('test/oci'), join(cacheRoot, 'unpacked'), {
          cache: cacheRoot,
          platform: 'linux/amd64',
        }),
      () =>
        pull(ref('test/oci'), {
          cache: cacheRoot,
          platform: 'linux/amd64',
          rootfs: join(cacheRoot, 'rootfs'),
        }),
      () => pull(ref('test/oci'), { cache: cacheRoot, platform: 'linux/amd64', layers: true }),
    ];
    for (const attempt of attempts) {
      const error = await attempt().catch((caught: unknown) => caught);
      expect(isOciError(error, ErrorCode.CacheCorrupt), String(error)).toBe(true);
      expect((error as Error).message).toContain(layer.digest);
    }
    expect(await readdir(cacheRoot)).not.toContain('rootfs');
    expect(await readdir(cacheRoot)).not.toContain('unpacked');
  });

  it('refuses a corrupted layer and leaves no record, no tree and no rootfs behind', async () => {
    const probe = await pull(ref('test/oci'), { cache: join(cacheRoot, 'probe'), platform: 'linux/amd64' });
    const layer = probe.manifest.layers[1]!;
    registry.faults.add({
      match: { kind: 'blob', digest: layer.digest },
      action: { type: 'corrupt', offset: 5 },
      times: Number.POSITIVE_INFINITY,
    });
    const rootfs = join(cacheRoot, 'rootfs');
    const error = await pull(ref('test/oci'), { cache: cacheRoot, platform: 'linux/amd64', rootfs }).catch(
      (e) => e,
    );
    // The zstd decoder fails first; the cache's verifier names the cause.
    await expectRefusedAsCorrupt(error, rootfs, layer, probe.layers[1]!.diffId);
  });

  it.each([
    { trees: true, index: 1, layer: 'top', extractAhead: 'never' as const },
    { trees: false, index: 0, layer: 'bottom', extractAhead: 'never' as const },
    { trees: false, index: 1, layer: 'top', extractAhead: 'never' as const },
    { trees: false, index: 1, layer: 'top', extractAhead: 'always' as const },
  ])(
    'names the digest mismatch when the rootfs reader trips over the bad bytes first (trees: $trees, $layer layer, extract ahead: $extractAhead)',
    async ({ trees, index, extractAhead }) => {
      const probe = await pull(ref('test/oci'), { cache: join(cacheRoot, 'probe'), platform: 'linux/amd64' });
      const layer = probe.manifest.layers[index]!;
      // The bad byte arrives at once, the rest over about a second: whoever decodes the bytes on disk
      // fails long before the download can tell why. (Byte 12 is past gzip's 10-byte header.)
      registry.faults.add({
        match: { kind: 'blob', digest: layer.digest },
        action: { type: 'corrupt', offset: 12 },
        times: Number.POSITIVE_INFINITY,
      });
      registry.faults.add({
        match: { kind: 'blob', digest: layer.digest },
        action: { type: 'throttle', bytesPerSecond: layer.size },
      });
      const rootfs = join(cacheRoot, 'rootfs');
      const error = await pull(ref('test/oci'), {
        cache: cacheRoot,
        platform: 'linux/amd64',
        rootfs,
        layers: trees,
        extractAhead,
      }).catch((e) => e);
      await expectRefusedAsCorrupt(error, rootfs, layer);
      // No temporary rootfs or staging tree is left next to it either.
      expect((await readdir(cacheRoot)).filter((name) => name.startsWith('.rootfs'))).toEqual([]);
    },
  );

  it.each([
    ['download only', false],
    ['the rootfs flattener too (it takes the bottom layer itself)', true],
  ])(
    'downloads layers while the config is fetched, and still reports resolve-end before any layer event: %s',
    async (_, withRootfs) => {
      const probe = await pull(ref('test/oci'), { cache: join(cacheRoot, 'probe'), platform: 'linux/amd64' });
      const config = probe.manifest.config;
      // The config's body takes ~0.4 s.
      registry.faults.add({
        match: { kind: 'blob', digest: config.digest },
        action: { type: 'throttle', bytesPerSecond: Math.ceil(config.size / 0.4) },
      });
      registry.clearRequests();
      const events: ProgressEvent[] = [];
      const rootfs = withRootfs ? join(cacheRoot, 'rootfs') : undefined;
      const result = await pull(ref('test/oci'), {
        cache: cacheRoot,
        platform: 'linux/amd64',
        layers: false,
        ...(rootfs ? { rootfs } : {}),
        onProgress: (event) => events.push(event),
      });
      expect(result.config.rootfs.diff_ids).toEqual(probe.config.rootfs.diff_ids);
      if (rootfs) {
        expect(existsSync(join(rootfs, 'bin/app'))).toBe(true);
        expect(existsSync(join(rootfs, 'etc/motd'))).toBe(false);
      }
      const gets = registry.requests.filter((request) => request.kind === 'blob' && request.method === 'GET');
      const configGet = gets.find((request) => request.digest === config.digest)!;
      const layerGets = gets.filter((request) => request.digest !== config.digest);
      expect(layerGets).toHaveLength(2);
      for (const get of layerGets) expect(get.startedAt).toBeLessThan(configGet.finishedAt!);
      const types = events.map((event) => event.type);
      const resolveEnd = types.indexOf('resolve-end');
      expect(resolveEnd).toBeGreaterThan(0);
      expect(types.findIndex((type) => type.startsWith('layer-'))).toBeGreaterThan(resolveEnd);
      expect(types.filter((type) => type === 'layer-download-end')).toHaveLength(2);
    },
  );

  it('a config that fails verification fails the pull, stops the layer downloads begun meanwhile, and reports no layer', async () => {
    const probe = await pull(ref('test/oci'), { cache: join(cacheRoot, 'probe'), platform: 'linux/amd64' });
    const config = probe.manifest.config;
    registry.faults.add({
      match: { kind: 'blob', digest: config.digest },
      action: { type: 'corrupt', offset: 3 },
      times: Number.POSITIVE_INFINITY,
    });
    // Slow layers: still downloading when the config is refused.
    for (const layer of probe.manifest.layers) {
      registry.faults.add({
        match: { kind: 'blob', digest: layer.digest },
        action: { type: 'throttle', bytesPerSecond: 50 },
      });
    }
    const events: ProgressEvent[] = [];
    const error = await pull(ref('test/oci'), {
      cache: cacheRoot,
      platform: 'linux/amd64',
      layers: false,
      onProgress: (event) => events.push(event),
    }).catch((e) => e);
    expect(isOciError(error, ErrorCode.DigestMismatch), String(error)).toBe(true);
    expect(events.map((event) => event.type)).toEqual(['resolve-start']);
    const cache = await openCache({ root: cacheRoot });
    expect(await cache.listImages()).toEqual([]);
    for (const layer of probe.manifest.layers) expect(await cache.has(layer)).toBe(false);
    await cache.close();
  });

  it('stops on abort with ERR_ABORTED and a later pull completes', async () => {
    registry.faults.add({ match: { kind: 'blob' }, action: { type: 'throttle', bytesPerSecond: 200 } });
    const controller = new AbortController();
    const pending = pull(ref('test/oci'), {
      cache: cacheRoot,
      platform: 'linux/amd64',
      signal: controller.signal,
    });
    setTimeout(() => controller.abort(), 150);
    const error = await pending.catch((e) => e);
    expect(isOciError(error, ErrorCode.Aborted)).toBe(true);
    registry.faults.clear();
    const result = await pull(ref('test/oci'), { cache: cacheRoot, platform: 'linux/amd64' });
    expect(result.layers).toHaveLength(2);
  });

  it('inspects and unpacks a cached image without the network', async () => {
    const pulled = await pull(ref('test/oci'), { cache: cacheRoot, platform: 'linux/amd64', layers: false });
    expect(pulled.layers.every((layer) => layer.path === undefined)).toBe(true);
    await registry.close().catch(() => {});
    try {
      const inspection = await inspectImage(ref('test/oci'), { cache: cacheRoot, platform: 'linux/amd64' });
      expect(inspection.manifestDigest).toBe(pulled.manifestDigest);
      expect(inspection.layers.map((l) => l.extracted)).toEqual([false, false]);
      expect(inspection.size).toBe(pulled.layers.reduce((sum, l) => sum + l.size, 0));
      const target = join(cacheRoot, 'unpacked');
      await unpackImage(ref('test/oci'), target, { cache: cacheRoot, platform: 'linux/amd64' });
      expect((await readdir(target)).sort()).toEqual(['bin', 'etc']);
      expect(existsSync(join(target, 'etc/motd'))).toBe(false);
    } finally {
      registry = await startRegistry({
        repositories: {
          'test/oci': join(work, 'oci'),
          'test/docker': join(work, 'docker'),
          'test/multi': join(work, 'multi'),
        },
      });
    }
  });
});

describe('images whose manifest or config a pull cannot take as they are', () => {
  let layouts: string;
  let odd: HarnessRegistry;

  /** Writes `value` (JSON unless bytes) as a blob of the layout `dir`; its descriptor. */
  async function blob(dir: string, mediaType: string, value: unknown): Promise<Descriptor> {
    const bytes = Buffer.isBuffer(value) ? value : Buffer.from(JSON.stringify(value));
    const hex = createHash('sha256').update(bytes).digest('hex');
    await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
    await writeFile(join(dir, 'blobs', 'sha256', hex), bytes);
    return { mediaType, digest: `sha256:${hex}` as Digest, size: bytes.length };
  }

  /** An OCI layout tagged `v1`: a manifest with `config` (of `configType`) and one plain-tar layer per tar. */
  async function layout(
    name: string,
    config: unknown,
    tars: Buffer[],
    configType: string = MediaType.OciConfig,
  ): Promise<string> {
    const at = join(layouts, name);
    const layers = await Promise.all(tars.map((tar) => blob(at, MediaType.OciLayer, tar)));
    const manifest = await blob(at, MediaType.OciManifest, {
      schemaVersion: 2,
      mediaType: MediaType.OciManifest,
      config: await blob(at, configType, config),
      layers,
    });
    await writeFile(join(at, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    const tagged = { ...manifest, annotations: { 'org.opencontainers.image.ref.name': 'v1' } };
    await writeFile(join(at, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [tagged] }));
    return at;
  }

  /** A one-file plain tar and its diff_id. */
  function tarOf(name: string, content: string): { tar: Buffer; diffId: string } {
    const source = join(layouts, `src-${name}`);
    execFileSync('mkdir', ['-p', source]);
    execFileSync('sh', ['-c', `printf %s "$1" > "$2"`, 'sh', content, join(source, name)]);
    const tar = execFileSync('tar', ['-C', source, '--owner=0', '--group=0', '-cf', '-', name]);
    return { tar, diffId: `sha256:${createHash('sha256').update(tar).digest('hex')}` };
  }

  const imageConfig = (diffIds: unknown) => ({
    architecture: 'amd64',
    os: 'linux',
    rootfs: { type: 'layers', diff_ids: diffIds },
  });

  beforeAll(async () => {
    layouts = await mkdtemp(join(work, 'odd-'));
    const one = tarOf('a', 'a');
    const repositories: Record<string, string> = {
      // No layers, so the rootfs is complete before the config fails the pull.
      'odd/empty-no-diff-ids': await layout('empty-no-diff-ids', { architecture: 'amd64', os: 'linux' }, []),
      'odd/bad-diff-id': await layout('bad-diff-id', imageConfig(['sha256:zzzz']), [one.tar]),
      'odd/number-diff-id': await layout('number-diff-id', imageConfig([42]), [one.tar]),
      'odd/artifact': await layout('artifact', {}, [one.tar], 'application/vnd.cncf.helm.config.v1+json'),
      'odd/empty-artifact': await layout('empty-artifact', {}, [one.tar], MediaType.OciEmpty),
    };
    // An index whose one image entry names no platform (skopeo takes it).
    const unnamed = await layout('unnamed', imageConfig([one.diffId]), [one.tar]);
    const index = JSON.parse(await readFile(join(unnamed, 'index.json'), 'utf8'));
    const { annotations: _tag, ...entry } = index.manifests[0];
    const top = await blob(unnamed, MediaType.OciIndex, {
      schemaVersion: 2,
      mediaType: MediaType.OciIndex,
      manifests: [
        { ...entry, platform: undefined },
        { ...entry, digest: `sha256:${'0'.repeat(64)}`, platform: { os: 'windows', architecture: 'amd64' } },
      ],
    });
    const tagged = { ...top, annotations: { 'org.opencontainers.image.ref.name': 'v1' } };
    await writeFile(join(unnamed, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [tagged] }));
    repositories['odd/unnamed'] = unnamed;
    odd = await startRegistry({ repositories });
  });

  afterAll(async () => {
    await odd?.close();
  });

  const oddRef = (repository: string) => `${odd.host}/${repository}:v1`;

  it('leaves no rootfs behind when the config fails the pull after the flatten finished', async () => {
    for (const layers of [false, true]) {
      const parent = await mkdtemp(join(work, 'left-'));
      const rootfs = join(parent, 'rootfs');
      const error = await pull(oddRef('odd/empty-no-diff-ids'), { cache: cacheRoot, rootfs, layers }).catch(
        (e) => e,
      );
      expect(isOciError(error, ErrorCode.InvalidManifest), String(error)).toBe(true);
      expect(error.message).toContain('lists no diff_ids for 0 layers');
      expect(await readdir(parent)).toEqual([]);
    }
  });

  it('refuses a diff_id that is not a digest the same way whether it flattens or extracts trees', async () => {
    for (const [repository, shown] of [
      ['odd/bad-diff-id', '"sha256:zzzz"'],
      ['odd/number-diff-id', '42'],
    ] as const) {
      for (const options of [
        { layers: true },
        { layers: false, rootfs: true },
        { layers: true, rootfs: true },
      ]) {
        const parent = await mkdtemp(join(work, 'diffid-'));
        const rootfs = options.rootfs ? { rootfs: join(parent, 'rootfs') } : {};
        const error = await pull(oddRef(repository), {
          cache: await mkdtemp(join(work, 'cache-')),
          layers: options.layers,
          ...rootfs,
        }).catch((e) => e);
        expect(isOciError(error, ErrorCode.InvalidManifest), `${repository} ${String(error)}`).toBe(true);
        expect(error.message).toBe(`the config's diff_id for layer 1 is not a digest: ${shown}`);
        expect(await readdir(parent)).toEqual([]);
      }
    }
  });

  it('says an OCI artifact is not a container image', async () => {
    for (const repository of ['odd/artifact', 'odd/empty-artifact']) {
      const error = await pull(oddRef(repository), { cache: cacheRoot, layers: false }).catch((e) => e);
      expect(isOciError(error, ErrorCode.UnsupportedMediaType), String(error)).toBe(true);
      expect(error.message).toMatch(/^not a container image: its config is application\/vnd\./);
    }
  });

  it('takes the index entry that names no platform, and says the image is for another one when it is', async () => {
    const pulled = await pull(oddRef('odd/unnamed'), {
      cache: cacheRoot,
      platform: 'linux/amd64',
      layers: false,
    });
    expect(pulled.platform).toMatchObject({ os: 'linux', architecture: 'amd64' });
    expect(pulled.warnings).toEqual([]);
    const other = await pull(oddRef('odd/unnamed'), {
      cache: cacheRoot,
      platform: 'linux/arm64',
      layers: false,
    });
    expect(other.manifestDigest).toBe(pulled.manifestDigest);
    expect(other.warnings).toEqual([
      'the image is for linux/amd64, not linux/arm64: no manifest names the platform to choose by, so it was pulled as it is',
    ]);
  });
});

import { spawn } from 'node:child_process';
import { chmod, cp, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildImage, file, readOnlyCommand, setTreeMode, treeStamp } from '@ocipull/test-harness';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { openCache } from './index.ts';
import { cacheImage } from './testing/fixtures/layout-source.ts';
import type { ReadOnlyChildArguments } from './testing/fixtures/read-only-child.ts';

// A cache this process may only read: a read-only mount, another user's cache, a layout skopeo wrote.
// The tree is made read-only (chmod a-w); root writes anywhere, so as root the child also runs in a
// mount namespace of its own where the cache is a read-only bind mount (EROFS, as on read-only media).
// Writing there fails for real, as it does for the CLI.
let work: string;
let image: Awaited<ReturnType<typeof buildImage>>;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'blob-cache-read-only-'));
  // Traversable by the child's user.
  await chmod(work, 0o755);
  image = await buildImage(
    { layers: [{ entries: [file('etc/os-release', 'ID=fixture\n'), file('a', { size: 20_000, seed: 5 })] }] },
    { dir: join(work, 'image'), tag: 'ro' },
  );
});

afterAll(async () => {
  await setTreeMode(work, { directory: 0o755, file: 0o644 });
  await rm(work, { recursive: true, force: true });
});

/** Runs `read-only-child.ts` over `root`, with `root` mounted read-only when this is root. */
function runChild(args: ReadOnlyChildArguments): Promise<Record<string, unknown>> {
  const [command, argv] = readOnlyCommand(args.root, process.execPath, [
    '--conditions=@ocipull/source',
    join(import.meta.dirname, 'testing', 'fixtures', 'read-only-child.ts'),
    JSON.stringify(args),
  ]);
  const child = spawn(command, argv, { stdio: ['ignore', 'pipe', 'pipe'], cwd: work });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (text: string) => {
    stdout += text;
  });
  child.stderr.setEncoding('utf8').on('data', (text: string) => {
    stderr += text;
  });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', () => {
      const line = stdout.split('\n').find((text) => text.startsWith('{'));
      if (line === undefined) reject(new Error(`the child printed nothing: ${stderr}`));
      else resolve(JSON.parse(line) as Record<string, unknown>);
    });
  });
}

/** A cache holding the image as `example.com/ro:1`, with its layer's tree extracted. */
async function cachedImage(name: string): Promise<string> {
  const root = join(work, name);
  const cache = await openCache({ root });
  await cacheImage(cache, image, 'example.com/ro:1');
  await cache.close();
  return root;
}

const childArguments = (root: string): ReadOnlyChildArguments => {
  const manifest = image.manifests[0]!;
  return {
    root,
    manifest: manifest.descriptor,
    layer: manifest.layers[0]!.descriptor,
    diffId: manifest.diffIds[0]!,
  };
};

/** What the child reports on a read-only copy of a cache of the image; `layerPath` differs by layout. */
function expectReads(result: Record<string, unknown>, layerPath: string | null): void {
  const manifest = image.manifests[0]!;
  expect(result).toEqual({
    ok: true,
    writable: false,
    images: ['example.com/ro:1'],
    imageBytes: [
      manifest.descriptor.size + manifest.config.descriptor.size + manifest.layers[0]!.descriptor.size,
    ],
    usedManifest: true,
    manifestBytes: manifest.descriptor.size,
    streamed: manifest.layers[0]!.descriptor.size,
    ingested: { cached: true, resumedFrom: 0 },
    rewritten: manifest.descriptor.digest,
    layerPath,
    writes: {
      writeBlob: 'ERR_IO',
      putImage: 'ERR_IO',
      untag: 'ERR_IO',
      download: 'ERR_IO',
      createLayerTemp: 'ERR_IO',
    },
  });
}

it('reads a read-only cache of ours without writing to it (no lease, no lock); writes fail with ERR_IO', async () => {
  const root = await cachedImage('ours');
  await setTreeMode(root, { directory: 0o555, file: 0o444 });
  const before = await treeStamp(root);
  const result = await runChild(childArguments(root));
  expectReads(
    result,
    join(root, 'layers', 'sha256', image.manifests[0]!.diffIds[0]!.slice('sha256:'.length)),
  );
  expect(await treeStamp(root)).toEqual(before);
});

it('opens a read-only layout that has only what skopeo writes (oci-layout, index.json, blobs/)', async () => {
  const full = await cachedImage('full');
  const root = join(work, 'skopeo');
  for (const name of ['oci-layout', 'index.json', 'blobs'])
    await cp(join(full, name), join(root, name), { recursive: true });
  await setTreeMode(root, { directory: 0o555, file: 0o444 });
  const before = await treeStamp(root);
  expectReads(await runChild(childArguments(root)), null);
  expect(await treeStamp(root)).toEqual(before);
});

it('a directory that is no layout and cannot be made one is still an error', async () => {
  const root = join(work, 'empty');
  await mkdir(root);
  await setTreeMode(root, { directory: 0o555, file: 0o444 });
  expect(await runChild(childArguments(root))).toMatchObject({ ok: false, code: 'ERR_IO' });
});

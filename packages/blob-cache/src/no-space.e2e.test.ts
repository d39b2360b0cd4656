import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { type Descriptor, ErrorCode, isOciError, MediaType } from '@ocipull/core';
import { digestOf } from '@ocipull/digest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openCache } from './index.ts';
import { MemorySource } from './testing/fixtures/memory-source.ts';

const run = promisify(execFile);
const MiB = 1024 * 1024;

let mountPoint: string;

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error('this suite mounts a tmpfs and must run as root');
  mountPoint = await mkdtemp(join(tmpdir(), 'blob-cache-tmpfs-'));
  await run('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mountPoint]);
});

afterAll(async () => {
  if (mountPoint === undefined) return;
  await run('umount', [mountPoint]).catch(() => run('umount', ['-l', mountPoint]));
  await rm(mountPoint, { recursive: true, force: true });
});

async function expectNoSpace(promise: Promise<unknown>): Promise<void> {
  try {
    await promise;
    expect.unreachable('expected ERR_NO_SPACE');
  } catch (error) {
    expect(isOciError(error, ErrorCode.NoSpace), String(error)).toBe(true);
  }
}

describe('a full disk', () => {
  it('fails with ERR_NO_SPACE, commits nothing, frees the part, and leaves the cache consistent', async () => {
    const root = join(mountPoint, 'cache');
    const cache = await openCache({ root });
    const small = await cache.writeBlob('{"schemaVersion":2}', { mediaType: MediaType.OciManifest });
    await cache.putImage('example.com/app:1', small);

    const big = Buffer.alloc(6 * MiB);
    for (let index = 0; index < big.length; index += 4096)
      big.writeUInt32LE(Math.imul(index, 2_654_435_761) >>> 0, index);
    const descriptor: Descriptor = {
      mediaType: MediaType.OciLayer,
      digest: await digestOf(big),
      size: big.length,
    };
    const source = new MemorySource();
    source.add(big, descriptor.digest);

    await expectNoSpace(cache.ingest(descriptor, source));
    expect(await cache.has(descriptor)).toBe(false);
    expect(await readdir(cache.layout.ingest)).toEqual([]);

    // The streaming form errors its stream the same way.
    const stream = await cache.fetchThrough(descriptor, source);
    await expectNoSpace(
      (async () => {
        for await (const _chunk of stream) {
          // drain
        }
      })(),
    );
    expect(await readdir(cache.layout.ingest)).toEqual([]);

    // A full disk while rewriting index.json leaves the old index.json in place.
    const before = await readFile(cache.layout.indexJson, 'utf8');
    const filler = join(mountPoint, 'filler');
    await writeFile(filler, Buffer.alloc(4 * MiB)).catch(() => {});
    const other = await cache.writeBlob('{"schemaVersion":2,"other":true}').catch((error: unknown) => error);
    await expectNoSpace(cache.putImage('example.com/app:2', small));
    expect(await readFile(cache.layout.indexJson, 'utf8')).toBe(before);
    expect((await readdir(root)).filter((name) => name.endsWith('.tmp'))).toEqual([]);
    if (!isOciError(other)) expect(other).toMatchObject({ size: 32 });
    else expect(other.code).toBe(ErrorCode.NoSpace);
    await rm(filler);

    // Consistent: every blob verifies, the image resolves, and writes work again once space is back.
    const report = await cache.verify();
    expect(report.corrupt).toEqual([]);
    expect(await cache.resolveImage('example.com/app:1')).toMatchObject({ digest: small.digest });
    const fits = Buffer.alloc(MiB, 3);
    const fitting: Descriptor = {
      mediaType: MediaType.OciLayer,
      digest: await digestOf(fits),
      size: fits.length,
    };
    source.add(fits, fitting.digest);
    expect(await cache.ingest(fitting, source)).toEqual({ cached: false, resumedFrom: 0 });
    await cache.putImage('example.com/app:2', small);
    expect((await cache.listImages()).map((record) => record.ref)).toEqual([
      'example.com/app:1',
      'example.com/app:2',
    ]);
  });
});
